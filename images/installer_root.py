"""The Debian part of the installer image: root, kernel modules, trimming, base archive.

Two cache levels under ``cache/roots``, so that a change in our Python files
only re-packs a small second archive:

* ``installer-<root key>.tar``: the debootstrap root with the extra packages,
  keyed by the package lists, their resolved versions and the mirror;
* ``installer-base-<base key>.cpio.zst`` (+ ``.vmlinuz``): that root trimmed,
  with the kernel modules, as a compressed cpio; keyed by the root key, the
  kernel package and this file's own text (the trim rules and module list live
  here).

Nothing is installed on the build host: the kernel is downloaded and unpacked,
Xen's tools are installed inside the chroot (TESTING.md).
"""

from __future__ import annotations

import hashlib
import lzma
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from common import cpio
from common.errors import NetinstallError
from common.process import run
from images import debian
from images.context import BuildContext
from images.progress import Counted

# Loaded by /init at every boot: what nothing else loads (the device nodes of loop and
# device-mapper) and the file system every install mounts, with the checksum its metadata
# needs. Stored uncompressed (``RAW_MODULES``).
EAGER_MODULES = ("loop", "dm_mod", "ext4", "crc32c_generic")
# NIC and disk drivers: udev loads a present device's driver from its modalias at
# coldplug, so /init loads these itself only when udevd cannot run (issue 18: loading
# every driver of the list, present or not, took most of 10 s of an emulated boot).
HARDWARE_MODULES = (
    "virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi",
    "e1000", "e1000e", "igb", "ixgbe", "tg3",
    "ahci", "sd_mod", "nvme", "megaraid_sas", "mpt3sas",
)  # fmt: skip
# SAN boot: loaded when the command line asks for use_ibft or device_mapper_multipath.
SAN_MODULES = (
    "dm_multipath", "dm_round_robin", "dm_service_time",
    "scsi_dh_alua", "scsi_dh_rdac", "scsi_dh_emc",
    "iscsi_tcp", "iscsi_ibft",
)  # fmt: skip
# Loaded by the kernel when used (mount -t nfs, a VLAN or bridge link, mount -t vfat with
# its code page and character set, mount -t efivarfs): never by /init. The ESP's and the
# EFI variables' modules were eager once, though a BIOS install never uses them.
ON_USE_MODULES = (
    "sunrpc", "nfs", "nfsv3", "nfsv4", "8021q", "bridge",
    "vfat", "nls_ascii", "nls_cp437", "efivarfs",
)  # fmt: skip
# Every module the image keeps (with its dependencies).
MODULES = (*EAGER_MODULES, *HARDWARE_MODULES, *SAN_MODULES, *ON_USE_MODULES)
# Loaded only when running under Xen (they refuse to load elsewhere).
XEN_MODULES = ("xenfs", "xen-evtchn", "xen-gntdev", "xen-privcmd")
# In the image, loaded on demand only (crc32c_intel refuses CPUs without SSE 4.2).
ON_DEMAND = ("crc32c_intel",)
# Stored uncompressed (with their dependencies): the modules /init loads at every boot.
# Debian ships them xz-compressed, and xz took about 40% of loading a module on the
# emulated lab machine (sunrpc: modprobe of the .ko.xz 0.85 s, busybox unxz 0.35 s,
# insmod of the .ko 0.36 s); the archive is zstd-compressed anyway.
RAW_MODULES = (*EAGER_MODULES, *XEN_MODULES)
# Base archives kept in the cache (the newest used): worktrees and branches that share
# the cache but differ in this file do not rebuild each other's in turn.
CACHED_BASES = 3

