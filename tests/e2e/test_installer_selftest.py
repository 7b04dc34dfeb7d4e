"""Boot the installer image in QEMU with ``selftest``: it must find the disk and power off.

The image is built (or found up to date) by ``netinstall.build.build`` with
``only="installer"``, in ``build/`` with the usual cache ``~/.cache/netinstall``.
A second boot runs it as Xen's dom0 (Xen from ``build/repo/boot/xen.gz``, loaded
by QEMU's multiboot loader), where the self-test also reads ``xl info``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e

OUT = REPO / "build"
CACHE = Path.home() / ".cache" / "netinstall"
XEN = OUT / "repo" / "boot" / "xen.gz"
BOOT_TIMEOUT = 300  # seconds, under TCG
MARKER = "INSTALLER-SELFTEST-OK"


@pytest.fixture(scope="session")
def installer_image() -> Path:
    """``build/installer`` with vmlinuz and install.img, built when out of date."""
    if os.geteuid() != 0:
        pytest.skip("building the installer image needs root (debootstrap, chroot)")
    from netinstall.build import build

    build(out=OUT, cache=CACHE, only="installer")
    return OUT / "installer"


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    """A sparse 8 GiB raw disk."""
    path = tmp_path / "disk.raw"
    with path.open("wb") as stream:
        stream.truncate(8 * 2**30)
    return path


def _seen(serial: Path) -> bool:
    return serial.exists() and MARKER in serial.read_text(errors="replace")


def _boot(machine: list[str], serial: Path) -> tuple[int | None, float | None, float]:
    """Run QEMU until it exits or times out: (exit code or None, seconds to the marker, total)."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is missing (scripts/host-packages.txt)")
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-smp", "1",
        "-display", "none", "-monitor", "none", "-serial", f"file:{serial}",
        "-no-reboot", "-nic", "none", *machine,
    ]  # fmt: skip
    started = time.monotonic()
    marker_at = None
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL) as qemu:
        while qemu.poll() is None and time.monotonic() - started < BOOT_TIMEOUT:
            if marker_at is None and _seen(serial):
                marker_at = time.monotonic() - started
            time.sleep(0.5)
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
            return None, marker_at, time.monotonic() - started
        if marker_at is None and _seen(serial):
            marker_at = time.monotonic() - started
        return qemu.returncode, marker_at, time.monotonic() - started


def _report(what: str, marker_at: float | None, total: float) -> None:
    marker = "never" if marker_at is None else f"after {marker_at:.1f} s"
    print(f"{what}: {MARKER} {marker}, QEMU ran {total:.1f} s")


def _check(serial: Path, code: int | None, what: str) -> str:
    log = serial.read_text(errors="replace") if serial.exists() else ""
    tail = "\n".join(log.splitlines()[-40:])
    assert code is not None, f"{what}: QEMU did not power off within {BOOT_TIMEOUT} s:\n{tail}"
    assert code == 0, f"{what}: QEMU exited with {code}:\n{tail}"
    assert MARKER in log, f"{what}: no {MARKER} on the serial console:\n{tail}"
    assert "disk vda 8.6 GB" in log, tail
    assert "FAILED" not in log, tail
    assert "netinstall-init: poweroff" in log, tail
    return log


def test_installer_selftest_boots_lists_the_disk_and_powers_off(
    installer_image: Path, disk: Path, tmp_path: Path
) -> None:
    serial = tmp_path / "serial.log"
    machine = [
        "-m", "1024",
        "-kernel", str(installer_image / "vmlinuz"),
        "-initrd", str(installer_image / "install.img"),
        "-append", "console=ttyS0 selftest",
        "-drive", f"file={disk},if=virtio,format=raw",
    ]  # fmt: skip
    code, marker_at, total = _boot(machine, serial)
    _report("installer self-test", marker_at, total)
    log = _check(serial, code, "installer self-test")
    assert "xen: not running as Xen's dom0" in log


def test_installer_selftest_as_xen_dom0_reads_the_host_memory(
    installer_image: Path, disk: Path, tmp_path: Path
) -> None:
    if not XEN.is_file():
        pytest.skip(f"{XEN.relative_to(REPO)} is not built (netinstall images build --only repo)")
    xen = tmp_path / "xen"  # QEMU's multiboot loader takes the uncompressed ELF
    xen.write_bytes(gzip.decompress(XEN.read_bytes()))
    serial = tmp_path / "serial.log"
    dom0 = f"{installer_image / 'vmlinuz'} console=hvc0 selftest"
    machine = [
        "-m", "2048",
        "-kernel", str(xen),
        "-append", "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M",
        "-initrd", f"{dom0},{installer_image / 'install.img'}",
        "-drive", f"file={disk},if=virtio,format=raw",
    ]  # fmt: skip
    code, marker_at, total = _boot(machine, serial)
    _report("installer self-test under Xen", marker_at, total)
    log = _check(serial, code, "installer self-test under Xen")
    assert "xen: host memory " in log, log[-3000:]
