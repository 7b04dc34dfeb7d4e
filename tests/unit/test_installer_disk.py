"""The installer's disk and payload steps, with a fake runner (no process starts)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.errors import NetinstallError, SourceError
from common.firmware import Firmware
from common.process import Completed
from installer_core import disk, mounts, payload, planning
from installer_core.fetch import Permanent
from installer_core.plan import DiskPlan, PackSource, Staging, StagingPlace
from partitioning import apply, mkfs
from partitioning.model import DiskFacts, GiB, Use
from tests.unit.test_installer_fakes import make_plan


class FakeRunner:
    """Records every command; ``respond`` gives a command's stdout."""

    def __init__(self, respond: Callable[[tuple[str, ...]], str] | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.kwargs: list[dict[str, Any]] = []
        self.respond = respond or (lambda argv: "")

    def __call__(self, argv: Any, **kwargs: Any) -> Completed:
        args = tuple(str(a) for a in argv)
        self.calls.append(args)
        self.kwargs.append(kwargs)
        return Completed(args, 0, self.respond(args), "")


def planned(
    tmp_path: Path,
    size: int = 60 * GiB,
    name: str = "/dev/loop7",
    firmware: Firmware = Firmware.BIOS,
    args: str = "install",
) -> DiskPlan:
    """The plan's disk: partitioning's layout for a blank disk ``name`` of ``size``."""
    found = planning.DiskFound(Path(name), DiskFacts(size=size))
    return make_plan(tmp_path, args=args, firmware=firmware, disk=found).disk


# --- partition --------------------------------------------------------------


def test_partition_map_names_loop_and_sd_partitions(tmp_path: Path) -> None:
    found = planned(tmp_path)
    assert found.partitions == {
        Use.LOGS: Path("/dev/loop7p5"),
        Use.BACKUP: Path("/dev/loop7p2"),
        Use.ROOT: Path("/dev/loop7p1"),
        Use.BIOS_BOOT: Path("/dev/loop7p4"),
        Use.SWAP: Path("/dev/loop7p6"),
        Use.SR: Path("/dev/loop7p3"),
    }
    assert disk.partition_map(found.table, Path("/dev/sda"))[Use.ROOT] == Path("/dev/sda1")


def test_partition_writes_the_planned_table_against_the_facts_it_was_made_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = planned(tmp_path)
    written: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        apply,
        "apply_plan",
        lambda plan, target, facts_before: written.append((plan, target, facts_before)),
    )
    monkeypatch.setattr(mkfs, "ensure_nodes", lambda d, numbers: written.append((d, numbers)))
    monkeypatch.setattr(disk.shutil, "which", lambda name: None)  # no udevadm here
    disk.partition(found, FakeRunner())
    assert written == [
        (found.table, found.device, found.facts),  # the planner is not asked again
        ("/dev/loop7", [5, 2, 1, 4, 6, 3]),
    ]


def test_make_filesystems_reads_uuids_and_sr_partuuid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = planned(tmp_path, firmware=Firmware.UEFI)
    monkeypatch.setattr(mkfs, "make_filesystems", lambda plan, target: ["made"])
    runner = FakeRunner(lambda argv: f"{argv[4]}-of-{Path(argv[-1]).name}\n")
    made = disk.make_filesystems(found, runner)
    assert made.uuids == {
        Use.LOGS: "UUID-of-loop7p5",
        Use.BACKUP: "UUID-of-loop7p2",
        Use.ROOT: "UUID-of-loop7p1",
        Use.ESP: "UUID-of-loop7p4",
        Use.SWAP: "UUID-of-loop7p6",
    }
    assert made.sr_partuuid == "PARTUUID-of-loop7p3"
    assert all(call[:3] == ("blkid", "-c", "/dev/null") for call in runner.calls)


def test_mount_target_mounts_root_first_then_logs_and_esp(tmp_path: Path) -> None:
    found = planned(tmp_path, firmware=Firmware.UEFI)
    runner = FakeRunner()
    target = tmp_path / "target"
    disk.mount_target(target, found, runner)
    assert runner.calls == [
        ("mount", "-t", "ext4", "/dev/loop7p1", str(target)),
        ("mount", "-t", "ext4", "/dev/loop7p5", f"{target}/var/log"),
        ("mount", "-t", "vfat", "/dev/loop7p4", f"{target}/boot/efi"),
    ]


def test_unmount_all_goes_deepest_first_and_only_under_target(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "40 22 7:1 / /mnt/target rw - ext4 /dev/loop7p1 rw\n"
        "41 40 7:5 / /mnt/target/var/log rw - ext4 /dev/loop7p5 rw\n"
        "42 40 7:4 / /mnt/target/boot/efi rw - vfat /dev/loop7p4 rw\n"
        "43 22 0:5 / /mnt/target-other rw - tmpfs tmpfs rw\n"
        "44 40 0:6 / /mnt/target/with\\040space rw - tmpfs tmpfs rw\n"
    )
    runner = FakeRunner()
    done = mounts.unmount_all(runner, Path("/mnt/target"), info)
    assert done[-1] == Path("/mnt/target")
    assert set(done[:-1]) == {
        Path("/mnt/target/var/log"),
        Path("/mnt/target/boot/efi"),
        Path("/mnt/target/with space"),
    }
    assert runner.calls == [("umount", str(p)) for p in done]


