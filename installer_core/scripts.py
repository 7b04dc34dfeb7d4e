"""The answer file's ``<script stage=...>`` hooks (SPEC §5, §7).

Each script of a stage is fetched (url, nfs, or a local ``file://`` path in the
installer), must start with ``#!``, is written to ``<work>/scripts/`` and run
with the stage's argument: none at ``installation-start``, the target root's
mount point at ``filesystem-populated``, ``0`` (success) or ``1`` (failure) at
``installation-complete``. A failing start or populated script fails the
install; a failing complete script is only logged (the install's outcome is
already decided).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from answerfile.bootargs import redact_url
from answerfile.model import Script, ScriptStage, SourceType
from common.errors import CommandError, NetinstallError, SourceError
from installer_core.fetch import Transport, describe, fetch_bytes

log = logging.getLogger(__name__)

SCRIPT_TIMEOUT = 600  # seconds


def script_url(script: Script) -> str:
    """Where the script lies: its URL, ``nfs://server:/path`` or a ``file://`` path."""
    location = script.source.location or ""
    if script.source.type is SourceType.NFS:
        return f"nfs://{location}"
    if script.source.type is SourceType.LOCAL and location.startswith("/"):
        return f"file://{location}"
    return location


def _log_output(name: str, stdout: str, stderr: str) -> None:
    for stream, text in (("stdout", stdout), ("stderr", stderr)):
        for line in text.rstrip().splitlines():
            log.info("%s %s: %s", name, stream, line)


def prepare(script: Script, number: int, work: Path, io: Transport) -> Path:
    """Fetch the script, check its ``#!`` line and write it out executable."""
    data = fetch_bytes(script_url(script), transport=io)
    if not data.startswith(b"#!"):
        raise SourceError("it does not start with #! (an interpreter line)")
    path = work / "scripts" / f"{script.stage.value}-{number}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o755)
    return path


def run_one(script: Script, number: int, argument: str | None, work: Path, io: Transport) -> None:
    """Fetch, check and run one script; ``NetinstallError`` when any of that fails."""
    name = f"{script.stage.value} script {number} ({redact_url(script_url(script))})"
    try:
        path = prepare(script, number, work, io)
    except SourceError as exc:
        raise NetinstallError(f"the {name} cannot be used: {describe(exc)}") from exc
    argv = [str(path)] if argument is None else [str(path), argument]
    log.info("running the %s", name)
    try:
        done = io.runner(argv, timeout=SCRIPT_TIMEOUT)
    except CommandError as exc:
        _log_output(name, exc.stdout, exc.stderr)
        raise NetinstallError(f"the {name} failed: {describe(exc)}") from exc
    _log_output(name, done.stdout, done.stderr)


def run_scripts(
    scripts: Sequence[Script],
    stage: ScriptStage,
    argument: str | None,
    work: Path,
    transport: Transport | None = None,
) -> None:
    """Step: run the answer file's scripts of ``stage``, in order."""
    io = transport or Transport()
    for number, script in enumerate((s for s in scripts if s.stage is stage), 1):
        try:
            run_one(script, number, argument, work, io)
        except NetinstallError as exc:
            if stage is not ScriptStage.INSTALLATION_COMPLETE:
                raise
            log.warning("%s (ignored: the install's outcome is already decided)", exc)
