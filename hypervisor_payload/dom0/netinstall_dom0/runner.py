"""The one choke point for external commands.

``run`` takes an argument list (never a shell) and the exit codes that count as
success, and raises ``CommandError`` with the command, exit code, stdout and
stderr otherwise. Code that runs commands takes a ``Runner`` so tests can hand
in a fake that records the argv lists.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Protocol

from .errors import CommandError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    def __call__(self, argv: Sequence[str], *, ok_codes: Container[int] = (0,)) -> Completed: ...


def run(argv: Sequence[str], *, ok_codes: Container[int] = (0,)) -> Completed:
    """Run ``argv``; raise ``CommandError`` unless its exit code is in ``ok_codes``."""
    args = tuple(str(a) for a in argv)
    log.debug("run: %s", " ".join(args))
    try:
        proc = subprocess.run(
            args, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as exc:
        raise CommandError(args, 127, "", f"{args[0]}: command not found") from exc
    if proc.returncode not in ok_codes:
        raise CommandError(args, proc.returncode, proc.stdout, proc.stderr)
    return Completed(args, proc.returncode, proc.stdout, proc.stderr)
