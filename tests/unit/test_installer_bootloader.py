"""The boot loader step: grub.cfg, grub-install commands, the EFI entry and BootOrder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from answerfile.model import Bootloader
from common.errors import NetinstallError
from common.firmware import Firmware
from common.process import Completed
from installer_core import bootloader, planning
from installer_core.plan import BootloaderPlan
from partitioning.model import DiskFacts, GiB
from tests.unit.test_installer_fakes import answer_for, make_plan

OVMF = "".join(
    line + "\n"
    for line in (
        "BootCurrent: 0001",
        "Timeout: 0 seconds",
        "BootOrder: 0001,0002,0003,0000,0004",
        "Boot0000* UiApp\tFvVol(7cb8bdc9-f8eb-4f34)/FvFile(462caa21-7614-4503)",
        "Boot0001* UEFI PXEv4 (MAC:525400123456)\tPciRoot(0x0)/Pci(0x3,0x0)"
        "/MAC(525400123456,0x1)/IPv4(0.0.0.0,0x0,DHCP,0.0.0.0,0.0.0.0,0.0.0.0)",
        "Boot0002* UEFI HTTPv4 (MAC:525400123456)\tPciRoot(0x0)/Pci(0x3,0x0)"
        "/MAC(525400123456,0x1)/IPv4(0.0.0.0)/Uri()",
        "Boot0003* UEFI QEMU HARDDISK QM00001 \tPciRoot(0x0)/Pci(0x1,0x1)/Ata(0x0)",
        "Boot0004* EFI Internal Shell\tFvVol(7cb8bdc9)/FvFile(7c04a583)",
    )
)
ROOT = "0c5f2f1e-0000-4000-8000-123456789abc"


class FakeRunner:
    def __init__(self, respond: Callable[[tuple[str, ...]], str] | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.respond = respond or (lambda argv: "")

    def __call__(self, argv: Any, **kwargs: Any) -> Completed:
        args = tuple(str(a) for a in argv)
        self.calls.append(args)
        return Completed(args, 0, self.respond(args), "")


def test_grub_cfg_text() -> None:
    text = bootloader.grub_cfg(ROOT)
    assert f"search --no-floppy --fs-uuid --set=root {ROOT}\n" in text
    assert (
        "menuentry 'netinstall Xen' --id netinstall-xen {\n"
        "  insmod multiboot2\n"
        "  insmod gzio\n"
        "  multiboot2 /boot/xen.gz dom0_mem=1024M,max:1024M dom0_max_vcpus=1-2 bootscrub=1 "
        "com1=115200,8n1 console=com1,vga\n"
        f"  module2 /boot/vmlinuz root=UUID={ROOT} ro console=hvc0 net.ifnames=0\n"
        "  module2 /boot/initrd.img\n"
        "}\n"
    ) in text
    assert (
        'if [ "${next_entry}" ] ; then\n'
        '  set default="${next_entry}"\n'
        "  set next_entry=\n"
        "  save_env next_entry\n"
        "fi\n"
    ) in text
    assert text.index("  load_env") < text.index('if [ "${next_entry}" ]')
    assert text.endswith(
        "if [ -f /boot/grub/netinstall-installer.cfg ]; then\n"
        "  source /boot/grub/netinstall-installer.cfg\n"
        "fi\n"
    )
    assert "serial --unit=0 --speed=115200" in text
    assert "set timeout=3\n" in text
    assert text.startswith("#")
    assert "set default=0\n" in text


def test_grub_install_commands() -> None:
    bios = bootloader.grub_install_command(Firmware.BIOS, Path("/mnt/t"), Path("/dev/sda"))
    lean = [
        "--modules=part_gpt part_msdos ext2",
        "--install-modules=part_gpt part_msdos ext2",
        "--locales=",
        "--fonts=",
    ]
    assert bios == [
        "grub-install",
        "--target=i386-pc",
        "--directory=/usr/lib/grub/i386-pc",
        "--boot-directory=/mnt/t/boot",
        *lean,
        "/dev/sda",
    ]
    uefi = bootloader.grub_install_command(Firmware.UEFI, Path("/mnt/t"), Path("/dev/sda"))
    assert uefi == [
        "grub-install",
        "--target=x86_64-efi",
        "--directory=/usr/lib/grub/x86_64-efi",
        "--boot-directory=/mnt/t/boot",
        *lean,
        "--efi-directory=/mnt/t/boot/efi",
        "--removable",
        "--no-nvram",
    ]


@pytest.fixture
def grub_lib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A platform directory of each firmware: three modules and a non-module file."""
    lib = tmp_path / "lib/grub"
    for platform in bootloader.PLATFORMS.values():
        (lib / platform).mkdir(parents=True)
        for name in ("ext2.mod", "gzio.mod", "multiboot2.mod", "kernel.img"):
            (lib / platform / name).write_text(f"{platform}/{name}")
    monkeypatch.setattr(bootloader, "GRUB_LIB", lib)
    return lib


