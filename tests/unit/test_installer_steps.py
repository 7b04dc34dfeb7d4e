"""installer_core.install: the order of STEPS, progress, the console lines, and the
failure path (cleanup, complete scripts with 1, log bundle, failed report)."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from common.errors import AnswerFileError, NetinstallError, SourceError
from installer_core import install, logbundle
from installer_core.install import STEPS, Runner, Step, failure_reason, run_install
from tests.unit.test_installer_fakes import TOKEN, FakeRunner, make_ctx


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.uploads: list[Path] = []

    def event(self, state: str, **fields: Any) -> None:
        self.events.append({"state": state, **{k: v for k, v in fields.items() if v is not None}})

    def upload_logs(self, bundle: Path) -> None:
        self.uploads.append(bundle)


def test_the_steps_follow_spec_section_7() -> None:
    assert [step.name for step in STEPS] == [
        "network",
        "fetch-answerfile",
        "validate-answerfile",
        "installation-start-scripts",
        "hardware-checks",
        "download",
        "partition",
        "make-filesystems",
        "mount-target",
        "extract-root",
        "install-boot-files",
        "install-packs",
        "configure",
        "bootloader",
        "filesystem-populated-scripts",
        "unmount",
        "write-install-log",
        "installation-complete-scripts",
    ]
    assert all(step.weight > 0 for step in STEPS)
    names = [step.name for step in STEPS]
    assert names.index("download") < names.index("partition")  # verify before any write


def _steps(done: list[str], fail_at: str | None = None, exc: Exception | None = None) -> list[Step]:
    def action(name: str):  # type: ignore[no-untyped-def]
        def run(ctx: Any) -> None:
            done.append(name)
            if name == "partition":
                ctx.partitions["root"] = Path("/dev/sda1")
            if name == fail_at:
                raise exc or RuntimeError("boom")

        return run

    return [Step(n, action(n), w) for n, w in (("a", 1), ("partition", 2), ("c", 1), ("d", 4))]


def _runner(calls: list[str], steps: list[Step], out: io.StringIO) -> Runner:
    def bundle(ctx: Any) -> Path:
        calls.append("bundle")
        return ctx.work / "support.tar.bz2"

    return Runner(
        steps=steps,
        out=out,
        cleanup=lambda ctx: calls.append("cleanup"),
        bundle=bundle,
        finish_scripts=lambda ctx, arg: calls.append(f"complete-scripts {arg}"),
        clock=iter(range(1000)).__next__,  # type: ignore[arg-type]
    )


def test_success_runs_every_step_in_order_and_reports_installed(tmp_path: Path) -> None:
    done: list[str] = []
    calls: list[str] = []
    out = io.StringIO()
    reporter = Recorder()
    ctx = make_ctx(tmp_path, reporter=reporter)
    assert _runner(calls, _steps(done), out).run(ctx) == 0
    assert done == ["a", "partition", "c", "d"]
    assert calls == []
    progress = [e["progress"] for e in reporter.events if e["state"] == "installing"]
    assert progress == [0.0, 0.125, 0.375, 0.5]
    assert progress == sorted(progress)
    assert [e.get("step") for e in reporter.events] == ["a", "partition", "c", "d", None]
    assert reporter.events[-1] == {"state": "installed"}
    lines = out.getvalue().splitlines()
    assert lines[0] == "netinstall: step a (1/4)"
    assert lines[1] == "netinstall: step a done in 1.0s"
    assert "netinstall: step d (4/4)" in lines
    assert re.fullmatch(r"netinstall: result installed in \d+\.\ds", lines[-1])


def test_a_failure_cleans_up_runs_complete_scripts_uploads_and_reports(tmp_path: Path) -> None:
    done: list[str] = []
    calls: list[str] = []
    out = io.StringIO()
    reporter = Recorder()
    ctx = make_ctx(tmp_path, reporter=reporter)
    steps = _steps(done, "c", SourceError("sha256 mismatch for boot/xen.gz: expected a, got b"))
    assert _runner(calls, steps, out).run(ctx) == 1
    assert done == ["a", "partition", "c"]
    assert calls == ["cleanup", "complete-scripts 1", "bundle"]
    assert reporter.uploads == [ctx.work / "support.tar.bz2"]
    reason = "sha256 mismatch for boot/xen.gz: expected a, got b"
    assert ctx.failed_reason == reason
    assert reporter.events[-1] == {"state": "failed", "step": "c", "message": reason}
    lines = out.getvalue().splitlines()
    assert f"netinstall: step c FAILED after 1.0s: {reason}" in lines
    assert lines[-1] == f"netinstall: result failed: {reason}"


def test_an_invalid_answer_file_touches_nothing(tmp_path: Path) -> None:
    done: list[str] = []
    calls: list[str] = []
    reporter = Recorder()
    ctx = make_ctx(tmp_path, reporter=reporter)
    problems = ["line 3: <bogus> is not allowed", "line 5: <hostname> is empty"]
    steps = _steps(done, "a", AnswerFileError(problems))
    assert _runner(calls, steps, io.StringIO()).run(ctx) == 1
    assert done == ["a"]
    assert calls == ["complete-scripts 1", "bundle"]  # nothing to unmount
    assert reporter.events[-1]["message"] == "; ".join(problems)


def test_a_failing_cleanup_does_not_hide_the_failure(tmp_path: Path) -> None:
    calls: list[str] = []
    reporter = Recorder()
    runner = _runner(calls, _steps([], "d"), io.StringIO())

    def broken(ctx: Any) -> None:
        raise OSError("umount: target is busy")

    runner.cleanup = broken
    runner.bundle = broken  # type: ignore[assignment]
    assert runner.run(make_ctx(tmp_path, reporter=reporter)) == 1
    assert reporter.events[-1] == {
        "state": "failed",
        "step": "d",
        "message": "internal error: RuntimeError: boom",
    }


def test_failure_reasons() -> None:
    assert failure_reason(AnswerFileError(["a", "b"])) == "a; b"
    assert failure_reason(NetinstallError("disk gone")) == "disk gone"
    assert failure_reason(KeyError("x")) == "internal error: KeyError: 'x'"


def test_a_missing_step_module_fails_by_name(tmp_path: Path) -> None:
    action = install.external("no_such_module_here", "partition")
    with pytest.raises(NetinstallError, match=r"no installer_core\.no_such_module_here module"):
        action(make_ctx(tmp_path))
    action = install.external("report", "no_such_function")
    with pytest.raises(NetinstallError, match=r"installer_core.report has no no_such_function\(\)"):
        action(make_ctx(tmp_path))


def test_run_install_logs_to_the_file_and_console_without_secrets(tmp_path: Path) -> None:
    def leaky(ctx: Any) -> None:
        import logging

        logging.getLogger("installer_core.test").info("fetching ?token=%s with %s", TOKEN, TOKEN)
        raise SourceError(f"cannot read it: {TOKEN}")

    out = io.StringIO()
    reporter = Recorder()
    ctx = make_ctx(tmp_path, f"install netinstall.token={TOKEN}", reporter=reporter)
    steps = [Step("leaky", leaky, 1)]
    runner = FakeRunner({"dmesg": f"token {TOKEN}\n"})
    code = run_install(ctx, steps, out, lambda ctx: logbundle.make_bundle(ctx, runner))
    assert code == 1
    log_text = ctx.log_file.read_text()
    assert "fetching ?token=REDACTED with REDACTED" in log_text
    assert "netinstall: " not in log_text  # the file holds the message, not the console prefix
    assert "step leaky (1/1)" in log_text
    for text in (log_text, out.getvalue(), str(reporter.events)):
        assert TOKEN not in text
    assert reporter.events[-1]["message"] == "cannot read it: REDACTED"
    assert reporter.uploads == [ctx.work / "support.tar.bz2"]
    with tarfile.open(reporter.uploads[0]) as tar:
        bundled = {m.name: tar.extractfile(m).read().decode() for m in tar}  # type: ignore[union-attr]
    assert "step leaky FAILED" in bundled["support/install.log"]
    assert "token REDACTED" in bundled["support/dmesg.txt"]
    assert TOKEN not in "".join(bundled.values())


def test_the_network_step_gives_the_reporter_the_mac_without_bootif(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from installer_core import network
    from installer_core.report import ServerReporter
    from tests.unit.test_installer_fakes import FakeResponse, FakeSession

    def bring_up(ctx: Any) -> None:
        ctx.admin_mac = "52:54:00:00:00:09"

    monkeypatch.setattr(network, "bring_up", bring_up)
    session = FakeSession(lambda *_: FakeResponse(200, b"{}"))
    reporter = ServerReporter("http://s", None, TOKEN, session)  # type: ignore[arg-type]
    ctx = make_ctx(tmp_path, reporter=reporter)
    reporter.event("installing", step="network", progress=0.0)
    assert session.calls == []
    install.bring_up_network(ctx)
    assert reporter.mac == "52:54:00:00:00:09"
    assert [u for _m, u, _k in session.calls] == ["http://s/api/v1/hosts/52-54-00-00-00-09/events"]
