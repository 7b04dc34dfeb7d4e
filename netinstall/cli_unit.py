"""``netinstall server unit``: a systemd unit for ``netinstall server run DIR ...``.

The unit keeps the server up across reboots (``WantedBy=multi-user.target``,
``Restart=on-failure``) and sends what it logs on stderr to the journal. It grants
only the capabilities ``server run`` needs for the options it is given (``needed``
says which and why; docs/deployment.md has the table), as root with a bounding set,
or as ``--user U`` with the same set as ambient capabilities, and hardens the rest:
the whole file system read-only but the server directory (``ProtectSystem=strict``,
``ReadWritePaths=DIR``), a private /tmp, no new privileges.

``--extra-args`` goes through ``server run``'s own option parser here, so that a
typo is refused when the unit is written, not when it first starts.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from common.errors import InputError
from netinstall.cli_options import dir_option, server_directory
from netinstall.cli_server import server_run

UNIT_NAME = "netinstall-server.service"
RESTART_SEC = 5  # seconds between a failure and the restart
STOP_TIMEOUT = 30  # seconds SIGTERM has to stop the server (and its dnsmasq) before SIGKILL
PRIVILEGED_PORTS = 1024  # ports below this need CAP_NET_BIND_SERVICE

BIND = "CAP_NET_BIND_SERVICE"
ADMIN = "CAP_NET_ADMIN"
RAW = "CAP_NET_RAW"
# Every capability any ``server run`` may need, in the order the unit lists them.
CAPABILITIES = (BIND, ADMIN, RAW)

_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,30}")
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
_PATH_UNSAFE = re.compile(r"[\s\"'\\%$;\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Need:
    """A capability the server needs and the sentence that says why."""

    capability: str
    why: str


def needed(options: Mapping[str, Any]) -> tuple[Need, ...]:
    """The capabilities ``server run`` needs with these (parsed, checked) options.

    ``options``: ``tftp_port``, ``http_port`` (ints) and ``dhcp`` (off, full or proxy).
    """
    why: dict[str, list[str]] = {cap: [] for cap in CAPABILITIES}
    for name, label in (("tftp_port", "TFTP"), ("http_port", "HTTP")):
        port = int(options[name])
        if 0 < port < PRIVILEGED_PORTS:
            why[BIND].append(f"{label} on port {port}")
    why[ADMIN].append(
        "whole TCP segments for GRUB's HTTP connections (TCP_REPAIR; without it GRUB "
        "gets 536-byte segments)"
    )
    if options["dhcp"] != "off":
        why[BIND].append("dnsmasq's DHCP on port 67")
        why[ADMIN].append("dnsmasq refuses to serve DHCP without it")
        why[RAW].append("dnsmasq refuses to serve DHCP without it")
        if options["dhcp"] == "proxy":
            why[RAW].append("the UEFI HTTP Boot proxy offers (an AF_PACKET socket)")
    return tuple(Need(cap, "; ".join(reasons)) for cap, reasons in why.items() if reasons)


def exec_word(word: str) -> str:
    """One word of ``ExecStart=`` as systemd reads it back: ``%`` and ``$`` doubled (no
    specifier, no variable), quoted when it holds anything but plain characters."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in word):
        raise InputError(f"{word!r} holds a control character; a unit cannot carry it")
    text = word.replace("%", "%%").replace("$", "$$")
    if _PLAIN_WORD.fullmatch(word):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def plain_path(what: str, path: Path) -> str:
    """An absolute path a unit's path settings can hold without quoting."""
    text = str(path)
    if not path.is_absolute():
        raise InputError(f"{what} {text} is not an absolute path")
    if _PATH_UNSAFE.search(text):
        raise InputError(
            f"{what} {text!r} holds a space, a quote, a backslash, % or $; "
            "give a path without them (a symbolic link will do)"
        )
    return text


def netinstall_program() -> Path:
    """The installed ``netinstall``: beside the running Python (its venv), else on PATH."""
    beside = Path(sys.executable).parent / "netinstall"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside.absolute()
    found = shutil.which("netinstall")
    if found:
        return Path(found).absolute()
    raise InputError(
        "cannot find the installed netinstall program (not beside this Python, not on PATH); "
        "install it (make setup) and run this command from it"
    )


def run_options(directory: Path, extra: Sequence[str]) -> dict[str, Any]:
    """``server run DIR EXTRA...`` parsed by ``server run``'s own parser and checked."""
    if any(word in ("--help", "-h") for word in extra):
        raise InputError("--extra-args: --help is no server option")
    try:
        ctx = server_run.make_context("run", [str(directory), *extra])
    except click.ClickException as exc:
        raise InputError(f"--extra-args: {exc.format_message()}") from None
    if ctx.get_parameter_source("directory") is ParameterSource.COMMANDLINE:
        raise InputError("--extra-args: give the server directory as DIR, not --dir")
    params = dict(ctx.params)
    for name in ("tftp_port", "http_port"):
        text = str(params[name])
        if not text.isdigit() or int(text) > 65535:
            option = "--" + name.replace("_", "-")
            raise InputError(f"--extra-args: {option} {text!r} is not a port number (0-65535)")
        params[name] = int(text)
    if params["dhcp"] not in ("off", "full", "proxy"):
        raise InputError(f"--extra-args: --dhcp {params['dhcp']!r}: expected off, full or proxy")
    if params["dhcp"] != "off" and not params["interface"]:
        raise InputError(f"--extra-args: --dhcp {params['dhcp']} needs --interface IF")
    if params["dhcp"] == "full" and not params["dhcp_range"]:
        raise InputError("--extra-args: --dhcp full needs --range FIRST,LAST")
    return params


