"""The end-to-end lab: a QEMU machine network-installs from our server, then boots its disk.

``run_lab`` builds a namespace (``netns``), a server directory for one host, runs
``netinstall server run`` with full DHCP and QEMU inside the namespace, follows the
serial console and the registry (``console.Tracker``) until the wanted milestone,
a failure or the time limit, and always tears everything down. A full run
(``until=RUNNING``) succeeds only when ``running`` arrives after the reboot, the
reported facts match the disk and the scenario's markers are there (``verify``);
a run that must fail (``until=FAILED``) only when the host reported failed with the
expected message and the disk was never written (``verify_failure``).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Literal

from common.errors import InputError, NetinstallError
from common.firmware import Firmware
from common.process import run
from hypervisor_payload.treeinfo import parse_treeinfo
from netinstall.lab import (
    bmc,
    console,
    door,
    floor,
    netns,
    paths,
    powercut,
    qemu,
    san,
    services,
    upgrade,
    usernet,
    utility,
)
from netinstall.lab.console import Tracker
from netinstall.lab.diskview import mounted, read_only_disk
from netinstall.lab.follow import Follower, Launch, Say
from netinstall.lab.scenario import SCENARIOS, Scenario, prepare
from pxe_server.registry import Registry

log = logging.getLogger("netinstall.lab")
REARM_TIMEOUT = 120.0  # seconds for `host rearm --power` (the BMC's own timeouts are less)


@dataclass(frozen=True)
class LabOptions:
    firmware: Firmware
    repo: Path  # build/repo
    netboot: Path  # build/netboot
    until: str = console.RUNNING  # the milestone that ends the run
    timeout: float = 1800.0
    keep: Path | None = None  # keep the work files here (else a temporary directory)
    scenario: Scenario | None = None  # None: the firmware's default (scenario.SCENARIOS)
    network: Literal["netns", "user"] = "netns"  # user: the fallback (lab/usernet.py)
    upgrade_repo: Path | None = None  # the upgrade scenario's version B (registered too)
    # Forward 127.0.0.1:PORT on the host to the server's HTTP port for the run (lab/door.py):
    # the web console from a browser on the host (0: any free port, said in the output).
    console_port: int | None = None
    # Called once the run is over, before anything is torn down (the browser test stops
    # its browser there, so that no page polls a server that is going away).
    before_teardown: Callable[[], None] | None = None

    @property
    def chosen(self) -> Scenario:
        return self.scenario or SCENARIOS[self.firmware]


@dataclass
class LabResult:
    ok: bool
    reason: str
    tracker: Tracker
    workdir: Path | None
    console_tail: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)  # what verify compared
    namespace: str | None = None  # the run's network namespace (removed by then)
    floor: floor.Floor | None = None  # measured when the scenario asks (lab/floor.py)


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
    server_dir = workdir / "server"
    if server_dir.exists():
        shutil.rmtree(server_dir)  # --keep DIR reused: a fresh registry, a fresh install
    user: usernet.UserNetwork | None = None
    if options.network == "user":
        say(usernet.LOUD)
        user = usernet.new_user_network(workdir, options.firmware)
        net = None
        server = user.server
        server_argv = user.server_argv(server_dir)
        where = "QEMU user-mode networking"
    else:
        net = netns.new_network()
        server = ipaddress.IPv4Interface(net.address)
        chosen = options.chosen
        argv = services.server_argv(server_dir, net, chosen.boot_transport, chosen.dhcp)
        server_argv = netns.netns_exec(net.namespace, argv)
        where = f"namespace {net.namespace}"
    if options.chosen.dhcp == "proxy" and net is None:
        raise InputError("the proxy-DHCP scenarios need the namespace network (--network netns)")
    storage = None
    if options.chosen.san:
        if net is None:
            raise InputError("the SAN scenarios need the namespace network (--network netns)")
        storage = san.new_storage(
            net.namespace, f"lab-{options.firmware}", portals=options.chosen.portals
        )
    prepare(
        server_dir, options.chosen, server, mac,
        repo=options.repo, netboot=options.netboot, storage=storage,
    )  # fmt: skip
    if options.chosen.upgrade:
        if options.upgrade_repo is None:
            raise InputError("the upgrade scenario needs the repository to upgrade to")
        run([
            *services.netinstall_command(), "server", "repo", "add",
            str(options.upgrade_repo.resolve()), "--dir", str(server_dir),
        ])  # fmt: skip
    machine = qemu.Machine(
        firmware=options.firmware,
        mac=mac,
        disk=workdir / "disk.img",  # raw, sparse
        serial=workdir / "serial.log",
        monitor=workdir / "monitor.sock",
        tap=net.tap if net is not None else None,
        netdev=user.netdev() if user is not None else None,
        ovmf_vars=workdir / "OVMF_VARS.fd" if options.firmware == "uefi" else None,
        console=workdir / "console.sock"
        if options.chosen.upgrade or options.chosen.multipath
        else None,
        storage_tap=san.STORAGE_TAP if storage is not None else None,
        storage_mac=san.storage_mac(qemu.MAC_SUFFIX[options.firmware]) if storage else None,
        local_disk=storage is None,  # a SAN machine is diskless: the image is its LUN
        multipath=options.chosen.qemu_paths,
        http_boot=options.chosen.http_boot,
        qmp=workdir / "qmp.sock" if options.chosen.bmc == "ipmi" else None,
        events=workdir / "events.sock" if options.chosen.bmc is not None else None,
    )
    qemu.make_disk(machine.disk, options.chosen.disk_size or qemu.DISK_SIZE)
    kept = utility.make_utility_partition(machine.disk) if options.chosen.utility else None
    if kept is not None:
        say(f"lab: utility partition 1 written, {kept.size} bytes, sha256 {kept.sha256}")
    if machine.ovmf_vars is not None:
        qemu.copy_ovmf_vars(machine.ovmf_vars)
    machine.serial.unlink(missing_ok=True)
    machine.serial.with_name(console.TIMED_LOG).unlink(missing_ok=True)
    machine.monitor.unlink(missing_ok=True)
    for socket_path in (machine.qmp, machine.events):
        if socket_path is not None:
            socket_path.unlink(missing_ok=True)
    tracker = Tracker()
    checks: list[str] = []
    children: list[services.Child] = []
    vm: services.Child | None = None
    follower: Follower | None = None
    target: san.Target | None = None
    lab_bmc: bmc.LabBmc | None = None
    entrance: door.Door | None = None
    if options.console_port is not None and net is None:
        raise InputError("the console port needs the namespace network (--network netns)")
    say(
        f"lab: {options.firmware} machine {mac} on {where}, "
        f"scenario {options.chosen.name!r}, files in {workdir}"
    )
    try:
        if net is not None:
            netns.create(net)
        if storage is not None:
            target = san.Target(storage, machine.disk, workdir)
        children.append(services.start_server(server_argv, workdir))
        if net is not None and options.chosen.dhcp == "proxy":
            site = services.Child(
                "site DHCP",
                netns.netns_exec(net.namespace, services.site_dhcp_argv(net, workdir)),
                workdir / "site-dhcp.log",
            )
            children.append(site)  # after the server: children[0] is followed
            site.wait_for(services.SITE_DHCP_READY, timeout=10)
        if options.console_port is not None and net is not None:
            entrance = door.Door(
                net.namespace, net.server_ip, services.HTTP_PORT, options.console_port
            )
            say(
                f"lab: web console at http://127.0.0.1:{entrance.port}/ui/ (log in with "
                f"the API token in {server_dir / 'api-token'})"
            )
        export = None
        if user is not None:
            export = usernet.Export(user, options.netboot, mac, server_dir)
            export.refresh("pending")

        def vm_argv(network_first: bool = True) -> list[str]:
            found = qemu.argv(replace(machine, network_first=network_first))
            return netns.netns_exec(net.namespace, found) if net is not None else found

        start = time.monotonic()
        if options.chosen.bmc is not None:
            lab_bmc = _start_bmc(
                options.chosen.bmc, workdir, server_dir=server_dir, mac=mac,
                vm_argv=vm_argv, machine=machine,
            )  # fmt: skip
            launch = Launch(vm_argv(), workdir / "qemu.log", qemu.no_huge_pages)
            follower = Follower(None, children[0], server_dir, mac, start, say, export,
                                launch=launch, bmc=lab_bmc.notices,
                                events=machine.events)  # fmt: skip
            _rearm_through_the_bmc(lab_bmc, server_dir, mac, say, checks)
        else:
            vm = services.Child("qemu", vm_argv(), workdir / "qemu.log", before=qemu.no_huge_pages)
            follower = Follower(vm, children[0], server_dir, mac, start, say, export)
        reason = None
        if options.chosen.refuse_login and target is not None:
            reason = follower.follow(tracker, console.INSTALLER_UP, options.timeout)
            if reason is None:
                target.refuse_login()
                tracker.reached["target refuses the host"] = follower.now()
        cut = None
        if reason is None and options.chosen.cut is not None:
            tracker, cut, reason = powercut.cut_and_power_on(
                follower, tracker, powercut.cut_point(options.chosen.cut),
                disk=machine.disk, archive=_archive(options.repo), workdir=workdir,
            )  # fmt: skip
        if reason is None:
            reason = follower.follow(tracker, options.until, options.timeout)
        if reason is None and options.chosen.floor and options.until == console.RUNNING:
            reason = floor.floor_boot(follower, machine.monitor, tracker, options.timeout)
        if reason is None and cut is not None:
            reason = powercut.after_the_cut(tracker, cut, checks)
        if reason is None and options.chosen.upgrade:
            reason = upgrade.upgrade_and_restore(
                follower,
                machine,
                tracker,
                start_version=_version(options.repo),
                target=_version(options.upgrade_repo) if options.upgrade_repo else None,
                server_dir=server_dir,
                checks=checks,
                kept=kept,
            )
        if reason is None and options.chosen.multipath:
            reason = paths.lose_a_path(
                follower, machine, tracker, checks=checks, remove=_path_remover(machine, target),
            )  # fmt: skip
        follower.serial.read()
        tail = follower.serial.last_lines()
    finally:
        if options.before_teardown is not None:
            options.before_teardown()
        if entrance is not None:
            entrance.close()
        if follower is not None:
            vm = follower.qemu  # the QEMU of the last power-on (reboots, cuts, the floor boot)
        if vm is not None:
            services.quit_qemu(vm, machine.monitor)
        if lab_bmc is not None:
            lab_bmc.stop()
        for child in reversed(children):
            child.stop()
        if target is not None:
            target.stop()
        if net is not None:
            netns.destroy(net.namespace)  # raises if the namespace is still there
    if reason is None and options.chosen.upgrade:
        reason = upgrade.check_backup(
            machine.disk, _version(options.repo), checks, options.chosen.backup_partition
        )
    if reason is None and kept is not None:
        reason = _check_utility(machine.disk, kept, checks)
    if reason is None and options.until == console.RUNNING:
        reason = verify(
            tracker, options, server, server_dir=server_dir, mac=mac, disk=machine.disk,
            checks=checks,
        )  # fmt: skip
    elif reason is None and options.until == console.FAILED:
        reason = verify_failure(
            options.chosen, server_dir=server_dir, mac=mac, disk=machine.disk, checks=checks
        )
    namespace = net.namespace if net is not None else None
    measured = None
    if options.chosen.floor:
        payload = floor.payload_bytes(options.repo)
        measured = floor.measure(tracker.reached, tracker.facts, payload)
    return LabResult(
        reason is None, reason or "ok", tracker, workdir, tail, checks, namespace, measured
    )


def _start_bmc(
    kind: str,
    workdir: Path,
    *,
    server_dir: Path,
    mac: str,
    vm_argv: Callable[[bool], list[str]],
    machine: qemu.Machine,
) -> bmc.LabBmc:
    """The machine's BMC started, and the host registered with it through the CLI."""
    if kind not in bmc.BMC_KINDS:
        raise InputError(f"unknown lab BMC {kind!r}; expected {', '.join(bmc.BMC_KINDS)}")
    lab_bmc = bmc.start(
        "redfish" if kind == "redfish" else "ipmi", workdir, mac=mac,
        name=f"netinstall-lab-{machine.firmware}", argv_for=vm_argv, qmp=machine.qmp,
    )  # fmt: skip
    try:
        run([
            *services.netinstall_command(), "host", "set", mac, "--dir", str(server_dir),
            "--bmc", lab_bmc.url, "--bmc-password-file", str(lab_bmc.password_file),
        ])  # fmt: skip
    except BaseException:
        lab_bmc.stop()
        raise
    return lab_bmc


