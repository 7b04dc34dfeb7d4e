"""A registry with one of everything, for the backup, restore and migrate tests (unit and
integration): hosts in every state, events, an install token, an enrolled installer's
key, an agent credential, the API token, a second profile, settings, a repository.

``make_fleet`` fills a server directory's registry and returns the secrets handed out;
``records`` reads everything back as plain values (two registries with the same
records compare equal); ``check_secrets`` proves every secret still verifies;
``as_revision_8`` turns a backup of the fleet into one a netinstall at revision 0008 wrote,
``check_pools_and_jobs`` proves a registry has revision 0009's pools and jobs.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect

from common.protocol.messages import JobKind
from pxe_server.model import State, Work
from pxe_server.registry import Registry, default_profile
from pxe_server.store.schema import SCRIPTS

PENDING = "52:54:00:00:10:01"
SIGNALLED = "52:54:00:00:10:02"
INSTALLING = "52:54:00:00:10:03"
INSTALLED = "52:54:00:00:10:04"
RUNNING = "52:54:00:00:10:05"
FAILED = "52:54:00:00:10:06"
UPGRADING = "52:54:00:00:10:07"  # running before, now pending with upgrade work
MACS = (PENDING, SIGNALLED, INSTALLING, INSTALLED, RUNNING, FAILED, UPGRADING)
INSTALL_KEY = "k" * 43  # what an installer enrols with (an ephemeral public key's digest)


@dataclass(frozen=True)
class Secrets:
    api_token: str
    install_tokens: dict[str, str]  # by MAC: the hosts that still have one
    install_key: tuple[str, str]  # (MAC, key) enrolled with that host's token
    agent_credentials: dict[str, str]  # by MAC


def make_fleet(directory: Path, repo_dir: Path) -> Secrets:
    """Fill ``directory``'s registry (opened, or created on SQLite) with one of everything."""
    credentials: dict[str, str] = {}
    with Registry.open(directory) as reg:
        reg.add_profile(default_profile())
        reg.add_profile(replace(default_profile(), name="custom", kernel_args="console=ttyS0"))
        reg.set_setting("unknown_policy", "local")
        reg.set_setting("repo", str(repo_dir))
        repo_dir.mkdir(parents=True, exist_ok=True)
        reg.add_repository("1.2.3", str(repo_dir))
        reg.add_host(PENDING, name="web-1", variables=(("root_password", "s3cret"), ("a", "b")))
        for mac in MACS[1:]:
            reg.add_host(mac, profile="custom" if mac == FAILED else "default")
        signalled = reg.mark_signalled(SIGNALLED)
        assert signalled is not None
        assert signalled.token is not None
        reg.enrol(SIGNALLED, signalled.token, INSTALL_KEY, "192.0.2.10")
        reg.record_event(INSTALLING, State.INSTALLING, step="download", progress=0.425)
        reg.record_event(INSTALLED, State.INSTALLING, step="bootloader", progress=0.99)
        reg.record_event(INSTALLED, State.INSTALLED, message="done")
        reg.record_event(FAILED, State.FAILED, step="layout", message="no disk big enough")
        for mac in (RUNNING, UPGRADING):
            reg.record_event(mac, State.INSTALLED)
            _, reply = reg.record_event(
                mac, State.RUNNING, facts={"payload_version": "1.2.3", "disks": ["sda"]}
            )
            credentials[mac] = str(reply["agent_credential"])
        upgrading = reg.assign_work(UPGRADING, Work.UPGRADE, version="1.2.3")
        assert upgrading.work is Work.UPGRADE
        tokens = {h.mac: h.token for h in reg.list_hosts() if h.token is not None}
        enrolled = reg.get_host(SIGNALLED)
        assert enrolled is not None
        assert enrolled.install_key_hash is not None
    api_token = (directory / "api-token").read_text("utf-8").strip()
    return Secrets(api_token, tokens, (SIGNALLED, INSTALL_KEY), credentials)


