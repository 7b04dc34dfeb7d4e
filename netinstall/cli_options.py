"""What every command group of the registry CLI shares: ``--dir``, opening the registry,
and the table, time and JSON output. Imported by cli_server, cli_work, cli_profile and
cli_pool; imports none of them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from common.errors import InputError

if TYPE_CHECKING:
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