def _rearm_through_the_bmc(
    lab_bmc: bmc.LabBmc, server_dir: Path, mac: str, say: Say, checks: list[str]
) -> None:
    """``netinstall host rearm MAC --power``, as an operator types it: the next boot from
    the network, once, and the machine (off) powered on through its BMC."""
    done = run([
        *services.netinstall_command(), "host", "rearm", mac, "--power",
        "--dir", str(server_dir),
    ], timeout=REARM_TIMEOUT)  # fmt: skip
    said = " ".join(line.strip() for line in done.stdout.splitlines() if line.strip())
    say(f"lab: host rearm {mac} --power: {said}")
    checks.append(
        f"powered on through its BMC ({lab_bmc.kind}): no QEMU started by the lab; "
        f"`host rearm --power` said: {said}"
    )


def _path_remover(machine: qemu.Machine, target: san.Target | None) -> Callable[[], str]:
    """How the multipath scenario loses a path: QEMU unplugs one, or a portal goes away."""
    if target is None:
        return lambda: paths.remove_qemu_path(machine)
    return lambda: f"iSCSI portal {target.drop_portal(1)} taken off the storage network"


def _version(repo: Path) -> str:
    return parse_treeinfo((repo / ".treeinfo").read_text("utf-8")).version


def _archive(repo: Path) -> str:
    """The dom0 root archive's path in the repository (the download's biggest file)."""
    return parse_treeinfo((repo / ".treeinfo").read_text("utf-8")).archive