# Paths (globs, relative to the root) the installer never needs.
TRIM = (
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "usr/share/i18n",
    "usr/share/lintian",
    "usr/share/bug",
    "usr/share/zoneinfo/right",
    "usr/lib/udev/hwdb.d",
    "usr/lib/udev/hwdb.bin",
    "etc/udev/hwdb.bin",
    "usr/lib/xen-4.17/boot",  # hvmloader and the PV shim: guests, not the installer
    "usr/lib/grub/x86_64-efi/monolithic",  # prebuilt images; grub-install uses the modules
    "usr/lib/x86_64-linux-gnu/gconv",
    "var/cache/apt/*",
    "var/lib/apt/lists/*",
    "var/cache/debconf/*-old",
    "var/log/*",
    # Per-build or copied from the build host: written fresh (or at run time) instead.
    "etc/iscsi/initiatorname.iscsi",
    "etc/hostname",
    "etc/resolv.conf",
    "usr/sbin/policy-rc.d",
)

ROOT_TAR = "installer-{key}.tar"
BASE_IMG = "installer-base-{key}.cpio.zst"
BASE_KERNEL = "installer-base-{key}.vmlinuz"


def digest(parts: Iterable[str], length: int = 16) -> str:
    """A short stable hash of ``parts`` (in order)."""
    hashed = hashlib.sha256()
    for part in parts:
        hashed.update(part.encode() + b"\0")
    return hashed.hexdigest()[:length]


def root_key(
    ctx: BuildContext, include: Sequence[str], extra: Sequence[str], versioned: Sequence[str]
) -> str:
    """The debootstrap cache key: package lists, their resolved versions, the mirror."""
    return digest(
        [
            ctx.mirror.archive,
            ctx.mirror.security,
            "include:" + ",".join(sorted(include)),
            "extra:" + ",".join(sorted(extra)),
            *(f"{name}={ctx.versions[name]}" for name in sorted(versioned)),
        ]
    )


def base_key(root: str, kernel: str, kernel_version: str, compress_level: int) -> str:
    """The base archive's key: the root, the kernel, the zstd level and the code that
    makes it (this file's trim rules and module list, the cpio writer)."""
    code = [
        hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in (__file__, cpio.__file__)
    ]
    return digest([root, f"{kernel}={kernel_version}", *code, f"zstd-{compress_level}"])


