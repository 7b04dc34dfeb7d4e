"""A host's BMC on the command line: the ``--bmc`` options of ``host add|set``, ``host
power MAC on|off|cycle|status``, and what ``host rearm --power`` and ``host
upgrade|restore`` ask of a host's BMC.

The password comes from ``--bmc-password-file`` or, on a terminal, a prompt (never an
option's value: a command line is seen by every user of the machine); without either
the command refuses. It goes to the registry (sealed, ``pxe_server.bmc_control``) or
over the API to the server, and is never printed. Imported by ``cli_host`` and
``cli_work``; imports neither.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from common.errors import InputError
from netinstall.cli_options import dir_option, open_fleet

if TYPE_CHECKING:
    from common.protocol.messages import BmcSpec, HostRecord, PowerReply
    from netinstall.fleet import Fleet

MAX_PASSWORD_FILE = 4096  # bytes of a --bmc-password-file
MAX_CA_FILE = 64 * 1024  # bytes of a --bmc-ca-file


def bmc_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--bmc URL --bmc-password-file FILE --bmc-ca-file FILE --bmc-insecure``."""
    options = (
        click.option(
            "--bmc",
            "bmc_url",
            metavar="URL",
            help="Its BMC: redfish://USER@ADDR[:PORT][/redfish/v1/Systems/ID] (HTTPS), "
            "redfish+http://... (plain HTTP) or ipmi://USER@ADDR[:PORT].",
        ),
        click.option(
            "--bmc-password-file",
            metavar="FILE",
            help="The BMC password's file (its first line); without it, a prompt on a terminal.",
        ),
        click.option(
            "--bmc-ca-file",
            metavar="FILE",
            help="PEM CA certificates to verify a redfish:// BMC with (default: the system's).",
        ),
        click.option(
            "--bmc-insecure",
            is_flag=True,
            help="Do not verify a redfish:// BMC's certificate (host show says so).",
        ),
    )
    for option in reversed(options):
        func = option(func)
    return func


def _read_bounded(path: str, limit: int, option: str) -> str:
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except OSError as exc:
        raise InputError(f"{option} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(f"{option} {path} has more than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{option} {path} is not UTF-8 text") from None


def on_terminal() -> bool:
    """Whether a password may be asked for: standard input is a terminal."""
    return sys.stdin.isatty()


def _password(url: str, password_file: str | None) -> str:
    if password_file is not None:
        text = _read_bounded(password_file, MAX_PASSWORD_FILE, "--bmc-password-file")
        first = text.split("\n", 1)[0].rstrip("\r")
        if not first:
            raise InputError(f"--bmc-password-file {password_file} has an empty first line")
        return first
    if not on_terminal():
        raise InputError(
            "--bmc needs the BMC password: give --bmc-password-file FILE (there is no "
            "terminal to ask it on)"
        )
    given: str = click.prompt(f"password of {url}", hide_input=True)
    if not given:
        raise InputError("the BMC password is empty")
    return given


def bmc_spec(
    bmc_url: str | None,
    bmc_password_file: str | None,
    bmc_ca_file: str | None,
    bmc_insecure: bool,
) -> BmcSpec | None:
    """The options as a BmcSpec (None without --bmc); InputError for a bad combination,
    a bad URL (checked here, before a password is asked for) or an unreadable file."""
    from common.protocol.messages import BmcSpec
    from pxe_server.bmc_url import parse_bmc_url

    if bmc_url is None:
        if bmc_password_file or bmc_ca_file or bmc_insecure:
            raise InputError("--bmc-password-file, --bmc-ca-file and --bmc-insecure need --bmc URL")
        return None
    url = parse_bmc_url(bmc_url)
    if bmc_ca_file is not None and bmc_insecure:
        raise InputError("--bmc-ca-file and --bmc-insecure exclude each other: give one")
    if (bmc_ca_file is not None or bmc_insecure) and url.kind.value != "redfish":
        option = "--bmc-ca-file" if bmc_ca_file is not None else "--bmc-insecure"
        raise InputError(f"{option} is for a redfish:// BMC (HTTPS), not {url.kind.value}://")
    ca = None if bmc_ca_file is None else _read_bounded(bmc_ca_file, MAX_CA_FILE, "--bmc-ca-file")
    return BmcSpec(str(url), _password(str(url), bmc_password_file), ca, bmc_insecure)


def bmc_text(item: HostRecord) -> str:
    """``host show``'s BMC line: the URL, whether a password is stored, how it is trusted."""
    bmc = item.bmc
    if bmc is None:
        return "-"
    trust = ""
    if bmc.url.startswith("redfish://"):
        trust = ", insecure: yes" if bmc.insecure else (", own CA" if bmc.ca else ", system CAs")
    return f"{bmc.url}, password {bmc.password.value}{trust}"


def _reply_text(reply: PowerReply) -> str:
    said = "; ".join(reply.steps) if reply.steps else f"power is {reply.state.value}"
    return f"{reply.mac}: {said}{_via(reply)}"


def _via(reply: PowerReply) -> str:
    """Which server asked the BMC, when the host's segment server did (``segments``)."""
    return "" if reply.via is None else f" (through server {reply.via}, on its segment)"


@click.command("power")
@click.argument("mac")
@click.argument("action", type=click.Choice(["on", "off", "cycle", "status"]))
@dir_option
def host_power(mac: str, action: str, directory: str) -> None:
    """Power MAC on, off (at once) or around (cycle; a host that is off is powered on), or
    say its power, through its BMC (`host set MAC --bmc URL`)."""
    from common.protocol.messages import PowerAction, PowerRequest

    with open_fleet(directory) as fleet:
        reply = fleet.power(mac, PowerRequest(PowerAction(action)))
    if reply.steps:
        click.echo(_reply_text(reply))
    else:
        click.echo(f"{reply.mac}: power {reply.state.value}{_via(reply)}")


def rearm_power(fleet: Fleet, mac: str) -> None:
    """``host rearm --power``: the next boot from the network, once, then on (if off) or
    a power cycle (if on), each step reported."""
    from common.protocol.messages import PowerAction, PowerRequest

    reply = fleet.power(mac, PowerRequest(PowerAction.BOOT, network_once=True))
    for step in reply.steps:
        click.echo(f"{reply.mac}: {step}{_via(reply)}")
