"""The netboot tree: first-stage boot loaders and the files the installer boots from.

Boot loaders come from Debian packages, downloaded and unpacked (never installed
on the host): pxelinux and its COM32 modules for BIOS, a GRUB netboot image for
UEFI (``grub-mkimage`` with the modules of the unpacked ``grub-efi-amd64-bin``,
prefix ``/grub``), and iPXE's ``undionly.kpxe`` / ``snponly.efi`` / ``ipxe.efi``
(every driver: a SAN host's storage NIC too) for the iPXE chain and SAN boot. The
installer's files are copied from the repo and installer targets; ``xen`` is
``xen.gz`` uncompressed, for the 2019 iPXE which cannot load a compressed Xen, and
``xen.efi`` is Xen as an EFI application, for iPXE EFI (which cannot multiboot).
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from common.process import run
from images import debian
from images.context import BuildContext

TARGET = "netboot"
PACKAGES = ("pxelinux", "syslinux-common", "ipxe", "grub-efi-amd64-bin")
SOURCES = ("images/netboot.py",)
DEPENDS = ("installer", "repo")

SYSLINUX_FILES = {
    "pxelinux": ("usr/lib/PXELINUX/pxelinux.0", "usr/lib/PXELINUX/lpxelinux.0"),
    "syslinux-common": tuple(
        f"usr/lib/syslinux/modules/bios/{name}"
        for name in ("ldlinux.c32", "mboot.c32", "libcom32.c32", "libutil.c32", "menu.c32")
    ),
    "ipxe": ("usr/lib/ipxe/snponly.efi", "boot/ipxe.efi", "usr/lib/ipxe/undionly.kpxe"),
}
GRUB_MODULES = (
    "net",
    "efinet",
    "tftp",
    "http",
    "normal",
    "configfile",
    "echo",
    "test",
    "sleep",
    "reboot",
    "halt",
    "multiboot2",
    "linux",
    "chain",
    "gzio",
    "part_gpt",
    "part_msdos",
    "fat",
    "ext2",
    "search",
    "search_fs_uuid",
    "search_fs_file",
    "search_label",
    "serial",
    "terminal",
    "efi_gop",
    "all_video",
)
OUTPUTS = (
    "pxelinux.0",
    "lpxelinux.0",
    "ldlinux.c32",
    "mboot.c32",
    "libcom32.c32",
    "libutil.c32",
    "menu.c32",
    "grubx64.efi",
    "snponly.efi",
    "ipxe.efi",
    "undionly.kpxe",
    "xen.gz",
    "xen.efi",
    "xen",
    "vmlinuz",
    "install.img",
)


def _unpacked(ctx: BuildContext, package: str) -> Path:
    with ctx.progress.long(TARGET, f"downloading {package} {ctx.versions[package]}"):
        deb = debian.download(package, ctx.versions[package], ctx.cache)
    dest = ctx.work / "netboot" / package
    if dest.exists():
        shutil.rmtree(dest)
    debian.extract(deb, dest)
    return dest


def _grub_image(ctx: BuildContext, out: Path) -> None:
    grub = _unpacked(ctx, "grub-efi-amd64-bin") / "usr/lib/grub/x86_64-efi"
    run(
        [
            "grub-mkimage",
            "--directory",
            str(grub),
            "--format",
            "x86_64-efi",
            "--prefix",
            "/grub",
            "--output",
            str(out / "grubx64.efi"),
            *GRUB_MODULES,
        ],
        timeout=300,
    )


def _uncompressed_xen(xen_gz: Path, out: Path) -> None:
    with gzip.open(xen_gz) as source, (out / "xen").open("wb") as dest:
        shutil.copyfileobj(source, dest)


def build(ctx: BuildContext) -> None:
    out = ctx.out / TARGET
    for package, files in SYSLINUX_FILES.items():
        root = _unpacked(ctx, package)
        for relative in files:
            shutil.copyfile(root / relative, out / Path(relative).name)
        ctx.progress.step(TARGET, f"{package}: {', '.join(Path(f).name for f in files)}")
    _grub_image(ctx, out)
    ctx.progress.step(TARGET, "grubx64.efi", (out / "grubx64.efi").stat().st_size)
    shutil.copyfile(ctx.out / "repo/boot/xen.gz", out / "xen.gz")
    shutil.copyfile(ctx.out / "repo/boot/xen.efi", out / "xen.efi")
    _uncompressed_xen(out / "xen.gz", out)
    shutil.copyfile(ctx.out / "installer/vmlinuz", out / "vmlinuz")
    shutil.copyfile(ctx.out / "installer/install.img", out / "install.img")
    for name in OUTPUTS:
        (out / name).chmod(0o644)
    ctx.progress.step(
        TARGET, f"{len(OUTPUTS)} files", sum((out / n).stat().st_size for n in OUTPUTS)
    )
