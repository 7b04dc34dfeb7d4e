"""``python3 -m installer_core``: the boot command line decides what happens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from common.firmware import Firmware
from installer_core import __main__ as core_main
from installer_core import install
from installer_core.report import NullReporter, ServerReporter
from tests.unit.test_installer_fakes import TOKEN


def _cmdline(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cmdline"
    path.write_text(text + "\n")
    return path


def test_without_install_nothing_happens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = core_main.from_cmdline(_cmdline(tmp_path, "console=hvc0 answerfile=http://s/a"))
    assert code == core_main.NO_INSTALL == 0
    assert "no unattended install was asked for" in capsys.readouterr().err


def test_a_malformed_command_line_prints_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = core_main.from_cmdline(_cmdline(tmp_path, "install atexit=never BOOTIF=zz"))
    assert code == 2
    err = capsys.readouterr().err
    assert "atexit=never" in err
    assert "BOOTIF=zz" in err


@pytest.mark.parametrize(("efi", "firmware"), [(True, Firmware.UEFI), (False, Firmware.BIOS)])
def test_install_runs_with_the_server_reporter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, efi: bool, firmware: Firmware
) -> None:
    seen: list[install.Boot] = []

    def fake_run(boot: install.Boot, *args: Any, **kwargs: Any) -> int:
        seen.append(boot)
        return 1

    monkeypatch.setattr(install, "run_install", fake_run)
    (tmp_path / "efi").mkdir() if efi else None
    line = (
        "install answerfile=http://s/a netinstall.server=http://s:8080 "
        f"netinstall.token={TOKEN} BOOTIF=01-52-54-00-12-34-56"
    )
    assert core_main.from_cmdline(_cmdline(tmp_path, line), tmp_path / "efi") == 1
    (boot,) = seen
    assert boot.firmware is firmware
    assert boot.args.answerfile == "http://s/a"
    assert isinstance(boot.reporter, ServerReporter)
    assert boot.reporter.mac == "52:54:00:12:34:56"
    assert boot.reporter.server == "http://s:8080"


def test_without_a_server_there_is_no_server_reporter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[install.Boot] = []
    monkeypatch.setattr(install, "run_install", lambda boot: seen.append(boot) or 0)
    line = f"install answerfile=http://s/a?token={TOKEN} netinstall.token={TOKEN}"
    assert core_main.from_cmdline(_cmdline(tmp_path, line), tmp_path / "no-efi") == 0
    assert isinstance(seen[0].reporter, NullReporter)
    out = capsys.readouterr().out
    assert "installing (bios firmware;" in out
    assert TOKEN not in out