def records(directory: Path) -> dict[str, Any]:
    """Everything the registry of ``directory`` holds, as values to compare."""
    with Registry.open(directory) as reg:
        hosts = reg.list_hosts()
        return {
            "hosts": hosts,
            "events": {h.mac: reg.events(h.mac) for h in hosts},
            "profiles": reg.list_profiles(),
            "settings": reg.settings(),
            "repositories": reg.repositories(),
        }


def check_secrets(directory: Path, secrets: Secrets) -> None:
    """Every secret of ``secrets`` verifies against the registry of ``directory``."""
    with Registry.open(directory) as reg:
        assert (directory / "api-token").read_text("utf-8").strip() == secrets.api_token
        assert reg.api_token_matches(secrets.api_token)
        token = secrets.api_token  # one character changed (never to itself: 1 in 64 ends in x)
        assert not reg.api_token_matches(token[:-1] + ("y" if token.endswith("x") else "x"))
        assert secrets.install_tokens
        for mac, token in secrets.install_tokens.items():
            found = reg.host_by_token(token)
            assert found is not None
            assert found.mac == mac
        mac, key = secrets.install_key
        found = reg.host_by_install_key(key)
        assert found is not None
        assert found.mac == mac
        assert secrets.agent_credentials
        for mac, credential in secrets.agent_credentials.items():
            found = reg.host_by_agent_credential(credential)
            assert found is not None
            assert found.mac == mac
        # A new event goes on after the copied ones (ids continue past the source's).
        before = reg.events(FAILED)
        reg.record_event(INSTALLING, State.INSTALLED, message="after the copy")
        assert reg.events(INSTALLING)[-1].message == "after the copy"
        assert reg.events(FAILED) == before


def check_pools_and_jobs(directory: Path) -> None:
    """The registry of ``directory`` (the fleet, no pools or jobs yet) takes a pool and a
    job on it: revision 0009's tables are there and work."""
    with Registry.open(directory) as reg:
        pool = reg.create_pool("rack1", RUNNING, [UPGRADING])
        job = reg.add_job(
            JobKind.POOL_UPGRADE,
            hosts=pool.hosts,
            parameters={"version": "1.2.3"},
            started_by="test",
            pool=pool.name,
        )
        assert (reg.pools(), reg.jobs()) == ([pool], [job])


# Revisions 0009 (pools and jobs), 0010 (BMCs), 0011 (servers, segment servers, power
# requests) and 0012 (updates) added these tables and changed none of 0008's.
ADDED_BY_0009 = (
    "pools",
    "pool_hosts",
    "jobs",
    "bmcs",
    "servers",
    "host_segments",
    "power_requests",
    "updates",
    "host_updates",
    "update_facts",
)


def as_revision_8(backup: Path, target: Path) -> Path:
    """``backup`` (a ``server backup`` at 0012 with no pools, jobs, BMCs, servers or updates) as
    a netinstall at Alembic revision 0008 wrote it: the same members without the tables since
    added, the manifest saying 0008. Today's ``server backup`` cannot write one: it brings the
    registry up to date first. ``alembic_tables("0008")`` is what it must hold."""
    with zipfile.ZipFile(backup) as archive:
        found = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(found["manifest.json"])
    kept = []
    for table in manifest["tables"]:
        if table["name"] in ADDED_BY_0009:
            assert table["rows"] == 0, f"a registry at 0008 has no {table['name']}"
            del found[table["member"]]
        else:
            kept.append(table)
    manifest |= {"tables": kept, "revision": "0008"}
    found["manifest.json"] = json.dumps(manifest, indent=1).encode()
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in found.items():
            archive.writestr(name, data)
    return target


def alembic_tables(revision: str, path: Path) -> dict[str, list[str]]:
    """The tables, each with its sorted column names, that Alembic's revisions up to
    ``revision`` create in a new SQLite file ``path`` (Alembic's own table left out)."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            config = Config(attributes={"connection": conn})
            config.set_main_option("script_location", str(SCRIPTS))
            command.upgrade(config, revision)
            found = inspect(conn)
            return {
                table: sorted(column["name"] for column in found.get_columns(table))
                for table in found.get_table_names()
                if table != "alembic_version"
            }
    finally:
        engine.dispose()
