"""Installing onto a multipathed LUN (SPEC §4 ``device_mapper_multipath``, §7 "(multipath)").

With ``device_mapper_multipath=yes`` the ``multipath`` step runs before the
network step (after the iSCSI login, when ``use_ibft`` is there too): it writes
the installer's ``/etc/multipath.conf`` (every path device that is not
blacklisted becomes a map, so a LUN seen through one path still gets one),
builds the maps (``multipath``) and starts ``multipathd`` to watch the paths. No
map at all is one clear sentence, before anything is written.

The answer file names the disk as usual (``sda``, a by-id link, ``iscsi:ibft``,
or the map itself); ``disk_for`` turns a path device into the map holding it.
The installer partitions ``/dev/mapper/<map>``; the partitions are kpartx's
``<map>-part<N>`` (``partitioning.mkfs.partition_device``). The installed dom0
gets the map's WWID (``/etc/multipath/wwids``, in its root and its initramfs),
so it builds the map at boot even before a second path shows up, and the map's
name (``bindings``, used where ``user_friendly_names`` is switched on); its SR
is named through the partition's device-mapper UUID, the same on every path.

``read_map`` and ``holder`` are pure over a sysfs tree.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import cpio
from common.errors import CommandError, InputError, NetinstallError
from common.process import CommandRunner, run

log = logging.getLogger(__name__)

SYS_BLOCK = Path("/sys/block")
MPATH_UUID_PREFIX = "mpath-"
# The installer's configuration: what the operator asked for is a multipath install,
# so every LUN with a WWID becomes a map, one path or several.
INSTALLER_CONF = """\
# netinstall installer: device_mapper_multipath=yes
defaults {
	user_friendly_names yes
	find_multipaths greedy
}
"""


@dataclass(frozen=True)
class MultipathMap:
    name: str  # mpatha: /dev/mapper/<name>
    uuid: str  # device-mapper UUID, mpath-<wwid>
    paths: tuple[str, ...]  # the path devices (sda, sdb)

    @property
    def wwid(self) -> str:
        return self.uuid.removeprefix(MPATH_UUID_PREFIX)

    @property
    def device(self) -> Path:
        return Path("/dev/mapper") / self.name

    def partition_uuid_link(self, number: int) -> str:
        """The partition's /dev/disk/by-id name, the same on every path and every boot."""
        return f"/dev/disk/by-id/dm-uuid-part{number}-{self.uuid}"


@dataclass
class System:
    """What the multipath step touches; tests replace each part."""

    runner: CommandRunner = run
    sys_block: Path = SYS_BLOCK
    etc: Path = Path("/etc")
    sleep: Callable[[float], None] = lambda _s: None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def read_map(dm: Path) -> MultipathMap | None:
    """The multipath map of ``/sys/block/dm-N`` (None: another kind of dm device)."""
    uuid = _read(dm / "dm" / "uuid")
    name = _read(dm / "dm" / "name")
    if uuid is None or name is None or not uuid.startswith(MPATH_UUID_PREFIX):
        return None
    paths = (
        tuple(sorted(p.name for p in (dm / "slaves").iterdir())) if (dm / "slaves").is_dir() else ()
    )
    return MultipathMap(name=name, uuid=uuid, paths=paths)


def all_maps(sys_block: Path) -> list[MultipathMap]:
    return [m for dm in sorted(sys_block.glob("dm-*")) if (m := read_map(dm)) is not None]


def holder(device: Path, sys_block: Path) -> MultipathMap | None:
    """The map ``device`` is (``/dev/mapper/mpatha``, ``/dev/dm-0``) or is a path of."""
    name = device.resolve().name if device.is_symlink() else device.name
    own = read_map(sys_block / name)
    if own is not None:
        return own
    for dm in sorted((sys_block / name / "holders").glob("dm-*")):
        if (found := read_map(sys_block / dm.name)) is not None:
            return found
    return None


