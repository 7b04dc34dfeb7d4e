"""The installer image: ``installer/vmlinuz`` and ``installer/install.img``.

``install.img`` is two zstd-compressed newc cpio archives, one after the other
(the kernel unpacks both into its rootfs):

1. the base: a debootstrap minbase bookworm root with python3, the disk,
   filesystem, LVM, multipath, iSCSI, NFS, GRUB/efibootmgr and Xen tools,
   trimmed, plus the kernel modules the installer needs (``installer_root``);
   cached, as it only changes with the Debian inputs;
2. ours: ``/init``, the files of ``images/installer_files``, the module lists
   and our Python packages (common, answerfile, partitioning and
   installer_core) with their byte-code (``byte_compile``). Byte-reproducible:
   sorted names, owner root, one fixed mtime (``SOURCE_DATE_EPOCH`` when set).

``vmlinuz`` is ``linux-image-6.12-amd64`` of bookworm-security, downloaded and
unpacked (never installed on the build host).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from common import cpio
from common.cpio import Entry
from common.process import run
from images import debian, installer_root
from images.context import REPO_ROOT, BuildContext

TARGET = "installer"
KERNEL = "linux-image-6.12-amd64"

# debootstrap --include (bookworm main).
INCLUDE = (
    "python3", "python3-parted", "python3-lxml", "python3-requests",
    "parted", "gdisk", "fdisk", "e2fsprogs", "dosfstools", "lvm2", "util-linux",
    "grub-pc-bin", "grub-efi-amd64-bin", "grub2-common",
    "kmod", "udev", "iproute2", "isc-dhcp-client", "busybox",
    "tzdata", "ca-certificates", "zstd",
)  # fmt: skip
# Installed afterwards with apt inside the chroot, bookworm-security included
# (current Xen; xen-utils brings xl and xenstored).
EXTRA = (
    "xen-utils-4.17", "open-iscsi", "multipath-tools", "kpartx", "nfs-common", "efibootmgr",
)  # fmt: skip

PACKAGES: tuple[str, ...] = (KERNEL, *INCLUDE, *EXTRA)
SOURCES = (
    "images/installer.py",
    "images/installer_root.py",
    "images/installer_files",
    "answerfile",
    "partitioning",
    "installer_core",
    "common",
)
OUTPUTS = ("vmlinuz", "install.img")
DEPENDS: tuple[str, ...] = ()

# zstd level of the cached base archive (rebuilt only when the Debian inputs change):
# on its 227 MB, -9 gives 72 MB in 5 s, -19 63 MB in 80 s (2 cores).
BASE_LEVEL = 9
OVERLAY_LEVEL = 19
DEFAULT_EPOCH = 1704067200  # 2024-01-01T00:00:00Z, when SOURCE_DATE_EPOCH is unset
FILES = Path(__file__).resolve().parent / "installer_files"
PACKAGES_DIR = "usr/lib/python3/dist-packages"
OUR_PACKAGES = ("common", "answerfile", "partitioning", "installer_core")
# The byte-code file name bookworm's python3 (3.11) looks for in __pycache__.
IMAGE_CACHE_TAG = "cpython-311"
BYTE_COMPILE_TIMEOUT = 300.0  # seconds; the four packages compile in about one

# The byte-compiler, run in a fresh interpreter: marshal's output depends on the
# compiling process's state (reference counts decide which objects it shares, the
# string hash seed the order of frozenset constants), so a fixed start (-S, hash seed
# 0) keeps the archive byte-reproducible. Each .pyc is hash-checked (PEP 552): the
# image's importer checks it against the source's hash, not an mtime, and compiles
# the source itself when they differ. Reads [[source, name in the image, .pyc], ...]
# as JSON on stdin and writes each .pyc under the directory given as its argument.
_COMPILER = """
import importlib.util, json, marshal, sys
from pathlib import Path
out = Path(sys.argv[1])
for source, name, pyc in json.load(sys.stdin):
    text = Path(source).read_bytes()
    code = compile(text, name, "exec", dont_inherit=True)
    header = importlib.util.MAGIC_NUMBER + (0b11).to_bytes(4, "little")
    (out / pyc).parent.mkdir(parents=True, exist_ok=True)
    (out / pyc).write_bytes(header + importlib.util.source_hash(text) + marshal.dumps(code))
"""


def epoch() -> int:
    """The mtime of every file we generate."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    return int(value) if value.isdigit() else DEFAULT_EPOCH


def _package_files(directory: Path) -> list[Path]:
    """The files of one of our packages, byte-code and caches left out."""
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def _module_list(names: tuple[str, ...]) -> bytes:
    return "".join(f"{name}\n" for name in names).encode()


def overlay_files(repo: Path = REPO_ROOT, files: Path = FILES) -> dict[str, tuple[bytes, int]]:
    """Every file of our archive: {name in the image: (content, permission bits)}."""
    found: dict[str, tuple[bytes, int]] = {}
    for path in _package_files(files):
        mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
        found[path.relative_to(files).as_posix()] = (path.read_bytes(), mode)
    for package in OUR_PACKAGES:
        for path in _package_files(repo / package):
            name = f"{PACKAGES_DIR}/{path.relative_to(repo).as_posix()}"
            found[name] = (path.read_bytes(), 0o644)
    found["etc/netinstall/modules"] = (_module_list(installer_root.EAGER_MODULES), 0o644)
    hardware = _module_list(installer_root.HARDWARE_MODULES)
    found["etc/netinstall/modules-hardware"] = (hardware, 0o644)
    found["etc/netinstall/modules-san"] = (_module_list(installer_root.SAN_MODULES), 0o644)
    found["etc/netinstall/modules-xen"] = (_module_list(installer_root.XEN_MODULES), 0o644)
    return found


