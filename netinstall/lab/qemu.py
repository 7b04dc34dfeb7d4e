"""The lab's test machine: QEMU command lines (pure) and its disk and firmware files.

Both machines network-boot first and fall back to their disk (``bootindex`` 1 on the
NIC, 2 on the disk), as a real server set to network-first would:

* BIOS: SeaBIOS, an e1000 NIC with QEMU's default iPXE ROM (which runs
  ``pxelinux.0``); ``localboot 0`` makes SeaBIOS move on to the disk.
* UEFI: q35 + OVMF (a private copy of the variable store), a virtio-net NIC with
  an empty ``romfile=`` so OVMF's own driver and PXE client load ``grubx64.efi``
  as real firmware would (an e1000 without its iPXE ROM has no EFI driver at all:
  OVMF skips the network); PXE over IPv6 is switched off (it would wait ~60 s).
  ``http_boot``: OVMF's PXE over IPv4 is switched off too (fw_cfg
  ``IPv4PXESupport``), so the NIC's first boot option is OVMF's HTTP boot
  ("UEFI HTTPv4", HttpBootDxe, present in Debian's OVMF_CODE_4M.fd): it asks DHCP
  with vendor class HTTPClient and loads the URL it is given, with no TFTP at all.

A machine powered on through the lab's BMC (``lab/bmc.py``) with a boot override that
is not the network starts disk first instead (``network_first``: the disk's
``bootindex`` 1, the NIC's 2); the lab's IPMI BMC reads the power from a QMP socket
(``qmp``), and the lab reads why QEMU ended (a guest reset or power-off) from another
(``events``, lab/shutdowns.py).

No ``-no-reboot``: the installer reboots into the installed system. ``-accel tcg``
always (KVM dies inside the firmware on these machines); the default CPU model.

A reboot is a power cycle (``-action reboot=shutdown``): when the guest resets the
machine QEMU exits, and the lab (``Follower``) starts the same command line again, with
the console file appended to. A reset inside one QEMU keeps TCG's translation cache, and
the next boot pays for every cached block it writes over (``floor.py`` has the figures);
a real server's reboot carries nothing over. The multipath machine keeps resets: its
scenario unplugs a path on the monitor, which a new QEMU would plug back in.

The RAM is a ``memory-backend-ram`` with ``prealloc=on``: QEMU backs all of it before the
firmware starts, as real RAM is there at power-on: 1.0 s for 3 GiB, in small pages
(``no_huge_pages``: QEMU asks for transparent huge pages, and on a host that has run for
a while each costs the kernel a compaction: 7.2 s from QEMU's start to SeaBIOS's first
line, against 0.05 s without preallocation). Without it the first
touch of each guest page costs a host page fault under TCG, and Xen's boot scrub
(``bootscrub=1``) of the RAM the installer never touched took 12.5 s on the BIOS
machine's first boot from disk, against 0.5 s on a power-on with the RAM backed
(measured on the console's timed log, one install).
"""

from __future__ import annotations

import ctypes
import shutil
from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError
from common.firmware import Firmware

FIRMWARES: tuple[Firmware, ...] = tuple(Firmware)
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
DISK_SIZE = 60 * 2**30  # sparse
MEMORY_MIB = 3072  # the installer boots with dom0_mem=2048M
# The machine's emulated CPUs (``-smp``). TCG runs one host thread per vCPU, but two made
# the BIOS demo slower in every phase on this 2-core host (installer up 58.7 s against
# 20.7-40.6, the bootloader step 16.7 s against 8.6-9.1, dom0 up to SR created 111 s against
# 43-51; extract-root no faster, 23.8 s against 22.3): see the README's install-time lines.
CPUS = 1
BASE_MAC = "52:54:00:77:00:"
MAC_SUFFIX = {"bios": "01", "uefi": "02"}  # two machines may run side by side
# OVMF has a driver of its own for virtio-net, none for e1000 (whose EFI driver is iPXE's).
NIC = {"bios": "e1000", "uefi": "virtio-net-pci"}
MACHINE_TYPE = {"bios": "pc", "uefi": "q35"}
PREALLOC_THREADS = 2  # this host's cores
PR_SET_THP_DISABLE = 41  # prctl(2)


