"""The dom0 agent's updates: verified, applied to a temporary root, recorded, reported.

Imported as dom0 imports it. HTTP goes to a fake session; commands to a runner that
records them, except ``ssh-keygen -Y verify``, which it answers by checking the SSH
signature itself (``pxe_server.update_key.verify_signature``, the same check): a bad
signature is refused by a real verification, not by a scripted answer.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import tarfile
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DOM0 = Path(__file__).resolve().parents[2] / "hypervisor_payload" / "dom0"
if str(DOM0) not in sys.path:
    sys.path.insert(0, str(DOM0))

from netinstall_dom0.agent import Outcome  # noqa: E402
from netinstall_dom0.layout import Layout  # noqa: E402
from netinstall_dom0.server import ServerClient  # noqa: E402
from netinstall_dom0.updates import Host, UpdateLog, apply_update, keep_key  # noqa: E402

from common.errors import CommandError  # noqa: E402
from common.process import Completed  # noqa: E402
from common.protocol.codec import encode  # noqa: E402
from common.protocol.messages import (  # noqa: E402
    RebootPolicy,
    UpdateOutcome,
    UpdateWork,
)
from common.update_bundle import (  # noqa: E402
    Member,
    UpdateMeta,
    read_bundle,
    signed_copy,
    write_bundle,
)
from hypervisor_payload.updates import build_update  # noqa: E402
from pxe_server.update_key import UpdateKey, verify_signature  # noqa: E402
from tests.unit.test_dom0_agent import (  # noqa: E402
    MULTIPATH_MAPS,
    NO_MAPS,
    FakeSession,
    make_agent,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "hypervisor_payload" / "updates_example"
SERVER = "http://192.168.77.1:8080"
MAC = "52:54:00:12:34:56"
CREDENTIAL = "agent-credential-Kp4vN7"


@dataclass
class Runner:
    """Records commands (argv, env's NETINSTALL_UPDATE); verifies SSH signatures for real."""

    calls: list[tuple[str, ...]] = field(default_factory=list)
    update_env: list[str | None] = field(default_factory=list)
    fail: tuple[str, ...] = ()  # commands (argv[0] or after chroot) that exit 1

    def __call__(
        self,
        argv: Sequence[str],
        *,
        ok_codes: Container[int] = (0,),
        input_text: str | None = None,
        timeout: float | None = None,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        args = tuple(argv)
        if args == MULTIPATH_MAPS:
            return Completed(args, 0, NO_MAPS, "")
        if args[:3] == ("ssh-keygen", "-Y", "verify"):
            return self.verify(args, input_text or "")
        self.calls.append(args)
        self.update_env.append((env or {}).get("NETINSTALL_UPDATE"))
        command = args[2] if args[0] == "chroot" else args[0]
        if command in self.fail:
            raise CommandError(args, 1, "", f"{command} failed")
        return Completed(args, 0, "", "")

    @staticmethod
    def verify(args: tuple[str, ...], message: str) -> Completed:
        allowed = Path(args[args.index("-f") + 1]).read_text().split()
        assert allowed[0] == args[args.index("-I") + 1] == "netinstall-updates"
        assert allowed[1] == 'namespaces="netinstall-update"'
        signature = Path(args[args.index("-s") + 1]).read_text()
        if verify_signature(" ".join(allowed[2:4]), signature, message.encode()):
            return Completed(args, 0, "Good signature", "")
        raise CommandError(args, 255, "", "Signature verification failed")


@pytest.fixture
def key() -> UpdateKey:
    return UpdateKey.generate()


@pytest.fixture
def layout(tmp_path: Path, key: UpdateKey) -> Layout:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/netinstall-release").write_text("VERSION=0.1.0\n")
    layout = Layout(root)
    keep_key(layout, key.public_line())
    return layout


def signed(tmp_path: Path, source: Path, key: UpdateKey) -> Path:
    """``source`` built and signed by ``key``, as ``update add`` keeps it."""
    _meta, built = build_update(source, tmp_path / f"{source.name}.unsigned")
    bundle = read_bundle(built)
    target = tmp_path / f"{source.name}.update"
    signed_copy(bundle, target, key.sign(bundle.metadata).encode())
    return target


def work_for(
    path: Path, reboot: RebootPolicy = RebootPolicy.AUTO, update_id: str | None = None
) -> UpdateWork:
    """The work a check-in reply names for the bundle at ``path`` (its own id, else
    ``update_id``: a bundle changed after signing no longer reads)."""
    name = update_id or read_bundle(path).meta.id
    data = path.read_bytes()
    url = f"{SERVER}/api/v1/hosts/{MAC}/updates/{name}"
    return UpdateWork(name, url, len(data), hashlib.sha256(data).hexdigest(), reboot)


def host(layout: Layout, session: FakeSession, runner: Runner) -> Host:
    return Host(ServerClient(SERVER, MAC, session), CREDENTIAL, runner, layout, "0.1.0")


def served(work: UpdateWork, path: Path) -> FakeSession:
    return FakeSession(files={work.url: path.read_bytes()})


def nothing_changed(layout: Layout, runner: Runner) -> None:
    assert runner.calls == []
    assert not (layout.root / "etc/netinstall/hotfix-example.conf").exists()
    assert not layout.update_version("example-hotfix-1").exists()
    assert UpdateLog.read(layout).applied == {}
    assert list(layout.update_dir.iterdir()) == []  # the download is gone


def test_the_example_is_applied_recorded_and_a_rerun_is_a_no_op(
    tmp_path: Path, layout: Layout, key: UpdateKey
) -> None:
    path = signed(tmp_path, EXAMPLE, key)
    work = work_for(path)
    session, runner = served(work, path), Runner()
    done = apply_update(work, host(layout, session, runner))
    assert done.result.outcome is UpdateOutcome.APPLIED
    assert not done.reboot
    conf = (layout.root / "etc/netinstall/hotfix-example.conf").read_text()
    assert "version = 1.0-hotfix1" in conf
    assert layout.update_version("example-hotfix-1").read_text() == "1.0-hotfix1\n"
    ((chroot, root, shell, script),) = runner.calls
    assert (chroot, root, shell) == ("chroot", str(layout.root), "/bin/sh")
    assert script.startswith("/var/lib/netinstall/updates/example-hotfix-1.")
    assert script.endswith("/members/post-apply.sh")
    assert runner.update_env == ["example-hotfix-1"]
    record = UpdateLog.read(layout)
    assert record.ids() == ("example-hotfix-1",)
    assert record.applied["example-hotfix-1"]["version"] == "1.0-hotfix1"
    assert list(layout.update_dir.iterdir()) == []
    assert session.gets == [(work.url, {"Authorization": f"Bearer {CREDENTIAL}"})]
    again = apply_update(work, host(layout, session, runner))
    assert again.result.outcome is UpdateOutcome.APPLIED
    assert len(session.gets) == 1  # not downloaded again
    assert len(runner.calls) == 1  # nothing run again


def test_a_bundle_signed_by_another_key_applies_nothing(tmp_path: Path, layout: Layout) -> None:
    path = signed(tmp_path, EXAMPLE, UpdateKey.generate())
    work = work_for(path)
    runner = Runner()
    done = apply_update(work, host(layout, served(work, path), runner))
    assert done.result.outcome is UpdateOutcome.FAILED
    assert "signature does not verify" in (done.result.reason or "")
    nothing_changed(layout, runner)
    assert UpdateLog.read(layout).last == done.result


def test_an_unsigned_bundle_applies_nothing(tmp_path: Path, layout: Layout) -> None:
    _meta, path = build_update(EXAMPLE, tmp_path / "unsigned.update")
    work = work_for(path)
    runner = Runner()
    done = apply_update(work, host(layout, served(work, path), runner))
    assert "is not signed" in (done.result.reason or "")
    nothing_changed(layout, runner)


def test_a_wrong_checksum_applies_nothing(tmp_path: Path, layout: Layout, key: UpdateKey) -> None:
    path = signed(tmp_path, EXAMPLE, key)
    work = work_for(path)
    bad = UpdateWork(work.id, work.url, work.size, "0" * 64, work.reboot)
    runner = Runner()
    done = apply_update(bad, host(layout, served(work, path), runner))
    assert "does not match its sha256" in (done.result.reason or "")
    nothing_changed(layout, runner)


def test_a_changed_member_applies_nothing(tmp_path: Path, layout: Layout, key: UpdateKey) -> None:
    """A member changed after signing (same size): the bundle's own sha256 refuses it, even
    when the server's checksum is that of the changed file."""
    path = signed(tmp_path, EXAMPLE, key)
    data = bytearray(path.read_bytes())
    at = data.index(b"post-apply ran")
    data[at : at + 4] = b"POST"
    path.write_bytes(bytes(data))
    work = work_for(path, update_id="example-hotfix-1")
    runner = Runner()
    done = apply_update(work, host(layout, served(work, path), runner))
    assert "sha256 mismatch for post-apply.sh" in (done.result.reason or "")
    nothing_changed(layout, runner)


def test_another_base_version_applies_nothing(
    tmp_path: Path, layout: Layout, key: UpdateKey
) -> None:
    path = signed(tmp_path, EXAMPLE, key)
    work = work_for(path)
    runner = Runner()
    other = Host(ServerClient(SERVER, MAC, served(work, path)), CREDENTIAL, runner, layout, "0.2.0")
    done = apply_update(work, other)
    assert "applies to 0.1.0; this host runs 0.2.0" in (done.result.reason or "")
    nothing_changed(layout, runner)


def test_a_bundle_larger_than_announced_is_not_kept(
    tmp_path: Path, layout: Layout, key: UpdateKey
) -> None:
    path = signed(tmp_path, EXAMPLE, key)
    work = work_for(path)
    short = UpdateWork(work.id, work.url, work.size - 100, work.sha256, work.reboot)
    runner = Runner()
    done = apply_update(short, host(layout, served(work, path), runner))
    assert "more than the" in (done.result.reason or "")
    nothing_changed(layout, runner)


def _source(tmp_path: Path, name: str, *, reboot: bool = False) -> Path:
    source = tmp_path / name
    shutil.copytree(EXAMPLE, source)
    toml = (source / "update.toml").read_text().replace("example-hotfix-1", name)
    if reboot:
        toml = toml.replace("reboot = false", "reboot = true")
    (source / "update.toml").write_text(toml)
    return source


def test_packages_go_to_dpkg_and_a_failed_command_fails_the_update(
    tmp_path: Path, layout: Layout, key: UpdateKey
) -> None:
    source = _source(tmp_path, "with-debs")
    (source / "debs").mkdir()
    (source / "debs/tool_1.1_all.deb").write_bytes(b"!<arch>\nnot really a package\n")
    path = signed(tmp_path, source, key)
    work = work_for(path)
    runner = Runner(fail=("dpkg",))
    done = apply_update(work, host(layout, served(work, path), runner))
    assert runner.calls[0][:5] == ("chroot", str(layout.root), "dpkg", "-i", runner.calls[0][4])
    assert runner.calls[0][4].endswith("/members/debs/tool_1.1_all.deb")
    assert done.result.outcome is UpdateOutcome.FAILED
    assert "exited with status 1: dpkg failed" in (done.result.reason or "")
    assert UpdateLog.read(layout).applied == {}  # not recorded: a re-run tries again


def _bundle_with_root(tmp_path: Path, key: UpdateKey, entries: list[tarfile.TarInfo]) -> Path:
    """A signed bundle whose root.tar holds ``entries`` (files empty), made by hand: what
    ``update build`` would never make."""
    tar = tmp_path / "root.tar"
    with tarfile.open(tar, "w") as archive:
        for info in entries:
            archive.addfile(info, io.BytesIO(b"") if info.isfile() else None)
    data = tar.read_bytes()
    member = Member("root.tar", "tar", len(data), hashlib.sha256(data).hexdigest())
    meta = UpdateMeta("by-hand", "by hand", "1", ("0.1.0",), False, (member,))
    unsigned = tmp_path / "by-hand.unsigned"
    write_bundle(unsigned, meta, {"root.tar": tar})
    bundle = read_bundle(unsigned)
    target = tmp_path / "by-hand.update"
    signed_copy(bundle, target, key.sign(bundle.metadata).encode())
    return target


def _entry(name: str, link: str | None = None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
    return info


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([_entry("opt", "/tmp"), _entry("opt/evil")], "opt/evil is under a symlink"),
        ([_entry("../evil")], "escapes the root"),
        ([_entry("/etc/evil")], "escapes the root"),
        ([_entry("var/link/evil")], "leads out of the root through a symlink"),
    ],
)
def test_files_that_would_land_outside_the_root_apply_nothing(
    tmp_path: Path,
    layout: Layout,
    key: UpdateKey,
    entries: list[tarfile.TarInfo],
    message: str,
) -> None:
    path = _bundle_with_root(tmp_path, key, entries)
    (layout.root / "var").mkdir()
    (layout.root / "var/link").symlink_to(tmp_path / "outside")
    work = work_for(path)
    runner = Runner()
    done = apply_update(work, host(layout, served(work, path), runner))
    assert message in (done.result.reason or "")
    assert not (tmp_path / "outside").exists()
    assert not (layout.root / "opt").exists()
    assert not layout.update_version("by-hand").exists()
    assert runner.calls == []


def test_the_agent_applies_reports_and_reboots_when_the_update_says_so(
    tmp_path: Path, layout: Layout, key: UpdateKey
) -> None:
    path = signed(tmp_path, _source(tmp_path, "reboot-1", reboot=True), key)
    work = work_for(path)
    reply = {"action": "none", "update": encode(work, envelope=False)}
    session = FakeSession([reply], files={work.url: path.read_bytes()})
    runner = Runner()
    assert make_agent(layout, session, runner).checkin_once() is Outcome.REBOOTING  # type: ignore[arg-type]
    assert runner.calls[-1] == ("systemctl", "reboot")
    first, report = (body for _url, body, _headers in session.posts)
    assert first["updates"] == []
    assert report["updates"] == ["reboot-1"]
    assert report["update_result"] == {"id": "reboot-1", "outcome": "applied"}


def test_manual_policy_reports_reboot_required_and_does_not_reboot(
    tmp_path: Path, layout: Layout, key: UpdateKey
) -> None:
    path = signed(tmp_path, _source(tmp_path, "reboot-2", reboot=True), key)
    work = work_for(path, RebootPolicy.MANUAL)
    reply = {"action": "none", "update": encode(work, envelope=False)}
    session = FakeSession([reply], files={work.url: path.read_bytes()})
    runner = Runner()
    assert make_agent(layout, session, runner).checkin_once() is Outcome.IDLE  # type: ignore[arg-type]
    assert ("systemctl", "reboot") not in runner.calls
    report = session.posts[-1][1]
    assert report["update_result"] == {"id": "reboot-2", "outcome": "reboot-required"}


def test_the_first_key_offered_is_kept_and_another_is_ignored(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    first, second = UpdateKey.generate(), UpdateKey.generate()
    keep_key(layout, None)
    assert not layout.update_key.exists()
    keep_key(layout, "not a key")
    assert not layout.update_key.exists()
    keep_key(layout, first.public_line())
    keep_key(layout, second.public_line())
    assert layout.update_key.read_text() == first.public_line() + "\n"


def test_a_failed_update_is_reported_with_a_log_bundle(tmp_path: Path, layout: Layout) -> None:
    path = signed(tmp_path, EXAMPLE, UpdateKey.generate())  # not the key the host holds
    work = work_for(path)
    reply = {"action": "none", "update": encode(work, envelope=False)}
    session = FakeSession([reply], files={work.url: path.read_bytes()})
    runner = Runner()
    assert make_agent(layout, session, runner).checkin_once() is Outcome.IDLE  # type: ignore[arg-type]
    report = session.posts[-1][1]["update_result"]
    assert report["outcome"] == "failed"
    assert "signature does not verify" in report["reason"]
    ((url, data, headers),) = session.puts
    assert url.endswith("/logs")
    assert headers["Authorization"] == f"Bearer {CREDENTIAL}"
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:bz2") as archive:
        names = archive.getnames()
        failure = archive.extractfile("update-failure.txt").read().decode()  # type: ignore[union-attr]
    assert names == ["update-failure.txt", "netinstall-agent.journal", "updates.json"]
    assert failure.strip() == report["reason"]
    assert runner.calls == [
        ("journalctl", "-u", "netinstall-agent", "-b", "--no-pager", "-n", "2000")
    ]
    assert UpdateLog.read(layout).last is None  # reported: the next check-in starts afresh