def _grub_install(target: Path) -> Callable[[tuple[str, ...]], str]:
    """What a fake grub-install leaves: the platform directory with the core's modules."""

    def respond(argv: tuple[str, ...]) -> str:
        if argv[0] == "grub-install":
            platform = argv[1].removeprefix("--target=")
            (target / "boot/grub" / platform).mkdir(parents=True)
            (target / "boot/grub" / platform / "ext2.mod").write_text("from grub-install")
        return ""

    return respond


@pytest.mark.parametrize("firmware", [Firmware.BIOS, Firmware.UEFI])
def test_copy_modules_adds_what_grub_install_left_out(
    tmp_path: Path, grub_lib: Path, firmware: Firmware
) -> None:
    target = tmp_path / "target"
    _grub_install(target)(("grub-install", f"--target={bootloader.PLATFORMS[firmware]}"))
    into = target / "boot/grub" / bootloader.PLATFORMS[firmware]
    assert bootloader.copy_modules(firmware, target) == 2
    assert sorted(p.name for p in into.iterdir()) == ["ext2.mod", "gzio.mod", "multiboot2.mod"]
    assert (into / "ext2.mod").read_text() == "from grub-install"  # not copied again
    assert (into / "gzio.mod").read_text() == f"{bootloader.PLATFORMS[firmware]}/gzio.mod"
    assert bootloader.copy_modules(firmware, target) == 0


def test_copy_modules_needs_grub_installs_directory(tmp_path: Path, grub_lib: Path) -> None:
    with pytest.raises(NetinstallError, match=r"grub-install made no .*i386-pc"):
        bootloader.copy_modules(Firmware.BIOS, tmp_path)


def test_parse_efibootmgr() -> None:
    config = bootloader.parse_efibootmgr(OVMF)
    assert config.order == ("0001", "0002", "0003", "0000", "0004")
    assert [e.number for e in config.entries if e.is_network] == ["0001", "0002"]
    assert config.entries[3].label == "UEFI QEMU HARDDISK QM00001"
    assert config.entries[0].path.startswith("FvVol(")


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (("0001", "0002", "0003", "0000"), ["0001", "0002", "0005", "0003", "0000"]),
        (("0003", "0001", "0000"), ["0003", "0001", "0005", "0000"]),  # after the last NIC
        (("0003", "0000"), ["0005", "0003", "0000"]),  # no network entry: first
        (("0005", "0001", "0003"), ["0001", "0005", "0003"]),  # the new one moves
    ],
)
def test_reorder_puts_the_new_entry_right_after_the_network(
    order: tuple[str, ...], expected: list[str]
) -> None:
    config = bootloader.parse_efibootmgr(OVMF)
    config = bootloader.BootConfig(order, config.entries)
    assert bootloader.reorder(config, "0005") == expected