def package_sources(repo: Path = REPO_ROOT) -> dict[str, Path]:
    """The Python files of our packages: {name in the image: source file}."""
    return {
        f"{PACKAGES_DIR}/{path.relative_to(repo).as_posix()}": path
        for package in OUR_PACKAGES
        for path in _package_files(repo / package)
        if path.suffix == ".py"
    }


def pyc_name(name: str) -> str:
    """Where the image's python3 looks for the byte-code of ``name`` (a .py in the image)."""
    directory, _, file = name.rpartition("/")
    return f"{directory}/__pycache__/{file.removesuffix('.py')}.{IMAGE_CACHE_TAG}.pyc"


def byte_compile(sources: dict[str, Path]) -> dict[str, bytes]:
    """{.pyc name in the image: its bytes} for {.py name in the image: its source file}.

    Without byte-code the installer compiled its own packages at every boot (the root is
    in RAM): about a third of its Python start-up on the emulated lab machine. Only a
    build host whose python3 writes the image's byte-code (``IMAGE_CACHE_TAG``) makes
    them; elsewhere the image compiles at boot as before.
    """
    if sys.implementation.cache_tag != IMAGE_CACHE_TAG or not sources:
        return {}
    jobs = [[str(path), f"/{name}", pyc_name(name)] for name, path in sorted(sources.items())]
    with tempfile.TemporaryDirectory(prefix="netinstall-pyc-") as out:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0"}
        argv = [sys.executable, "-S", "-s", "-B", "-c", _COMPILER, out]
        run(argv, input_text=json.dumps(jobs), env=env, timeout=BYTE_COMPILE_TIMEOUT)
        return {pyc: (Path(out) / pyc).read_bytes() for _, _, pyc in jobs}


def overlay_entries(files: dict[str, tuple[bytes, int]], mtime: int) -> list[Entry]:
    """Archive entries for ``files`` with their parent directories and /dev/console."""
    directories = {"dev"}
    for name in files:
        parts = name.split("/")[:-1]
        directories.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    entries = [cpio.directory(d, mtime) for d in directories]
    entries.append(cpio.char_device("dev/console", 5, 1, mtime))
    entries += [cpio.regular(name, data, mtime, mode) for name, (data, mode) in files.items()]
    return sorted(entries, key=lambda e: e.name)


def write_overlay(path: Path, mtime: int) -> int:
    """Our archive with our packages' byte-code, uncompressed, at ``path``; returns its size."""
    files = overlay_files()
    files.update((name, (code, 0o644)) for name, code in byte_compile(package_sources()).items())
    with path.open("wb") as stream:
        return cpio.write(overlay_entries(files, mtime), stream)


def kernel_deb(ctx: BuildContext) -> Path:
    """The .deb of the real kernel package behind the ``linux-image-6.12-amd64`` metapackage."""
    real = debian.first_dependency(KERNEL, ctx.versions[KERNEL])
    version = debian.candidate_versions([real])[real]
    with ctx.progress.long("installer", f"downloading {real} {version}"):
        deb = debian.download(real, version, ctx.cache)
    ctx.progress.step("installer", f"kernel package {deb.name}", deb.stat().st_size)
    return deb


def _concatenate(parts: list[Path], target: Path) -> None:
    partial = target.with_name(target.name + ".partial")
    with partial.open("wb") as out:
        for part in parts:
            with part.open("rb") as stream:
                shutil.copyfileobj(stream, out, 1 << 20)
    partial.rename(target)


def build(ctx: BuildContext) -> None:
    """Write ``out/installer/vmlinuz`` and ``out/installer/install.img``."""
    deb = kernel_deb(ctx)
    base, vmlinuz = installer_root.base_archive(
        ctx,
        include=INCLUDE,
        extra=EXTRA,
        versioned=(*INCLUDE, *EXTRA),  # the kernel's version keys the base archive
        kernel_deb=deb,
        kernel_version=ctx.versions[KERNEL],
        level=BASE_LEVEL,
    )
    work = ctx.work
    raw = work / "installer-overlay.cpio"
    size = write_overlay(raw, epoch())
    ctx.progress.step("installer", "packed /init and our Python packages", size)
    overlay = work / "installer-overlay.cpio.zst"
    installer_root.compress(raw, overlay, OVERLAY_LEVEL)
    raw.unlink()
    out = ctx.out / TARGET
    out.mkdir(parents=True, exist_ok=True)
    _concatenate([base, overlay], out / "install.img")
    overlay.unlink()
    shutil.copyfile(vmlinuz, out / "vmlinuz.partial")
    (out / "vmlinuz.partial").rename(out / "vmlinuz")
    ctx.progress.step("installer", "wrote install.img", (out / "install.img").stat().st_size)
