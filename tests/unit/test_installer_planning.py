"""installer_core.planning: one plan from the boot arguments, the answer file and the machine
facts; every refusal the planner knows, each with its one sentence, before the repository
is asked for anything."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from answerfile.bootargs import parse_cmdline
from answerfile.model import (
    AdminInterface,
    AnswerFile,
    Bootloader,
    Disk,
    DiskKind,
    Mode,
    PreserveFirstPartition,
    PrimaryDisk,
    Proto,
    Source,
    SourceType,
)
from common.errors import InputError
from common.firmware import Firmware
from installer_core import planning
from installer_core.network import Nic
from installer_core.plan import StagingPlace, describe
from partitioning.detect import detect_installation
from partitioning.model import DiskFacts, ExistingPartition, GiB, Label, Layout, MiB, Use
from tests.unit.test_installer_fakes import ETH0, MAC, REPO, answer_for, make_plan, payload_found

STORAGE = Nic("eth1", "52:54:00:78:00:01")
ISCSI = PrimaryDisk(Disk("iscsi:ibft", DiskKind.IBFT))


class Asked:
    """The payload learner: counts the times the repository was asked."""

    def __init__(self) -> None:
        self.times = 0

    def __call__(self, repository: str) -> planning.PayloadFound:
        self.times += 1
        assert repository == REPO
        return payload_found()


def _plan(tmp_path: Path, answer: AnswerFile | None = None, **kw: Any) -> Any:
    asked = Asked()
    args = parse_cmdline(kw.pop("args", "install"))
    plan = planning.make_plan(
        args,
        kw.pop("firmware", Firmware.BIOS),
        answer or answer_for(),
        disk=kw.pop("disk", planning.DiskFound(Path("/dev/sda"), DiskFacts(size=60 * GiB))),
        network=kw.pop("network", planning.NetworkFound(fetched_by=ETH0, nics=(ETH0,))),
        memory=kw.pop("memory", planning.MemoryFound(available=8 * GiB)),
        learn_payload=asked,
        paths=kw.pop("paths", make_plan(tmp_path).paths),
    )
    return plan, asked


def _refused(tmp_path: Path, sentence: str, answer: AnswerFile | None = None, **kw: Any) -> None:
    """The plan is refused with exactly ``sentence``, and the repository was never asked."""
    asked = Asked()
    with pytest.raises(InputError) as caught:
        planning.make_plan(
            parse_cmdline(kw.pop("args", "install")),
            kw.pop("firmware", Firmware.BIOS),
            answer or answer_for(),
            disk=kw.pop("disk", planning.DiskFound(Path("/dev/sda"), DiskFacts(size=60 * GiB))),
            network=kw.pop("network", planning.NetworkFound(fetched_by=ETH0, nics=(ETH0,))),
            memory=kw.pop("memory", planning.MemoryFound(available=8 * GiB)),
            learn_payload=asked,
            paths=make_plan(tmp_path).paths,
        )
    assert caught.value.problems == (sentence,)
    assert asked.times == 0


def _disk(size: int) -> planning.DiskFound:
    return planning.DiskFound(Path("/dev/sda"), DiskFacts(size=size))


# --- the plan ------------------------------------------------------------------------------


def test_a_fresh_plan_holds_everything_the_run_does(tmp_path: Path) -> None:
    plan, asked = _plan(tmp_path)
    assert asked.times == 1
    assert plan.mode is Mode.FRESH
    assert plan.disk.table.layout is Layout.NEW_GPT
    assert plan.disk.partitions[Use.ROOT] == Path("/dev/sda1")
    assert plan.fetch.repository == REPO
    assert [f.name for f in plan.fetch.files][:4] == [
        "boot/xen.gz",
        "boot/vmlinuz",
        "boot/initrd.img",
        "dom0-rootfs.tar.zst",
    ]
    assert plan.fetch.packs[0].url == REPO
    assert plan.staging.place is StagingPlace.RAM
    assert plan.bootloader.disk == Path("/dev/sda")
    assert plan.bootloader.esp_number is None
    assert plan.network.admin_name == "eth0"
    assert plan.network.host_mac == MAC


def test_the_plan_is_immutable(tmp_path: Path) -> None:
    plan, _ = _plan(tmp_path)
    with pytest.raises(AttributeError):
        plan.mode = Mode.UPGRADE
    with pytest.raises(AttributeError):
        plan.disk.device = Path("/dev/sdb")


def test_uefi_boots_from_the_esp(tmp_path: Path) -> None:
    answer = answer_for(bootloader=Bootloader(write_boot_entry=False))
    plan, _ = _plan(tmp_path, answer, firmware=Firmware.UEFI)
    assert plan.bootloader.esp_number == 4
    assert plan.bootloader.write_boot_entry is False
    assert Use.ESP in plan.disk.partitions


def test_small_disks_take_the_dos_layout_with_disable_gpt(tmp_path: Path) -> None:
    plan, _ = _plan(tmp_path, args="install disable-gpt", disk=_disk(20 * GiB))
    assert plan.disk.table.layout is Layout.DOS
    assert Use.LOGS not in plan.disk.partitions


def test_the_management_interface_by_mac_and_by_bootif(tmp_path: Path) -> None:
    eth1 = Nic("eth1", "52:54:00:00:00:02")
    nics = planning.NetworkFound(fetched_by=None, nics=(ETH0, eth1))
    by_hwaddr = answer_for(admin_interface=AdminInterface(Proto.DHCP, hwaddr=eth1.mac))
    plan, _ = _plan(tmp_path, by_hwaddr, network=nics)
    assert plan.network.admin_name == "eth1"
    plan, _ = _plan(tmp_path, args=f"install BOOTIF={eth1.mac}", network=nics)
    assert (plan.network.admin_name, plan.network.host_mac) == ("eth1", eth1.mac)


def test_a_payload_too_big_for_ram_is_staged_on_the_new_backup_partition(tmp_path: Path) -> None:
    plan, _ = _plan(tmp_path, memory=planning.MemoryFound(available=200 * MiB))
    assert plan.staging.place is StagingPlace.BACKUP
    assert plan.staging.device == Path("/dev/sda2")
    assert "does not fit in RAM" in plan.staging.reason


def test_without_memory_facts_the_payload_goes_to_ram(tmp_path: Path) -> None:
    plan, _ = _plan(tmp_path, memory=planning.MemoryFound())
    assert plan.staging.place is StagingPlace.RAM
    assert "not known here" in plan.staging.reason


def test_the_plan_reads_as_text(tmp_path: Path) -> None:
    script = answer_for().scripts
    plan, _ = _plan(tmp_path, answer_for(scripts=script))
    text = "\n".join(describe(plan))
    assert text.startswith("fresh install, bios firmware\n")
    assert "disk: the primary disk /dev/sda, 60 GiB: GPT label, new-gpt layout" in text
    assert re.search(r"  1  root\s+18 GiB  ext4  /\s+/dev/sda1", text)
    assert f"fetch: {REPO}: netinstall 1.2.3 (build b7)" in text
    assert "  4 files, 40 MiB" in text
    assert "staging: RAM (" in text
    assert "boot loader: GRUB for BIOS on /dev/sda" in text
    assert "scripts: none" in text
    assert "network: management interface eth0 (dhcp), bridge backend" in text


# --- the refusals, each with its sentence ----------------------------------------------


def test_a_disk_below_12_gib_is_refused(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        "the primary disk /dev/sda has 8 GiB; netinstall needs at least 12 GiB",
        disk=_disk(8 * GiB),
    )


def test_a_disk_below_46_gib_is_refused_for_gpt(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        "the GPT layout needs a disk of at least 46 GiB; this disk has 20 GiB; add disable-gpt "
        "to use the legacy DOS layout (12 GiB or more)",
        disk=_disk(20 * GiB),
    )


def test_disable_gpt_on_uefi_is_refused(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        "UEFI firmware boots only from GPT disks; remove disable-gpt",
        args="install disable-gpt",
        firmware=Firmware.UEFI,
    )


def test_zapping_and_keeping_the_first_partition_is_refused(tmp_path: Path) -> None:
    answer = answer_for(
        primary_disk=PrimaryDisk(Disk("sda"), preserve_first_partition=PreserveFirstPartition.TRUE),
        zap_utility_partitions=True,
    )
    _refused(
        tmp_path,
        "zap-utility-partitions contradicts preserve-first-partition=true; keep one",
        answer,
    )


def test_no_disk_in_the_answer_file_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path, "the answer file names no <primary-disk>", AnswerFile())
    _refused(
        tmp_path, "the answer file names no <existing-installation>", AnswerFile(mode=Mode.UPGRADE)
    )


def test_an_iscsi_disk_without_use_ibft_is_refused(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        "primary-disk 'iscsi:ibft': an iSCSI disk needs use_ibft on the installer command line "
        "(the installed system logs in from the firmware's iBFT at boot); nothing was written",
        answer_for(primary_disk=ISCSI),
    )


def test_multipath_for_an_upgrade_is_refused(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        "the disk of the existing installation 'sda': upgrading or restoring an installation on "
        "a multipath device is not supported yet (boot the installer without "
        "device_mapper_multipath to work through one path); nothing was written",
        AnswerFile(mode=Mode.UPGRADE, existing_installation=Disk("sda")),
        args="install device_mapper_multipath=yes",
    )


def test_an_upgrade_on_iscsi_is_refused(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        "backup-disk 'iscsi:ibft': upgrading or restoring an installation on an iSCSI disk is "
        "not supported yet; nothing was written",
        AnswerFile(mode=Mode.RESTORE, backup_disk=ISCSI.disk),
        args="install use_ibft",
    )


def test_iscsi_guest_disks_are_refused(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        "guest-disk 'iscsi:ibft': iSCSI guest disks are not supported yet",
        answer_for(guest_disks=(ISCSI.disk,)),
    )


def test_too_little_host_memory_is_refused(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        "the host has 1000 MiB of memory (xl info); netinstall needs at least 1024 MiB",
        memory=planning.MemoryFound(host_mib=1000, available=8 * GiB),
    )


@pytest.mark.parametrize(
    ("admin", "sentence"),
    [
        (
            AdminInterface(Proto.DHCP, name="eth1"),
            "admin-interface eth1 is the iSCSI storage NIC named by the iBFT; it is reserved "
            "for storage: use another NIC; nothing was written",
        ),
        (
            AdminInterface(Proto.DHCP, hwaddr=STORAGE.mac),
            f"admin-interface hwaddr={STORAGE.mac} is the iSCSI storage NIC named by the iBFT; "
            "it is reserved for storage: use another NIC; nothing was written",
        ),
        (
            AdminInterface(Proto.DHCP, name="eth1.30"),
            "admin-interface eth1.30 is the iSCSI storage NIC named by the iBFT; it is reserved "
            "for storage: use another NIC; nothing was written",
        ),
    ],
)
def test_the_storage_nic_as_the_admin_interface_is_refused(
    tmp_path: Path, admin: AdminInterface, sentence: str
) -> None:
    network = planning.NetworkFound(
        fetched_by=ETH0,
        nics=(ETH0, STORAGE),
        storage_names=(STORAGE.name,),
        storage_macs=(STORAGE.mac,),
    )
    answer = answer_for(primary_disk=ISCSI, admin_interface=admin)
    _refused(tmp_path, sentence, answer, args="install use_ibft", network=network)


def test_the_storage_nic_as_the_management_interface_by_bootif_is_refused(
    tmp_path: Path,
) -> None:
    network = planning.NetworkFound(
        fetched_by=None, nics=(ETH0, STORAGE), storage_names=("eth1",), storage_macs=()
    )
    _refused(
        tmp_path,
        "the management interface eth1 is the iSCSI storage NIC named by the iBFT; it is "
        "reserved for storage: use another NIC; nothing was written",
        args=f"install use_ibft BOOTIF={STORAGE.mac}",
        network=network,
        answer=answer_for(primary_disk=ISCSI),
    )


def test_an_admin_interface_no_nic_has_is_refused(tmp_path: Path) -> None:
    answer = answer_for(admin_interface=AdminInterface(Proto.DHCP, hwaddr="52:54:00:00:00:09"))
    _refused(tmp_path, "admin-interface: no network interface has MAC 52:54:00:00:00:09", answer)


def test_no_source_is_refused(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        "the answer file names no <source> for the install repository",
        answer_for(sources=()),
    )


def test_a_local_source_needs_the_server(tmp_path: Path) -> None:
    _refused(
        tmp_path,
        "the answer file's source is local (the provisioning server's repository), but the "
        "kernel command line has no netinstall.server=",
        answer_for(sources=(Source(SourceType.LOCAL),)),
    )


def test_a_local_source_is_the_servers_repository(tmp_path: Path) -> None:
    answer = answer_for(sources=(Source(SourceType.LOCAL),))
    plan, _ = _plan(tmp_path, answer, args="install netinstall.server=http://10.0.2.2:8080")
    assert plan.fetch.repository == REPO


def test_a_payload_bigger_than_the_backup_partition_and_ram_is_refused(tmp_path: Path) -> None:
    asked = payload_found({"dom0-rootfs.tar.zst": 30 * GiB})
    with pytest.raises(InputError, match="more than the new backup partition's 18432 MiB"):
        planning.make_plan(
            parse_cmdline("install"),
            Firmware.BIOS,
            answer_for(),
            disk=_disk(60 * GiB),
            network=planning.NetworkFound(fetched_by=ETH0, nics=(ETH0,)),
            memory=planning.MemoryFound(available=1 * GiB),
            learn_payload=lambda _repository: asked,
            paths=make_plan(tmp_path).paths,
        )


def _dos_installation() -> planning.DiskFound:
    from installer_core.plan import Existing
    from partitioning import planner
    from partitioning.model import Options

    laid = planner.plan(DiskFacts(size=20 * GiB), Options(disable_gpt=True))
    parts = tuple(
        ExistingPartition(p.number, p.start, p.size, dos_type=p.dos_type) for p in laid.partitions
    )
    facts = DiskFacts(20 * GiB, 512, Label.DOS, parts, detect_installation(Label.DOS, parts))
    kept = planner.plan(facts, Options(mode=planner.Mode.UPGRADE))
    return planning.DiskFound(Path("/dev/sda"), facts, None, kept, Existing("0.1.0", None, "U"))


def test_an_upgrade_without_a_logs_partition_cannot_stage_on_disk(tmp_path: Path) -> None:
    answer = AnswerFile(
        mode=Mode.UPGRADE, existing_installation=Disk("sda"), sources=answer_for().sources
    )
    with pytest.raises(InputError, match="has no logs partition to stage it on") as caught:
        _plan(
            tmp_path,
            answer,
            disk=_dos_installation(),
            memory=planning.MemoryFound(available=100 * MiB),
        )
    assert caught.value.problems == (
        "the payload needs 40 MiB, more than fits in RAM, and the dos layout has no logs "
        "partition to stage it on; give the machine more memory",
    )


def test_an_upgrade_stages_on_its_logs_partition(tmp_path: Path) -> None:
    from tests.unit.test_installer_upgrade import found_plan

    plan = found_plan(tmp_path)
    assert plan.staging is not None
    assert plan.staging.place is StagingPlace.RAM
    small = _plan(
        tmp_path,
        replace(plan.answer, sources=answer_for().sources),
        disk=planning.DiskFound(
            plan.disk.device, plan.disk.facts, None, plan.disk.table, plan.existing
        ),
        memory=planning.MemoryFound(available=100 * MiB),
    )[0]
    assert small.staging.place is StagingPlace.LOGS
    assert small.staging.device == Path("/dev/sda5")
    assert small.staging.directory.name == planning.STAGING_DIR
