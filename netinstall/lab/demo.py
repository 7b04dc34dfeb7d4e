"""The end-to-end lab: a QEMU machine network-installs from our server, then boots its disk.

``run_lab`` builds a namespace (``netns``), a server directory for one host, runs
``netinstall server run`` with full DHCP and QEMU inside the namespace, follows the
serial console and the registry (``console.Tracker``) until the wanted milestone,
a failure or the time limit, and always tears everything down. A full run
(``until=RUNNING``) succeeds only when ``running`` arrives after the reboot and the
reported facts match the disk (``verify``).
"""

from __future__ import annotations

import logging
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from hypervisor_payload.treeinfo import parse_treeinfo
from netinstall.errors import NetinstallError
from netinstall.lab import console, netns, qemu, services
from netinstall.lab.console import Tracker
from netinstall.process import run
from pxe_server.registry import Registry

log = logging.getLogger("netinstall.lab")

ROOT_PASSWORD = "netinstall-lab"  # noqa: S105 - the throw-away lab machine's password
HOST_NAME = "lab01"


@dataclass(frozen=True)
class LabOptions:
    firmware: qemu.Firmware
    repo: Path  # build/repo
    netboot: Path  # build/netboot
    until: str = console.RUNNING  # the milestone that ends the run
    timeout: float = 1800.0
    keep: Path | None = None  # keep the work files here (else a temporary directory)


@dataclass
class LabResult:
    ok: bool
    reason: str
    tracker: Tracker
    workdir: Path | None
    console_tail: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)  # what verify compared


Say = Callable[[str], None]


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the teardown runs."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def prepare_server(directory: Path, options: LabOptions, net: netns.LabNetwork, mac: str) -> None:
    """``server init`` + ``host add`` through the CLI, as an operator would."""
    cli = services.netinstall_command()
    run([
        *cli, "server", "init", str(directory),
        "--repo", str(options.repo.resolve()), "--netboot", str(options.netboot.resolve()),
        "--advertise", net.server_ip,
    ])  # fmt: skip
    run([
        *cli, "host", "add", mac, "--dir", str(directory), "--name", HOST_NAME,
        "--var", "disk=vda", "--var", f"root_password={ROOT_PASSWORD}",
    ])  # fmt: skip


def run_lab(options: LabOptions, say: Say = print) -> LabResult:
    """One lab run; never leaves a namespace or a process behind."""
    if options.keep is not None:
        options.keep.mkdir(parents=True, exist_ok=True)
        workdir = options.keep.resolve()
        temporary = None
    else:
        temporary = tempfile.TemporaryDirectory(prefix="netinstall-lab-")
        workdir = Path(temporary.name)
    try:
        with _sigterm_interrupts():
            return _run(options, workdir, say)
    finally:
        if temporary is not None:
            temporary.cleanup()


def _run(options: LabOptions, workdir: Path, say: Say) -> LabResult:
    mac = qemu.lab_mac(options.firmware)
    net = netns.new_network()
    server_dir = workdir / "server"
    if server_dir.exists():
        shutil.rmtree(server_dir)  # --keep DIR reused: a fresh registry, a fresh install
    prepare_server(server_dir, options, net, mac)
    machine = qemu.Machine(
        firmware=options.firmware,
        mac=mac,
        disk=workdir / "disk.raw",
        serial=workdir / "serial.log",
        monitor=workdir / "monitor.sock",
        tap=net.tap,
        ovmf_vars=workdir / "OVMF_VARS.fd" if options.firmware == "uefi" else None,
    )
    qemu.make_disk(machine.disk)
    if machine.ovmf_vars is not None:
        qemu.copy_ovmf_vars(machine.ovmf_vars)
    machine.serial.unlink(missing_ok=True)
    machine.monitor.unlink(missing_ok=True)
    tracker = Tracker()
    children: list[services.Child] = []
    vm: services.Child | None = None
    say(f"lab: {options.firmware} machine {mac} in namespace {net.namespace}, files in {workdir}")
    try:
        netns.create(net)
        children.append(services.start_server(server_dir, net, workdir))
        start = time.monotonic()
        vm = services.Child(
            "qemu", netns.netns_exec(net.namespace, qemu.argv(machine)), workdir / "qemu.log"
        )
        reason = _follow(
            options,
            tracker=tracker,
            vm=vm,
            server=children[0],
            server_dir=server_dir,
            mac=mac,
            start=start,
            say=say,
        )
        serial = console.SerialLog(machine.serial)
        serial.read()
        tail = serial.last_lines()
    finally:
        if vm is not None:
            services.quit_qemu(vm, machine.monitor)
        for child in reversed(children):
            child.stop()
        netns.destroy(net.namespace)  # raises if the namespace is still there
    checks: list[str] = []
    if reason is None and options.until == console.RUNNING:
        reason = verify(
            tracker, options.repo, server_dir=server_dir, mac=mac, disk=machine.disk, checks=checks
        )
    return LabResult(reason is None, reason or "ok", tracker, workdir, tail, checks)