def test_unmount_target_is_idempotent(tmp_path: Path) -> None:
    runner = FakeRunner()
    disk.unmount_target(tmp_path / "target", None, runner)
    disk.unmount_target(tmp_path / "target", None, runner)
    assert runner.calls == [("sync",), ("sync",)]  # nothing of tmp_path is mounted


@pytest.mark.parametrize(
    ("disable_gpt", "where"), [(False, "netinstall"), (True, "var/log/netinstall")]
)
def test_write_install_log(tmp_path: Path, disable_gpt: bool, where: str) -> None:
    args = "install disable-gpt" if disable_gpt else "install"
    found = planned(tmp_path, size=20 * GiB if disable_gpt else 60 * GiB, args=args)
    log_file, work = tmp_path / "work/install.log", tmp_path / "work"
    log_file.parent.mkdir(parents=True)
    log_file.write_text("the log\n")
    runner = FakeRunner()
    disk.write_install_log(log_file, found, work, runner)
    device = found.partitions[Use.ROOT if disable_gpt else Use.LOGS]
    assert runner.calls[0] == ("mount", "-t", "ext4", str(device), str(work / "logs-mount"))
    copied = work / "logs-mount" / where / "install.log"
    assert copied.read_text() == "the log\n"
    assert copied.stat().st_mode & 0o777 == 0o600


# --- payload ----------------------------------------------------------------


def test_extract_command_keeps_owners_xattrs_and_acls(tmp_path: Path) -> None:
    files = {"dom0-rootfs.tar.gz": Path("/stage/dom0-rootfs.tar.gz")}
    runner = FakeRunner()
    payload.extract_root(files, tmp_path / "target", runner)  # not zstd: tar's own gzip
    assert runner.calls == [
        (
            "tar",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "--numeric-owner",
            "--gzip",
            "-xpf",
            "/stage/dom0-rootfs.tar.gz",
            "-C",
            str(tmp_path / "target"),
        )
    ]


def test_the_zstd_tar_reads_one_mib_records_from_standard_input(tmp_path: Path) -> None:
    argv = payload.extract_command(None, tmp_path)
    assert argv[-6:] == ["-b", "2048", "-xpf", "-", "-C", str(tmp_path)]
    assert "--zstd" not in argv
    assert {"--xattrs", "--acls", "--numeric-owner"} <= set(argv)
    assert payload.RECORD_BLOCKS * 512 == payload.PIPE_BYTES == 1 << 20


def test_install_boot_files_replaces_the_archives(tmp_path: Path) -> None:
    files = {}
    for key in payload.BOOT_FILES:
        files[key] = tmp_path / "stage" / key
        files[key].parent.mkdir(parents=True, exist_ok=True)
        files[key].write_bytes(key.encode())
    target = tmp_path / "target"
    (target / "boot").mkdir(parents=True)
    (target / "boot/vmlinuz").symlink_to("vmlinuz-6.12")
    payload.install_boot_files(files, target)
    for key, name in payload.BOOT_FILES.items():
        installed = target / "boot" / name
        assert not installed.is_symlink()
        assert installed.read_bytes() == key.encode()


def _pack_repository() -> dict[str, bytes]:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"x=1\n"
        info = tarfile.TarInfo("etc/example.conf")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    files = {"example-root.tar": buffer.getvalue(), "install.sh": b"#!/bin/sh\ntrue\n"}
    rows = "".join(
        f'<package label="{name}" type="{kind}" size="{len(files[name])}" '
        f'sha256="{hashlib.sha256(files[name]).hexdigest()}">{name}</package>'
        for kind, name in (("script", "install.sh"), ("tar", "example-root.tar"))
    )
    base = "http://repo/packages.example/"
    return {
        "http://repo/XS-REPOSITORY-LIST": b"# packs\npackages.example\n",
        base + "XS-REPOSITORY": b'<repository name="example" product="netinstall"/>',
        base + "XS-PACKAGES": f"<packages>{rows}</packages>".encode(),
        **{base + name: data for name, data in files.items()},
    }


REPOSITORY = (PackSource("http://repo/", optional_list=True),)


def _fetcher(served: dict[str, bytes]) -> payload.Fetcher:
    def read(url: str) -> bytes:
        if url not in served:
            raise SourceError(f"cannot read {url}") from Permanent("404")
        return served[url]

    def save(url: str, dest: Path) -> None:
        dest.write_bytes(read(url))

    return payload.Fetcher(read, save)


