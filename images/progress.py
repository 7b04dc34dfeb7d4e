"""Step lines on stderr: elapsed time, what is being done, sizes when known."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


def size_text(size: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


@dataclass
class Progress:
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    started: float = field(default_factory=time.monotonic)

    def step(self, target: str, message: str, size: int | None = None) -> None:
        elapsed = time.monotonic() - self.started
        tail = f" ({size_text(size)})" if size is not None else ""
        print(f"[{elapsed:7.1f}s] {target}: {message}{tail}", file=self.stream, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started