def _describe(maps: list[MultipathMap]) -> str:
    return ", ".join(f"{m.name} over {', '.join(m.paths) or 'no path'}" for m in maps) or "none"


def start(system: System | None = None) -> tuple[MultipathMap, ...]:
    """Step (``device_mapper_multipath``): the installer's multipath maps, watched by
    multipathd; the maps are returned."""
    host = system or System()
    conf = host.etc / "multipath.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(INSTALLER_CONF, encoding="utf-8")
    try:
        host.runner(["multipath", "-v2"], timeout=120)
        host.runner(["multipathd"], timeout=60)
    except CommandError as exc:
        raise NetinstallError(f"multipath could not be started: {exc}") from exc
    try:
        host.runner(["udevadm", "settle", "--timeout=30"], timeout=60)
    except CommandError as exc:
        log.info("udevadm settle: %s", exc)
    maps = all_maps(host.sys_block)
    if not maps:
        raise InputError(
            "device_mapper_multipath=yes, but multipath found no multipath device (no disk "
            "with a WWID is reachable); remove device_mapper_multipath or check the SAN "
            "paths; nothing was written"
        )
    log.info("multipath maps: %s", _describe(maps))
    return tuple(maps)


def disk_for(
    device: Path, element: str, enabled: bool, sys_block: Path = SYS_BLOCK
) -> tuple[Path, MultipathMap | None]:
    """``device``, or with ``device_mapper_multipath`` (``enabled``) the map that holds it,
    with the map; InputError when no map does."""
    if not enabled:
        return device, None
    found = holder(device, sys_block)
    if found is None:
        raise InputError(
            f"{element} {device}: device_mapper_multipath=yes, but no multipath device holds "
            f"it (maps: {_describe(all_maps(sys_block))}); nothing was written"
        )
    log.info("%s %s is multipath map %s (paths %s)", element, device, found.name, found.paths)
    return found.device, found


def dom0_files(found: MultipathMap) -> dict[str, str]:
    """dom0's multipath state for the root LUN: path -> text (pure)."""
    return {
        "etc/multipath/wwids": (
            f"# Written by netinstall: the multipathed LUN dom0 boots from.\n/{found.wwid}/\n"
        ),
        "etc/multipath/bindings": (
            f"# Written by netinstall: the root LUN's map name.\n{found.name} {found.wwid}\n"
        ),
    }


def overlay(files: dict[str, str], mtime: int = 0) -> bytes:
    """``files`` as a newc cpio archive with their directories, for an initramfs."""
    directories = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
    entries = [cpio.directory(d, mtime) for d in sorted(directories)]
    entries += [cpio.regular(p, text.encode(), mtime) for p, text in sorted(files.items())]
    stream = io.BytesIO()
    cpio.write(entries, stream)
    return stream.getvalue()


def append_to_initrd(initrd: Path, archive: bytes) -> None:
    """Append ``archive`` to the initramfs file ``initrd``, 4-byte aligned (the kernel
    unpacks concatenated archives, compressed or not, and skips zero padding)."""
    with initrd.open("r+b") as stream:
        stream.seek(0, io.SEEK_END)
        stream.write(b"\0" * (-stream.tell() % 4) + archive)


def write_dom0_config(found: MultipathMap | None, root: Path) -> None:
    """The installed dom0 builds the map of its root LUN, whatever paths it sees.

    The files go into dom0's root and into its initramfs (what ``update-initramfs``
    would copy there): with the WWID known, the initramfs treats each path as a path
    from the first one on, so the root filesystem is found on the map's partition,
    never on a path device the map holds.
    """
    if found is None:
        return
    files = dom0_files(found)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    initrd = root / "boot/initrd.img"
    if not initrd.is_file():
        raise NetinstallError(f"{initrd} is missing: dom0's initramfs cannot learn the map")
    append_to_initrd(initrd, overlay(files))
    log.info("dom0: multipath map %s for WWID %s (root and initramfs)", found.name, found.wwid)
