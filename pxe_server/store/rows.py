"""The registry's rows as model values and back (the same on both engines).

Variables, facts and a SAN target are JSON text; the install token is stored sealed
under the registry's key with its keyed hash for lookups (``secrets.Keyring``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import Column

from pxe_server.model import (
    BootChain,
    Event,
    Host,
    Profile,
    RebootPolicy,
    Repository,
    SanTarget,
    State,
    Work,
)
from pxe_server.secrets import Keyring, Purpose
from pxe_server.store.tables import events, hosts, profiles, repositories

# The positional readers below follow the tables' column order (a test checks it).
PROFILE_ORDER = [c.name for c in profiles.c]
EVENT_ORDER = [c.name for c in events.c]
REPOSITORY_ORDER = [c.name for c in repositories.c]

# A host's columns, in the order host_from reads them (event_count is the registry's own).
HOST_COLUMNS: tuple[Column[Any], ...] = tuple(c for c in hosts.c if c.name != "event_count")
HOST_NAMES = tuple(c.name for c in HOST_COLUMNS)


def host_values(host: Host, keys: Keyring) -> dict[str, Any]:
    """``host`` as column values (variables as a JSON object; the install token sealed
    afresh, with its keyed hash)."""
    token = host.token
    return {
        "mac": host.mac,
        "name": host.name,
        "profile": host.profile,
        "variables": json.dumps(dict(host.variables)),
        "netboot_armed": bool(host.netboot_armed),
        "state": host.state.value,
        "step": host.step,
        "progress": host.progress,
        "assigned_version": host.assigned_version,
        "running_version": host.running_version,
        "token_sealed": keys.seal(token) if token else None,
        "token_hash": keys.hash(Purpose.INSTALL_TOKEN, token) if token else None,
        "agent_credential_hash": host.agent_credential_hash,
        "facts": json.dumps(dict(host.facts), sort_keys=True),
        "work": None if host.work is None else Work(host.work).value,
        "reboot_policy": RebootPolicy(host.reboot_policy).value,
        "last_checkin": host.last_checkin,
        "san": None if host.san is None else json.dumps(asdict(host.san), sort_keys=True),
        "install_key_hash": host.install_key_hash,
        "enrolled_from": host.enrolled_from,
        "enrolled_at": host.enrolled_at,
        "ticket_issued_at": host.ticket_issued_at,
        "token_expires": host.token_expires,
        "conflict": host.conflict,
        "revision": host.revision,
    }


def host_from(row: Sequence[Any], keys: Keyring) -> Host:
    """A host from a row of ``HOST_COLUMNS``, in that order."""
    (
        mac,
        name,
        profile,
        variables,
        netboot_armed,
        state,
        step,
        progress,
        assigned_version,
        running_version,
        sealed,
        _token_hash,
        agent_credential_hash,
        facts,
        work,
        reboot_policy,
        last_checkin,
        san,
        install_key_hash,
        enrolled_from,
        enrolled_at,
        ticket_issued_at,
        token_expires,
        conflict,
        revision,
    ) = row
    return Host(
        mac=mac,
        name=name,
        profile=profile,
        variables=tuple(json.loads(variables).items()),
        netboot_armed=bool(netboot_armed),
        state=State(state),
        step=step,
        progress=progress,
        assigned_version=assigned_version,
        running_version=running_version,
        token=None if sealed is None else keys.unseal(sealed),
        agent_credential_hash=agent_credential_hash,
        facts=_facts(facts),
        work=None if work is None else Work(work),
        reboot_policy=RebootPolicy(reboot_policy),
        last_checkin=last_checkin,
        san=_san(san),
        install_key_hash=install_key_hash,
        enrolled_from=enrolled_from,
        enrolled_at=enrolled_at,
        ticket_issued_at=ticket_issued_at,
        token_expires=token_expires,
        conflict=conflict,
        revision=int(revision),
    )


def _san(text: str | None) -> SanTarget | None:
    if text is None:
        return None
    value = json.loads(text)
    fields = {k: v for k, v in value.items() if k in SanTarget.__dataclass_fields__}
    fields["paths"] = tuple(fields.get("paths") or ())  # stored as a JSON list
    return SanTarget(**fields)


def _facts(text: str) -> dict[str, object]:
    """The stored facts; a damaged value reads as none rather than breaking every listing."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def profile_values(profile: Profile) -> dict[str, Any]:
    return {
        "name": profile.name,
        "template": profile.template,
        "boot_chain": BootChain(profile.boot_chain).value,
        "xen_args": profile.xen_args,
        "kernel_args": profile.kernel_args,
        "payload_version": profile.payload_version,
        "san_boot": bool(profile.san_boot),
        "multipath": bool(profile.multipath),
        "storage_nic": profile.storage_nic,
    }


def profile_from(row: Sequence[Any]) -> Profile:
    """A profile from a row of the profiles table, its columns in their order."""
    (name, template, boot_chain, xen_args, kernel_args, version, san_boot, multipath, nic) = row
    return Profile(
        name=name,
        template=template,
        boot_chain=BootChain(boot_chain),
        xen_args=xen_args,
        kernel_args=kernel_args,
        payload_version=version,
        san_boot=bool(san_boot),
        multipath=bool(multipath),
        storage_nic=nic,
    )


def event_from(row: Sequence[Any]) -> Event:
    """An event from a row of the events table, its columns in their order."""
    _id, time, mac, state, step, progress, message = row
    return Event(
        time=time, mac=mac, state=State(state), step=step, progress=progress, message=message
    )


def repository_from(row: Sequence[Any]) -> Repository:
    """A repository from a row of the repositories table, its columns in their order."""
    version, directory, _added = row
    return Repository(version=version, directory=directory)
