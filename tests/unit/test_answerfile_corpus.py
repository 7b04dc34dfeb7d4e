"""The answer-file corpora: every good file validates, every bad file gets its message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import answerfile
from common.errors import AnswerFileError
from tests.conftest import DATA

GOOD = sorted((DATA / "answerfiles" / "good").glob("*.xml"))
BAD = sorted((DATA / "answerfiles" / "bad").glob("*.xml"))
LINE = re.compile(r"^line \d+: ")


def _fragments(path: Path, suffix: str) -> list[str]:
    expect = path.with_suffix(suffix)
    if not expect.exists():
        return []
    return [line for line in expect.read_text("utf-8").splitlines() if line.strip()]


def test_corpora_are_large_enough() -> None:
    assert len(BAD) >= 40
    assert len(GOOD) >= 10
    names = {p.name for p in GOOD}
    assert {"seed-install.xml", "seed-upgrade.xml"} <= names


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_file_validates(path: Path) -> None:
    result = answerfile.parse(path.read_bytes())
    warnings = "\n".join(str(w) for w in result.warnings)
    for fragment in _fragments(path, ".warnings"):
        assert fragment in warnings
    if not path.with_suffix(".warnings").exists():
        assert warnings == ""


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_file_round_trips(path: Path) -> None:
    first = answerfile.parse(path.read_bytes())
    rendered = answerfile.render(first.model)
    again = answerfile.parse(rendered)
    assert again.model == first.model
    # Rendering drops what was ignored (legacy elements); what it keeps warns the same way.
    assert {(w.where, w.message) for w in again.warnings} <= {
        (w.where, w.message) for w in first.warnings
    }
    assert answerfile.render(again.model) == rendered


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_file_gets_its_message(path: Path) -> None:
    fragments = _fragments(path, ".expect")
    assert fragments, f"{path.name} has no .expect file"
    with pytest.raises(AnswerFileError) as caught:
        answerfile.parse(path.read_bytes())
    problems = caught.value.problems
    for problem in problems:
        assert LINE.match(problem), f"no line number in {problem!r}"
        assert "Traceback" not in problem
        assert "\n" not in problem
    joined = "\n".join(problems)
    for fragment in fragments:
        assert fragment in joined
