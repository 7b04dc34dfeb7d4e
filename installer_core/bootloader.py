"""The boot loader (SPEC §7): our own grub.cfg, GRUB for BIOS or UEFI, the EFI boot entry.

grub.cfg is written here, not by update-grub (which would see installer
paths): it finds the root filesystem by UUID, boots Xen with the dom0 kernel,
honours a one-time ``next_entry`` in grubenv (``grub-reboot``) and sources
``/boot/grub/netinstall-installer.cfg``, the dom0 agent's installer entry.

On UEFI GRUB goes to the removable path ``\\EFI\\BOOT\\BOOTX64.EFI``, which
firmware boots from the disk with no NVRAM entry at all; an entry named
``netinstall`` is added too, placed right after the network boot entries so
that the provisioning server keeps the first word. Where efivars cannot be
used (under Xen, for instance) the removable path alone boots the host.

grub-install flushes every file it copies (fsync) and writes a BIOS core image one
O_SYNC sector at a time: with its default of copying all of the platform's 280-odd
modules and a core image of 167 KB (multiboot2 pulls in net, acpi, video and linux),
that was some 330 flushes and 650 synchronous sector writes, most of the step's
6-7.5 s in the lab (each is a flush of the disk; a real disk pays for them too). So
the core image holds only what reads /boot/grub (grub-install adds the partition map,
file system and disk driver it probes for the disk itself), grub-install copies only
those modules, and ``copy_modules`` copies the rest of the platform's modules after it,
unflushed: the unmount step writes them out before ``installed`` is reported. The
modules on the disk are the same files grub-install copies by default; only the
translations (none in the installer image) and the unicode font (for gfxterm, which
our grub.cfg never loads: serial and text console) are left out.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from answerfile.model import BootloaderLocation
from common.errors import CommandError, NetinstallError
from common.firmware import Firmware
from common.process import CommandRunner, run
from installer_core.mounts import is_mounted, mount
from installer_core.plan import BootloaderPlan

log = logging.getLogger(__name__)

ENTRY_LABEL = "netinstall"
EFI_LOADER = "\\EFI\\BOOT\\BOOTX64.EFI"
EFIVARS = Path("/sys/firmware/efi/efivars")
GRUB_LIB = Path("/usr/lib/grub")
# The modules of the core image beside those grub-install probes for (the disk driver,
# the partition map and file system of /boot/grub): what reads /boot/grub on either
# layout. grub.cfg loads the rest (multiboot2, gzio, search, serial) from there.
CORE_MODULES = "part_gpt part_msdos ext2"
PLATFORMS = {Firmware.BIOS: "i386-pc", Firmware.UEFI: "x86_64-efi"}
# bootscrub=1: Xen scrubs the free RAM before dom0 starts, not in the background (its
# default, "idle"). Both keep a reboot's old memory from reaching a guest; the idle scrub
# competes with dom0 for a CPU while dom0 brings the host up: on the lab's one-CPU BIOS
# machine, dom0 up to its SR 103.6 s against 41.6, a normal boot to the agent's check-in
# 172.2 s against 55-65 (hypervisor_payload/dom0/README.md).
XEN_ARGS = (
    "dom0_mem=1024M,max:1024M dom0_max_vcpus=1-2 bootscrub=1 com1=115200,8n1 console=com1,vga"
)
DOM0_ARGS = "ro console=hvc0 net.ifnames=0"
_NETWORK = re.compile(r"PXE|IPv4|IPv6|HTTP|Network|\bNIC\b|MAC\(", re.IGNORECASE)


def grub_cfg(root_uuid: str) -> str:
    """The installed system's grub.cfg: Xen + dom0, and the agent's one-time entry."""
    return f"""# Written by netinstall. The dom0 agent adds netinstall-installer.cfg and
# picks it once with grub-reboot (next_entry in grubenv).
set default=0
if [ -s $prefix/grubenv ]; then
  load_env
fi
if [ "${{next_entry}}" ] ; then
  set default="${{next_entry}}"
  set next_entry=
  save_env next_entry
fi
set timeout=3
serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1
terminal_input serial console
terminal_output serial console
insmod part_gpt
insmod part_msdos
insmod ext2
search --no-floppy --fs-uuid --set=root {root_uuid}
menuentry 'netinstall Xen' --id netinstall-xen {{
  insmod multiboot2
  insmod gzio
  multiboot2 /boot/xen.gz {XEN_ARGS}
  module2 /boot/vmlinuz root=UUID={root_uuid} {DOM0_ARGS}
  module2 /boot/initrd.img
}}
if [ -f /boot/grub/netinstall-installer.cfg ]; then
  source /boot/grub/netinstall-installer.cfg
