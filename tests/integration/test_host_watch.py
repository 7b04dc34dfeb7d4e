"""``netinstall host watch`` against a real ``server run`` (loopback, SQLite): hosts driven
through their installs by HTTP requests as their boot loader, installer and first boot
send them (tests/integration/two_servers.py's BootClient: no QEMU), watched over the API
and on the server's directory, until they run (exit 0) or fail (exit 1)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import NETINSTALL, netinstall
from tests.integration.two_servers import PAYLOAD, VERSION, BootClient, Running, serving
from tests.repository import write_repository

pytestmark = pytest.mark.integration

ONE = "52:54:00:00:20:01"
TWO = "52:54:00:00:20:02"
WATCH_TIMEOUT = 90  # seconds the watch may take at most (a busy 2-core machine)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    files = {name: name.encode() for name in PAYLOAD}
    repo = write_repository(tmp_path / "repo", files, VERSION, "b1")
    netboot = tmp_path / "netboot"
    netboot.mkdir()
    directory = tmp_path / "srv"
    done = netinstall("server", "init", str(directory), "--repo", str(repo),
                      "--netboot", str(netboot), "--advertise", "127.0.0.1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    for mac in (ONE, TWO):
        added = netinstall("host", "add", mac, "--dir", str(directory), "--var", "disk=vda")
        assert added.returncode == 0, added.stderr
    with serving(directory, tmp_path / "server.log") as running:
        yield running


def start_watch(*args: str) -> subprocess.Popen[str]:
    """``netinstall ARGS`` in the background, as an operator's second terminal runs it
    (here with no terminal: plain lines or JSON lines)."""
    return subprocess.Popen(
        [str(NETINSTALL), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def finished(watch: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = watch.communicate(timeout=WATCH_TIMEOUT + 30)
    return watch.returncode, out, err


def install(server: Running, host: BootClient, *, fail: bool = False) -> None:
    """One install over HTTP, each report a moment after the last (the watch looks
    every 0.2 s), up to running, or failed while extracting."""
    port = server.http_port

    def report(state: str, **fields: object) -> None:
        time.sleep(0.5)
        reply = host.event(port, state, **fields)
        assert reply.status == 200, reply

    token = host.token_of(host.boot_config(port))
    assert token is not None
    assert host.enrol(port, token).status == 200
    assert host.answer_file(port).status == 200
    report("installing", step="partition", progress=0.2)
    report("installing", step="extract-root", progress=0.6)
    if fail:
        report("failed", step="extract-root", message="sha256 mismatch for dom0-rootfs.tar.zst")
        return
    report("installed")
    report("installed", step="first-boot", message="first boot started")
    report("installed", step="sr-created", message="local SR lvm ready")
    time.sleep(0.5)
    reply = host.event(port, "running", facts={"payload_version": VERSION})
    assert reply.status == 200, reply


def over_api(server: Running, *args: str) -> list[str]:
    token = server.directory / "api-token"
    return ["--server", server.url, "--token-file", str(token), *args]


def test_watch_over_the_api_ends_0_when_every_host_runs(server: Running) -> None:
    watch = start_watch(
        *over_api(server, "host", "watch", "--interval", "0.2", "--timeout", str(WATCH_TIMEOUT))
    )
    try:
        time.sleep(1)  # the watch has seen both hosts pending
        for mac in (ONE, TWO):
            install(server, BootClient(mac))
    finally:
        code, out, err = finished(watch)
    assert code == 0, (out, err)
    assert err.splitlines() == ["watching 2 hosts not running yet", "every watched host is running"]
    lines = [line.split("] ", 1)[1] for line in out.splitlines()]
    mine = [line for line in lines if line.startswith(ONE)]
    assert mine[0] == f"{ONE}: pending: added to the registry"
    assert f"{ONE}: signalled: answer file fetched" in mine
    assert f"{ONE}: installing partition 20%" in mine
    assert f"{ONE}: installed first-boot: first boot started" in mine
    assert mine[-1] == f"{ONE}: running"
    assert lines[-1] == f"{TWO}: running"


def test_watch_ends_1_naming_the_host_that_failed(server: Running) -> None:
    args = ["host", "watch", "--json", "--interval", "0.2", "--timeout", str(WATCH_TIMEOUT)]
    watch = start_watch(*args, ONE, TWO, "--dir", str(server.directory))
    try:
        time.sleep(1)
        install(server, BootClient(ONE))
        install(server, BootClient(TWO), fail=True)
    finally:
        code, out, err = finished(watch)
    assert code == 1, (out, err)
    assert err.splitlines()[-1] == (
        f"netinstall: 1 host failed: {TWO}: sha256 mismatch for dom0-rootfs.tar.zst"
    )
    changes = [json.loads(line) for line in out.splitlines()]
    assert [c["state"] for c in changes if c["mac"] == ONE][-1] == "running"
    last = [c for c in changes if c["mac"] == TWO][-1]
    assert (last["state"], last["step"], last["progress"]) == ("failed", "extract-root", None)


def test_a_watch_with_nothing_left_to_do_ends_at_once(server: Running) -> None:
    done = netinstall(*over_api(server, "host", "watch", "52-54-00-00-20-03"))
    assert done.returncode == 2
    assert (
        done.stderr == "netinstall: no host 52:54:00:00:20:03 in the registry (see `host list`)\n"
    )


def test_the_first_boot_service_s_milestones_reach_a_real_server(
    server: Running, tmp_path: Path
) -> None:
    """dom0's own first-boot code (netinstall_dom0.firstboot, its HTTP through a real
    requests session) against ``server run``: first-boot, sr-created and running arrive in
    that order and the agent credential is stored. The LVM and Xen commands are the unit
    suite's canned runner (no disks or Xen here)."""
    import requests

    from tests.unit import test_dom0_firstboot as dom0

    host = BootClient(ONE)
    port = server.http_port
    token = host.token_of(host.boot_config(port))
    assert token is not None
    assert host.enrol(port, token).status == 200
    assert host.answer_file(port).status == 200
    assert host.event(port, "installed").status == 200
    layout = dom0.Layout(tmp_path / "root")
    for relative, text in (
        ("proc/cmdline", dom0.CMDLINE + "\n"),
        ("proc/sys/kernel/hostname", "xenhost01\n"),
        ("etc/netinstall-release", 'NAME="netinstall"\nVERSION="1.0"\n'),
        ("etc/fstab", "UUID=0b6e9d7c / ext4 errors=remount-ro 0 1\n"),
    ):
        (layout.root / relative).parent.mkdir(parents=True, exist_ok=True)
        (layout.root / relative).write_text(text)
    config = dom0.base_config({"type": "lvm", "devices": [dom0.PART3]})
    config |= {"server": f"http://127.0.0.1:{port}", "mac": ONE, "token": host.key}
    dom0.write_config(layout, config)
    with requests.Session() as session:
        dom0.firstboot(
            layout,
            dom0.FakeRunner(),
            session,
            new_uuid=lambda: dom0.SR_UUID,
            resolve=lambda dev: dom0.DEVICES.get(dev, dev),
        )
    assert layout.agent_config.exists()
    shown = netinstall(*over_api(server, "host", "show", ONE, "--json"))
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["state"] == "running"
    timeline = [(e["state"], e["step"]) for e in record["events"]]
    assert timeline[-4:] == [
        ("installed", None),
        ("installed", "first-boot"),
        ("installed", "sr-created"),
        ("running", None),
    ]
    assert ("signalled", "answer-file") in timeline
