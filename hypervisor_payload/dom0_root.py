"""The dom0 root filesystem, in two stages.

Stage 1 (slow, cached): debootstrap, the dom0 packages inside the chroot, our
initramfs configuration and the one ``update-initramfs`` run, package-level
clean-up. Its result is kept as ``<cache>/roots/dom0-<key>.tar`` with a JSON
sidecar (kernel release, every installed package's version, the stage's time);
the key covers the package list, their resolved versions, the mirror and the
stage's recipe (``dom0_config.stage1_recipe``).

Stage 2 (15-30 s): unpack the cached root, add netinstall's files (the
first-boot service and agent from ``hypervisor_payload/dom0/`` with the ``common``
package they import, our units,
``/etc/netinstall-release``), enable the units, strip host identity, and pack
``dom0-rootfs.tar.zst`` with GNU tar (xattrs and ACLs kept: file capabilities
survive) and zstd. Extract it with ``tar --xattrs --xattrs-include='*' --acls
--numeric-owner -xpf``.

Every path we write is a fixed string under the chroot; every command goes
through ``common.process.run`` (via ``images.debian``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from common.errors import NetinstallError, SourceError
from common.process import run
from hypervisor_payload import dom0_config as config
from images import debian
from images.context import REPO_ROOT, BuildContext
from images.progress import size_text

TARGET = "repo"
DOM0_SOURCES = REPO_ROOT / "hypervisor_payload" / "dom0"
ZSTD_LEVEL = 9
_TAR_COMMON = ("--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls")
_TAR_REPRODUCIBLE = (
    "--sort=name",
    "--format=posix",
    "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
)
_PRESEED = "/root/netinstall-preseed"
COMPILE = ("python3", "-m", "compileall", "-q", "--invalidation-mode", "checked-hash")
_UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".target", ".mount")


@dataclass(frozen=True)
class Dom0Root:
    path: Path  # the unpacked root
    kernel_release: str  # e.g. 6.12.57+deb12-amd64
    packages: dict[str, str]  # every installed package -> version
    epoch: int  # when stage 1 finished: newer files are clamped to it in the archive

    @property
    def build_id(self) -> str:
        """A short hash of every installed package version: the same archives give the same id."""
        text = "".join(f"{name}={version}\n" for name, version in sorted(self.packages.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def manifest(self) -> str:
        return "".join(f"{name}\t{version}\n" for name, version in sorted(self.packages.items()))


# --- mounts and paths --------------------------------------------------------


def _mounts_under(root: Path) -> list[str]:
    base = str(root.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ").replace("\\011", "\t")
        if point == base or point.startswith(base + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def release_mounts(root: Path) -> None:
    """Unmount anything left mounted under ``root``; refuse to go on if that fails."""
    if not root.exists():
        return
    for point in _mounts_under(root):
        run(["umount", "--lazy", point], ok_codes=(0, 32))
    left = _mounts_under(root)
    if left:
        raise NetinstallError(f"still mounted under {root}: {', '.join(left)}")


def remove_root(root: Path) -> None:
    """Delete a chroot directory, never through a mount (a bound /dev would go too)."""
    release_mounts(root)
    if root.exists():
        shutil.rmtree(root)


def _make_dirs(path: Path) -> None:
    """``mkdir -p`` with mode 0755 for what it creates, whatever the umask."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir()
        directory.chmod(0o755)


def _write(root: Path, relative: str, text: str, mode: int = 0o644) -> None:
    path = root / relative
    _make_dirs(path.parent)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    path.chmod(mode)


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _remove(root: Path, pattern: str) -> None:
    for path in root.glob(pattern):
        _delete(path)


# --- stage 1 -----------------------------------------------------------------


