"""The log bundle a failed install uploads: ``support.tar.bz2`` (SPEC §7, §9).

It holds the install log, /proc/cmdline, dmesg, the answer file, ``ip addr``,
``lsblk`` and ``blkid``; every secret (the install token, ``netinstall.token=``
and ``sshpassword=`` values, ``token=`` query values, the root password, given
or as the answer file's element text) is replaced by ``REDACTED`` in every
member. ``scrub`` is also what keeps secrets out of the install log.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from answerfile.bootargs import redact_url
from common.errors import CommandError
from common.process import run
from installer_core.context import InstallContext
from installer_core.fetch import Runner

log = logging.getLogger(__name__)

REDACTED = "REDACTED"
BUNDLE = "support.tar.bz2"
_PARAMS = re.compile(r"((?:netinstall\.token|sshpassword)=)(\"[^\"]*\"|\S+)")
_ROOT_PASSWORD = re.compile(r"(<root-password\b[^>]*>)(.*?)(</root-password\s*>)", re.DOTALL)
COMMANDS: tuple[tuple[str, Sequence[str]], ...] = (
    ("dmesg.txt", ("dmesg",)),
    ("ip-addr.txt", ("ip", "addr")),
    ("lsblk.txt", ("lsblk", "-o", "NAME,SIZE,TYPE,FSTYPE,PARTLABEL,MOUNTPOINT")),
    ("blkid.txt", ("blkid",)),
)


def secrets_of(ctx: InstallContext) -> list[str]:
    """Every secret this run knows, longest first (so no secret is half replaced)."""
    found = {ctx.args.token, ctx.args.sshpassword}
    if ctx.answer is not None and ctx.answer.root_password is not None:
        found.add(ctx.answer.root_password.value)
    if ctx.answer_text:
        found.update(m[2].strip() for m in _ROOT_PASSWORD.finditer(ctx.answer_text))
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret, URL password and token parameter replaced."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    text = _PARAMS.sub(lambda m: m[1] + REDACTED, text)
    text = _ROOT_PASSWORD.sub(lambda m: m[1] + REDACTED + m[3], text)
    return redact_url(text).replace("<redacted>", REDACTED)


def _command_output(argv: Sequence[str], runner: Runner) -> str:
    try:
        done = runner(list(argv), timeout=60)
    except CommandError as exc:
        return f"{' '.join(argv)}: {exc}\n{exc.stdout}{exc.stderr}"
    return done.stdout + done.stderr


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}\n"


def make_bundle(
    ctx: InstallContext,
    runner: Runner = run,
    proc_cmdline: Path = Path("/proc/cmdline"),
) -> Path:
    """Write ``ctx.work/support.tar.bz2``; every member is scrubbed of secrets."""
    members = {
        "install.log": _read(ctx.log_file),
        "cmdline.txt": _read(proc_cmdline),
        "answerfile.xml": ctx.answer_text or "(no answer file was read)\n",
        "failure.txt": (ctx.failed_reason or "(no failure recorded)") + "\n",
    }
    for name, argv in COMMANDS:
        members[name] = _command_output(argv, runner)
    secrets = secrets_of(ctx)
    ctx.work.mkdir(parents=True, exist_ok=True)
    bundle = ctx.work / BUNDLE
    now = int(time.time())
    with tarfile.open(bundle, "w:bz2") as tar:
        for name, text in members.items():
            data = scrub(text, secrets).encode()
            info = tarfile.TarInfo(f"support/{name}")
            info.size, info.mtime, info.mode = len(data), now, 0o600
            tar.addfile(info, io.BytesIO(data))
    log.info("log bundle %s (%d bytes)", bundle, bundle.stat().st_size)
    return bundle
