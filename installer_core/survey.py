"""The plan step (SPEC §7): read what the plan needs from the machine, then plan.

Nothing here writes. The run's disk is found and its table read (a fresh
install's disk, attached first when it is an iSCSI LUN and taken through its
multipath map with ``device_mapper_multipath``; an upgrade's installation or a
restore's backup read on a read-only mount, ``installer_core.existing``), the
host's memory as Xen reports it (``xl info`` total_memory, not dom0's share;
outside Xen's dom0 the check is skipped and the log says so), the memory the
installer may stage the payload in, and its NICs. ``planning.make_plan`` then
decides, and asks for ``.treeinfo`` and the payload's sizes only once every
other check has passed.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from answerfile.bootargs import BootArgs
from answerfile.model import AnswerFile, Mode
from common.errors import CommandError, InputError, NetinstallError, SourceError
from common.firmware import Firmware
from common.process import CommandRunner, run
from installer_core import download, existing, iscsi, multipath, network, planning
from installer_core.fetch import Transport
from installer_core.plan import InstallPlan, Paths, describe
from installer_core.selftest import block_disks, xl_total_memory
from partitioning import facts
from partitioning.model import DiskFacts

log = logging.getLogger(__name__)


def _is_block(path: Path) -> bool:
    try:
        return stat.S_ISBLK(path.stat().st_mode)
    except OSError:
        return False


@dataclass(frozen=True)
class Machine:
    """What the plan step reads; tests replace each part."""

    runner: CommandRunner = run
    sys_block: Path = Path("/sys/block")
    sys_net: Path = network.SYS_NET
    xen_capabilities: Path = Path("/proc/xen/capabilities")
    meminfo: Path = Path("/proc/meminfo")
    is_block: Callable[[Path], bool] = _is_block
    read_facts: Callable[[Path, bool], DiskFacts] = facts.read_facts
    iscsi: iscsi.System = field(default_factory=iscsi.System)
    probe: existing.Probe = field(default_factory=existing.Probe)


def fresh_disk(
    args: BootArgs, answer: AnswerFile, san: iscsi.SanState | None, machine: Machine
) -> planning.DiskFound:
    """A fresh install's disk: an iSCSI LUN attached over the iBFT's storage NIC, or the
    local disk; with device_mapper_multipath, the map that holds it. Its table is read."""
    disk, name = planning.disk_element(answer)
    if disk.path is None:
        device = iscsi.san_device(san, disk, "primary-disk", machine.iscsi)
    else:
        device = Path(disk.path)
        if not machine.is_block(device):
            found = ", ".join(d.name for d in block_disks(machine.sys_block)) or "none"
            raise InputError(
                f"{name} {device} is not a block device on this machine (disks: {found})"
            )
        device = Path(os.path.realpath(device))  # /dev/disk/by-id/... -> /dev/sdX
    device, found_map = multipath.disk_for(
        device, name, args.device_mapper_multipath, machine.sys_block
    )
    return planning.DiskFound(device, machine.read_facts(device, False), found_map)


def kept_disk(
    answer: AnswerFile, firmware: Firmware, work: Path, machine: Machine
) -> planning.DiskFound:
    """An upgrade's installation or a restore's backup, read on a read-only mount."""
    if answer.mode is Mode.UPGRADE:
        found = existing.find_installation(
            answer.existing_installation, firmware, work, machine.probe
        )
    else:
        found = existing.find_backup(answer.backup_disk, firmware, work, machine.probe)
    return planning.DiskFound(found.device, found.facts, None, found.table, found.existing)


def host_memory_mib(machine: Machine) -> int | None:
    """The host's memory in MiB as Xen reports it; None outside Xen's dom0."""
    try:
        if "control_d" not in machine.xen_capabilities.read_text():
            return None
    except OSError:
        return None
    try:
        return xl_total_memory(machine.runner(["xl", "info"], timeout=60).stdout)
    except (CommandError, ValueError) as exc:
        raise NetinstallError(f"cannot read the host's memory with xl info: {exc}") from exc


def mem_available(meminfo: Path) -> int:
    """MemAvailable from /proc/meminfo, in bytes."""
    for line in meminfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "MemAvailable":
            return int(value.split()[0]) * 1024
    raise SourceError(f"{meminfo} has no MemAvailable line")


def memory(machine: Machine) -> planning.MemoryFound:
    host = host_memory_mib(machine)
    if host is None:
        log.info("not running as Xen's dom0: the host memory check is skipped")
    else:
        log.info("host memory: %d MiB (xl info)", host)
    return planning.MemoryFound(host, mem_available(machine.meminfo))


def nics(
    fetched_by: network.Nic | None, san: iscsi.SanState | None, machine: Machine
) -> planning.NetworkFound:
    return planning.NetworkFound(
        fetched_by=fetched_by,
        nics=tuple(network.list_nics(machine.sys_net)),
        storage_names=san.storage_names if san is not None else (),
        storage_macs=san.storage_macs if san is not None else (),
    )


def plan_install(
    args: BootArgs,
    firmware: Firmware,
    answer: AnswerFile,
    *,
    san: iscsi.SanState | None,
    fetched_by: network.Nic | None,
    paths: Paths,
    machine: Machine | None = None,
    transport: Transport | None = None,
    install_key: str | None = None,
    update_key: str | None = None,
) -> InstallPlan:
    """Step: the run's plan, every refusal it knows raised before any download or write.
    ``install_key``: the key this install enrolled, for first boot's report;
    ``update_key``: the server's update key its enrolment handed out, for dom0."""
    machine = machine or Machine()
    io = transport or Transport()
    planning.check_options(args, answer)  # before the disk is looked at
    if answer.mode is Mode.FRESH:
        disk = fresh_disk(args, answer, san, machine)
    else:
        disk = kept_disk(answer, firmware, paths.work, machine)

    def learn(repository: str) -> planning.PayloadFound:
        info, files = download.learn_payload(repository, io)
        return planning.PayloadFound(info, files)

    plan = planning.make_plan(
        args,
        firmware,
        answer,
        disk=disk,
        network=nics(fetched_by, san, machine),
        memory=memory(machine),
        learn_payload=learn,
        paths=paths,
    )
    plan = replace(plan, install_key=install_key, update_key=update_key)
    for line in describe(plan):
        log.info("plan: %s", line)
    return plan
