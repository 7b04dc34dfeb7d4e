"""Facts only the booted system knows: the ``running`` report's ``RunningFacts`` and the
check-in's multipath maps (both declared in ``common.protocol.messages``)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from common.errors import NetinstallError
from common.process import CommandRunner
from common.protocol.messages import Address, MultipathMap, PathState, RunningFacts, SrType

from .layout import Layout

log = logging.getLogger(__name__)

ADDRESSES = ("ip", "-o", "-4", "addr", "show", "scope", "global")


@dataclass(frozen=True)
class XenInfo:
    xen_version: str
    host_memory_mib: int


def parse_xl_info(text: str) -> XenInfo:
    """Host memory (``total_memory``, MiB) and the Xen version from ``xl info``."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    missing = [k for k in ("total_memory", "xen_major", "xen_minor") if k not in fields]
    if missing:
        raise NetinstallError(f"xl info: no {', '.join(missing)} in its output")
    try:
        memory = int(fields["total_memory"])
    except ValueError:
        raise NetinstallError(
            f"xl info: total_memory is not a number: {fields['total_memory']!r}"
        ) from None
    version = f"{fields['xen_major']}.{fields['xen_minor']}{fields.get('xen_extra', '')}"
    return XenInfo(version, memory)


def parse_release(text: str) -> dict[str, str]:
    """The KEY=VALUE pairs of ``/etc/netinstall-release`` (os-release syntax, quotes removed)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        key, sep, value = line.partition("=")
        if not sep or line.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def parse_addresses(text: str) -> tuple[tuple[str, str], ...]:
    """(interface, address/prefix) pairs from ``ip -o -4 addr show scope global``."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "inet":
            found.append((fields[1].rstrip(":"), fields[3]))
    return tuple(found)


MULTIPATH_MAPS = ("multipathd", "show", "maps", "json")


def path_state(path: dict[str, object]) -> str:
    """A path's state as reported: ``failed`` once the kernel has failed it (dm_st), else
    its checker's state (chk_st). multipathd's checker runs every few seconds, so for a
    while after a path is lost its chk_st may still say ``ready`` of a path that the
    kernel no longer sends I/O to."""
    if path.get("dm_st") == "failed":
        return "failed"
    return str(path.get("chk_st", path.get("dm_st")))


def parse_multipath(text: str) -> tuple[MultipathMap, ...]:
    """Each map of ``multipathd show maps json``: its name, WWID and paths with their states."""
    try:
        document = json.loads(text)
    except ValueError:
        raise NetinstallError("multipathd show maps json: the output is not JSON") from None
    maps = document.get("maps") if isinstance(document, dict) else None
    found = []
    for entry in maps if isinstance(maps, list) else []:
        if not isinstance(entry, dict):
            continue
        paths = tuple(
            PathState(str(path.get("dev")), path_state(path))
            for group in entry.get("path_groups") or []
            if isinstance(group, dict)
            for path in group.get("paths") or []
            if isinstance(path, dict)
        )
        found.append(MultipathMap(str(entry.get("name")), str(entry.get("uuid")), paths))
    return tuple(found)


def multipath_maps(runner: CommandRunner) -> tuple[MultipathMap, ...]:
    """The multipath maps and their paths; none when multipathd is not running."""
    try:
        return parse_multipath(runner(MULTIPATH_MAPS).stdout)
    except NetinstallError as exc:  # CommandError too: multipathd not running, or no maps
        log.info("no multipath report: %s", exc)
        return ()


def read_payload_version(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return parse_release(text).get("VERSION") or None


def gather(
    runner: CommandRunner,
    layout: Layout,
    *,
    sr_uuid: str | None,
    sr_type: SrType | None,
    fallback_version: str,
) -> RunningFacts:
    xen = parse_xl_info(runner(["xl", "info"]).stdout)
    version = read_payload_version(layout.release_file)
    if version is None:
        log.warning(
            "%s has no VERSION=; reporting the installer's payload version %s",
            layout.release_file,
            fallback_version,
        )
        version = fallback_version
    return RunningFacts(
        xen_version=xen.xen_version,
        host_memory_mib=xen.host_memory_mib,
        cmdline=layout.proc_cmdline.read_text(encoding="utf-8").strip(),
        payload_version=version,
        sr_uuid=sr_uuid,
        sr_type=sr_type,
        hostname=layout.kernel_hostname.read_text(encoding="utf-8").strip(),
        addresses=tuple(
            Address(dev, cidr) for dev, cidr in parse_addresses(runner(ADDRESSES).stdout)
        ),
    )