fi
"""


def grub_install_command(firmware: Firmware, target: Path, disk: Path) -> list[str]:
    platform = PLATFORMS[firmware]
    common = [
        "grub-install",
        f"--target={platform}",
        f"--directory={GRUB_LIB / platform}",
        f"--boot-directory={target / 'boot'}",
        f"--modules={CORE_MODULES}",
        f"--install-modules={CORE_MODULES}",  # copy_modules copies the others, unflushed
        "--locales=",
        "--fonts=",
    ]
    if firmware is Firmware.BIOS:
        return [*common, str(disk)]
    return [*common, f"--efi-directory={target / 'boot/efi'}", "--removable", "--no-nvram"]


def copy_modules(firmware: Firmware, target: Path, lib: Path | None = None) -> int:
    """The platform's modules grub-install left out (``--install-modules``) into
    /boot/grub/<platform>, without a flush each; returns how many were copied."""
    platform = PLATFORMS[firmware]
    source, into = (lib or GRUB_LIB) / platform, target / "boot/grub" / platform
    if not into.is_dir():
        raise NetinstallError(f"grub-install made no {into}")
    copied = 0
    for module in sorted(source.glob("*.mod")):
        if not (into / module.name).exists():
            shutil.copyfile(module, into / module.name)
            copied += 1
    return copied


def write_grub_config(target: Path, root_uuid: str, runner: CommandRunner) -> None:
    grub = target / "boot/grub"
    grub.mkdir(parents=True, exist_ok=True)
    (grub / "grub.cfg").write_text(grub_cfg(root_uuid), encoding="utf-8")
    (grub / "grubenv").unlink(missing_ok=True)
    runner(["grub-editenv", str(grub / "grubenv"), "create"], timeout=60)


# --- the EFI boot entry ------------------------------------------------------


@dataclass(frozen=True)
class BootEntry:
    number: str  # four hex digits, upper case
    label: str
    path: str  # the device path, "" when efibootmgr printed none
    active: bool = True

    @property
    def is_network(self) -> bool:
        return bool(_NETWORK.search(f"{self.label} {self.path}"))


@dataclass(frozen=True)
class BootConfig:
    order: tuple[str, ...]
    entries: tuple[BootEntry, ...]


_ENTRY = re.compile(r"^Boot([0-9A-Fa-f]{4})(\*?)\s(.*)$")


def parse_efibootmgr(text: str) -> BootConfig:
    """``efibootmgr -v`` output: BootOrder and each BootXXXX label and device path."""
    order: tuple[str, ...] = ()
    entries = []
    for line in text.splitlines():
        if line.startswith("BootOrder:"):
            order = tuple(n.strip().upper() for n in line.split(":", 1)[1].split(",") if n.strip())
            continue
        match = _ENTRY.match(line)
        if match is None:
            continue
        label, _, path = match[3].partition("\t")
        entries.append(BootEntry(match[1].upper(), label.strip(), path.strip(), match[2] == "*"))
    return BootConfig(order, tuple(entries))


def reorder(config: BootConfig, new: str) -> list[str]:
    """BootOrder with ``new`` right after the last network entry (first when there is none)."""
    network = {e.number for e in config.entries if e.is_network}
    order = [n for n in config.order if n != new]
    last = max((i for i, n in enumerate(order) if n in network), default=-1)
    return [*order[: last + 1], new, *order[last + 1 :]]


def efivars_usable(runner: CommandRunner, efivars: Path | None = None) -> bool:
    """Mount efivarfs if the firmware offers it; False when there is none (under Xen)."""
    efivars = efivars or EFIVARS
    if not efivars.parent.is_dir():
        return False
    if not is_mounted(efivars) and not (efivars.is_dir() and any(efivars.iterdir())):
        try:
            mount(runner, "efivarfs", efivars, fstype="efivarfs")
        except CommandError as exc:
            log.info("efivarfs cannot be mounted: %s", exc)
            return False
    return True


def write_boot_entry(disk: Path, esp_number: int, runner: CommandRunner) -> None:
    """Replace any old ``netinstall`` entry with one for the disk's ESP, after the NICs."""
    before = parse_efibootmgr(runner(["efibootmgr", "-v"], timeout=60).stdout)
    for entry in before.entries:
        if entry.label == ENTRY_LABEL:
            runner(["efibootmgr", "-q", "-b", entry.number, "-B"], timeout=60)
    create = ["efibootmgr", "-q", "-c", "-d", str(disk), "-p", str(esp_number)]
    runner([*create, "-L", ENTRY_LABEL, "-l", EFI_LOADER], timeout=60)
    after = parse_efibootmgr(runner(["efibootmgr", "-v"], timeout=60).stdout)
    new = next((e.number for e in after.entries if e.label == ENTRY_LABEL), None)
    if new is None:
        raise NetinstallError("efibootmgr created no netinstall entry")
    order = reorder(after, new)
    runner(["efibootmgr", "-q", "-o", ",".join(order)], timeout=60)
    log.info("EFI boot entry Boot%s added; BootOrder %s", new, ",".join(order))


def _nvram(boot: BootloaderPlan, runner: CommandRunner) -> None:
    if boot.esp_number is None:
        raise NetinstallError("UEFI install without an EFI system partition in the plan")
    if not efivars_usable(runner):
        log.info(
            "EFI variables are not available here (under Xen, for one): no NVRAM entry; "
            "the firmware boots %s from the disk",
            EFI_LOADER,
        )
        return
    try:
        write_boot_entry(boot.disk, boot.esp_number, runner)
    except CommandError as exc:
        log.warning("the EFI boot entry was not written (%s); %s still boots", exc, EFI_LOADER)


def install_bootloader(
    boot: BootloaderPlan, target: Path, root_uuid: str, runner: CommandRunner = run
) -> None:
    """Step: GRUB for the firmware the installer booted with, our grub.cfg, the EFI entry."""
    if boot.location is BootloaderLocation.PARTITION:
        log.warning("bootloader location=partition is not supported: GRUB goes to the disk")
    runner(grub_install_command(boot.firmware, target, boot.disk), timeout=600)
    copied = copy_modules(boot.firmware, target)
    log.info("copied %d more GRUB modules to /boot/grub/%s", copied, PLATFORMS[boot.firmware])
    write_grub_config(target, root_uuid, runner)
    log.info("GRUB (%s) installed on %s", boot.firmware.value, boot.disk)
    if boot.firmware is Firmware.UEFI:
        if boot.write_boot_entry:
            _nvram(boot, runner)
        else:
            log.info("write-boot-entry=false: no EFI boot entry; %s boots", EFI_LOADER)