def verify(
    tracker: Tracker,
    options: LabOptions,
    server: ipaddress.IPv4Interface,
    *,
    server_dir: Path,
    mac: str,
    disk: Path,
    checks: list[str],
) -> str | None:
    """After a full run: ``running`` after the reboot, facts that match the disk, and
    everything the scenario asked for (markers, SR type, static address, pack files)."""
    reached = tracker.reached
    scenario = options.chosen
    needs = (console.REBOOT, console.XEN_DISK, console.DOM0_DISK)
    for needed in (*needs, *((console.SAN_LOGIN,) if scenario.san else ())):
        if needed not in reached:
            return f"{console.RUNNING!r} arrived without {needed!r}"
    if reached[console.RUNNING] < reached[console.REBOOT]:
        return "running was reported before the reboot"
    if scenario.san:
        checks.append(
            "diskless machine booted Xen from its iSCSI LUN after the install; "
            "dom0 logged in to the target from the iBFT"
        )
    version = parse_treeinfo((options.repo / ".treeinfo").read_text("utf-8")).version
    with Registry.open(server_dir) as registry:
        host = registry.get_host(mac)
    if host is None:
        return f"host {mac} is no longer in the registry"
    if host.running_version != version:
        return f"the host runs payload {host.running_version!r}, the repository holds {version!r}"
    checks.append(f"payload version {host.running_version} == .treeinfo")
    if not tracker.facts.get("sr_uuid"):
        return "first boot printed no SR uuid"
    reported = host.facts
    if reported.get("sr_uuid") != tracker.facts["sr_uuid"]:
        return (
            f"the report names SR {reported.get('sr_uuid')}, the console {tracker.facts['sr_uuid']}"
        )
    if (
        reported.get("sr_type") != scenario.srtype
        or tracker.facts.get("sr_type") != scenario.srtype
    ):
        return (
            f"the SR is {reported.get('sr_type')!r}, the answer file asked for {scenario.srtype!r}"
        )
    checks.append(f"SR {scenario.srtype} uuid {tracker.facts['sr_uuid']} (console and report)")
    if (why := _check_address(scenario.static_address(server), host.facts, checks)) is not None:
        return why
    missing = [
        m for m in scenario.expected_markers() if not any(m in seen for seen in tracker.markers)
    ]
    if missing:
        return f"no script marker {missing} on the console (seen: {tracker.markers})"
    if scenario.expected_markers():
        checks.append(f"script markers on the console: {', '.join(tracker.markers)}")
    if scenario.expect_log:
        text = disk.with_name("serial.log").read_text("utf-8", errors="replace")
        if scenario.expect_log not in text:
            return f"the installer never said {scenario.expect_log!r}"
        checks.append(f"the installer said {scenario.expect_log!r}")
    return _check_disk(disk, scenario, tracker.facts.get("cmdline_root_uuid"), checks)


