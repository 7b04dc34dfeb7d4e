"""SAN boot over iSCSI (SPEC §4 ``use_ibft``, §7 "(iBFT)"; seed 000, "SAN環境からの起動").

With ``use_ibft`` on the command line the ``iscsi`` step runs before the network
step: it reads the iSCSI Boot Firmware Table the firmware published
(``/sys/firmware/ibft``, kernel module ``iscsi_ibft``), brings the NIC it names
up with the address the firmware used, and logs in to the boot target with
``iscsistart`` as the initiator the table names. That NIC is the *storage* NIC:
it is reserved for storage, so the network step never uses it to fetch the
answer file and it never becomes the management interface (``check_storage_nic``).

When the firmware hooked the LUN through several portals (iPXE ``sanhook`` with one
URI per path: the iBFT gets a target entry for each) and the command line has
``device_mapper_multipath``, the step logs in over every path, each over the NIC the
table pairs it with, and the multipath step then builds one map over them
(``paths_of``).

The answer file's ``<primary-disk>iscsi:ibft</primary-disk>`` then is the LUN of
the iBFT's boot target; an RFC 4173 spec (``iscsi:server::port:lun:target``)
names a LUN of the same or another target, reached over the same storage NIC
(``san_device``). The installed dom0 logs in again from the iBFT in its
initramfs (``hypervisor_payload.dom0_config.ISCSI_INITRAMFS``).

The parsing (``read_ibft``, ``parse_lun``, ``session_disks``) is pure over a
sysfs tree, so tests hand in a directory.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from answerfile.model import Disk, DiskKind, IscsiTarget
from common.errors import CommandError, InputError, NetinstallError
from common.process import CommandRunner, run
from installer_core import network

log = logging.getLogger(__name__)

IBFT = Path("/sys/firmware/ibft")
ISCSI_SESSIONS = Path("/sys/class/iscsi_session")
SYS_NET = Path("/sys/class/net")
LOGIN_TIMEOUT = 120.0  # iscsistart retries a refused connection for a while by itself
LUN_TIMEOUT = 30.0  # the SCSI scan of a new session
POLL = 0.5
TPGT = "1"  # the target portal group iscsistart asks for (every common target uses 1)
# iBFT NIC "origin" (iBFT 1.03 §3.5.4, the kernel prints the number)
ORIGIN_DHCP = "3"
UNSET = ipaddress.IPv4Address(0)  # an address field the table leaves empty


@dataclass(frozen=True)
class IbftNic:
    index: int
    mac: str  # lowercase, colons
    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address | None = None
    vlan: int = 0
    dhcp: bool = False  # the firmware got the address by DHCP (it is still the one to use)


@dataclass(frozen=True)
class IbftTarget:
    index: int
    address: str
    port: int
    name: str  # the target's IQN
    lun: int | None  # None: the table's LUN could not be read (see parse_lun)
    nic: int  # the index of the NIC that reaches it
    boot: bool = True  # flagged "firmware boot selected"


@dataclass(frozen=True)
class Ibft:
    initiator: str  # the initiator's IQN
    nics: tuple[IbftNic, ...]
    targets: tuple[IbftTarget, ...]

    def nic(self, index: int) -> IbftNic:
        for nic in self.nics:
            if nic.index == index:
                return nic
        raise NetinstallError(f"the iBFT's target names NIC {index}, which the table lacks")

    @property
    def boot_target(self) -> IbftTarget:
        chosen = [t for t in self.targets if t.boot] or list(self.targets)
        return chosen[0]


@dataclass
class System:
    """What the iSCSI step touches; tests replace each part."""

    runner: CommandRunner = run
    ibft: Path = IBFT
    sessions: Path = ISCSI_SESSIONS
    sys_net: Path = SYS_NET
    sleep: Callable[[float], None] = time.sleep
    dev: Path = Path("/dev")


@dataclass
class SanState:
    """The iSCSI sessions of the run: what the iSCSI step found and attached, and the
    LUNs the plan logs in to later (``san_device``)."""

    ibft: Ibft
    # The iBFT's NICs that are up, by iBFT index -> their names in the installer (ethN,
    # ethN.VLAN). The first is the boot target's.
    storage_nics: dict[int, str]
    logged_in: list[tuple[str, str, int]] = field(default_factory=list)  # (target, address, port)
    disks: dict[str, Path] = field(default_factory=dict)  # answer-file spec -> device

    @property
    def storage_macs(self) -> tuple[str, ...]:
        return tuple(n.mac for n in self.ibft.nics)

    @property
    def storage_names(self) -> tuple[str, ...]:
        """The storage NICs' names in the installer (ethN, ethN.VLAN)."""
        return tuple(self.storage_nics.values())

    @property
    def storage_nic(self) -> str:
        """The boot target's storage NIC."""
        return self.storage_nics[self.ibft.boot_target.nic]

    def log_in(
        self, target: str, address: str, port: int, host: System, nic: int | None = None
    ) -> None:
        """Log in to ``target`` at ``address:port`` over the iBFT's NIC ``nic`` (None: the
        boot target's), once; a route beyond its subnet too."""
        if (target, address, port) in self.logged_in:
            return
        index = self.ibft.boot_target.nic if nic is None else nic
        route_to(address, self.ibft.nic(index), self.storage_nics[index], host)
        login(self.ibft.initiator, target, address, port, host)
        self.logged_in.append((target, address, port))


