"""The install repository builder (``images build --only repo``; SPEC §8).

``build/repo/``::

    .treeinfo               product, payload version, build id, boot files, checksums
    boot/xen.gz             Xen 4.17 (bookworm-security)
    boot/vmlinuz            dom0 kernel (linux-image-6.12-amd64)
    boot/initrd.img         dom0 initramfs: root by UUID, iSCSI/iBFT, multipath
    dom0-rootfs.tar.zst     the dom0 root (GNU tar with xattrs and ACLs, zstd)
    dom0-packages.txt       every Debian package in dom0 with its version
    XS-REPOSITORY-LIST      supplemental packs (empty unless PACKS names some)
    packages.<name>/        one directory per pack (see ``packs``)
    SHA256SUMS              every file above, ``sha256sum -c`` format, written last

The dom0 root keeps its own /boot (kernel, initrd, Xen) too: ``update-initramfs``,
``grub-reboot`` and upgrades inside dom0 work as on any Debian system, and
``.treeinfo [rootfs]`` says where those copies lie.

The repository is assembled in ``build/.repo-staging`` and renamed into place,
so a failed build never leaves a half-written repository behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from hypervisor_payload import dom0_root
from hypervisor_payload.checksums import SHA256SUMS, digests, render_sha256sums, repository_files
from hypervisor_payload.dom0_config import DOM0_PACKAGES
from hypervisor_payload.packs import (
    Pack,
    add_to_repository,
    build_pack,
    write_repository_list,
)
from hypervisor_payload.treeinfo import TREEINFO, TreeInfo, parse_treeinfo, render_treeinfo
from images.context import REPO_ROOT, BuildContext
from images.progress import size_text

TARGET = "repo"
PACKAGES: tuple[str, ...] = DOM0_PACKAGES
SOURCES: tuple[str, ...] = ("hypervisor_payload", "common")  # dom0 carries common too
OUTPUTS: tuple[str, ...] = (
    TREEINFO,
    SHA256SUMS,
    "boot/xen.gz",
    "boot/xen.efi",
    "boot/vmlinuz",
    "boot/initrd.img",
    "dom0-rootfs.tar.zst",
    "XS-REPOSITORY-LIST",
)
DEPENDS: tuple[str, ...] = ()

ARCHIVE = "dom0-rootfs.tar.zst"
MANIFEST = "dom0-packages.txt"
# Supplemental pack sources (repository-relative directories) built into every
# repository. None by default; e.g. ("hypervisor_payload/packs_example",).
PACKS: tuple[str, ...] = ()
# Files in build/repo that are not part of the repository (the build's input stamp).
NOT_SERVED = frozenset({".inputs"})


def write_metadata(repository: Path, info: TreeInfo) -> TreeInfo:
    """``.treeinfo`` (checksums of every file) then ``SHA256SUMS``; ``info`` completed."""
    files = repository_files(repository, exclude={TREEINFO, SHA256SUMS, *NOT_SERVED})
    found = digests(repository, files)
    complete = replace(info, checksums=found)
    (repository / TREEINFO).write_text(render_treeinfo(complete))
    every = {**found, **digests(repository, [TREEINFO])}
    (repository / SHA256SUMS).write_text(render_sha256sums(every))
    return complete


def _install(staging: Path, final: Path) -> None:
    """Replace ``final`` by ``staging`` (both under build/)."""
    old = final.with_name(f".{final.name}-old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    if old.exists():
        shutil.rmtree(old)


def build_repository(ctx: BuildContext, packs: Sequence[str] = PACKS) -> TreeInfo:
    """Build the whole repository into ``ctx.out/repo``."""
    staging = ctx.out / f".{TARGET}-staging"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "boot").mkdir(parents=True)
    dom0 = dom0_root.dom0_root(ctx)
    dom0_root.finish_root(ctx, dom0)
    inside = dom0_root.boot_files(dom0)
    for name, path in inside.items():
        shutil.copyfile(dom0.path / path.lstrip("/"), staging / name)
    size = dom0_root.pack_root(ctx, dom0, staging / ARCHIVE)
    ctx.progress.step(TARGET, f"{ARCHIVE} {size_text(size)}")
    dom0_root.remove_root(dom0.path)
    (staging / MANIFEST).write_text(dom0.manifest())
    built: list[Pack] = [build_pack(REPO_ROOT / source, staging) for source in packs]
    write_repository_list(staging, built)
    info = TreeInfo(
        version=ctx.payload_version,
        build=dom0.build_id,
        kernel="boot/vmlinuz",
        initrd="boot/initrd.img",
        xen="boot/xen.gz",
        archive=ARCHIVE,
        compression="zstd",
        checksums={},
        root_kernel=inside["boot/vmlinuz"],
        root_initrd=inside["boot/initrd.img"],
        root_xen=inside["boot/xen.gz"],
    )
    ctx.progress.step(TARGET, "checksums, .treeinfo and SHA256SUMS")
    info = write_metadata(staging, info)
    _install(staging, ctx.out / TARGET)
    ctx.progress.step(
        TARGET,
        f"repository {info.version} build {info.build}: initrd "
        f"{size_text((ctx.out / TARGET / info.initrd).stat().st_size)}",
    )
    return info


def add_packs(repository: Path, sources: Sequence[Path]) -> TreeInfo:
    """Build pack sources into an existing repository (a copy of build/repo, say).

    Packs already listed stay (one of the same name is replaced);
    ``XS-REPOSITORY-LIST``, ``.treeinfo`` and ``SHA256SUMS`` are written again.
    """
    info = parse_treeinfo((repository / TREEINFO).read_text())
    add_to_repository(repository, sources)
    return write_metadata(repository, replace(info, checksums={}))


def build(ctx: BuildContext) -> None:
    """The ``Builder`` entry point (netinstall.build)."""
    build_repository(ctx)
