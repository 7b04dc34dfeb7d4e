"""installer_core.steps and .install: the walker (numbering, progress, console lines), one
flow per mode walked over its plan with every step faked (what each step is handed and
what it made), and the failure path (cleanup, complete scripts with 1, log bundle,
failed report, secrets scrubbed)."""

from __future__ import annotations

import io
import ipaddress
import logging
import re
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from answerfile.bootargs import parse_cmdline
from answerfile.model import Script, ScriptStage, Source, SourceType
from common.errors import AnswerFileError, InputError, NetinstallError, SourceError
from common.firmware import Firmware
from installer_core import (
    backup,
    bootloader,
    carry,
    configure,
    disk,
    download,
    existing,
    fetch,
    install,
    iscsi,
    logbundle,
    network,
    payload,
    planning,
    scripts,
    survey,
)
from installer_core.plan import InstallPlan
from installer_core.report import KeyRefused
from installer_core.steps import StepFailed, StepWalker, failure_reason
from partitioning.model import MiB, Use
from tests.unit.test_installer_fakes import (
    ETH0,
    MAC,
    PASSWORD,
    TOKEN,
    FakeRunner,
    answer_for,
    make_plan,
    paths_in,
)


class Recorder:
    install_key = "recorded-install-key-0123456789abcdef0123"
    update_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRecorded netinstall-updates"

    def __init__(self, refuse: str | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.uploads: list[Path] = []
        self.enrolled: list[object] = []
        self.refuse = refuse

    def enrol(self, session: object) -> None:
        if self.refuse:
            raise KeyRefused(self.refuse)
        self.enrolled.append(session)

    def event(self, state: str, **fields: Any) -> None:
        self.events.append({"state": state, **{k: v for k, v in fields.items() if v is not None}})

    def upload_logs(self, bundle: Path) -> None:
        self.uploads.append(bundle)


def _walker(out: io.StringIO, reporter: Recorder, steps: Any, args: str = "install") -> StepWalker:
    secrets = logbundle.Secrets(parse_cmdline(args))
    return StepWalker(out, reporter, secrets, steps, clock=iter(range(1000)).__next__)  # type: ignore[arg-type]


# --- the walker ----------------------------------------------------------------------


def test_the_walker_numbers_reports_and_times_each_step() -> None:
    out, reporter = io.StringIO(), Recorder()
    walk = _walker(out, reporter, (("a", 1), ("b", 2), ("c", 1), ("d", 4)))
    for name in "abcd":
        with walk.step(name):
            pass
    progress = [e["progress"] for e in reporter.events]
    assert progress == [0.0, 0.125, 0.375, 0.5]
    assert [e["step"] for e in reporter.events] == ["a", "b", "c", "d"]
    lines = out.getvalue().splitlines()
    assert lines[0] == "netinstall: step a (1/4)"
    assert lines[1] == "netinstall: step a done in 1.0s"
    assert "netinstall: step d (4/4)" in lines


def test_a_failing_step_says_so_and_raises_its_one_sentence() -> None:
    out, reporter = io.StringIO(), Recorder()
    walk = _walker(out, reporter, (("a", 1),))
    reason = "sha256 mismatch for boot/xen.gz: expected a, got b"
    with pytest.raises(StepFailed) as caught, walk.step("a"):
        raise SourceError(reason)
    assert (caught.value.step, caught.value.reason) == ("a", reason)
    assert isinstance(caught.value.__cause__, SourceError)
    assert out.getvalue().splitlines()[-1] == f"netinstall: step a FAILED after 1.0s: {reason}"


def test_a_flow_that_strays_from_its_list_fails_that_step() -> None:
    walk = _walker(io.StringIO(), Recorder(), (("a", 1), ("b", 1)))
    with pytest.raises(StepFailed, match=r"internal error: step b is not step 1"), walk.step("b"):
        pass


def test_the_list_grows_once_the_plan_is_known_and_progress_holds() -> None:
    out, reporter = io.StringIO(), Recorder()
    walk = _walker(out, reporter, (("fetch", 1), ("validate", 1), ("find", 1)))
    for name in ("fetch", "validate"):
        with walk.step(name):
            pass
    walk.expect((("fetch", 1), ("validate", 1), ("find", 1), ("download", 1), ("backup", 6)))
    for name in ("find", "download", "backup"):
        with walk.step(name):
            pass
    progress = [e["progress"] for e in reporter.events]
    # The work grew after validation (2 of 3, then 2 of 10): progress holds, never goes back.
    assert progress == [0.0, 1 / 3, 1 / 3, 1 / 3, 0.4]
    numbered = [line for line in out.getvalue().splitlines() if line.endswith(")")]
    assert numbered == [
        "netinstall: step fetch (1/3)",
        "netinstall: step validate (2/3)",
        "netinstall: step find (3/5)",
        "netinstall: step download (4/5)",
        "netinstall: step backup (5/5)",
    ]
    with pytest.raises(NetinstallError, match="internal error"):
        walk.expect((("other", 1),))


def test_failure_reasons() -> None:
    assert failure_reason(AnswerFileError(["a", "b"])) == "a; b"
    assert failure_reason(NetinstallError("disk gone")) == "disk gone"
    assert failure_reason(KeyError("x")) == "internal error: KeyError: 'x'"


# --- a whole run, every step faked ----------------------------------------------------

PAYLOAD = download.Payload("9.9.9", {"dom0-rootfs.tar.zst": Path("/stage/root.tar.zst")})
MADE = disk.Filesystems({Use.ROOT: "ROOT-UUID", Use.LOGS: "LOGS-UUID"}, "SR-PARTUUID")
SAVED = Path("/work/carried")
STORAGE = iscsi.IbftNic(0, "52:54:00:78:00:01", ipaddress.IPv4Interface("192.168.78.50/24"))
STORAGE_IBFT = iscsi.Ibft("iqn.2010-04.org.ipxe:lab", (STORAGE,), ())


class Faked:
    """Every step function replaced: ``calls`` says which ran, in order, and with what."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, plan: InstallPlan) -> None:
        self.calls: list[str] = []
        self.handed: dict[str, tuple[Any, ...]] = {}
        self.fail_at: str | None = None
        self.error: Exception = NetinstallError("boom")
        self.plan = plan
        results: dict[tuple[Any, str], Any] = {
            (network, "bring_up"): ETH0,
            (fetch, "fetch_answerfile"): "<installation/>",
            (fetch, "validate_answerfile"): plan.answer,
            (survey, "plan_install"): plan,
            (download, "download_payload"): PAYLOAD,
            (download, "check_payload"): None,
            (disk, "make_filesystems"): MADE,
            (carry, "save_settings"): SAVED,
            (backup, "make_root"): "ROOT-UUID",
            (logbundle, "make_bundle"): Path("/work/support.tar.bz2"),
            (iscsi, "attach_ibft"): None,
            (iscsi, "read_ibft"): STORAGE_IBFT,
        }
        steps = [
            (scripts, "run_scripts"),
            (disk, "partition"),
            (disk, "mount_target"),
            (disk, "unmount_target"),
            (disk, "write_install_log"),
            (payload, "extract_root"),
            (payload, "install_boot_files"),
            (payload, "install_packs"),
            (configure, "configure_system"),
            (bootloader, "install_bootloader"),
            (existing, "check_layout"),
            (backup, "backup_root"),
            (backup, "restore_root"),
            (carry, "carry_settings"),
            (carry, "restore_settings"),
            *results,
        ]
        for module, name in steps:
            monkeypatch.setattr(module, name, self._fake(module, name, results.get((module, name))))

    def _fake(self, module: Any, name: str, result: Any) -> Callable[..., Any]:
        label = f"{module.__name__.rsplit('.', 1)[1]}.{name}"

        def fake(*args: Any, **kwargs: Any) -> Any:
            if label == "scripts.run_scripts":
                label_here = f"{label} {args[1].value} {args[2]}"
            else:
                label_here = label
            self.calls.append(label_here)
            self.handed[label] = (*args, *kwargs.values())
            if self.fail_at == label:
                raise self.error
            return result

        return fake

    def run(self, cmdline: str = "install", reporter: Recorder | None = None) -> tuple[int, str]:
        out = io.StringIO()
        boot = install.Boot(
            parse_cmdline(cmdline), Firmware.BIOS, reporter or Recorder(), self.plan.paths
        )
        return install.run_install(boot, out, install.Host(runner=FakeRunner())), out.getvalue()


BEFORE = ["network.bring_up", "fetch.fetch_answerfile", "fetch.validate_answerfile"]
BEFORE += ["survey.plan_install"]
LAY_DOWN = ["disk.mount_target", "payload.extract_root", "payload.install_boot_files"]
LAY_DOWN += ["payload.install_packs"]
FINISH = [
    "bootloader.install_bootloader",
    "scripts.run_scripts filesystem-populated {target}",
    "disk.unmount_target",
    "disk.write_install_log",
    "scripts.run_scripts installation-complete 0",
]


def _finish(plan: InstallPlan) -> list[str]:
    return [c.format(target=plan.paths.target) for c in FINISH]


def test_a_fresh_install_downloads_into_ram_before_it_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = make_plan(tmp_path)
    faked = Faked(monkeypatch, plan)
    reporter = Recorder()
    code, out = faked.run(reporter=reporter)
    assert code == 0
    assert faked.calls == [
        *BEFORE,
        "scripts.run_scripts installation-start None",
        "download.download_payload",
        "disk.partition",
        "disk.make_filesystems",
        *LAY_DOWN,
        "configure.configure_system",
        *_finish(plan),
    ]
    # each step is handed what the plan says and what the steps before it made
    assert faked.handed["download.download_payload"][:2] == (plan.fetch, plan.staging)
    assert faked.handed["disk.partition"][0] is plan.disk
    assert faked.handed["payload.extract_root"][0] is PAYLOAD.files
    assert faked.handed["configure.configure_system"] == (plan, "9.9.9", MADE)
    assert faked.handed["bootloader.install_bootloader"][:3] == (
        plan.bootloader,
        plan.paths.target,
        "ROOT-UUID",
    )
    assert plan.fetch is not None
    assert faked.handed["payload.install_packs"][0] == plan.fetch.packs
    numbered = re.findall(r"netinstall: step (\S+) \((\d+)/(\d+)\)", out)
    assert [n for n, _i, _t in numbered] == [name for name, _ in install.steps_of(plan.args, plan)]
    assert {t for _n, _i, t in numbered} == {"18"}
    assert re.search(r"netinstall: result installed in \d+\.\ds\n$", out)
    assert reporter.events[-1] == {"state": "installed"}
    progress = [e["progress"] for e in reporter.events if e["state"] == "installing"]
    assert progress == sorted(progress)


def test_a_payload_too_big_for_ram_is_staged_on_the_new_backup_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = make_plan(tmp_path, memory=planning.MemoryFound(available=100 * MiB))
    faked = Faked(monkeypatch, plan)
    code, _out = faked.run()
    assert code == 0
    assert faked.calls[len(BEFORE) : len(BEFORE) + 5] == [
        "scripts.run_scripts installation-start None",
        "download.check_payload",  # checksums as served, before the disk is touched
        "disk.partition",
        "disk.make_filesystems",
        "download.download_payload",
    ]
    assert plan.staging is not None
    assert plan.staging.device == plan.disk.partitions[Use.BACKUP]


def test_an_upgrade_backs_up_only_after_the_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.test_installer_upgrade import found_plan

    plan = found_plan(tmp_path)
    faked = Faked(monkeypatch, plan)
    code, _out = faked.run()
    assert code == 0
    assert faked.calls == [
        *BEFORE,
        "scripts.run_scripts installation-start None",
        "download.download_payload",
        "existing.check_layout",
        "backup.backup_root",
        "carry.save_settings",
        "backup.make_root",
        *LAY_DOWN,
        "carry.carry_settings",
        *_finish(plan),
    ]
    assert faked.handed["carry.carry_settings"] == (plan, SAVED, "9.9.9")
    assert faked.handed["backup.make_root"][:2] == (plan.disk, plan.existing)


def test_a_restore_copies_the_backup_back_and_downloads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.test_installer_restore import restore_plan

    plan = restore_plan(tmp_path)
    faked = Faked(monkeypatch, plan)
    code, _out = faked.run()
    assert code == 0
    assert faked.calls == [
        *BEFORE,
        "backup.make_root",
        "backup.restore_root",
        "disk.mount_target",
        "carry.restore_settings",
        "bootloader.install_bootloader",
        "disk.unmount_target",
        "disk.write_install_log",
    ]


def test_a_failure_cleans_up_runs_complete_scripts_uploads_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = make_plan(tmp_path)
    faked = Faked(monkeypatch, plan)
    faked.fail_at = "payload.extract_root"
    reason = "tar exited with status 2: no space left"
    faked.error = NetinstallError(reason)
    reporter = Recorder()
    code, out = faked.run(reporter=reporter)
    assert code == 1
    after = faked.calls[faked.calls.index("payload.extract_root") + 1 :]
    assert after == [
        "disk.unmount_target",
        "scripts.run_scripts installation-complete 1",
        "logbundle.make_bundle",
    ]
    assert faked.handed["disk.unmount_target"][:2] == (plan.paths.target, plan.staging)
    assert faked.handed["logbundle.make_bundle"][3] == reason  # failure.txt
    assert reporter.uploads == [Path("/work/support.tar.bz2")]
    assert reporter.events[-1] == {"state": "failed", "step": "extract-root", "message": reason}
    lines = out.splitlines()
    assert any(
        re.fullmatch(rf"netinstall: step extract-root FAILED after \d+\.\ds: {reason}", line)
        for line in lines
    )
    assert lines[-1] == f"netinstall: result failed: {reason}"


def test_an_invalid_answer_file_touches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faked = Faked(monkeypatch, make_plan(tmp_path))
    faked.fail_at = "fetch.validate_answerfile"
    problems = ["line 3: <bogus> is not allowed", "line 5: <hostname> is empty"]
    faked.error = AnswerFileError(problems)
    reporter = Recorder()
    assert faked.run(reporter=reporter)[0] == 1
    assert faked.calls[-2:] == ["fetch.validate_answerfile", "logbundle.make_bundle"]
    assert reporter.events[-1]["message"] == "; ".join(problems)


def test_a_refused_plan_reports_failed_before_anything_is_downloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faked = Faked(monkeypatch, make_plan(tmp_path))
    faked.fail_at = "survey.plan_install"
    reason = "the primary disk /dev/sda has 8 GiB; netinstall needs at least 12 GiB"
    faked.error = InputError(reason)
    reporter = Recorder()
    code, out = faked.run(reporter=reporter)
    assert code == 1
    assert faked.calls[-2:] == [
        "scripts.run_scripts installation-complete 1",  # the answer file was valid
        "logbundle.make_bundle",
    ]
    assert "download.download_payload" not in faked.calls
    assert reporter.events[-1] == {"state": "failed", "step": "plan", "message": reason}
    assert "Traceback" not in out


def test_a_failing_cleanup_does_not_hide_the_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faked = Faked(monkeypatch, make_plan(tmp_path))
    faked.fail_at = "configure.configure_system"
    faked.error = RuntimeError("boom")

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise OSError("umount: target is busy")

    monkeypatch.setattr(disk, "unmount_target", broken)
    monkeypatch.setattr(logbundle, "make_bundle", broken)
    reporter = Recorder()
    assert faked.run(reporter=reporter)[0] == 1
    assert reporter.events[-1] == {
        "state": "failed",
        "step": "configure",
        "message": "internal error: RuntimeError: boom",
    }
    assert reporter.uploads == []


def test_an_early_failure_brings_the_network_up_to_report_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faked = Faked(monkeypatch, make_plan(tmp_path))
    faked.fail_at = "iscsi.attach_ibft"
    faked.error = InputError("use_ibft: the iBFT names no target; nothing was written")
    reporter = Recorder()
    code, out = faked.run("install use_ibft", reporter)
    assert code == 1
    assert faked.calls == [
        "iscsi.attach_ibft",
        "iscsi.read_ibft",  # its storage NICs are kept off the network that reports
        "network.bring_up",
        "logbundle.make_bundle",
    ]
    assert faked.handed["network.bring_up"][1] == ("52:54:00:78:00:01",)
    assert len(reporter.enrolled) == 1  # enrolled so that the failure reaches the server
    assert reporter.events[-1]["message"] == (
        "use_ibft: the iBFT names no target; nothing was written"
    )
    assert "netinstall: step iscsi (1/" in out


def test_a_failure_after_the_network_does_not_bring_it_up_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faked = Faked(monkeypatch, make_plan(tmp_path))
    faked.fail_at = "fetch.fetch_answerfile"
    assert faked.run()[0] == 1
    assert faked.calls.count("network.bring_up") == 1


def test_no_secret_reaches_the_log_the_console_the_events_or_the_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = make_plan(tmp_path)
    faked = Faked(monkeypatch, plan)
    monkeypatch.setattr(logbundle, "make_bundle", _real_bundle)  # the real bundle
    text = f"<installation><root-password>{PASSWORD}</root-password></installation>"
    monkeypatch.setattr(fetch, "fetch_answerfile", lambda *_a: text)

    def leaky(*_args: Any) -> None:
        logging.getLogger("installer_core.test").info("fetching ?token=%s with %s", TOKEN, TOKEN)
        raise SourceError(f"cannot read it: {TOKEN} {PASSWORD}")

    monkeypatch.setattr(download, "download_payload", leaky)
    reporter = Recorder()
    code, out = faked.run(f"install netinstall.token={TOKEN}", reporter)
    assert code == 1
    log_text = plan.paths.log_file.read_text()
    assert "fetching ?token=REDACTED with REDACTED" in log_text
    assert "netinstall: " not in log_text  # the file holds the message, not the console prefix
    assert "step download (" in log_text
    for seen in (log_text, out, str(reporter.events)):
        assert TOKEN not in seen
        assert PASSWORD not in seen
        assert Recorder.install_key not in seen
    assert reporter.events[-1]["message"] == "cannot read it: REDACTED REDACTED"
    (bundle,) = reporter.uploads
    with tarfile.open(bundle) as tar:
        bundled = {m.name: tar.extractfile(m).read().decode() for m in tar}  # type: ignore[union-attr]
    assert "step download FAILED" in bundled["support/install.log"]
    assert TOKEN not in "".join(bundled.values())
    assert PASSWORD not in "".join(bundled.values())


_MAKE_BUNDLE = logbundle.make_bundle


def _real_bundle(*args: Any, **kwargs: Any) -> Path:
    return _MAKE_BUNDLE(*args, **{**kwargs, "runner": FakeRunner({"dmesg": f"token {TOKEN}\n"})})


def test_the_network_step_gives_the_reporter_the_mac_without_bootif(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from installer_core.report import ServerReporter
    from tests.unit.test_installer_fakes import FakeResponse, FakeSession

    monkeypatch.setattr(network, "bring_up", lambda *_args: ETH0)
    session = FakeSession(lambda *_: FakeResponse(200, b"{}"))
    reporter = ServerReporter("http://s", None, TOKEN, session)  # type: ignore[arg-type]
    reporter.event("installing", step="network", progress=0.0)
    assert session.calls == []
    host = install.Host(runner=FakeRunner())
    assert install.bring_up_network(parse_cmdline("install"), reporter, (), host) == ETH0
    assert reporter.mac == MAC
    assert session.calls == []  # the events wait for the enrolment
    reporter.enrol(requests.Session())
    assert [u for _m, u, _k in session.calls] == [
        "http://s/api/v1/hosts/52-54-00-12-34-56/enrol",
        "http://s/api/v1/hosts/52-54-00-12-34-56/events",
    ]


def test_a_refused_enrolment_fails_the_fetch_step_before_anything_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faked = Faked(monkeypatch, make_plan(tmp_path))
    reporter = Recorder(refuse="the server refused this install: HTTP 409 enrolled already")
    code, out = faked.run(f"install netinstall.token={TOKEN}", reporter)
    assert code == 1
    assert "fetch.fetch_answerfile" not in faked.calls
    assert "step fetch-answerfile FAILED" in out
    assert reporter.events[-1]["state"] == "failed"
    assert "HTTP 409" in reporter.events[-1]["message"]


def test_scripts_of_the_answer_file_run_at_their_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Script(ScriptStage.INSTALLATION_START, Source(SourceType.URL, "http://s/a.sh"))
    plan = make_plan(tmp_path, answer_for(scripts=(script,)))
    faked = Faked(monkeypatch, plan)
    assert faked.run()[0] == 0
    handed = faked.handed["scripts.run_scripts"]
    assert handed[0] == (script,)  # the answer file's scripts; run_scripts picks the stage
    assert paths_in(tmp_path).work == handed[3]