def lab_mac(firmware: Firmware) -> str:
    """The fixed MAC of the lab machine for ``firmware``."""
    return BASE_MAC + MAC_SUFFIX[firmware]


@dataclass(frozen=True)
class Machine:
    firmware: Firmware
    mac: str
    disk: Path  # raw image
    serial: Path  # the serial console, written by QEMU
    monitor: Path  # a unix socket: the QEMU monitor
    tap: str | None = None  # the NIC's tap device (the namespace network)
    netdev: str | None = None  # else a whole -netdev value (user-mode networking)
    ovmf_vars: Path | None = None  # UEFI: this machine's copy of OVMF_VARS
    console: Path | None = None  # a unix socket for typing on the serial console (lab.shell)
    # SAN scenarios: a second NIC on the storage network, and no local disk (``disk`` is
    # then the image the lab's iSCSI target exports).
    storage_tap: str | None = None
    storage_mac: str | None = None
    local_disk: bool = True
    multipath: bool = False  # the disk as two SCSI paths (PATHS) to one LUN, not virtio-blk
    memory_mib: int = MEMORY_MIB
    cpus: int = CPUS
    http_boot: bool = False  # UEFI: boot the NIC by OVMF's HTTP boot, not its PXE client
    binary: str = "qemu-system-x86_64"
    # A power-on through the lab's BMC (lab/bmc.py) whose boot override is not the network
    # starts the machine disk first; every other start is network first, as above.
    network_first: bool = True
    qmp: Path | None = None  # a unix socket for QMP (the lab's IPMI BMC reads the power)
    events: Path | None = None  # another, the lab's own: why QEMU ended (lab/shutdowns.py)

    def __post_init__(self) -> None:
        if self.firmware not in FIRMWARES:
            raise InputError(f"firmware {self.firmware!r} is not one of {', '.join(FIRMWARES)}")
        if self.firmware == "uefi" and self.ovmf_vars is None:
            raise InputError("a UEFI machine needs its own copy of the OVMF variable store")
        if self.http_boot and self.firmware != "uefi":
            raise InputError("UEFI HTTP Boot needs a UEFI machine (OVMF's HttpBootDxe)")
        if self.cpus < 1:
            raise InputError(f"a machine needs at least one CPU, not {self.cpus}")
        if (self.storage_tap is None) != (self.storage_mac is None):
            raise InputError("a storage NIC needs both its tap and its MAC")

    @property
    def reboot_power_cycles(self) -> bool:
        """A guest reboot ends QEMU, and the lab powers the machine on again (not multipath:
        a new QEMU would bring back the path its scenario unplugged)."""
        return not self.multipath