def _mounts_under(tree: Path) -> list[str]:
    """Mount points at or below ``tree`` (from /proc/self/mountinfo)."""
    top = str(tree.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == top or point.startswith(top + "/"):
            found.append(point)
    return found


def remove_tree(tree: Path) -> None:
    """``rm -rf tree``, refused while anything is mounted inside (a crashed build's
    bind mount of /dev would otherwise take the host's device nodes with it)."""
    if not tree.exists():
        return
    mounts = _mounts_under(tree)
    if mounts:
        raise NetinstallError(
            f"{tree} still has mounts from an earlier build ({', '.join(mounts)}): "
            "unmount them (umount -R) and build again"
        )
    shutil.rmtree(tree)


def _prune(directory: Path, pattern: str, keep: Path, count: int = 1) -> None:
    """Remove cache files matching ``pattern`` but ``keep`` and the newest others, ``count``
    in all (by modification time: a reused file is touched)."""
    others = sorted(
        (p for p in directory.glob(pattern) if p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in others[max(count - 1, 0) :]:
        old.unlink()


def build_root(
    ctx: BuildContext, tree: Path, include: Sequence[str], extra: Sequence[str], tar: Path
) -> None:
    """debootstrap minbase into ``tree``, install ``extra`` with security updates, cache a tar."""
    remove_tree(tree)
    with ctx.progress.long("installer", f"debootstrap minbase with {len(include)} packages"):
        debian.debootstrap(tree, ctx.mirror, include, variant="minbase")
    debian.prevent_service_starts(tree)
    installing = f"installing {', '.join(extra)} (with security updates)"
    with ctx.progress.long("installer", installing), debian.mounted(tree):
        debian.apt_install(tree, ctx.mirror, extra)
        debian.in_chroot(tree, ["apt-get", "-y", "-qq", "upgrade"], timeout=3600)
        debian.in_chroot(tree, ["apt-get", "clean"])
    ctx.progress.step("installer", "root ready", debian.tree_size(tree))
    tar.parent.mkdir(parents=True, exist_ok=True)
    partial = tar.with_name(tar.name + ".partial")
    with ctx.progress.long("installer", f"writing {tar.name}"):
        run(["tar", "--numeric-owner", "-cf", str(partial), "-C", str(tree), "."], timeout=1800)
    partial.rename(tar)
    _prune(tar.parent, ROOT_TAR.format(key="*"), tar)
    ctx.progress.step("installer", f"cached the root as {tar.name}", tar.stat().st_size)


def restore_root(ctx: BuildContext, tar: Path, tree: Path) -> None:
    """Unpack the cached root into ``tree`` (emptied first)."""
    ctx.progress.step("installer", f"reusing the cached root {tar.name}")
    remove_tree(tree)
    tree.mkdir(parents=True)
    run(["tar", "--numeric-owner", "-xpf", str(tar), "-C", str(tree)], timeout=1800)


def module_dependencies(modules_dep: str) -> dict[str, list[str]]:
    """``modules.dep`` as {module path: [paths it needs, in load order]}."""
    found: dict[str, list[str]] = {}
    for line in modules_dep.splitlines():
        path, sep, needs = line.partition(":")
        if sep:
            found[path.strip()] = needs.split()
    return found


def module_name(path: str) -> str:
    """The module name of ``kernel/x/dm-mod.ko.xz``: ``dm_mod``."""
    return path.rsplit("/", 1)[-1].split(".ko", 1)[0].replace("-", "_")


def module_closure(
    wanted: Iterable[str], dependencies: Mapping[str, Sequence[str]], builtin: Iterable[str]
) -> set[str]:
    """The module files ``wanted`` needs (dependencies too); built-in modules need none."""
    by_name = {module_name(path): path for path in dependencies}
    builtin_names = {module_name(path) for path in builtin}
    needed: set[str] = set()
    missing = []
    for name in wanted:
        key = name.replace("-", "_")
        if key in builtin_names:
            continue
        if key not in by_name:
            missing.append(name)
            continue
        needed.add(by_name[key])
        needed.update(dependencies[by_name[key]])
    if missing:
        raise NetinstallError(f"the kernel has no module named {', '.join(missing)}")
    return needed


def add_kernel(ctx: BuildContext, tree: Path, deb: Path, staging: Path) -> tuple[str, Path]:
    """Unpack the kernel, keep the wanted modules in ``tree``; return (version, vmlinuz)."""
    if staging.exists():
        shutil.rmtree(staging)
    debian.extract(deb, staging)
    kernels = sorted((staging / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise NetinstallError(f"{deb.name} holds {len(kernels)} vmlinuz files, expected one")
    version = kernels[0].name.removeprefix("vmlinuz-")
    unpacked = next(
        (p for p in (staging / "lib/modules" / version, staging / "usr/lib/modules" / version)
         if p.is_dir()),
        None,
    )  # fmt: skip
    if unpacked is None:
        raise NetinstallError(f"{deb.name} has no modules for {version}")
    modules = tree / "usr/lib/modules" / version
    if modules.exists():
        shutil.rmtree(modules)
    modules.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(unpacked, modules)
    debian.in_chroot(tree, ["depmod", version], timeout=600)
    dependencies = module_dependencies((modules / "modules.dep").read_text())
    builtin = (modules / "modules.builtin").read_text().split()
    keep = module_closure([*MODULES, *XEN_MODULES, *ON_DEMAND], dependencies, builtin)
    for path in dependencies:
        if path not in keep:
            (modules / path).unlink()
    raw = module_closure(RAW_MODULES, dependencies, builtin)
    for path in sorted(raw):
        if path.endswith(".ko.xz"):
            packed = modules / path
            packed.with_suffix("").write_bytes(lzma.decompress(packed.read_bytes()))
            packed.unlink()
    _remove_empty_dirs(modules / "kernel")
    debian.in_chroot(tree, ["depmod", version], timeout=600)
    ctx.progress.step(
        "installer", f"kernel {version}: {len(keep)} modules", debian.tree_size(modules)
    )
    return version, kernels[0]


def _remove_empty_dirs(top: Path) -> None:
    for directory in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()


def trim(ctx: BuildContext, tree: Path) -> None:
    """Delete what the installer never uses (docs, translations, caches, ...)."""
    before = debian.tree_size(tree)
    for pattern in TRIM:
        for path in sorted(tree.glob(pattern)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    ctx.progress.step(
        "installer", f"trimmed {(before - debian.tree_size(tree)) // 10**6} MB", before
    )


def pack_base(ctx: BuildContext, tree: Path, target: Path, level: int) -> None:
    """``tree`` as a zstd-compressed cpio (owners and mtimes kept: the stdlib's
    byte-code stays valid), written to ``target`` atomically."""
    raw = target.with_name(target.name + ".cpio")
    expected = debian.tree_size(tree)
    with (
        ctx.progress.long("installer", "packing the base cpio", expected) as advance,
        raw.open("wb") as stream,
    ):
        size = cpio.write(cpio.tree_entries(tree), Counted(stream, advance))
    ctx.progress.step("installer", "packed the base cpio", size)
    partial = target.with_name(target.name + ".partial")
    with ctx.progress.long("installer", f"compressing it (zstd -{level})"):
        compress(raw, partial, level)
    raw.unlink()
    partial.rename(target)
    ctx.progress.step("installer", f"cached the base archive {target.name}", target.stat().st_size)


def compress(source: Path, target: Path, level: int) -> None:
    """``zstd -LEVEL`` on both cores; frames the kernel's unzstd can read."""
    argv = ["zstd", "-q", "-f", f"-{level}", "-T2", "--no-progress", str(source), "-o", str(target)]
    if level > 19:
        raise NetinstallError("zstd levels above 19 need --ultra windows the kernel cannot use")
    run(argv, timeout=3600)


def base_archive(
    ctx: BuildContext,
    *,
    include: Sequence[str],
    extra: Sequence[str],
    versioned: Sequence[str],
    kernel_deb: Path,
    kernel_version: str,
    level: int,
) -> tuple[Path, Path]:
    """The cached (base archive, vmlinuz) for these inputs, built when missing."""
    roots = ctx.cache / "roots"
    roots.mkdir(parents=True, exist_ok=True)
    rkey = root_key(ctx, include, extra, versioned)
    bkey = base_key(rkey, kernel_deb.name, kernel_version, level)
    image = roots / BASE_IMG.format(key=bkey)
    vmlinuz = roots / BASE_KERNEL.format(key=bkey)
    if image.is_file() and vmlinuz.is_file():
        image.touch()  # the newest used: kept by _prune
        vmlinuz.touch()
        size = image.stat().st_size
        ctx.progress.step("installer", f"reusing the base archive {image.name}", size)
        return image, vmlinuz
    tree = ctx.work / "installer-root"
    tar = roots / ROOT_TAR.format(key=rkey)
    if tar.is_file():
        restore_root(ctx, tar, tree)
    else:
        build_root(ctx, tree, include, extra, tar)
    trim(ctx, tree)
    staging = ctx.work / "installer-kernel"
    _version, kernel = add_kernel(ctx, tree, kernel_deb, staging)
    partial = vmlinuz.with_name(vmlinuz.name + ".partial")
    shutil.copyfile(kernel, partial)
    pack_base(ctx, tree, image, level)
    partial.rename(vmlinuz)
    _prune(roots, BASE_IMG.format(key="*"), image, CACHED_BASES)
    _prune(roots, BASE_KERNEL.format(key="*"), vmlinuz, CACHED_BASES)
    shutil.rmtree(staging)
    remove_tree(tree)
    return image, vmlinuz