def stage1_key(ctx: BuildContext) -> str:
    recipe = {
        "packages": {name: ctx.versions[name] for name in sorted(config.DOM0_PACKAGES)},
        "archive": ctx.mirror.archive,
        "security": ctx.mirror.security,
        "recipe": hashlib.sha256(config.stage1_recipe().encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:20]


def _install_packages(ctx: BuildContext, root: Path) -> None:
    """The dom0 packages from bookworm, -updates and -security; no initramfs yet."""
    (root / "etc/apt/sources.list").write_text(ctx.mirror.sources_list())
    debian.in_chroot(root, ["apt-get", "update", "-qq"], timeout=900)
    argv = ["env", "INITRD=No", "apt-get", "install", "-y", "-q", "--no-install-recommends"]
    argv += ["-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"]
    try:
        debian.in_chroot(root, [*argv, *config.DOM0_PACKAGES], timeout=3600)
    except NetinstallError as exc:
        raise SourceError(f"installing the dom0 packages failed: {exc}") from exc
    debian.in_chroot(root, ["apt-get", "clean"])


def _kernel_release(root: Path) -> str:
    releases = sorted(p.name for p in (root / "usr/lib/modules").iterdir() if p.is_dir())
    if len(releases) != 1:
        raise NetinstallError(f"expected one kernel in the dom0 root, found {releases}")
    return releases[0]


def _installed_packages(root: Path) -> dict[str, str]:
    out = debian.in_chroot(
        root, ["dpkg-query", "-W", "-f", "${db:Status-Status}\t${Package}\t${Version}\n"]
    ).stdout
    found = {}
    for line in out.splitlines():
        status, name, version = line.split("\t")
        if status == "installed":
            found[name] = version
    return found


def _clean_stage1(root: Path) -> None:
    """What the packages leave that no host needs: caches, lists, logs, docs."""
    for pattern in (
        "tmp/*",
        "var/tmp/*",
        "var/lib/apt/lists/*",
        "var/cache/apt/*.bin",
        "var/cache/apt/archives/*.deb",
        "var/cache/debconf/*-old",
        "var/log/*.log",
        "var/log/apt/*",
        "usr/share/man/*",
        "usr/share/info/*",
        "usr/share/lintian/*",
    ):
        _remove(root, pattern)
    for path in (root / "usr/share/doc").glob("*/*"):
        if path.name != "copyright":
            _delete(path)
    for path in (root / "usr/share/locale").glob("*"):
        if path.name != "locale.alias":
            _delete(path)


def _report_drift(ctx: BuildContext, installed: dict[str, str]) -> None:
    """Say so when the chroot got other versions than the host's apt lists (the cache key)."""
    drift = [
        f"{name} {installed[name]} (host: {ctx.versions[name]})"
        for name in config.DOM0_PACKAGES
        if name in installed and name in ctx.versions and installed[name] != ctx.versions[name]
    ]
    if drift:
        ctx.progress.step(
            TARGET,
            "note: the mirror is newer than this host's apt lists, refresh them with "
            f"apt-get update: {', '.join(drift)}",
        )


def build_stage1(ctx: BuildContext, root: Path) -> Dom0Root:
    """Debootstrap and the dom0 packages in ``root``, with the initramfs built."""
    progress = ctx.progress
    release_mounts(root)
    with progress.long(TARGET, f"debootstrap --variant={config.VARIANT} into {root}"):
        debian.debootstrap(root, ctx.mirror, include=(), variant=config.VARIANT)
    for relative, text in config.STAGE1_FILES.items():
        _write(root, relative, text)
    _write(root, _PRESEED.lstrip("/"), config.PRESEED)
    debian.prevent_service_starts(root)
    with debian.mounted(root):
        debian.in_chroot(root, ["debconf-set-selections", _PRESEED])
        with progress.long(TARGET, f"installing {len(config.DOM0_PACKAGES)} dom0 packages"):
            _install_packages(ctx, root)
        for relative, text in config.STAGE1_LATE_FILES.items():
            _write(root, relative, text, 0o600 if "initiatorname" in relative else 0o644)
        kernel = _kernel_release(root)
        with progress.long(TARGET, f"update-initramfs for {kernel}"):
            debian.in_chroot(root, ["update-initramfs", "-c", "-k", kernel], timeout=1200)
        packages = _installed_packages(root)
    release_mounts(root)
    _report_drift(ctx, packages)
    (root / _PRESEED.lstrip("/")).unlink()
    _clean_stage1(root)
    progress.step(TARGET, "dom0 packages installed", debian.tree_size(root))
    return Dom0Root(root, kernel, packages, int(time.time()))


def _cache_paths(ctx: BuildContext, key: str) -> tuple[Path, Path]:
    roots = ctx.cache / "roots"
    roots.mkdir(parents=True, exist_ok=True)
    return roots / f"dom0-{key}.tar", roots / f"dom0-{key}.json"


def save_stage1(ctx: BuildContext, key: str, dom0: Dom0Root) -> None:
    """Keep ``dom0`` as the cache for ``key``; older dom0 caches are dropped."""
    tar, sidecar = _cache_paths(ctx, key)
    for old in tar.parent.glob("dom0-*"):
        old.unlink()
    partial = tar.with_suffix(".tar.partial")
    run(
        ["tar", *_TAR_COMMON, *_TAR_REPRODUCIBLE, "-C", str(dom0.path), "-cf", str(partial), "."],
        timeout=1800,
    )
    partial.rename(tar)
    meta = {"kernel_release": dom0.kernel_release, "packages": dom0.packages, "epoch": dom0.epoch}
    sidecar.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def load_stage1(ctx: BuildContext, key: str, root: Path) -> Dom0Root | None:
    """The cached root for ``key`` unpacked into ``root``, or None when there is none."""
    tar, sidecar = _cache_paths(ctx, key)
    if not (tar.is_file() and sidecar.is_file()):
        return None
    meta = json.loads(sidecar.read_text())
    remove_root(root)
    root.mkdir(parents=True)
    ctx.progress.step(TARGET, f"unpacking the cached dom0 root {tar.name}", tar.stat().st_size)
    run(["tar", *_TAR_COMMON, "-xpf", str(tar), "-C", str(root)], timeout=1800)
    return Dom0Root(root, meta["kernel_release"], meta["packages"], int(meta["epoch"]))


def dom0_root(ctx: BuildContext) -> Dom0Root:
    """The dom0 root after stage 1, from the cache or built (and cached) now."""
    key = stage1_key(ctx)
    root = ctx.work / "dom0-root"
    cached = load_stage1(ctx, key, root)
    if cached is not None:
        return cached
    remove_root(root)
    built = build_stage1(ctx, root)
    ctx.progress.step(TARGET, f"caching the dom0 root as dom0-{key}.tar")
    save_stage1(ctx, key, built)
    return built


# --- stage 2 -----------------------------------------------------------------


def _copy_tree(source: Path, target: Path, mode: int) -> list[str]:
    """Copy the files under ``source`` (no caches) to ``target``; their names."""
    copied = []
    for path in sorted(source.rglob("*")):
        if "__pycache__" in path.parts or path.suffix == ".pyc" or not path.is_file():
            continue
        relative = path.relative_to(source)
        destination = target / relative
        _make_dirs(destination.parent)
        shutil.copyfile(path, destination)
        destination.chmod(mode)
        copied.append(relative.as_posix())
    return copied


def _units_to_enable(unit_dir: Path, names: list[str]) -> list[str]:
    """Units with an [Install] section; templates need an instance, so they are left alone."""
    found = []
    for name in names:
        if "/" in name or "@" in name or not name.endswith(_UNIT_SUFFIXES):
            continue
        if "[Install]" in (unit_dir / name).read_text():
            found.append(name)
    return found


def install_netinstall_files(dom0: Dom0Root, version: str) -> list[str]:
    """hypervisor_payload/dom0 and our own units into the root; the units to enable."""
    root = dom0.path
    if (DOM0_SOURCES / "netinstall_dom0").is_dir():
        _copy_tree(
            DOM0_SOURCES / "netinstall_dom0", root / "usr/lib/netinstall/netinstall_dom0", 0o644
        )
        # Beside it, the leaf package it imports: the protocol's declarations, the error
        # base and the command choke point (common imports nothing of ours).
        _copy_tree(REPO_ROOT / "common", root / "usr/lib/netinstall/common", 0o644)
    if (DOM0_SOURCES / "sbin").is_dir():
        _copy_tree(DOM0_SOURCES / "sbin", root / "usr/sbin", 0o755)
    unit_dir = root / "etc/systemd/system"
    units: list[str] = []
    if (DOM0_SOURCES / "systemd").is_dir():
        units += _copy_tree(DOM0_SOURCES / "systemd", unit_dir, 0o644)
    for name, text in config.GENERATED_UNITS.items():
        _write(unit_dir, name, text)
        units.append(name)
    for relative, text in config.SYSTEM_FILES.items():
        _write(root, relative, text)
    xen = dom0.packages.get("xen-hypervisor-4.17-amd64", "unknown")
    release = config.release_text(version, dom0.build_id, dom0.kernel_release, xen)
    _write(root, "etc/netinstall-release", release)
    _make_dirs(root / "var/lib/netinstall")
    return _units_to_enable(unit_dir, sorted(set(units)))


def strip_identity(root: Path) -> None:
    """No machine-id, host keys, hostname or resolver of the build host in the image."""
    for pattern in config.IDENTITY_REMOVE:
        _remove(root, pattern)
    for relative, text in config.IDENTITY_FILES.items():
        _write(root, relative, text, 0o444 if relative == "etc/machine-id" else 0o644)


def finish_root(ctx: BuildContext, dom0: Dom0Root) -> None:
    """Stage 2 on an unpacked root: netinstall's files, enabled units, no identity."""
    root = dom0.path
    units = install_netinstall_files(dom0, ctx.payload_version)
    ctx.progress.step(TARGET, f"enabling {', '.join(units) or 'no units'}")
    with debian.mounted(root):
        if units:
            debian.in_chroot(root, ["systemctl", "enable", *units])
        # Byte-code for first boot and the agent, compiled by dom0's own Python: an
        # emulated first boot compiled them before it could make the SR. Hash-checked,
        # so the archive's clamped mtimes do not make them stale.
        debian.in_chroot(root, [*COMPILE, "/usr/lib/netinstall"])
    release_mounts(root)
    strip_identity(root)
    _remove(root, "tmp/*")
    debian.allow_service_starts(root)


def pack_root(ctx: BuildContext, dom0: Dom0Root, target: Path) -> int:
    """``target`` = the root as a zstd-compressed tar; its size."""
    release_mounts(dom0.path)
    if any((dom0.path / "proc").iterdir()):
        raise NetinstallError(f"{dom0.path}/proc is not empty: refusing to pack a mounted root")
    plain = ctx.work / "dom0-rootfs.tar"
    plain.unlink(missing_ok=True)
    argv = ["tar", *_TAR_COMMON, *_TAR_REPRODUCIBLE, f"--mtime=@{dom0.epoch}", "--clamp-mtime"]
    with ctx.progress.long(TARGET, "writing the dom0 root's tar"):
        run([*argv, "-C", str(dom0.path), "-cf", str(plain), "."], timeout=1800)
    zstd = f"zstd -{ZSTD_LEVEL} of the dom0 root ({size_text(plain.stat().st_size)})"
    with ctx.progress.long(TARGET, zstd):
        run(
            ["zstd", "-q", "-f", "-T2", f"-{ZSTD_LEVEL}", str(plain), "-o", str(target)],
            timeout=1800,
        )
    plain.unlink()
    return target.stat().st_size


def boot_files(dom0: Dom0Root) -> dict[str, str]:
    """Repository name -> path inside the root of Xen, the kernel and its initrd."""
    boot = dom0.path / "boot"
    xen = sorted(p.name for p in boot.glob("xen-*-amd64.gz"))
    if len(xen) != 1:
        raise NetinstallError(f"expected one Xen image in the dom0 /boot, found {xen}")
    found = {
        "boot/xen.gz": f"/boot/{xen[0]}",
        # Xen as an EFI application, for iPXE EFI (it cannot multiboot): SAN boot on UEFI.
        "boot/xen.efi": f"/boot/{xen[0].removesuffix('.gz')}.efi",
        "boot/vmlinuz": f"/boot/vmlinuz-{dom0.kernel_release}",
        "boot/initrd.img": f"/boot/initrd.img-{dom0.kernel_release}",
    }
    for name, inside in found.items():
        if not (dom0.path / inside.lstrip("/")).is_file():
            raise NetinstallError(f"the dom0 root has no {inside} (for {name})")
    return found
