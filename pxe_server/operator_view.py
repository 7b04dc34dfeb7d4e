"""What an operator sees of the registry, as the protocol's records: once, for both ends.

The API's handlers (``http_api``) and the CLI's local fleet (``netinstall.fleet``) call
these same functions, so a command prints the same whether it runs on the server
directory or over the API:

    host_records(registry)              -> every host, each with its latest event
    host_view(registry, mac)            -> one host with its latest event and its BMC
                                           (UnknownHost)
    profile_records(registry)           -> every profile with its host count
    profile_of(spec)                    -> the registry's Profile of a ProfileSpec
    repository_records(registry)        -> every repository, its file count, the default
    edit_host(registry, mac, edit)      -> the host as a HostEdit left it (one write)
    server_records(registry, now)       -> every server of the registry, with its host count
    pin_segment(registry, mac, server)  -> a host's segment server pinned (or learnt again)

Nothing else here writes but ``pin_segment``. Every function blocks (registry reads, file
counts). What renders (the answer-file check) is ``answer_check``: this module loads no
jinja2 or lxml, so ``host list`` stays quick to start.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import InputError
from common.protocol.codec import ABSENT
from common.protocol.messages import (
    HostEdit,
    HostRecord,
    PoolRecord,
    ProfileRecord,
    ProfileSpec,
    RepositoryRecord,
    ServerRecord,
)
from pxe_server.jobs import UnknownPool, pool_record
from pxe_server.model import BootChain, Host, Profile, event_record, host_record

if TYPE_CHECKING:  # the registry (and SQLAlchemy) only where a registry is opened: the
    from pxe_server.registry import Registry  # CLI over the API starts without them
    from pxe_server.registry_segments import Segment


class UnknownProfile(InputError):
    """No profile of that name (a 404 over the API)."""


def host_records(registry: Registry) -> list[HostRecord]:
    """Every host by MAC, each with its latest event and its BMC (three queries, not one
    a host)."""
    latest = registry.last_events()
    bmcs = registry.bmc_records()
    segments = registry.segments()
    records = []
    for host in registry.list_hosts():
        event = latest.get(host.mac)
        record = host_record(host, None if event is None else event_record(event))
        record = _with_segment(record, segments.get(host.mac))
        records.append(replace(record, bmc=bmcs.get(host.mac)))
    return records


def _with_segment(record: HostRecord, segment: Segment | None) -> HostRecord:
    if segment is None:
        return record
    return replace(record, segment_server=segment.server, segment_pinned=segment.pinned)


def host_view(registry: Registry, mac: str) -> HostRecord:
    """One host with its latest event; UnknownHost (a 404) if there is none."""
    host = registry.get_host(mac)
    if host is None:
        from pxe_server.registry import UnknownHost  # noqa: PLC0415 - see the imports

        raise UnknownHost(f"no host {mac} in the registry")
    event = registry.last_event(host.mac)
    record = host_record(host, None if event is None else event_record(event))
    bmc = registry.bmc(host.mac)
    segment = registry.segment(host.mac)
    record = _with_segment(record, segment)
    record = replace(record, bmc=None if bmc is None else bmc.record())
    updates = registry.update_facts(host.mac)  # what its agent last said of its own disk
    if updates is not None:
        facts = {**record.facts, "updates": list(updates.updates), "free_mib": updates.free_mib}
        record = replace(record, facts=facts)
    return record


def server_records(registry: Registry, now: float) -> list[ServerRecord]:
    """Every server of the registry by name: whether it runs (seen within
    ``segments.GONE_AFTER`` seconds) and how many hosts' segment server it is."""
    from pxe_server.segments import GONE_AFTER  # noqa: PLC0415 - see the imports

    counts: dict[str, int] = {}
    for segment in registry.segments().values():
        counts[segment.server] = counts.get(segment.server, 0) + 1
    return [
        ServerRecord(
            s.name,
            s.address,
            s.started,
            s.last_seen,
            now - s.last_seen <= GONE_AFTER,
            counts.get(s.name, 0),
        )
        for s in registry.servers()
    ]


