"""GRUB's boot-file connections get whole segments (pxe_server/grub_tcp.py), others are untouched.

A client that speaks TCP as GRUB 2.06 does (``grub_like_client.py``: a SYN without an
MSS option, an 8 KiB window, an ACK per segment) fetches a boot file from a real
``HttpServer`` through a tun device in a network namespace of its own, so every
segment the server's kernel sends is seen as GRUB sees it. Needs root (namespaces,
tun, and repair mode's CAP_NET_ADMIN).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxe_server import grub_tcp

CLIENT = Path(__file__).with_name("grub_like_client.py")
SIZE = 600_000  # bytes: some 400 segments of 1460, 1100 of 536


@pytest.fixture
def namespace() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root: a network namespace, a tun device and CAP_NET_ADMIN")
    if not Path("/dev/net/tun").exists():
        pytest.skip("no /dev/net/tun")
    name = f"ni-grubtcp-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def fetch(namespace: str, tmp_path: Path, *extra: str) -> dict[str, object]:
    netboot = tmp_path / "netboot"
    netboot.mkdir(exist_ok=True)
    body = (hashlib.sha256(b"install.img").digest() * (SIZE // 32 + 1))[:SIZE]
    (netboot / "install.img").write_bytes(body)
    argv = [
        "ip", "netns", "exec", namespace, sys.executable, str(CLIENT),
        str(netboot), "install.img", str(tmp_path / "registry"), *extra,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    assert result["sha256"] == hashlib.sha256(body).hexdigest()
    assert result["length"] == SIZE
    return result


def largest(result: dict[str, object]) -> int:
    sizes = result["sizes"]
    assert isinstance(sizes, dict)
    return max(int(size) for size in sizes)


def test_a_syn_without_mss_gets_whole_segments(namespace: str, tmp_path: Path) -> None:
    result = fetch(namespace, tmp_path)
    assert result["raised"] == 1
    assert largest(result) == grub_tcp.GRUB_MSS  # not RFC 1122's 536
    sizes = result["sizes"]
    assert isinstance(sizes, dict)
    assert sizes[str(grub_tcp.GRUB_MSS)] >= SIZE // grub_tcp.GRUB_MSS // 2


def test_a_syn_naming_its_mss_is_left_alone(namespace: str, tmp_path: Path) -> None:
    result = fetch(namespace, tmp_path, "--mss", "536")
    assert result["raised"] == 0
    assert largest(result) == grub_tcp.DEFAULT_MSS