# --- reading the iBFT (pure over a sysfs tree) -------------------------------------


def _read(directory: Path, name: str) -> str | None:
    try:
        text = (directory / name).read_text().strip()
    except OSError:
        return None
    return text or None


def _flags(directory: Path) -> int:
    text = _read(directory, "flags") or "0"
    try:
        return int(text, 16) if text.startswith("0x") else int(text)
    except ValueError:
        return 0


def parse_lun(text: str | None) -> int | None:
    """The LUN in the kernel's rendering of the iBFT's 8 LUN bytes (each byte ``%x``).

    Single-level SAM addressing (byte 0 is 0, the LUN in byte 1, the rest 0) is what
    every iBFT writer uses for LUNs below 256: ``01000000`` is LUN 1, ``0ff000000``
    LUN 255. Anything else cannot be read back unambiguously: None.
    """
    if text is None or not text.startswith("0") or not text.endswith("000000"):
        return None
    middle = text[1:-6]
    if not middle or len(middle) > 2:
        return None
    try:
        return int(middle, 16)
    except ValueError:
        return None


def _nic(directory: Path) -> IbftNic | None:
    mac, address = _read(directory, "mac"), _read(directory, "ip-addr")
    if mac is None or address is None or address == "::" or address == str(UNSET):
        return None
    prefix = _read(directory, "prefix-len")
    mask = _read(directory, "subnet-mask")
    try:
        interface = ipaddress.IPv4Interface(f"{address}/{prefix or mask or 32}")
        gateway_text = _read(directory, "gateway")
        gateway = (
            ipaddress.IPv4Address(gateway_text)
            if gateway_text and gateway_text != str(UNSET)
            else None
        )
        vlan = int(_read(directory, "vlan") or "0")
        index = int(_read(directory, "index") or directory.name.removeprefix("ethernet"))
    except ValueError as exc:
        raise NetinstallError(f"the iBFT's {directory.name} cannot be read: {exc}") from exc
    return IbftNic(
        index=index,
        mac=mac.lower(),
        address=interface,
        gateway=gateway,
        vlan=vlan,
        dhcp=_read(directory, "origin") == ORIGIN_DHCP,
    )


def _target(directory: Path) -> IbftTarget | None:
    name, address = _read(directory, "target-name"), _read(directory, "ip-addr")
    if name is None or address is None:
        return None
    try:
        return IbftTarget(
            index=int(_read(directory, "index") or directory.name.removeprefix("target")),
            address=address,
            port=int(_read(directory, "port") or "3260"),
            name=name,
            lun=parse_lun(_read(directory, "lun")),
            nic=int(_read(directory, "nic-assoc") or "0"),
            boot=bool(_flags(directory) & 0x2),
        )
    except ValueError as exc:
        raise NetinstallError(f"the iBFT's {directory.name} cannot be read: {exc}") from exc


