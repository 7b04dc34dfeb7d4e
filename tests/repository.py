"""An install repository for tests: payload files and the ``.treeinfo`` that lists them."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from hypervisor_payload import treeinfo as writer


def treeinfo_text(files: Mapping[str, bytes], version: str, build: str) -> str:
    """The ``.treeinfo`` of a repository holding ``files`` (the four payload files)."""
    info = writer.TreeInfo(
        version=version,
        build=build,
        kernel="boot/vmlinuz",
        initrd="boot/initrd.img",
        xen="boot/xen.gz",
        archive="dom0-rootfs.tar.zst",
        compression="zstd",
        checksums={name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    )
    return writer.render_treeinfo(info)


def write_repository(root: Path, files: Mapping[str, bytes], version: str, build: str) -> Path:
    """``files`` and their ``.treeinfo`` under ``root``; returns ``root``."""
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / ".treeinfo").write_text(treeinfo_text(files, version, build))
    return root