def _check_address(
    wanted: str | None, facts: Mapping[str, object], checks: list[str]
) -> str | None:
    """The installed system reported the static admin address (when there is one)."""
    addresses = facts.get("addresses")
    found = (
        [a.get("address") for a in addresses if isinstance(a, dict)]
        if isinstance(addresses, list)
        else []
    )
    if wanted is None:
        checks.append(
            f"admin interface by DHCP: {', '.join(map(str, found)) or 'no address reported'}"
        )
        return None
    if not any(str(a).split("/")[0] == wanted for a in found):
        return f"the installed system reported addresses {found}, not the static {wanted}"
    checks.append(f"static admin address {wanted} reported by the installed system")
    return None


def _check_disk(
    disk: Path, scenario: Scenario, booted: str | None, checks: list[str]
) -> str | None:
    """Root's UUID is the one dom0 booted with; the scenario's files are on it; the DOS
    layout when the scenario asked for it."""
    if scenario.dos and (why := check_dos(disk, checks)) is not None:
        return why
    try:
        with read_only_disk(disk) as loop:
            number = scenario.root_partition
            root = f"{loop}p{number}"
            found = run(["blkid", "-s", "UUID", "-o", "value", root], ok_codes=(0, 2))
            on_disk = found.stdout.strip().lower() or None
            if on_disk != booted:
                return f"dom0 booted root=UUID={booted}, partition {number} has UUID {on_disk}"
            checks.append(f"root UUID {booted} == partition {number} of the disk")
            wanted = scenario.disk_files()
            if not wanted:
                return None
            with mounted(root) as where:
                missing = [name for name in wanted if not (where / name).is_file()]
            if missing:
                return f"the installed root lacks {', '.join(missing)}"
            checks.append(f"on the installed root: {', '.join(wanted)}")
    except NetinstallError as exc:
        return f"the disk could not be read back: {exc}"
    return None