def read_ibft(root: Path = IBFT) -> Ibft:
    """The iBFT as the kernel's ``iscsi_ibft`` module shows it under ``root``.

    InputError when there is none (``use_ibft`` asked for one) or it names no
    target: the firmware was not set up for iSCSI boot.
    """
    if not root.is_dir():
        raise InputError(
            "use_ibft is on the installer command line, but the firmware published no "
            f"iSCSI Boot Firmware Table ({root} is missing): the firmware is not set up "
            "for iSCSI boot, or it (iPXE sanhook) could not log in to the target; "
            "nothing was written"
        )
    initiator = _read(root / "initiator", "initiator-name")
    nics = tuple(n for d in sorted(root.glob("ethernet*")) if (n := _nic(d)) is not None)
    targets = tuple(t for d in sorted(root.glob("target*")) if (t := _target(d)) is not None)
    problems = []
    if initiator is None:
        problems.append("the iBFT names no initiator")
    if not nics:
        problems.append("the iBFT names no NIC with an address")
    if not targets:
        problems.append("the iBFT names no target")
    if problems or initiator is None:
        raise InputError(f"use_ibft: {'; '.join(problems)}; nothing was written")
    return Ibft(initiator=initiator, nics=nics, targets=targets)


# --- the storage NIC ----------------------------------------------------------------


def bring_up_storage_nic(nic: IbftNic, host: System) -> str:
    """The iBFT's NIC with the firmware's address (no default route: storage only)."""
    name = next((n.name for n in network.list_nics(host.sys_net) if n.mac == nic.mac), None)
    if name is None:
        raise NetinstallError(
            f"the iBFT names the NIC {nic.mac}, which this installer does not see "
            "(a missing driver?)"
        )
    device = name
    host.runner(["ip", "link", "set", "dev", name, "up"])
    if nic.vlan:
        device = f"{name}.{nic.vlan}"
        host.runner(["ip", "link", "add", "link", name, "name", device, "type", "vlan",
                     "id", str(nic.vlan)])  # fmt: skip
        host.runner(["ip", "link", "set", "dev", device, "up"])
    host.runner(["ip", "addr", "replace", str(nic.address), "dev", device])
    how = "by DHCP in the firmware" if nic.dhcp else "set in the firmware"
    log.info("storage NIC %s (%s): %s (%s)", device, nic.mac, nic.address, how)
    return device


def route_to(target: str, nic: IbftNic, device: str, host: System) -> None:
    """A host route to a target beyond the storage subnet, through the iBFT's gateway."""
    try:
        address = ipaddress.IPv4Address(target)
    except ValueError:
        return  # a name: resolved by iscsistart over whatever route there is
    if address in nic.address.network or nic.gateway is None:
        return
    host.runner(["ip", "route", "replace", f"{address}/32", "via", str(nic.gateway),
                 "dev", device])  # fmt: skip


# --- login and the LUN's block device -------------------------------------------------


def login(initiator: str, target: str, address: str, port: int, host: System) -> None:
    """``iscsistart`` logs in to ``target`` at ``address:port`` and leaves the session."""
    argv = ["iscsistart", "-i", initiator, "-t", target, "-g", TPGT, "-a", address,
            "-p", str(port)]  # fmt: skip
    try:
        host.runner(argv, timeout=LOGIN_TIMEOUT)
    except CommandError as exc:
        detail = (exc.stderr.strip().splitlines() or [f"exit status {exc.returncode}"])[-1]
        raise InputError(
            f"iSCSI login to {target} at {address}:{port} as {initiator} failed: {detail}; "
            "nothing was written"
        ) from exc
    log.info("logged in to %s at %s:%d as %s", target, address, port, initiator)


def session_disks(sessions: Path, target: str) -> dict[int, list[str]]:
    """LUN -> the block device names of that LUN in each of ``target``'s sessions (one per
    path), pure over sysfs."""
    found: dict[int, list[str]] = {}
    for session in sorted(sessions.glob("session*"), key=lambda p: (len(p.name), p.name)):
        if _read(session, "targetname") != target:
            continue
        for block in sorted((session / "device").glob("target*/*:*:*:*/block/*")):
            try:
                lun = int(block.parent.parent.name.rsplit(":", 1)[1])
            except (IndexError, ValueError):
                continue
            found.setdefault(lun, []).append(block.name)
    return found


