"""installer_core.scripts: fetched, #! required, run with the stage's argument."""

from __future__ import annotations

from pathlib import Path

import pytest

from answerfile.model import Script, ScriptStage, Source, SourceType
from common.errors import NetinstallError
from installer_core.scripts import run_scripts
from tests.unit.test_installer_fakes import (
    FakeRunner,
    FakeSession,
    file_server,
    transport,
)

START = ScriptStage.INSTALLATION_START
POPULATED = ScriptStage.FILESYSTEM_POPULATED
COMPLETE = ScriptStage.INSTALLATION_COMPLETE


def _url(stage: ScriptStage, name: str) -> Script:
    return Script(stage, Source(SourceType.URL, f"http://s/{name}"))


SERVER = file_server({"a.sh": b"#!/bin/sh\necho a\n", "b.sh": b"#!/bin/sh\n", "bad": b"echo\n"})


def test_scripts_of_the_stage_run_in_order_with_the_argument(tmp_path: Path) -> None:
    scripts = (
        _url(POPULATED, "a.sh"),
        _url(START, "bad"),
        _url(POPULATED, "b.sh"),
    )
    runner = FakeRunner()
    run_scripts(
        scripts, POPULATED, "/mnt/target", tmp_path / "work", transport(FakeSession(SERVER), runner)
    )
    folder = tmp_path / "work" / "scripts"
    assert runner.calls == [
        [str(folder / "filesystem-populated-1"), "/mnt/target"],
        [str(folder / "filesystem-populated-2"), "/mnt/target"],
    ]
    assert (folder / "filesystem-populated-1").read_bytes() == b"#!/bin/sh\necho a\n"
    assert (folder / "filesystem-populated-1").stat().st_mode & 0o777 == 0o755


def test_installation_start_scripts_get_no_argument(tmp_path: Path) -> None:
    work = tmp_path / "work"
    scripts = (_url(START, "a.sh"),)
    runner = FakeRunner()
    run_scripts(scripts, START, None, work, transport(FakeSession(SERVER), runner))
    assert runner.calls == [[str(tmp_path / "work" / "scripts/installation-start-1")]]


def test_a_script_without_shebang_fails_the_install(tmp_path: Path) -> None:
    work = tmp_path / "work"
    scripts = (_url(START, "bad"),)
    runner = FakeRunner()
    with pytest.raises(
        NetinstallError,
        match=r"installation-start script 1 \(http://s/bad\) cannot be used: it does not start",
    ):
        run_scripts(scripts, START, None, work, transport(FakeSession(SERVER), runner))
    assert runner.calls == []


def test_a_failing_populated_script_fails_the_install(tmp_path: Path) -> None:
    scripts = (_url(POPULATED, "a.sh"),)
    runner = FakeRunner({"filesystem-populated-1": 3})
    with pytest.raises(NetinstallError, match=r"script 1 .* failed: .* exited with status 3"):
        run_scripts(
            scripts, POPULATED, "/mnt", tmp_path / "work", transport(FakeSession(SERVER), runner)
        )


def test_a_failing_complete_script_is_only_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    work = tmp_path / "work"
    scripts = (
        _url(COMPLETE, "a.sh"),
        _url(COMPLETE, "b.sh"),
    )
    runner = FakeRunner({"installation-complete-1": 1})
    run_scripts(scripts, COMPLETE, "1", work, transport(FakeSession(SERVER), runner))
    assert [call[1] for call in runner.calls] == ["1", "1"]
    assert "ignored" in caplog.text


def test_a_local_script_is_read_from_the_installer(tmp_path: Path) -> None:
    work = tmp_path / "work"
    local = tmp_path / "local.sh"
    local.write_text("#!/bin/sh\n")
    scripts = (Script(START, Source(SourceType.LOCAL, f"file://{local}")),)
    runner = FakeRunner()
    run_scripts(scripts, START, None, work, transport(runner=runner))
    assert runner.names() == ["installation-start-1"]


def test_no_script_of_the_stage_runs_nothing(tmp_path: Path) -> None:
    work = tmp_path / "work"
    runner = FakeRunner()
    run_scripts((_url(START, "a.sh"),), COMPLETE, "1", work, transport(runner=runner))
    assert runner.calls == []
