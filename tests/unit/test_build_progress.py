"""``images build``'s progress (images.progress, netinstall.build_view): the plain lines
anywhere, and a terminal's live long steps through rich's recording console."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from common import cpio
from images.progress import Counted, Progress
from netinstall import build_view
from netinstall.build_view import TerminalProgress


def test_a_long_step_is_one_line_where_there_is_no_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(stream)
    with progress.long("installer", "debootstrap minbase with 9 packages", 100) as advance:
        advance(50)
    progress.step("installer", "root ready", 3 * 10**6)
    lines = stream.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "installer: debootstrap minbase with 9 packages",
        "installer: root ready (3.0 MB)",
    ]


def test_a_terminal_draws_the_long_step_then_keeps_only_its_line() -> None:
    screen = Console(file=io.StringIO(), record=True, force_terminal=True, width=100)
    progress = TerminalProgress(screen)
    with progress.long("installer", "packing the base cpio", 200) as advance:
        advance(100)
    progress.step("installer", "packed the base cpio", 200)
    drawn = screen.export_text(clear=False)
    assert "installer: packing the base cpio" in drawn
    assert " 50%" in drawn  # the bar, while the step ran
    output = screen.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[" in output  # drawn in place: a terminal's control sequences
    assert drawn.rstrip().endswith("installer: packed the base cpio (200 B)")


def test_counted_writes_tell_how_far_an_archive_is(tmp_path: Path) -> None:
    (tmp_path / "tree" / "etc").mkdir(parents=True)
    (tmp_path / "tree" / "etc" / "hostname").write_text("xenhost01\n")
    told: list[int] = []
    sink = io.BytesIO()
    size = cpio.write(cpio.tree_entries(tmp_path / "tree"), Counted(sink, told.append))
    assert sum(told) == size == len(sink.getvalue())


def test_the_terminal_is_asked_for_standard_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert type(build_view.for_this_terminal()) is Progress
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert isinstance(build_view.for_this_terminal(), TerminalProgress)
