"""Step lines on stderr: elapsed time, what is being done, sizes when known.

A step that takes minutes (debootstrap, packages installed or downloaded, an archive
written or compressed) is a ``long`` one: the same line, then its work. Here that is
all, which suits a log file; on a terminal ``images build`` hands the builders a
``Progress`` that also draws the step live while it runs (``netinstall.build_view``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

Advance = Callable[[int], None]  # adds to what a long step has done (of its total)


def size_text(size: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _unseen(done: int) -> None:
    """A plain ``Progress`` draws nothing while a long step runs."""


@dataclass
class Progress:
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    started: float = field(default_factory=time.monotonic)

    def line(self, target: str, message: str, size: int | None = None) -> str:
        elapsed = time.monotonic() - self.started
        tail = f" ({size_text(size)})" if size is not None else ""
        return f"[{elapsed:7.1f}s] {target}: {message}{tail}"

    def step(self, target: str, message: str, size: int | None = None) -> None:
        print(self.line(target, message, size), file=self.stream, flush=True)

    @contextmanager
    def long(self, target: str, message: str, total: int | None = None) -> Iterator[Advance]:
        """A long step: its line, then the body, which may tell how far it is with the
        function it is handed (bytes or items, of ``total``; without a total, the step
        is only shown as running)."""
        self.step(target, message)
        yield _unseen

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Counted:
    """A binary stream that tells ``advance`` how many bytes each write wrote (an
    archive written inside a long step)."""

    def __init__(self, stream: BinaryIO, advance: Advance) -> None:
        self.stream = stream
        self.advance = advance

    def write(self, data: bytes) -> int:
        written = self.stream.write(data)
        self.advance(written)
        return written
