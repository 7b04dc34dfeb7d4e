"""Staging the installer for an upgrade or a restore: files in /boot, a one-time GRUB entry.

The check-in reply names the installer's Xen, kernel and initrd and their
command lines (docs/protocol.md). They are downloaded into
``/boot/netinstall-installer/`` and ``/boot/grub/netinstall-installer.cfg``
gets a ``menuentry 'netinstall-installer'`` for them, which the installed
grub.cfg sources and ``grub-reboot`` selects for the next boot only. The
kernel command line carries the host's token, so it is never logged and the
entry file is mode 0600.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from common.errors import NetinstallError
from common.process import CommandRunner
from common.protocol.messages import Action, CheckinReply, RebootPolicy

from .errors import ServerError
from .jsonfile import write_atomic
from .layout import INSTALLER_ENTRY, Layout
from .server import ServerClient

log = logging.getLogger(__name__)

# Role in the reply -> file name in /boot/netinstall-installer/.
FILE_NAMES = {"xen": "xen.gz", "kernel": "vmlinuz", "initrd": "initrd.img"}
_BARE_WORD = re.compile(r"[A-Za-z0-9_.,:/=+@%-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Assignment:
    """An upgrade or restore the server assigned, as its check-in reply describes it."""

    action: Action
    version: str | None
    reboot: RebootPolicy
    urls: dict[str, str]  # role (xen, kernel, initrd) -> URL
    xen_cmdline: str = field(repr=False)
    kernel_cmdline: str = field(repr=False)  # carries the install token

    @property
    def key(self) -> str:
        """What identifies this work: staging it twice is pointless."""
        return f"{self.action.value}:{self.version or ''}"


def parse_checkin_reply(reply: CheckinReply) -> Assignment | None:
    """None for ``action: none``; the assignment otherwise; ``ServerError`` if it cannot be
    carried out (the declaration leaves these fields optional: ``none`` has none)."""
    if reply.action is Action.NONE:
        return None
    if reply.reboot is None:
        raise ServerError("check-in reply: reboot must be auto or manual, found none")
    if reply.installer is None or reply.cmdline is None:
        raise ServerError("check-in reply: an upgrade or restore needs installer and cmdline")
    urls: dict[str, str] = {}
    for role in FILE_NAMES:
        url = getattr(reply.installer, role)
        if urlsplit(url).scheme not in ("http", "https"):
            raise ServerError(f"check-in reply: installer.{role} must be an http(s) URL")
        urls[role] = url
    lines: dict[str, str] = {}
    for role in ("xen", "kernel"):
        line = getattr(reply.cmdline, role)
        if _CONTROL.search(line):
            raise ServerError(f"check-in reply: cmdline.{role} must be one line of text")
        lines[role] = line
    return Assignment(
        reply.action, reply.version, reply.reboot, urls, lines["xen"], lines["kernel"]
    )


def grub_word(word: str) -> str:
    """``word`` as one GRUB script word: bare when safe, else single-quoted."""
    if _BARE_WORD.fullmatch(word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"


def grub_args(cmdline: str) -> str:
    return "".join(f" {grub_word(word)}" for word in cmdline.split())


def grub_entry(boot_fs_uuid: str, directory: str, xen_cmdline: str, kernel_cmdline: str) -> str:
    """The menu entry that boots the staged installer; ``directory`` is within its file system.

    ``placeholder`` fills the first argument, which some GRUB versions drop
    (Xen ignores the word; the installer ignores words it does not know).
    """
    d = directory.rstrip("/")
    return (
        "# Written by netinstall-agent: boots the staged installer once (grub-reboot).\n"
        f"menuentry '{INSTALLER_ENTRY}' {{\n"
        "\tinsmod part_gpt\n"
        "\tinsmod part_msdos\n"
        "\tinsmod ext2\n"
        "\tinsmod gzio\n"
        f"\tsearch --no-floppy --fs-uuid --set=root {boot_fs_uuid}\n"
        f"\tmultiboot2 {d}/{FILE_NAMES['xen']} placeholder{grub_args(xen_cmdline)}\n"
        f"\tmodule2 {d}/{FILE_NAMES['kernel']} placeholder{grub_args(kernel_cmdline)}\n"
        f"\tmodule2 --nounzip {d}/{FILE_NAMES['initrd']}\n"
        "}\n"
    )


def boot_location(runner: CommandRunner) -> tuple[str, str]:
    """The uuid of /boot's file system and where the installer directory is inside it."""
    out = runner(["findmnt", "-n", "-o", "UUID,TARGET", "-T", "/boot"]).stdout.split()
    if len(out) != 2:
        raise NetinstallError(f"findmnt: cannot tell the file system of /boot from {out!r}")
    fs_uuid, target = out
    inside = PurePosixPath("/boot/netinstall-installer").relative_to(target)
    return fs_uuid, f"/{inside}"


def stage(
    assignment: Assignment,
    client: ServerClient,
    credential: str,
    runner: CommandRunner,
    layout: Layout,
) -> None:
    """Download the installer and write its menu entry (not yet selected)."""
    layout.installer_dir.mkdir(parents=True, exist_ok=True)
    for role, name in FILE_NAMES.items():
        size = client.download(assignment.urls[role], layout.installer_dir / name, credential)
        log.info("fetched the installer's %s: %s, %d bytes", role, name, size)
    fs_uuid, directory = boot_location(runner)
    entry = grub_entry(fs_uuid, directory, assignment.xen_cmdline, assignment.kernel_cmdline)
    write_atomic(layout.grub_entry, entry.encode(), mode=0o600)
    log.info("wrote the GRUB entry %r in %s", INSTALLER_ENTRY, layout.grub_entry)


def remove_staged(layout: Layout) -> bool:
    """Remove a staged installer left behind (say, by a restore or a cancelled upgrade)."""
    found = layout.grub_entry.exists() or layout.installer_dir.exists()
    layout.grub_entry.unlink(missing_ok=True)
    if layout.installer_dir.is_dir():
        for path in layout.installer_dir.iterdir():
            path.unlink()
        layout.installer_dir.rmdir()
    return found