def test_install_packs_applies_tar_then_script_in_the_target(tmp_path: Path) -> None:
    runner = FakeRunner()
    target = str(tmp_path / "target")
    payload.install_packs(REPOSITORY, Path(target), runner, _fetcher(_pack_repository()))
    work = [c for c in runner.calls if c[0] in ("tar", "chroot")]
    assert work[0][:3] == ("tar", "--numeric-owner", "-xpf")
    assert work[0][-2:] == ("-C", target)
    assert work[1] == ("chroot", target, "/tmp/netinstall-packs/example/install.sh")
    script_env = runner.kwargs[runner.calls.index(work[1])]["env"]
    assert script_env["NETINSTALL_PACK"] == "example"
    assert runner.calls[0][0] == "mount"  # /dev, /proc, /sys for the chroot ...
    assert runner.calls[-1][0] == "umount"  # ... and gone again
    assert not Path(target, "usr/sbin/policy-rc.d").exists()
    assert not Path(target, "tmp/netinstall-packs").exists()


def test_install_packs_refuses_a_file_that_does_not_match(tmp_path: Path) -> None:
    served = _pack_repository()
    served["http://repo/packages.example/install.sh"] = b"#!/bin/sh\nevil\n"
    runner = FakeRunner()
    with pytest.raises(SourceError, match=r"install\.sh does not match"):
        payload.install_packs(REPOSITORY, tmp_path / "target", runner, _fetcher(served))
    assert not any(c[0] in ("tar", "chroot") for c in runner.calls)


def test_repository_without_pack_list_has_no_packs(tmp_path: Path) -> None:
    runner = FakeRunner()
    payload.install_packs(REPOSITORY, tmp_path / "target", runner, _fetcher({}))
    assert runner.calls == []


def test_driver_source_may_be_a_pack_directory_itself(tmp_path: Path) -> None:
    served = {
        k.replace("http://repo/packages.example/", "http://drivers/"): v
        for k, v in _pack_repository().items()
        if "packages.example" in k
    }
    sources = (*REPOSITORY, PackSource("http://drivers/", optional_list=False))
    runner = FakeRunner()
    payload.install_packs(sources, tmp_path / "target", runner, _fetcher(served))
    target = str(tmp_path / "target")
    assert ("chroot", target, "/tmp/netinstall-packs/example/install.sh") in runner.calls


def test_planned_partition_uses_cover_the_layout(tmp_path: Path) -> None:
    found = planned(tmp_path, firmware=Firmware.UEFI)
    assert {p.use for p in found.table.partitions} == {
        Use.LOGS,
        Use.BACKUP,
        Use.ROOT,
        Use.ESP,
        Use.SWAP,
        Use.SR,
    }


# -- staging the payload on the disk (SPEC §7) ---------------------------------------


def _staging(tmp_path: Path, place: StagingPlace, device: str) -> Staging:
    mount = tmp_path / "work/staging-disk"
    directory = mount / ("payload" if place is StagingPlace.BACKUP else "netinstall-staging")
    return Staging(place, directory, Path(device), mount)


def test_disk_staging_mounts_the_partition_and_unmount_removes_the_payload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = _staging(tmp_path, StagingPlace.BACKUP, "/dev/sda2")
    runner = FakeRunner()
    disk.mount_staging(staging, 10, runner)
    assert runner.calls == [("mount", "-t", "ext4", "/dev/sda2", str(staging.mount))]
    staging.directory.mkdir(parents=True)
    (staging.directory / "xen.gz").write_bytes(b"x")
    unmounted: list[Path] = []
    monkeypatch.setattr(disk, "unmount_all", lambda r, top: unmounted.append(top) or [])
    disk.unmount_target(tmp_path / "target", staging, runner)
    assert not staging.directory.exists()
    assert unmounted == [staging.mount, tmp_path / "target"]


def test_an_upgrade_stages_on_its_logs_partition_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = _staging(tmp_path, StagingPlace.LOGS, "/dev/sda5")
    assert staging.mount is not None
    staging.directory.mkdir(parents=True)
    (staging.directory / "xen.gz").write_bytes(b"a failed run's")
    runner = FakeRunner()
    disk.mount_staging(staging, 10, runner)
    assert not staging.directory.exists()  # a failed run's leftovers go first
    staging.directory.mkdir(parents=True)
    (staging.directory / "xen.gz").write_bytes(b"partial")
    (staging.mount / "syslog").write_text("the installation's own log\n")
    monkeypatch.setattr(disk, "unmount_all", lambda r, top: [])
    disk.unmount_target(tmp_path / "target", staging, runner)
    assert not staging.directory.exists()
    assert (staging.mount / "syslog").exists()  # the logs themselves stay


@pytest.mark.parametrize(
    ("place", "device"), [(StagingPlace.LOGS, "/dev/sda5"), (StagingPlace.BACKUP, "/dev/sda2")]
)
def test_disk_staging_needs_room_on_its_partition(
    tmp_path: Path, place: StagingPlace, device: str
) -> None:
    staging = _staging(tmp_path, place, device)
    with pytest.raises(NetinstallError, match=rf"{place.value} {device} has \d+ MiB free"):
        disk.mount_staging(staging, 1 << 60, FakeRunner())


def test_ram_staging_mounts_nothing(tmp_path: Path) -> None:
    with pytest.raises(NetinstallError, match="names no partition"):
        disk.mount_staging(Staging(StagingPlace.RAM, tmp_path), 10, FakeRunner())