def pin_segment(registry: Registry, mac: str, server: str | None) -> None:
    """Pin ``mac``'s segment server to ``server`` (a registered server's name; InputError
    naming the ones there are otherwise), or learn it again (None). Blocks (a write)."""
    from pxe_server.registry import UnknownHost  # noqa: PLC0415 - see the imports
    from pxe_server.segments import server_name_of  # noqa: PLC0415 - see the imports

    if server is not None and registry.server(server_name_of(server)) is None:
        names = ", ".join(s.name for s in registry.servers()) or "none yet"
        raise InputError(f"no server {server!r} has run on this registry (servers: {names})")
    if not registry.pin_segment(mac, server, time.time()):
        raise UnknownHost(f"no host {mac} in the registry")


def edit_host(registry: Registry, mac: str, edit: HostEdit) -> Host:
    """``edit`` applied to host ``mac`` in one transaction (``Registry.update_host``): a
    field left out stays as it is; variables set or unset by name are merged with the
    stored ones there. Blocks (a registry write)."""
    from pxe_server.registry import KEEP  # noqa: PLC0415 - see the imports

    return registry.update_host(
        mac,
        name=KEEP if edit.name is ABSENT else edit.name,
        profile=KEEP if edit.profile is ABSENT else edit.profile,
        variables=KEEP if edit.variables is ABSENT else dict(edit.variables or {}),
        set_variables=KEEP if edit.set_variables is ABSENT else dict(edit.set_variables),
        unset_variables=KEEP if edit.unset_variables is ABSENT else edit.unset_variables,
    )


def profile_record(profile: Profile, hosts: int) -> ProfileRecord:
    return ProfileRecord(
        name=profile.name,
        template=profile.template,
        boot_chain=profile.boot_chain.value,
        xen_args=profile.xen_args,
        kernel_args=profile.kernel_args,
        payload_version=profile.payload_version,
        san_boot=profile.san_boot,
        multipath=profile.multipath,
        storage_nic=profile.storage_nic,
        hosts=hosts,
    )


def profile_records(registry: Registry) -> list[ProfileRecord]:
    """Every profile by name, with how many hosts use it."""
    profiles = registry.list_profiles()
    counts = {p.name: 0 for p in profiles}
    for host in registry.list_hosts():
        counts[host.profile] = counts.get(host.profile, 0) + 1
    return [profile_record(p, counts[p.name]) for p in profiles]


def find_profile(registry: Registry, name: str) -> ProfileRecord | None:
    profile = registry.get_profile(name)
    if profile is None:
        return None
    hosts = sum(1 for h in registry.list_hosts() if h.profile == name)
    return profile_record(profile, hosts)


def profile_of(spec: ProfileSpec) -> Profile:
    """The registry's Profile of ``spec`` (InputError for an unknown boot chain); the
    registry checks the rest when it stores it."""
    if spec.boot_chain not in tuple(BootChain):
        raise InputError(f"boot chain {spec.boot_chain!r}: expected seed or ipxe")
    extra = {"xen_args": spec.xen_args, "kernel_args": spec.kernel_args}
    return Profile(
        name=spec.name,
        template=spec.template,
        boot_chain=BootChain(spec.boot_chain),
        payload_version=spec.payload_version,
        san_boot=spec.san_boot,
        multipath=spec.multipath,
        storage_nic=spec.storage_nic,
        **{k: v for k, v in extra.items() if v is not None},
    )


def _file_count(directory: Path) -> int | None:
    if not directory.is_dir():
        return None
    return sum(1 for path in directory.rglob("*") if path.is_file())


def repository_records(registry: Registry) -> list[RepositoryRecord]:
    """Every registered repository: version, directory, file count (None: missing) and
    whether it is the default (``payload_version``)."""
    default = registry.settings().get("payload_version")
    return [
        RepositoryRecord(
            r.version, r.directory, _file_count(Path(r.directory)), r.version == default
        )
        for r in registry.repositories()
    ]


def _pool_jobs(registry: Registry) -> dict[str, int]:
    """Each pool's queued or running job."""
    return {job.pool: job.id for job in registry.jobs() if job.active and job.pool is not None}


def pool_records(registry: Registry) -> list[PoolRecord]:
    """Every pool by name, with its queued or running job."""
    active = _pool_jobs(registry)
    return [pool_record(pool, active.get(pool.name)) for pool in registry.pools()]


def pool_view(registry: Registry, name: str) -> PoolRecord:
    """One pool; UnknownPool (a 404) if there is none."""
    pool = registry.get_pool(name)
    if pool is None:
        raise UnknownPool(f"no pool {name!r}; see `netinstall pool list`")
    return pool_record(pool, _pool_jobs(registry).get(name))