def _follow(
    options: LabOptions,
    *,
    tracker: Tracker,
    vm: services.Child,
    server: services.Child,
    server_dir: Path,
    mac: str,
    start: float,
    say: Say,
) -> str | None:
    """Follow the run until ``options.until``; None when reached, else why not."""
    serial = console.SerialLog(vm_serial(vm))
    seen_events = 0
    announced: set[str] = set()
    with Registry.open(server_dir) as registry:
        while True:
            now = time.monotonic() - start
            events = registry.events(mac)  # before the console: a report precedes its reboot
            for event in events[seen_events:]:  # timed when first seen, like console lines
                tracker.event(event.state.value, event.step, event.message, now)
            seen_events = len(events)
            for text in serial.read():
                tracker.line(text, now)
            for name, at in tracker.reached.items():
                if name not in announced:
                    announced.add(name)
                    say(f"[{at:7.1f} s] {name}")
            if tracker.failure is not None:
                return tracker.failure
            if options.until in tracker.reached:
                if options.until == console.RUNNING:
                    _drain(serial, tracker, start)
                return None
            if (code := vm.exited()) is not None:
                return f"QEMU exited with status {code}: {vm.output().strip()[-500:]}"
            if (code := server.exited()) is not None:
                return f"the server exited with status {code} (see {server.log_path})"
            if now > options.timeout:
                return f"no {options.until!r} within {options.timeout:g} s"
            time.sleep(0.5)


def vm_serial(vm: services.Child) -> Path:
    """The serial console file named on QEMU's command line."""
    for arg in vm.argv:
        if arg.startswith("file:"):
            return Path(arg.removeprefix("file:"))
    raise ValueError("QEMU has no serial file")


def _drain(serial: console.SerialLog, tracker: Tracker, start: float, seconds: float = 5) -> None:
    """Console lines may trail the registry: read them a few seconds more."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and console.SR_CREATED not in tracker.reached:
        for text in serial.read():
            tracker.line(text, time.monotonic() - start)
        time.sleep(0.5)


def verify(
    tracker: Tracker, repo: Path, *, server_dir: Path, mac: str, disk: Path, checks: list[str]
) -> str | None:
    """After a full run: ``running`` after the reboot, the facts match the disk."""
    reached = tracker.reached
    for needed in (console.REBOOT, console.XEN_DISK, console.DOM0_DISK):
        if needed not in reached:
            return f"{console.RUNNING!r} arrived without {needed!r}"
    if reached[console.RUNNING] < reached[console.REBOOT]:
        return "running was reported before the reboot"
    version = parse_treeinfo((repo / ".treeinfo").read_text("utf-8")).version
    with Registry.open(server_dir) as registry:
        host = registry.get_host(mac)
    running = host.running_version if host is not None else None
    if running != version:
        return f"the host runs payload {running!r}, the repository holds {version!r}"
    checks.append(f"payload version {running} == .treeinfo")
    if not tracker.facts.get("sr_uuid"):
        return "first boot printed no SR uuid"
    checks.append(f"SR {tracker.facts.get('sr_type')} uuid {tracker.facts['sr_uuid']}")
    booted = tracker.facts.get("cmdline_root_uuid")
    on_disk = root_uuid(disk)
    if on_disk is None:
        checks.append(f"root UUID {booted} (the disk could not be read back)")
    elif on_disk != booted:
        return f"dom0 booted root=UUID={booted}, partition 1 has UUID {on_disk}"
    else:
        checks.append(f"root UUID {booted} == partition 1 of the disk")
    return None


def root_uuid(disk: Path) -> str | None:
    """The filesystem UUID of partition 1 of a raw disk image (a read-only loop device)."""
    try:
        device = run(["losetup", "--find", "--show", "--partscan", "--read-only", str(disk)])
    except NetinstallError:  # no loop device or no losetup: not checked
        log.warning("cannot attach %s to a loop device", disk, exc_info=True)
        return None
    loop = device.stdout.strip()
    try:
        run(["partprobe", loop], ok_codes=(0, 1))
        found = run(["blkid", "-s", "UUID", "-o", "value", f"{loop}p1"], ok_codes=(0, 2))
        return found.stdout.strip().lower() or None
    finally:
        run(["losetup", "--detach", loop], ok_codes=(0, 1))
