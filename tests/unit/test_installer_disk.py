"""The installer's disk and payload steps, with a fake runner (no process starts)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from answerfile.bootargs import BootArgs
from answerfile.model import (
    AnswerFile,
    Disk,
    DiskKind,
    Mode,
    PreserveFirstPartition,
    PrimaryDisk,
    Source,
    SourceType,
)
from common.errors import InputError, NetinstallError, SourceError
from common.firmware import Firmware
from common.process import Completed
from installer_core import disk, mounts, payload
from installer_core.context import InstallContext
from installer_core.fetch import Permanent
from partitioning import mkfs, planner
from partitioning.model import DiskFacts, GiB, Preserve, Use


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


class Quiet:
    def event(self, state: str, **kwargs: Any) -> None:
        pass

    def upload_logs(self, bundle: Path) -> None:
        pass


def context(tmp_path: Path, answer: AnswerFile | None = None, **kw: Any) -> InstallContext:
    ctx = InstallContext(
        args=kw.pop("args", BootArgs()),
        reporter=Quiet(),
        firmware=kw.pop("firmware", Firmware.BIOS),
        work=tmp_path / "work",
        target=tmp_path / "target",
        log_file=tmp_path / "work/install.log",
        answer=answer or AnswerFile(primary_disk=PrimaryDisk(Disk("sda"))),
    )
    for key, value in kw.items():
        setattr(ctx, key, value)
    return ctx


def planned(ctx: InstallContext, size: int = 60 * GiB, name: str = "/dev/loop7") -> None:
    ctx.plan = planner.plan(DiskFacts(size=size), disk.plan_options(ctx))
    ctx.disk = Path(name)
    ctx.partitions = disk.partition_map(ctx.plan, ctx.disk)


# --- partition --------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (AnswerFile(mode=Mode.UPGRADE), "mode upgrade keeps its partition table"),
        (AnswerFile(mode=Mode.RESTORE), "mode restore keeps its partition table"),
        (AnswerFile(), "needs <primary-disk>"),
        (
            AnswerFile(primary_disk=PrimaryDisk(Disk("iscsi:ibft", DiskKind.IBFT))),
            "an iSCSI disk needs use_ibft",
        ),
        (AnswerFile(primary_disk=PrimaryDisk(Disk("nosuchdisk9"))), "is not a disk"),
    ],
)
def test_primary_disk_refusals(answer: AnswerFile, words: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=words):
        disk.primary_disk(context(tmp_path, answer))


def test_plan_options_follow_answer_and_boot_args(tmp_path: Path) -> None:
    answer = AnswerFile(
        primary_disk=PrimaryDisk(
            Disk("sda"), guest_storage=False, preserve_first_partition=PreserveFirstPartition.TRUE
        ),
        zap_utility_partitions=False,
    )
    ctx = context(tmp_path, answer, firmware=Firmware.UEFI, args=BootArgs(disable_gpt=True))
    options = disk.plan_options(ctx)
    assert options.firmware.value == "uefi"
    assert options.disable_gpt
    assert not options.guest_storage
    assert options.preserve_first_partition is Preserve.TRUE


def test_partition_map_names_loop_and_sd_partitions(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    planned(ctx)
    assert ctx.partitions == {
        "logs": Path("/dev/loop7p5"),
        "backup": Path("/dev/loop7p2"),
        "root": Path("/dev/loop7p1"),
        "bios-boot": Path("/dev/loop7p4"),
        "swap": Path("/dev/loop7p6"),
        "sr": Path("/dev/loop7p3"),
    }
    assert ctx.plan is not None
    assert disk.partition_map(ctx.plan, Path("/dev/sda"))["root"] == Path("/dev/sda1")


def test_make_filesystems_reads_uuids_and_sr_partuuid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = context(tmp_path, firmware=Firmware.UEFI)
    planned(ctx)
    monkeypatch.setattr(mkfs, "make_filesystems", lambda plan, target: ["made"])
    runner = FakeRunner(lambda argv: f"{argv[4]}-of-{Path(argv[-1]).name}\n")
    disk.make_filesystems(ctx, runner)
    assert ctx.uuids == {
        "logs": "UUID-of-loop7p5",
        "backup": "UUID-of-loop7p2",
        "root": "UUID-of-loop7p1",
        "esp": "UUID-of-loop7p4",
        "swap": "UUID-of-loop7p6",
    }
    assert ctx.partuuids == {"sr": "PARTUUID-of-loop7p3"}
    assert all(call[:3] == ("blkid", "-c", "/dev/null") for call in runner.calls)


def test_mount_target_mounts_root_first_then_logs_and_esp(tmp_path: Path) -> None:
    ctx = context(tmp_path, firmware=Firmware.UEFI)
    planned(ctx)
    runner = FakeRunner()
    disk.mount_target(ctx, runner)
    target = str(ctx.target)
    assert runner.calls == [
        ("mount", "-t", "ext4", "/dev/loop7p1", target),
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
    ctx = context(tmp_path)
    disk.unmount_target(ctx, runner)
    disk.unmount_target(ctx, runner)
    assert runner.calls == [("sync",), ("sync",)]  # nothing of tmp_path is mounted


@pytest.mark.parametrize(
    ("disable_gpt", "where"), [(False, "netinstall"), (True, "var/log/netinstall")]
)
def test_write_install_log(tmp_path: Path, disable_gpt: bool, where: str) -> None:
    ctx = context(tmp_path, args=BootArgs(disable_gpt=disable_gpt))
    planned(ctx, size=20 * GiB if disable_gpt else 60 * GiB)
    ctx.log_file.parent.mkdir(parents=True)
    ctx.log_file.write_text("the log\n")
    runner = FakeRunner()
    disk.write_install_log(ctx, runner)
    device = ctx.partitions["root" if disable_gpt else "logs"]
    assert runner.calls[0] == ("mount", "-t", "ext4", str(device), str(ctx.work / "logs-mount"))
    copied = ctx.work / "logs-mount" / where / "install.log"
    assert copied.read_text() == "the log\n"
    assert copied.stat().st_mode & 0o777 == 0o600


# --- payload ----------------------------------------------------------------


def test_extract_command_keeps_owners_xattrs_and_acls(tmp_path: Path) -> None:
    ctx = context(tmp_path, payload={"dom0-rootfs.tar.zst": Path("/stage/dom0-rootfs.tar.zst")})
    runner = FakeRunner()
    payload.extract_root(ctx, runner)
    assert runner.calls == [
        (
            "tar",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "--numeric-owner",
            "--zstd",
            "-xpf",
            "/stage/dom0-rootfs.tar.zst",
            "-C",
            str(ctx.target),
        )
    ]


def test_install_boot_files_replaces_the_archives(tmp_path: Path) -> None:
    files = {}
    for key in payload.BOOT_FILES:
        files[key] = tmp_path / "stage" / key
        files[key].parent.mkdir(parents=True, exist_ok=True)
        files[key].write_bytes(key.encode())
    ctx = context(tmp_path, payload=files)
    (ctx.target / "boot").mkdir(parents=True)
    (ctx.target / "boot/vmlinuz").symlink_to("vmlinuz-6.12")
    payload.install_boot_files(ctx)
    for key, name in payload.BOOT_FILES.items():
        installed = ctx.target / "boot" / name
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


def _fetcher(served: dict[str, bytes]) -> payload.Fetcher:
    def read(url: str) -> bytes:
        if url not in served:
            raise SourceError(f"cannot read {url}") from Permanent("404")
        return served[url]

    def save(url: str, dest: Path) -> None:
        dest.write_bytes(read(url))

    return payload.Fetcher(read, save)


def test_install_packs_applies_tar_then_script_in_the_target(tmp_path: Path) -> None:
    ctx = context(tmp_path, repo_url="http://repo")
    runner = FakeRunner()
    payload.install_packs(ctx, runner, _fetcher(_pack_repository()))
    target = str(ctx.target)
    work = [c for c in runner.calls if c[0] in ("tar", "chroot")]
    assert work[0][:3] == ("tar", "--numeric-owner", "-xpf")
    assert work[0][-2:] == ("-C", target)
    assert work[1] == ("chroot", target, "/tmp/netinstall-packs/example/install.sh")
    script_env = runner.kwargs[runner.calls.index(work[1])]["env"]
    assert script_env["NETINSTALL_PACK"] == "example"
    assert runner.calls[0][0] == "mount"  # /dev, /proc, /sys for the chroot ...
    assert runner.calls[-1][0] == "umount"  # ... and gone again
    assert not (ctx.target / "usr/sbin/policy-rc.d").exists()
    assert not (ctx.target / "tmp/netinstall-packs").exists()


def test_install_packs_refuses_a_file_that_does_not_match(tmp_path: Path) -> None:
    served = _pack_repository()
    served["http://repo/packages.example/install.sh"] = b"#!/bin/sh\nevil\n"
    ctx = context(tmp_path, repo_url="http://repo/")
    runner = FakeRunner()
    with pytest.raises(SourceError, match=r"install\.sh does not match"):
        payload.install_packs(ctx, runner, _fetcher(served))
    assert not any(c[0] in ("tar", "chroot") for c in runner.calls)


def test_repository_without_pack_list_has_no_packs(tmp_path: Path) -> None:
    ctx = context(tmp_path, repo_url="http://repo/")
    runner = FakeRunner()
    payload.install_packs(ctx, runner, _fetcher({}))
    assert runner.calls == []


def test_driver_source_may_be_a_pack_directory_itself(tmp_path: Path) -> None:
    served = {
        k.replace("http://repo/packages.example/", "http://drivers/"): v
        for k, v in _pack_repository().items()
        if "packages.example" in k
    }
    answer = AnswerFile(
        primary_disk=PrimaryDisk(Disk("sda")),
        driver_sources=(Source(SourceType.URL, "http://drivers"),),
    )
    ctx = context(tmp_path, answer)
    runner = FakeRunner()
    payload.install_packs(ctx, runner, _fetcher(served))
    assert ("chroot", str(ctx.target), "/tmp/netinstall-packs/example/install.sh") in runner.calls


def test_planned_partition_uses_cover_the_layout(tmp_path: Path) -> None:
    ctx = context(tmp_path, firmware=Firmware.UEFI)
    planned(ctx)
    assert ctx.plan is not None
    assert {p.use for p in ctx.plan.partitions} == {
        Use.LOGS,
        Use.BACKUP,
        Use.ROOT,
        Use.ESP,
        Use.SWAP,
        Use.SR,
    }


# -- staging the payload on the disk (SPEC §7) ---------------------------------------


def test_disk_staging_partitions_early_and_mounts_the_backup_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = context(tmp_path, AnswerFile(primary_disk=PrimaryDisk(Disk("sda"))))
    done: list[str] = []

    def fake_partition(c: InstallContext, runner: object = None) -> None:
        done.append("partition")
        c.partitions = {"root": Path("/dev/sda1"), "backup": Path("/dev/sda2")}

    monkeypatch.setattr(disk, "partition", fake_partition)
    monkeypatch.setattr(disk, "make_filesystems", lambda c, runner=None: done.append("mkfs"))
    runner = FakeRunner()
    where = disk.staging_on_disk(ctx, 10, runner)
    assert done == ["partition", "mkfs"]
    assert ctx.disk_ready
    assert where == ctx.work / "staging-disk" / "payload"
    assert ("mount", "-t", "ext4", "/dev/sda2", str(ctx.work / "staging-disk")) in runner.calls
    # The later steps see the disk is ready and leave it alone.
    monkeypatch.undo()
    disk.partition(ctx, runner)
    disk.make_filesystems(ctx, runner)
    assert ctx.partitions["backup"] == Path("/dev/sda2")
    # Unmounting the target removes the staged payload and unmounts the partition.
    ctx.staging = where
    where.mkdir(parents=True)
    (where / "xen.gz").write_bytes(b"x")
    unmounted: list[Path] = []
    monkeypatch.setattr(disk, "unmount_all", lambda r, top: unmounted.append(top) or [])
    disk.unmount_target(ctx, runner)
    assert not where.exists()
    assert unmounted == [ctx.work / "staging-disk", ctx.target]
    assert ctx.staging_mount is None


def test_an_upgrade_stages_on_its_logs_partition_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = context(tmp_path, AnswerFile(mode=Mode.UPGRADE))
    ctx.partitions = {"root": Path("/dev/sda1"), "logs": Path("/dev/sda5")}
    runner = FakeRunner()
    where = disk.staging_on_disk(ctx, 10, runner)
    mountpoint = ctx.work / "staging-disk"
    assert where == mountpoint / disk.STAGING_DIR
    assert runner.calls == [("mount", "-t", "ext4", "/dev/sda5", str(mountpoint))]
    assert not ctx.disk_ready  # nothing was partitioned or formatted
    assert ctx.staging == where  # known before the download: removed even if it fails
    where.mkdir(parents=True)
    (where / "xen.gz").write_bytes(b"partial")
    (mountpoint / "syslog").write_text("the installation's own log\n")
    monkeypatch.setattr(disk, "unmount_all", lambda r, top: [])
    disk.unmount_target(ctx, runner)
    assert not where.exists()
    assert (mountpoint / "syslog").exists()  # the logs themselves stay


def test_an_upgrade_without_a_logs_partition_cannot_stage_on_disk(tmp_path: Path) -> None:
    ctx = context(tmp_path, AnswerFile(mode=Mode.UPGRADE))
    ctx.partitions = {"root": Path("/dev/sda1"), "backup": Path("/dev/sda2")}
    runner = FakeRunner()
    with pytest.raises(NetinstallError, match="has no logs partition to stage it on"):
        disk.staging_on_disk(ctx, 3 << 30, runner)
    assert runner.calls == []


def test_an_upgrade_needs_room_on_the_logs_partition(tmp_path: Path) -> None:
    ctx = context(tmp_path, AnswerFile(mode=Mode.UPGRADE))
    ctx.partitions = {"logs": Path("/dev/sda5")}
    with pytest.raises(NetinstallError, match=r"the logs partition /dev/sda5 has \d+ MiB free"):
        disk.staging_on_disk(ctx, 1 << 60, FakeRunner())


def test_a_restore_never_stages_a_payload(tmp_path: Path) -> None:
    ctx = context(tmp_path, AnswerFile(mode=Mode.RESTORE))
    with pytest.raises(NetinstallError, match="a restore does not download one"):
        disk.staging_on_disk(ctx, 10, FakeRunner())


def test_disk_staging_needs_room_on_the_backup_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = context(tmp_path, AnswerFile(primary_disk=PrimaryDisk(Disk("sda"))))

    def fake_partition(c: InstallContext, runner: object = None) -> None:
        c.partitions = {"backup": Path("/dev/sda2")}

    monkeypatch.setattr(disk, "partition", fake_partition)
    monkeypatch.setattr(disk, "make_filesystems", lambda c, runner=None: None)
    with pytest.raises(NetinstallError, match=r"the backup partition /dev/sda2 has \d+ MiB free"):
        disk.staging_on_disk(ctx, 1 << 60, FakeRunner())
