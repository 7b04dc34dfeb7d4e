"""``images build`` on a terminal: the builders' steps as usual, and each long step
(``images.progress.Progress.long``: debootstrap, packages installed or downloaded,
archives written and compressed) drawn live while it runs: a spinner and its elapsed
time, and a bar where the step knows its total. The live line goes when the step ends;
the step lines stay, as in a log. Anywhere else (a pipe, a file, CI) the plain
``Progress`` prints the lines only.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    ProgressColumn,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as Bars

from images.progress import Advance, Progress


class TerminalProgress(Progress):
    """A ``Progress`` that draws its long steps on ``console`` (standard error)."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        self.console = console or Console(stderr=True)

    def step(self, target: str, message: str, size: int | None = None) -> None:
        self.console.print(self.line(target, message, size), markup=False, highlight=False)

    @contextmanager
    def long(self, target: str, message: str, total: int | None = None) -> Iterator[Advance]:
        self.step(target, message)
        columns: list[ProgressColumn] = [
            SpinnerColumn(),
            TextColumn(escape(f"{target}: {message}")),
        ]
        if total:
            columns += [BarColumn(), TaskProgressColumn()]
        columns.append(TimeElapsedColumn())
        with Bars(*columns, console=self.console, transient=True) as bars:
            task = bars.add_task(message, total=total or None)
            yield lambda done: bars.advance(task, done)


def for_this_terminal() -> Progress:
    """The progress ``images build`` reports through: live on a terminal, lines elsewhere."""
    return TerminalProgress() if sys.stderr.isatty() else Progress()
