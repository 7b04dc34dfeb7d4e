"""``netinstall demo``: PXE-install a QEMU machine from our server, then boot its disk.

The lab (``netinstall.lab``) runs everything inside a private network namespace
and removes it afterwards (``--network netns``, the real chain: our dnsmasq, TFTP
and HTTP servers). ``--network user`` is the fallback for machines without
namespaces: QEMU's own DHCP and TFTP stand in for ours (``netinstall/lab/usernet.py``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from common.errors import NetinstallError
from common.firmware import Firmware

# The scenario names without importing the lab (and its server) for --help.
SCENARIO_NAMES = ("install", "upgrade", "iscsi", "multipath", "iscsi-multipath", "low-memory",
                  "bad-answer-file", "no-ibft", "iscsi-refused", "tftp", "http-boot",
                  "http-boot-proxy", "dos",
                  "power-cut-before-partition", "power-cut-download", "power-cut-extract",
                  "power-cut-bootloader", "power-cut-first-boot")  # fmt: skip

MILESTONES = {"installer": "installer up", "running": "running"}


@click.command("demo")
@click.option("--firmware", type=click.Choice(["bios", "uefi"]), required=True)
@click.option(
    "--until",
    type=click.Choice(sorted(MILESTONES)),
    default="running",
    show_default=True,
    help="Stop once the installer is up, or go on to the installed system running.",
)
@click.option(
    "--scenario",
    type=click.Choice(SCENARIO_NAMES),
    default="install",
    show_default=True,
    help="install: the firmware's full install (BIOS: static address, lvm SR; UEFI: DHCP, "
    "ext SR, a supplemental pack; both: a script at each stage). upgrade: install A, "
    "upgrade it to B through the dom0 agent, restore A; check the SR and settings survive. "
    "iscsi: a diskless machine with a storage NIC installs onto an iSCSI LUN named by the "
    "iBFT (the lab's tgtd) and boots from it. multipath: the disk is one LUN behind two "
    "SCSI paths; install onto the map, boot, lose a path and keep running, reboot on the one "
    "path left. iscsi-multipath: the iscsi scenario with the LUN behind two portals of the "
    "target (multipath over the iBFT); then one portal goes away. low-memory: the "
    "installer's dom0 gets 768 MiB, so the payload is staged on the disk. bad-answer-file: the "
    "install must fail cleanly (failed reported with the message, the disk untouched). "
    "no-ibft: use_ibft on a machine whose firmware published no iBFT must fail as cleanly; "
    "iscsi-refused: so must an installer whose iSCSI login the target refuses. dos (BIOS): "
    "the legacy DOS layout (disable-gpt) on a 16 GiB disk. power-cut-POINT: the plug pulled "
    "at that install step (before-partition, download, extract, bootloader, first-boot), "
    "then power on: the host must reach running on its own (on BIOS with the DOS layout). "
    "tftp: the install with the server's --boot-transport tftp (no boot file over HTTP). "
    "http-boot (UEFI): OVMF's HTTP boot loads GRUB by URL, nothing over TFTP; "
    "http-boot-proxy: the same with the server in proxy-DHCP mode beside a site DHCP server.",
)
@click.option(
    "--network",
    type=click.Choice(["netns", "user"]),
    default="netns",
    show_default=True,
    help="netns: a private namespace where our dnsmasq, TFTP and HTTP servers boot the "
    "machine. user: QEMU user-mode networking, a fallback that skips our DHCP and TFTP.",
)
@click.option("--timeout", type=click.FloatRange(min=1), default=1800.0, show_default=True)
@click.option(
    "--keep",
    type=click.Path(file_okay=False),
    help="Keep the disk image (DIR/disk.img, raw), serial.log and server/ in DIR.",
)
@click.option("--out", type=click.Path(file_okay=False), default="build", show_default=True)
@click.option(
    "--cache",
    type=click.Path(file_okay=False),
    default=str(Path.home() / ".cache" / "netinstall"),
    show_default=True,
)
@click.option("--no-build", is_flag=True, help="Use build/ as it is (no incremental build).")
@click.option(
    "--floor/--no-floor",
    default=True,
    show_default=True,
    help="install scenario: measure the install's floor in the same run (dd of the disk in "
    "the installer; once running, a reset and a boot with nothing left to do) and print it "
    "with the ratio power-on to running / floor under the phase table.",
)
@click.option(
    "--bmc",
    type=click.Choice(["redfish", "ipmi"]),
    help="Give the machine a BMC (redfish: sushy-tools' emulator with its fake driver; "
    "ipmi: pyghmi's BMC over QEMU's QMP) that really switches its QEMU: the host is "
    "registered with it, the machine starts off, and `netinstall host rearm MAC --power` "
    "powers it on (needs the dev extra for redfish).",
)
@click.option(
    "--console-port",
    type=click.IntRange(0, 65535),
    help="Forward 127.0.0.1:PORT to the lab server for the run, so that a browser on this "
    "machine can watch the install in the web console (0: any free port).",
)
def demo(
    *,
    bmc: str | None,
    console_port: int | None,
    firmware: str,
    scenario: str,
    network: str,
    until: str,
    timeout: float,
    keep: str | None,
    out: str,
    cache: str,
    no_build: bool,
    floor: bool,
) -> None:
    """PXE-install a QEMU machine and boot it into Xen + dom0 (needs root, ~15 min)."""
    from netinstall.lab import console
    from netinstall.lab.demo import LabOptions, run_lab
    from netinstall.lab.scenario import scenario_for

    chosen = scenario_for(firmware, scenario)
    milestone = console.FAILED if chosen.expect_failure else MILESTONES[until]
    if floor and scenario == "install" and milestone == console.RUNNING:
        chosen = dataclasses.replace(chosen, floor=True)
    if bmc is not None:
        chosen = dataclasses.replace(chosen, name=f"{chosen.name}, {bmc} BMC", bmc=bmc)

    build_dir = Path(out)
    if not no_build:
        from netinstall.build import build

        for outcome in build(build_dir, Path(cache)):
            state = "built" if outcome.built else "up to date"
            click.echo(f"{outcome.target}: {state}")
    upgrade_repo = None
    if chosen.upgrade:
        from hypervisor_payload.treeinfo import parse_treeinfo
        from netinstall.lab.upgrade import build_target, next_version

        start = parse_treeinfo((build_dir / "repo" / ".treeinfo").read_text("utf-8")).version
        if no_build:
            upgrade_repo = build_dir / f"payload-{next_version(start)}" / "repo"
        else:
            upgrade_repo = build_target(build_dir, Path(cache), start)
    options = LabOptions(
        firmware=Firmware(firmware),
        repo=build_dir / "repo",
        netboot=build_dir / "netboot",
        until=milestone,
        timeout=timeout,
        keep=Path(keep) if keep else None,
        scenario=chosen,
        network="user" if network == "user" else "netns",
        upgrade_repo=upgrade_repo,
        console_port=console_port,
    )
    result = run_lab(options, say=click.echo)
    click.echo("")
    click.echo(console.phase_table(result.tracker.reached))
    if chosen.floor:
        from netinstall.lab.floor import floor_lines

        for line in floor_lines(result.floor, result.tracker.reached):
            click.echo(line)
    for check in result.checks:
        click.echo(f"checked: {check}")
    if keep:
        click.echo(f"kept: disk.img, serial.log, server/ in {result.workdir}")
    if result.ok:
        click.echo(f"demo: {firmware}: reached {options.until!r}")
        return
    click.echo("-- last console lines --", err=True)
    for line in result.console_tail[-40:]:
        click.echo(line, err=True)
    raise NetinstallError(f"demo failed ({firmware}): {result.reason}")