def argv(machine: Machine) -> list[str]:
    """The QEMU command line for ``machine`` (pure)."""
    args = [
        machine.binary,
        "-accel", "tcg",
        "-m", str(machine.memory_mib),
        # The host backs the RAM before the firmware starts (see above).
        "-object", f"memory-backend-ram,id=ram0,size={machine.memory_mib}M,prealloc=on,"
        f"prealloc-threads={PREALLOC_THREADS}",
        "-machine", f"{MACHINE_TYPE[machine.firmware]},memory-backend=ram0",
        "-smp", str(machine.cpus),
        "-display", "none",
        *_serial(machine),
        "-monitor", f"unix:{machine.monitor},server=on,wait=off",
        *(["-qmp", f"unix:{machine.qmp},server=on,wait=off"] if machine.qmp else []),
        *(["-qmp", f"unix:{machine.events},server=on,wait=off"] if machine.events else []),
        "-name", f"netinstall-lab-{machine.firmware}",
    ]  # fmt: skip
    if machine.reboot_power_cycles:
        args += ["-action", "reboot=shutdown"]
    nic_index, disk_index = (1, 2) if machine.network_first else (2, 1)
    nic = f"{NIC[machine.firmware]},netdev=n0,mac={machine.mac},bootindex={nic_index}"
    if machine.firmware == "uefi":
        args += [
            "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,file={machine.ovmf_vars}",
            "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n",
        ]  # fmt: skip
        if machine.http_boot:
            args += ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n"]
        nic += ",romfile="  # OVMF's own PXE client, not iPXE's EFI ROM
    if machine.tap is not None:
        args += ["-netdev", f"tap,id=n0,ifname={machine.tap},script=no,downscript=no"]
    elif machine.netdev is not None:
        args += ["-netdev", machine.netdev]
    args += ["-device", nic]
    if machine.storage_tap is not None:
        # No boot ROM of its own: the NIC the firmware boots from drives both (iPXE).
        args += [
            "-netdev", f"tap,id=n1,ifname={machine.storage_tap},script=no,downscript=no",
            "-device", f"{NIC[machine.firmware]},netdev=n1,mac={machine.storage_mac},romfile=",
        ]  # fmt: skip
    if machine.local_disk and machine.multipath:
        args += multipath_disk(machine.disk)
    elif machine.local_disk:
        args += [
            "-drive", f"file={machine.disk},if=none,id=d0,format=raw,discard=unmap",
            "-device", f"virtio-blk-pci,drive=d0,bootindex={disk_index}",
        ]  # fmt: skip
    return args


# The two paths of the multipath scenario: one image behind two controllers, one LUN
# identity (serial and WWN), so the guest's multipath sees two paths to the same disk.
PATHS = ("path0", "path1")
LUN_SERIAL = "NETINSTALL-LAB-LUN"
LUN_WWN = "0x5000c50015ea71ac"


def multipath_disk(disk: Path) -> list[str]:
    """``disk`` as one SCSI disk per path, each on a virtio-scsi controller of its own; the
    firmware boots the first (``device_del PATH`` on the monitor removes one)."""
    args: list[str] = []
    for number, path in enumerate(PATHS):
        boot = f",bootindex={2 + number}"
        args += [
            "-drive", f"file={disk},if=none,id=d{number},format=raw,discard=unmap",
            "-device", f"virtio-scsi-pci,id=scsi{number}",
            "-device", f"scsi-hd,bus=scsi{number}.0,drive=d{number},id={path},"
            f"serial={LUN_SERIAL},wwn={LUN_WWN},share-rw=on{boot}",
        ]  # fmt: skip
    return args


def _serial(machine: Machine) -> list[str]:
    """The serial port: a log file, or a socket to type on that logs to the same file."""
    if machine.console is None:  # appended to: a power-cycled machine's console goes on
        return [
            "-chardev", f"file,id=con0,path={machine.serial},append=on",
            "-serial", "chardev:con0",
        ]  # fmt: skip
    return [
        "-chardev",
        f"socket,id=con0,path={machine.console},server=on,wait=off,"
        f"logfile={machine.serial},logappend=on",
        "-serial", "chardev:con0",
    ]  # fmt: skip


def no_huge_pages() -> None:
    """Run in QEMU's process before it starts (``services.Child(before=...)``): no
    transparent huge pages for it or what it executes (inherited over exec), so that
    backing its RAM does not wait on the kernel's memory compaction."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)


def make_disk(path: Path, size: int = DISK_SIZE) -> None:
    """A sparse raw disk of ``size`` bytes (replaces an existing file)."""
    with path.open("wb") as stream:
        stream.truncate(size)


def copy_ovmf_vars(path: Path) -> None:
    """A private, writable copy of OVMF's empty variable store."""
    if not OVMF_CODE.is_file() or not OVMF_VARS.is_file():
        raise InputError(f"{OVMF_CODE} or {OVMF_VARS} is missing: install the ovmf package")
    shutil.copyfile(OVMF_VARS, path)