def wait_for_lun(target: str, lun: int | None, host: System, paths: int = 1) -> Path:
    """The block device of ``target``'s ``lun`` (None: its only disk) on the first path,
    once the kernel has it on ``paths`` paths."""
    waited = 0.0
    while True:
        disks = session_disks(host.sessions, target)
        if lun is None and len(disks) == 1:
            lun = next(iter(disks))
        if lun is not None and len(disks.get(lun, ())) >= paths:
            return host.dev / disks[lun][0]
        if waited >= LUN_TIMEOUT:
            break
        host.sleep(POLL)
        waited += POLL
    seen = ", ".join(f"LUN {n} ({' '.join(d)})" for n, d in sorted(disks.items())) or "no disk"
    wanted = f"LUN {lun}" if lun is not None else "exactly one disk"
    over = f" on {paths} paths" if paths > 1 else ""
    raise InputError(
        f"the iSCSI target {target} has no {wanted}{over} (it shows {seen}); nothing was written"
    )


# --- the steps ------------------------------------------------------------------------


def paths_of(ibft: Ibft) -> list[IbftTarget]:
    """The iBFT's targets that are paths to the boot target's LUN: the boot target first,
    then each other portal of the same target and LUN (iPXE sanhook with several URIs
    publishes one target entry per path)."""
    boot = ibft.boot_target
    others = [
        t for t in ibft.targets
        if t is not boot and (t.name, t.lun) == (boot.name, boot.lun)
        and (t.address, t.port) != (boot.address, boot.port)
    ]  # fmt: skip
    return [boot, *others]


def attach_ibft(multipath: bool, system: System | None = None) -> SanState:
    """Step (``use_ibft``): read the iBFT, bring up its NICs, log in to its boot target.

    With ``device_mapper_multipath`` the installer logs in over every path the iBFT names
    (each portal, over the NIC the table pairs it with: one fabric or two), so multipath
    sees the LUN once per path; without it, over the boot target's path alone.
    """
    host = system or System()
    ibft = read_ibft(host.ibft)
    paths = paths_of(ibft)
    if not multipath and len(paths) > 1:
        log.warning(
            "the iBFT names %d paths to the boot LUN, but device_mapper_multipath is off: "
            "the installer uses the first path only",
            len(paths),
        )
        paths = paths[:1]
    nics: dict[int, str] = {}
    for target in paths:
        if target.nic not in nics:
            nics[target.nic] = bring_up_storage_nic(ibft.nic(target.nic), host)
    state = SanState(ibft=ibft, storage_nics=nics)
    refused: list[InputError] = []
    for target in paths:
        try:
            state.log_in(target.name, target.address, target.port, host, nic=target.nic)
        except InputError as exc:
            if len(paths) == 1:
                raise
            refused.append(exc)  # a path down: multipath works with the others
            log.warning("path %s:%d is down, going on without it: %s",
                        target.address, target.port, exc)  # fmt: skip
    if len(refused) == len(paths):
        raise refused[0]
    boot = ibft.boot_target
    up = len(paths) - len(refused)
    disk = wait_for_lun(boot.name, boot.lun, host, paths=up)
    state.disks["iscsi:ibft"] = disk
    over = f" (first of {up} paths)" if up > 1 else ""
    log.info("iBFT boot LUN: %s LUN %s is %s%s", boot.name, boot.lun, disk, over)
    return state


def san_device(
    state: SanState | None, disk: Disk, element: str, system: System | None = None
) -> Path:
    """The block device of an iSCSI disk of the answer file, logged in to when needed."""
    if state is None:
        raise InputError(
            f"{element} {disk.spec!r}: an iSCSI disk needs use_ibft on the installer command "
            "line (the installed system logs in from the firmware's iBFT at boot); "
            "nothing was written"
        )
    if disk.spec in state.disks:
        return state.disks[disk.spec]
    if disk.kind is not DiskKind.ISCSI or disk.iscsi is None:
        raise NetinstallError(f"{element} {disk.spec!r}: the iBFT's LUN was not attached")
    spec: IscsiTarget = disk.iscsi
    host = system or System()
    state.log_in(spec.target, spec.server, spec.port, host)
    device = wait_for_lun(spec.target, spec.lun, host)
    state.disks[disk.spec] = device
    log.info("%s %s is %s", element, disk.spec, device)
    return device
