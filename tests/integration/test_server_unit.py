"""``netinstall server unit``: systemd reads the printed unit back without a complaint, and
``server run`` serves TFTP and DHCP with exactly the capabilities the unit grants it.

This machine runs no systemd, so no unit is ever started: ``systemd-analyze verify``
checks the text, and ``setpriv`` gives ``server run`` (the unit's own ExecStart) the
unit's capability set (as root: the bounding set; as ``User=``: the same set as
ambient capabilities, no new privileges), inside a network namespace of the test's,
where a DHCP client in a second namespace asks for a lease and a TFTP client fetches
pxelinux.0 on port 69. One capability fewer, and the server says which and stops.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import netinstall
from tests.integration.test_dnsmasq import Net, _why_not, dhcp
from tests.integration.veth import veth_pair

pytestmark = pytest.mark.integration

SERVER = "192.168.79.1"
CLIENT_MAC = "52:54:00:79:00:01"
DHCP = f"--dhcp full --interface srv0 --range 192.168.79.10,192.168.79.50 --bind {SERVER}"
TEST_UID = 64917  # no user of this machine: the dedicated user a unit's User= names
START_TIMEOUT = 60.0  # seconds for the server to answer TFTP (grub-mkimage runs first)


def unit_text(directory: Path, *args: str) -> str:
    done = netinstall("server", "unit", str(directory), *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def service(text: str) -> dict[str, str]:
    """The [Service] section's settings (none repeats in ours)."""
    found: dict[str, str] = {}
    inside = False
    for line in text.splitlines():
        if line.startswith("["):
            inside = line == "[Service]"
        elif inside and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found[key] = value
    return found


VARIANTS = (
    (),
    ("--user", "netinstall"),
    ("--extra-args", DHCP),
    ("--user", "netinstall", "--extra-args", "--dhcp proxy --interface eno1 --http-port 80"),
)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_reads_the_units_back(tmp_path: Path) -> None:
    directory = tmp_path / "srv"
    assert netinstall("server", "init", str(directory)).returncode == 0
    units = []
    for number, args in enumerate(VARIANTS):
        units.append(tmp_path / f"netinstall-server-{number}.service")
        units[-1].write_text(unit_text(directory, *args))
    done = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "netinstall-server" not in done.stderr, done.stderr  # not one warning about ours


# -- the capabilities, on a real segment ----------------------------------------------------


@pytest.fixture
def segment(tmp_path: Path) -> Iterator[Net]:
    why = _why_not() or (None if shutil.which("setpriv") else "setpriv is missing (util-linux)")
    if why:
        pytest.skip(why)
    with veth_pair("unit", (f"{SERVER}/24",), client_address="192.168.79.2/24") as pair:
        yield Net(pair.server_ns, pair.client_ns, tmp_path)


@pytest.fixture
def directory() -> Iterator[Path]:
    """A server directory another user can own: under a directory every user may enter
    (pytest's own temporary directories are root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="netinstall-unit-", dir="/tmp"))
    try:
        base.chmod(0o755)
        netboot = base / "netboot"
        netboot.mkdir()
        (netboot / "pxelinux.0").write_bytes(b"\x7fpxelinux" * 100)
        where = base / "srv"
        done = netinstall("server", "init", str(where), "--netboot", str(netboot), "--repo",
                          str(netboot))  # fmt: skip
        assert done.returncode == 0, done.stderr
        yield where
    finally:
        shutil.rmtree(base)


def setpriv(unit: dict[str, str], drop: str | None = None) -> list[str]:
    """``setpriv`` giving a process what the unit's [Service] gives it, less ``drop``; its
    ``User=`` is ``TEST_UID`` (a user of its own, made for the server, owns nothing else)."""
    caps = [c for c in unit["CapabilityBoundingSet"].split() if c != drop]
    listed = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps)])
    argv = ["setpriv", "--bounding-set", listed, "--no-new-privs"]
    if "User" in unit:
        assert unit["AmbientCapabilities"] == unit["CapabilityBoundingSet"]
        argv += ["--reuid", str(TEST_UID), "--regid", str(TEST_UID)]
        argv += ["--clear-groups", "--inh-caps", listed, "--ambient-caps", listed]
    return [*argv, "--", *shlex.split(unit["ExecStart"])]


def start(net: Net, argv: list[str], home: Path | None = None) -> subprocess.Popen[str]:
    """``argv`` in the server's namespace; ``home``: $HOME as systemd sets it for User=."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.Popen(
        ["ip", "netns", "exec", net.server_ns, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def stop(child: subprocess.Popen[str]) -> str:
    if child.poll() is None:
        child.terminate()
    _, err = child.communicate(timeout=30)
    return err


def tftp_from_client(net: Net) -> bytes | None:
    out = net.workdir / "pxelinux.0"
    out.unlink(missing_ok=True)
    done = subprocess.run(
        ["ip", "netns", "exec", net.client_ns, "curl", "-sS", "--max-time", "2", "-o", str(out),
         f"tftp://{SERVER}/pxelinux.0"],
        capture_output=True, check=False, timeout=10,
    )  # fmt: skip
    return out.read_bytes() if done.returncode == 0 else None


def serves(net: Net, child: subprocess.Popen[str]) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and child.poll() is None:
        if tftp_from_client(net) is not None:
            return True
        time.sleep(0.5)
    return False


@pytest.mark.parametrize("user", [None, "netinstall"])
def test_the_units_capabilities_are_enough(segment: Net, directory: Path, user: str | None) -> None:
    args = ("--user", user) if user else ()
    if user:
        for path in (directory, *directory.rglob("*")):
            os.chown(path, TEST_UID, TEST_UID)
    unit = service(unit_text(directory, *args, "--extra-args", DHCP))
    child = start(segment, setpriv(unit), home=directory if user else None)
    try:
        assert serves(segment, child), stop(child)
        assert tftp_from_client(segment) == b"\x7fpxelinux" * 100  # port 69
        lease = dhcp(segment, CLIENT_MAC, 0)  # dnsmasq, started by the server, answers
        assert lease["siaddr"] == SERVER
        assert lease["boot_file"] == "pxelinux.0"
    finally:
        err = stop(child)
    assert "stopped" in err  # SIGTERM (as systemd sends it) stops it cleanly


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("CAP_NET_BIND_SERVICE", "ports below 1024 need root (or CAP_NET_BIND_SERVICE)"),
        ("CAP_NET_RAW", "missing required capability NET_RAW"),
        ("CAP_NET_ADMIN", "missing required capability NET_ADMIN"),
    ],
)
def test_one_capability_fewer_and_the_server_says_which(
    segment: Net, directory: Path, drop: str, message: str
) -> None:
    unit = service(unit_text(directory, "--extra-args", DHCP))
    child = start(segment, setpriv(unit, drop=drop))
    try:
        child.wait(timeout=START_TIMEOUT)
    finally:
        err = stop(child)
    assert child.returncode != 0
    assert message in err
    assert "Traceback" not in err
