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

from answerfile.bootargs import BootArgs, redact_url
from common.errors import CommandError
from common.process import CommandRunner, run

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


class Secrets:
    """Every secret the run knows: the boot arguments' at first, the answer file's root
    password once its text is read. The log filter, the console lines and the log
    bundle all scrub with it."""

    def __init__(self, args: BootArgs) -> None:
        self._found = {s for s in (args.token, args.sshpassword) if s}

    def add(self, secret: str | None) -> None:
        """One more secret (the parsed root password, which may differ from its text)."""
        if secret:
            self._found.add(secret)

    def learn_answer(self, text: str) -> None:
        """The root password of an answer file, as written in its element."""
        self._found.update(m[2].strip() for m in _ROOT_PASSWORD.finditer(text))
        self._found.discard("")

    def known(self) -> list[str]:
        """Longest first, so that no secret is half replaced."""
        return sorted(self._found, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        return scrub(text, self.known())


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret, URL password and token parameter replaced."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    text = _PARAMS.sub(lambda m: m[1] + REDACTED, text)
    text = _ROOT_PASSWORD.sub(lambda m: m[1] + REDACTED + m[3], text)
    return redact_url(text).replace("<redacted>", REDACTED)


def _command_output(argv: Sequence[str], runner: CommandRunner) -> str:
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
    log_file: Path,
    work: Path,
    answer_text: str | None,
    reason: str,
    secrets: Secrets,
    *,
    runner: CommandRunner = run,
    proc_cmdline: Path = Path("/proc/cmdline"),
) -> Path:
    """Write ``<work>/support.tar.bz2``; every member is scrubbed of secrets."""
    members = {
        "install.log": _read(log_file),
        "cmdline.txt": _read(proc_cmdline),
        "answerfile.xml": answer_text or "(no answer file was read)\n",
        "failure.txt": (reason or "(no failure recorded)") + "\n",
    }
    for name, argv in COMMANDS:
        members[name] = _command_output(argv, runner)
    known = secrets.known()
    work.mkdir(parents=True, exist_ok=True)
    bundle = work / BUNDLE
    now = int(time.time())
    with tarfile.open(bundle, "w:bz2") as tar:
        for name, text in members.items():
            data = scrub(text, known).encode()
            info = tarfile.TarInfo(f"support/{name}")
            info.size, info.mtime, info.mode = len(data), now, 0o600
            tar.addfile(info, io.BytesIO(data))
    log.info("log bundle %s (%d bytes)", bundle, bundle.stat().st_size)
    return bundle
