"""The installed console script, as an operator runs it: real processes, real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DATA
from tests.integration.conftest import netinstall

pytestmark = pytest.mark.integration


def test_every_bad_answer_file_fails_cleanly() -> None:
    bad = sorted(str(p) for p in (DATA / "answerfiles" / "bad").glob("*.xml"))
    result = netinstall("answerfile", "validate", *bad)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    reported = {line.split(": line ", 1)[0] for line in result.stderr.splitlines()}
    assert set(bad) <= reported, "every bad file gets at least one message"


def test_every_good_answer_file_validates() -> None:
    good = sorted(str(p) for p in (DATA / "answerfiles" / "good").glob("*.xml"))
    result = netinstall("answerfile", "validate", *good)
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if ": valid: " in line]) == len(good)


def test_example_validates_through_a_pipe(tmp_path: Path) -> None:
    for mode in ("fresh", "upgrade", "restore"):
        example = netinstall("answerfile", "example", "--mode", mode)
        assert example.returncode == 0
        path = tmp_path / f"{mode}.xml"
        path.write_text(example.stdout)
        assert netinstall("answerfile", "validate", str(path)).returncode == 0


def test_version_and_help() -> None:
    assert netinstall("--version").stdout.startswith("netinstall, version ")
    help_text = netinstall("--help").stdout
    for command in ("answerfile", "bootargs", "demo"):
        assert command in help_text
