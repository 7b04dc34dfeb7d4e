"""The one choke point for external commands.

Every command netinstall runs goes through ``run``: an argument list (never a
shell), the exit codes that count as success, and on failure a ``CommandError``
carrying the command, its exit code, stdout and stderr. Imports only the error
base, so the installer image can carry it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Protocol

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


def _stderr(stream: IO[bytes]) -> str:
    stream.seek(0)
    return stream.read().decode("utf-8", "replace")


def run_pipeline(
    producer: list[str], consumer: list[str], *, pipe_bytes: int, timeout: float
) -> None:
    """``producer | consumer`` with a pipe of ``pipe_bytes`` (where the kernel allows it),
    no shell; ``CommandError`` of the command that failed: the producer's when both did,
    unless the consumer's failure killed it by SIGPIPE. A consumer that stopped reading
    early (the producer killed by SIGPIPE) fails it too: the data was not all used."""
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, pipe_bytes)
    except OSError as exc:  # above /proc/sys/fs/pipe-max-size: the default size works too
        log.info("pipe of %d bytes refused (%s): the default size", pipe_bytes, exc)
    procs: list[subprocess.Popen[bytes]] = []
    errors = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]  # noqa: SIM115 - closed below
    try:
        for argv, stdin, stdout, err in (
            (producer, subprocess.DEVNULL, write_end, errors[0]),
            (consumer, read_end, subprocess.DEVNULL, errors[1]),
        ):
            try:
                procs.append(subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=err))
            except FileNotFoundError as exc:
                raise CommandError(argv, 127, "", f"{argv[0]}: command not found") from exc
        os.close(write_end)
        os.close(read_end)
        write_end = read_end = -1
        deadline = time.monotonic() + timeout
        for proc, argv in reversed(list(zip(procs, (producer, consumer), strict=True))):
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired as exc:
                raise CommandError(argv, -1, "", f"timed out after {timeout} s") from exc
        first, second = procs
        killed_by_consumer = first.returncode == -signal.SIGPIPE and second.returncode != 0
        if first.returncode != 0 and not killed_by_consumer:
            raise CommandError(producer, first.returncode, "", _stderr(errors[0]))
        if second.returncode != 0:
            raise CommandError(consumer, second.returncode, "", _stderr(errors[1]))
    finally:
        for end in (read_end, write_end):
            if end >= 0:
                os.close(end)
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
        for err in errors:
            err.close()
