"""installer_core.scripts: fetched, #! required, run with the stage's argument."""

from __future__ import annotations

from pathlib import Path

import pytest

from answerfile.model import AnswerFile, Script, ScriptStage, Source, SourceType
from common.errors import NetinstallError
from installer_core.scripts import run_scripts
from tests.unit.test_installer_fakes import (
    FakeRunner,
    FakeSession,
    file_server,
    make_ctx,
    transport,
)

START = ScriptStage.INSTALLATION_START
POPULATED = ScriptStage.FILESYSTEM_POPULATED
COMPLETE = ScriptStage.INSTALLATION_COMPLETE


def _ctx(tmp_path: Path, *scripts: Script):  # type: ignore[no-untyped-def]
    ctx = make_ctx(tmp_path)
    ctx.answer = AnswerFile(scripts=scripts)
    return ctx


def _url(stage: ScriptStage, name: str) -> Script:
    return Script(stage, Source(SourceType.URL, f"http://s/{name}"))


SERVER = file_server({"a.sh": b"#!/bin/sh\necho a\n", "b.sh": b"#!/bin/sh\n", "bad": b"echo\n"})


def test_scripts_of_the_stage_run_in_order_with_the_argument(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, _url(POPULATED, "a.sh"), _url(START, "bad"), _url(POPULATED, "b.sh"))
    runner = FakeRunner()
    run_scripts(ctx, POPULATED, str(ctx.target), transport(FakeSession(SERVER), runner))
    folder = ctx.work / "scripts"
    assert runner.calls == [
        [str(folder / "filesystem-populated-1"), str(ctx.target)],
        [str(folder / "filesystem-populated-2"), str(ctx.target)],
    ]
    assert (folder / "filesystem-populated-1").read_bytes() == b"#!/bin/sh\necho a\n"
    assert (folder / "filesystem-populated-1").stat().st_mode & 0o777 == 0o755


def test_installation_start_scripts_get_no_argument(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, _url(START, "a.sh"))
    runner = FakeRunner()
    run_scripts(ctx, START, None, transport(FakeSession(SERVER), runner))
    assert runner.calls == [[str(ctx.work / "scripts/installation-start-1")]]


def test_a_script_without_shebang_fails_the_install(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, _url(START, "bad"))
    runner = FakeRunner()
    with pytest.raises(
        NetinstallError,
        match=r"installation-start script 1 \(http://s/bad\) cannot be used: it does not start",
    ):
        run_scripts(ctx, START, None, transport(FakeSession(SERVER), runner))
    assert runner.calls == []


def test_a_failing_populated_script_fails_the_install(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, _url(POPULATED, "a.sh"))
    runner = FakeRunner({"filesystem-populated-1": 3})
    with pytest.raises(NetinstallError, match=r"script 1 .* failed: .* exited with status 3"):
        run_scripts(ctx, POPULATED, "/mnt", transport(FakeSession(SERVER), runner))


def test_a_failing_complete_script_is_only_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = _ctx(tmp_path, _url(COMPLETE, "a.sh"), _url(COMPLETE, "b.sh"))
    runner = FakeRunner({"installation-complete-1": 1})
    run_scripts(ctx, COMPLETE, "1", transport(FakeSession(SERVER), runner))
    assert [call[1] for call in runner.calls] == ["1", "1"]
    assert "ignored" in caplog.text


def test_a_local_script_is_read_from_the_installer(tmp_path: Path) -> None:
    local = tmp_path / "local.sh"
    local.write_text("#!/bin/sh\n")
    ctx = _ctx(tmp_path, Script(START, Source(SourceType.LOCAL, f"file://{local}")))
    runner = FakeRunner()
    run_scripts(ctx, START, None, transport(runner=runner))
    assert runner.names() == ["installation-start-1"]


def test_no_answer_file_means_no_scripts(tmp_path: Path) -> None:
    run_scripts(make_ctx(tmp_path), COMPLETE, "1", transport())