def test_write_boot_entry_replaces_an_old_one() -> None:
    old = OVMF.replace("Boot0004* EFI", "Boot0007* netinstall\tHD(4)/File(x)\nBoot0004* EFI")
    created = OVMF.replace("BootOrder: ", "BootOrder: 0005,").replace(
        "Boot0004* EFI",
        "Boot0005* netinstall\tHD(4,GPT)/File(\\EFI\\BOOT\\BOOTX64.EFI)\nBoot0004* EFI",
    )
    replies = iter([old, created])
    runner = FakeRunner(lambda argv: next(replies) if argv == ("efibootmgr", "-v") else "")
    bootloader.write_boot_entry(Path("/dev/vda"), 4, runner)
    assert runner.calls == [
        ("efibootmgr", "-v"),
        ("efibootmgr", "-q", "-b", "0007", "-B"),
        ("efibootmgr", "-q", "-c", "-d", "/dev/vda", "-p", "4", "-L", "netinstall", "-l",
         "\\EFI\\BOOT\\BOOTX64.EFI"),
        ("efibootmgr", "-v"),
        ("efibootmgr", "-q", "-o", "0001,0002,0005,0003,0000,0004"),
    ]  # fmt: skip


def _boot(tmp_path: Path, firmware: Firmware, write_entry: bool = True) -> BootloaderPlan:
    """The plan's boot loader for a 60 GiB /dev/vda."""
    answer = answer_for("vda", bootloader=Bootloader(write_boot_entry=write_entry))
    disk = planning.DiskFound(Path("/dev/vda"), DiskFacts(size=60 * GiB))
    return make_plan(tmp_path, answer, firmware=firmware, disk=disk).bootloader


def _install(tmp_path: Path, boot: BootloaderPlan, runner: FakeRunner) -> None:
    bootloader.install_bootloader(boot, tmp_path, ROOT, runner)


def _runner(target: Path, respond: Callable[[tuple[str, ...]], str] | None = None) -> FakeRunner:
    grub_install = _grub_install(target)

    def both(argv: tuple[str, ...]) -> str:
        grub_install(argv)
        return respond(argv) if respond else ""

    return FakeRunner(both)


def test_install_bootloader_bios(tmp_path: Path, grub_lib: Path) -> None:
    runner = _runner(tmp_path)
    _install(tmp_path, _boot(tmp_path, Firmware.BIOS), runner)
    assert runner.calls[0][:2] == ("grub-install", "--target=i386-pc")
    assert runner.calls[1] == ("grub-editenv", str(tmp_path / "boot/grub/grubenv"), "create")
    assert len(runner.calls) == 2
    assert (tmp_path / "boot/grub/grub.cfg").read_text() == bootloader.grub_cfg(ROOT)
    assert (tmp_path / "boot/grub/i386-pc/multiboot2.mod").is_file()


def test_install_bootloader_uefi_without_efivars_boots_the_removable_path(
    tmp_path: Path,
    grub_lib: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(bootloader, "EFIVARS", tmp_path / "no-efi/efivars")
    runner = _runner(tmp_path)
    caplog.set_level("INFO")
    _install(tmp_path, _boot(tmp_path, Firmware.UEFI), runner)
    assert [c[0] for c in runner.calls] == ["grub-install", "grub-editenv"]
    assert "EFI variables are not available" in caplog.text


def test_install_bootloader_uefi_writes_the_entry(
    tmp_path: Path, grub_lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    efivars = tmp_path / "efi/efivars"
    efivars.mkdir(parents=True)
    (efivars / "BootOrder-8be4df61").write_bytes(b"")
    monkeypatch.setattr(bootloader, "EFIVARS", efivars)
    created = OVMF.replace("Boot0004* EFI", "Boot0005* netinstall\tHD(4)\nBoot0004* EFI")
    runner = _runner(tmp_path, lambda argv: created if argv == ("efibootmgr", "-v") else "")
    _install(tmp_path, _boot(tmp_path, Firmware.UEFI), runner)
    assert ("efibootmgr", "-q", "-c", "-d", "/dev/vda", "-p", "4", "-L", "netinstall", "-l",
            "\\EFI\\BOOT\\BOOTX64.EFI") in runner.calls  # fmt: skip
    assert runner.calls[-1] == ("efibootmgr", "-q", "-o", "0001,0002,0005,0003,0000,0004")


def test_install_bootloader_uefi_write_boot_entry_false(tmp_path: Path, grub_lib: Path) -> None:
    runner = _runner(tmp_path)
    _install(tmp_path, _boot(tmp_path, Firmware.UEFI, write_entry=False), runner)
    assert not any(c[0] == "efibootmgr" for c in runner.calls)
