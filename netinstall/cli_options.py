"""What every command group of the registry CLI shares: ``--dir``, opening the registry
or the fleet (``netinstall --server URL``: over the API), and the table, time and JSON
output. Imported by the other cli modules; imports none of them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from common.errors import InputError

if TYPE_CHECKING:
    from netinstall.fleet import Fleet
    from pxe_server.registry import Registry

DEFAULT_DIR = "/var/lib/netinstall"


def dir_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--dir",
        "directory",
        envvar="NETINSTALL_DIR",
        default=DEFAULT_DIR,
        show_default=True,
        help="The server directory (default: $NETINSTALL_DIR, else /var/lib/netinstall).",
    )(func)


def server_directory(directory: str, positional: str | None) -> Path:
    """DIR given as an argument wins over --dir's default; both given must agree."""
    if positional is None:
        return Path(directory)
    source = click.get_current_context().get_parameter_source("directory")
    if source is ParameterSource.COMMANDLINE and Path(directory) != Path(positional):
        raise InputError(f"two server directories given: {positional} and --dir {directory}")
    return Path(positional)


@contextmanager
def open_registry(directory: Path) -> Iterator[Registry]:
    from pxe_server.registry import Registry, has_registry

    if not has_registry(directory):
        raise InputError(
            f"{directory} holds no registry; create it with `netinstall server init {directory}`"
        )
    with Registry.open(directory) as registry:
        yield registry


def when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def echo_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2))


# -- remote operation: netinstall --server URL ----------------------------------------


@dataclass(frozen=True)
class Remote:
    """The global options ``--server URL --token-file FILE --ca-file FILE`` (``main``)."""

    server: str
    token_file: Path | None
    ca_file: Path | None


def remote() -> Remote | None:
    """The ``--server`` the command line (or ``NETINSTALL_SERVER``) gave; None: local."""
    found = click.get_current_context().find_root().obj
    return found if isinstance(found, Remote) else None


def refuse_remote(command: str, why: str) -> None:
    """InputError when ``--server`` is given to a command that works on the server's
    own directory only; ``why`` says why it does."""
    given = remote()
    if given is not None:
        raise InputError(
            f"`netinstall {command}` works on the server's own directory only ({why}): run it "
            f"there, without --server {given.server} (or NETINSTALL_SERVER)"
        )


@contextmanager
def open_fleet(directory: str) -> Iterator[Fleet]:
    """The fleet a command works on: over the API with ``--server``, else the registry of
    the server directory ``directory`` (``--dir``; refused beside ``--server``)."""
    from netinstall.fleet import LocalFleet, RemoteFleet

    given = remote()
    if given is None:
        with open_registry(Path(directory)) as registry:
            yield LocalFleet(registry)
        return
    source = click.get_current_context().get_parameter_source("directory")
    if source is ParameterSource.COMMANDLINE:
        raise InputError(
            f"--dir {directory} names a local server directory, --server {given.server} a "
            "remote server: give one of them"
        )
    from netinstall.api_client import ApiClient, endpoint, read_token, tls_context

    where = endpoint(given.server)
    token = read_token(given.token_file, os.environ.get("NETINSTALL_TOKEN"))
    context = tls_context(given.ca_file) if where.https else None
    yield RemoteFleet(ApiClient(where, token, context))
