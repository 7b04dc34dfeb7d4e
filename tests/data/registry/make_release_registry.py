"""How release-registry.sql and .json were made (tests/unit/test_registry_release.py).

Run once with the release's code, before the registry moved to SQLAlchemy and Alembic
(commit 2d323c1, schema 8 of the hand-written migrations):

    .venv/bin/python tests/data/registry/make_release_registry.py DIR
    sqlite3 DIR/registry.sqlite .dump > tests/data/registry/release-registry.sql

It fills a registry through the public API only (hosts in several states, profiles,
events, a conflict, repositories, settings) and writes what it reads back, with the
secrets handed out (install tokens, an agent credential, the API token), as JSON.
Kept to show where the fixture came from; the tests never run it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from pxe_server.model import Profile, SanTarget, State, Work
from pxe_server.registry import TOKEN_TTL_SETTING, EnrolRefused, Registry, default_profile


def _value(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _value(v) for k, v in value.items()}
    return value


def main(directory: Path) -> None:
    secrets: dict[str, str] = {}
    with Registry.open(directory) as reg:
        reg.add_profile(default_profile())
        san_profile = Profile(
            name="san",
            template=default_profile().template,
            san_boot=True,
            multipath=True,
            storage_nic="net2",
            payload_version="1.1",
        )
        reg.add_profile(san_profile)
        reg.set_setting("payload_version", "1.0")
        reg.set_setting("unknown_policy", "install")
        reg.set_setting(TOKEN_TTL_SETTING, "7200")
        reg.add_repository("1.0", str(directory / "repo-1.0"))
        reg.add_repository("1.1", str(directory / "repo-1.1"))
        # pending, armed, with a password variable
        pending = reg.add_host(
            "52:54:00:00:01:01", name="pending01", variables={"root_password": "s3cret-root"}
        )
        # signalled: its boot config was fetched (the ticket handed out)
        reg.add_host("52:54:00:00:01:02", name="signalled01")
        reg.mark_signalled("52:54:00:00:01:02")
        # installing, enrolled, progress
        installing = reg.add_host("52:54:00:00:01:03", name="installing01")
        reg.mark_signalled(installing.mac)
        reg.enrol(installing.mac, installing.token or "", "install-key-0103", "192.0.2.3")
        reg.record_event(installing.mac, State.INSTALLING, step="partition", progress=0.2)
        reg.record_event(installing.mac, State.INSTALLING, step="download", progress=0.6)
        # installed (netboot disarmed), token still live until running
        installed = reg.add_host("52:54:00:00:01:04", name="installed01")
        reg.record_event(installed.mac, State.INSTALLED, message="done")
        # running: agent credential, facts, a check-in
        running = reg.add_host("52:54:00:00:01:05", name="running01")
        reg.record_event(running.mac, State.INSTALLED)
        _, reply = reg.record_event(
            running.mac, State.RUNNING, facts={"payload_version": "1.0", "cpus": 4}
        )
        secrets["agent_credential"] = str(reply["agent_credential"])
        reg.check_in(running.mac, "1.0", "running")
        # failed
        failed = reg.add_host("52:54:00:00:01:06", name="failed01")
        reg.record_event(failed.mac, State.FAILED, message="disk sda not found")
        # upgrade work assigned to a running host
        upgraded = reg.add_host("52:54:00:00:01:07", name="upgrade01")
        reg.record_event(upgraded.mac, State.INSTALLED)
        reg.record_event(upgraded.mac, State.RUNNING, facts={"payload_version": "1.0"})
        reg.assign_work(upgraded.mac, Work.UPGRADE, version="1.1", reboot="manual")
        # a SAN host on the multipath profile
        reg.add_host(
            "52:54:00:00:01:08",
            profile="san",
            san=SanTarget(
                root_path="iscsi:192.0.2.50::3260:0:iqn.2026-01.example:root",
                address="198.51.100.8/24",
                paths=("iscsi:192.0.2.51::3260:0:iqn.2026-01.example:root",),
            ),
        )
        # an enrolment conflict
        conflicted = reg.add_host("52:54:00:00:01:09", name="conflict01")
        reg.mark_signalled(conflicted.mac)
        reg.enrol(conflicted.mac, conflicted.token or "", "install-key-a", "192.0.2.9")
        with suppress(EnrolRefused):  # refused and recorded as a conflict
            reg.enrol(conflicted.mac, conflicted.token or "", "install-key-b", "192.0.2.99")
        # a removed host (its events go too)
        reg.add_host("52:54:00:00:01:0a")
        reg.delete_host("52:54:00:00:01:0a")
        secrets["install_token"] = pending.token or ""
        secrets["install_key"] = "install-key-0103"
        secrets["installing_token"] = installing.token or ""
        secrets["api_token"] = (directory / "api-token").read_text().strip()
        hosts = reg.list_hosts()
        expected = {
            "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "secrets": secrets,
            "settings": reg.settings(),
            "profiles": [_value(p) for p in reg.list_profiles()],
            "repositories": [_value(r) for r in reg.repositories()],
            "hosts": [_value(h) | {"token": h.token} for h in hosts],
            "events": {h.mac: [_value(e) for e in reg.events(h.mac)] for h in hosts},
        }
    json.dump(expected, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