@dataclass(frozen=True)
class UnitSpec:
    """What the unit is made of."""

    directory: Path  # absolute
    program: Path  # the installed netinstall, absolute
    run_args: tuple[str, ...]  # after ``server run DIR``
    needs: tuple[Need, ...]
    user: str | None = None  # None: root, with a bounding set
    shared: Path | None = None  # the shared directory DIR records (server init --shared-dir)


def render_unit(spec: UnitSpec) -> str:
    """The unit's text (pure: the same spec always gives the same text)."""
    directory = plain_path("the server directory", spec.directory)
    command = [str(spec.program), "server", "run", directory, *spec.run_args]
    caps = " ".join(need.capability for need in spec.needs)
    generated = shlex.join(["netinstall", "server", "unit", directory, *(
        ["--user", spec.user] if spec.user else [])])  # fmt: skip
    if spec.run_args:
        generated += " --extra-args " + shlex.quote(shlex.join(spec.run_args))
    lines = [
        f"# {UNIT_NAME}: generated by `{generated}`",
        f"#   netinstall server unit ... > /etc/systemd/system/{UNIT_NAME}",
        f"#   systemctl daemon-reload && systemctl enable --now {UNIT_NAME}",
        "# Logs: journalctl -u netinstall-server. Generate it again when the options change:",
        "# the capabilities below are those these options need (docs/deployment.md).",
        "[Unit]",
        f"Description=netinstall provisioning server for {directory}",
        "Wants=network-online.target",
        "After=network-online.target",
        *(
            [f"RequiresMountsFor={plain_path('the shared directory', spec.shared)}"]
            if spec.shared
            else []
        ),
        "",
        "[Service]",
        "Type=exec",
        "ExecStart=" + " ".join(exec_word(word) for word in command),
        "Restart=on-failure",
        f"RestartSec={RESTART_SEC}",
        "# SIGTERM to the server alone: it stops its dnsmasq itself; SIGKILL to what is left.",
        "KillMode=mixed",
        f"TimeoutStopSec={STOP_TIMEOUT}",
        "StandardOutput=journal",
        "StandardError=journal",
        "SyslogIdentifier=netinstall-server",
        "Environment=PYTHONUNBUFFERED=1",
    ]
    if spec.user:
        lines.append(f"User={spec.user}")
    for need in spec.needs:
        lines.append(f"# {need.capability}: {need.why}")
    if spec.user:
        lines.append(f"AmbientCapabilities={caps}")
    lines += [
        f"CapabilityBoundingSet={caps}",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        f"ReadWritePaths={directory}"
        + (f" {plain_path('the shared directory', spec.shared)}" if spec.shared else ""),
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "# AF_NETLINK: dnsmasq reads the interfaces; AF_PACKET: proxy-DHCP's HTTP Boot offers",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET",
        "UMask=0077",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def _notes(directory: Path, user: str | None) -> list[str]:
    """What would keep the unit from starting, said before it is installed."""
    from pxe_server.registry import has_registry

    notes = []
    if not has_registry(directory):
        notes.append(f"{directory} holds no registry yet: run `netinstall server init {directory}`")
    if user is not None:
        try:
            pwd.getpwnam(user)
        except KeyError:
            notes.append(f"there is no user {user} here yet (adduser --system {user})")
        else:
            if directory.exists() and directory.owner() != user:
                notes.append(f"{directory} belongs to {directory.owner()}: chown -R {user} it")
    return notes


@click.command("unit")
@click.argument("positional", required=False, metavar="[DIR]")
@dir_option
@click.option("--user", help="Run as this user with ambient capabilities (default: root).")
@click.option(
    "--extra-args",
    "extra_args",
    multiple=True,
    help="`server run` options, as one shell-quoted string (repeatable), e.g. "
    "--extra-args '--dhcp full --interface eno1 --range 10.0.0.100,10.0.0.200'.",
)
def unit(
    positional: str | None, directory: str, user: str | None, extra_args: tuple[str, ...]
) -> None:
    """Print a systemd unit that runs `netinstall server run DIR` (notes on stderr)."""
    where = server_directory(directory, positional).absolute()
    if user is not None and (not _USER.fullmatch(user) or user == "root"):
        raise InputError(
            f"--user {user!r}: expected a user name (letters, digits, _ and -; at most 31), "
            "not root (leave --user out to run as root)"
        )
    if user == "nobody":  # systemd: "Special user nobody configured, this is not safe!"
        raise InputError(
            "--user nobody: nobody is shared by other daemons; give the server a user of its "
            "own (adduser --system --group netinstall)"
        )
    extra: list[str] = []
    for text in extra_args:
        try:
            extra += shlex.split(text)
        except ValueError as exc:
            raise InputError(f"--extra-args {text!r}: {exc}") from None
    options = run_options(where, extra)
    from pxe_server import shared_dir

    shared = shared_dir.recorded(where)
    spec = UnitSpec(where, netinstall_program(), tuple(extra), needed(options), user, shared)
    text = render_unit(spec)
    for note in _notes(where, user):
        click.echo(f"note: {note}", err=True)
    click.echo(text, nl=False)
