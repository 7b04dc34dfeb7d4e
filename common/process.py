"""The one choke point for external commands.

Every command netinstall runs goes through ``run``: an argument list (never a
shell), the exit codes that count as success, and on failure a ``CommandError``
carrying the command, its exit code, stdout and stderr. Imports only the error
base, so the installer image can carry it.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from common.errors import CommandError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandRunner(Protocol):
    """What ``run`` is: the installer's steps take one, tests hand in a recorder."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        ok_codes: Container[int] = ...,
        input_text: str | None = ...,
        timeout: float | None = ...,
        cwd: str | os.PathLike[str] | None = ...,
        env: Mapping[str, str] | None = ...,
    ) -> Completed: ...


def run(
    argv: Sequence[str],
    *,
    ok_codes: Container[int] = (0,),
    input_text: str | None = None,
    timeout: float | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Completed:
    """Run ``argv``; raise ``CommandError`` unless its exit code is in ``ok_codes``."""
    args = tuple(str(a) for a in argv)
    log.debug("run: %s", " ".join(args))
    try:
        proc = subprocess.run(
            args,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
            env=dict(env) if env is not None else None,
        )
    except FileNotFoundError as exc:
        raise CommandError(args, 127, "", f"{args[0]}: command not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(args, -1, "", f"timed out after {timeout} s") from exc
    if proc.returncode not in ok_codes:
        raise CommandError(args, proc.returncode, proc.stdout, proc.stderr)
    return Completed(args, proc.returncode, proc.stdout, proc.stderr)