DOS_ROOT = DOS_BACKUP = 4 * 2**30  # SPEC §6's legacy DOS layout: 1 root, 2 backup, 3 SR


def check_dos(disk: Path, checks: list[str]) -> str | None:
    """The image holds SPEC §6's DOS layout: root 4 GiB, backup 4 GiB, the SR on the rest."""
    try:
        table = json.loads(run(["sfdisk", "--json", str(disk)]).stdout)["partitiontable"]
    except (NetinstallError, ValueError, KeyError) as exc:
        return f"the disk's table could not be read: {exc}"
    sector = int(table.get("sectorsize", 512))
    found = [(p.get("type"), int(p.get("size", 0)) * sector) for p in table.get("partitions", [])]
    sizes = [size for _, size in found]
    wanted = ["83", "83", "8e"]
    if (
        table.get("label") != "dos"
        or [t for t, _ in found] != wanted
        or sizes[:2]
        != [
            DOS_ROOT,
            DOS_BACKUP,
        ]
    ):
        return f"the disk is not the DOS layout: a {table.get('label')} label with {found}"
    checks.append(
        f"DOS layout: root {sizes[0] // 2**30} GiB (83), backup {sizes[1] // 2**30} GiB (83), "
        f"SR {sizes[2] / 2**30:.1f} GiB (8e)"
    )
    return None


def _check_utility(disk: Path, kept: utility.Utility, checks: list[str]) -> str | None:
    """After the run, from the image: the utility partition's table entry and bytes held."""
    if (why := utility.check_table_entry(disk, checks, "at the end")) is not None:
        return why
    found = utility.partition_digest(disk, kept)
    if found != kept.sha256:
        return f"the utility partition changed: sha256 {found}, written {kept.sha256}"
    checks.append(f"at the end: utility partition 1 byte for byte as written (sha256 {found})")
    return None


def verify_failure(
    scenario: Scenario, *, server_dir: Path, mac: str, disk: Path, checks: list[str]
) -> str | None:
    """A run that had to fail: failed with the expected message, the disk never written."""
    with Registry.open(server_dir) as registry:
        host = registry.get_host(mac)
        events = registry.events(mac)
    failed = [e for e in events if e.state.value == console.FAILED]
    if host is None or not failed:
        return "the host never reported failed"
    message = failed[-1].message or ""
    if scenario.expect_failure and scenario.expect_failure not in message:
        return f"the host failed with {message!r}, not with {scenario.expect_failure!r}"
    checks.append(f"host failed: {message}")
    if host.netboot_armed:
        return "netboot is still armed after the failure: the machine would reinstall"
    checks.append("netboot disarmed after the failure")
    used = disk.stat().st_blocks
    if used:
        return f"the disk was written: {used * 512} bytes are allocated in {disk.name}"
    checks.append(f"disk untouched: {disk.name} has no allocated blocks")
    return None
