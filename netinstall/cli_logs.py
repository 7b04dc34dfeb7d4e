"""``netinstall host logs MAC [--fetch NAME|latest [-o FILE] [--force]]``: the log bundles
a host's installer uploaded (``PUT .../logs``), kept in the shared directory of the
server directory (``pxe_server.log_bundles``), so any server of a fleet lists them.

One body over ``netinstall.fleet.Fleet``: the server directory (``--dir``) or, with
``netinstall --server URL``, the operator API (``GET .../logs``, ``.../logs/<name>``).
A bundle fetched goes to a hidden file beside FILE that becomes FILE (0600) only once
whole; a refusal, a body over ``MAX_LOG_BUNDLE`` or cut short leaves nothing behind. To
stdout (``-o -``) it is written only once whole, too. ``cli.py`` attaches the command to
the ``host`` group.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import click

from common.errors import InputError, NetinstallError
from common.whole_file import whole_file
from netinstall.cli_options import dir_option, echo_json, open_fleet, table, when

NO_BUNDLES = "an installer uploads one when its install fails"
COPY_CHUNK = 1 << 20  # bytes of a bundle copied to stdout at a time


class _Output:
    """The file a bundle is written to as it comes: an error writing it names ``shown``
    (the file the operator asked for), not the connection."""

    def __init__(self, file: BinaryIO, shown: str) -> None:
        self.file, self.shown = file, shown

    def write(self, data: bytes, /) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            raise NetinstallError(f"cannot write {self.shown}: {exc.strerror or exc}") from None


@contextmanager
def _to_stdout() -> Iterator[_Output]:
    """A temporary file, copied to stdout once the block ends without an error."""
    if sys.stdout.isatty():
        raise InputError("-o - writes a compressed tar archive to stdout: not to a terminal")
    with tempfile.TemporaryFile(prefix="netinstall-log-") as spool:
        yield _Output(spool, "a temporary file")
        spool.seek(0)
        while chunk := spool.read(COPY_CHUNK):
            click.echo(chunk, nl=False)  # bytes: to stdout's binary side


@contextmanager
def _to_file(target: Path, force: bool) -> Iterator[_Output]:
    """A hidden file beside ``target`` (0600) that becomes ``target`` once the block ends
    without an error (``force``: replacing one that exists); removed in any case."""
    exists = f"{target} exists; give --force to replace it, or -o another FILE"
    if target.exists() and not force:
        raise InputError(exists)
    with whole_file(target, exists, replace=force) as file:
        yield _Output(file, str(target))


def _list(mac: str, directory: str, as_json: bool) -> None:
    from common.protocol.codec import encode

    with open_fleet(directory) as fleet:
        found = fleet.log_bundles(mac)
    if as_json:
        echo_json([encode(bundle, envelope=False) for bundle in found])
    elif not found:
        click.echo(f"host {mac} has no log bundles ({NO_BUNDLES})")
    else:
        rows = [(b.name, str(b.bytes), when(b.time)) for b in found]
        click.echo(table([("NAME", "BYTES", "STORED"), *rows]))


def _fetch(mac: str, directory: str, name: str, output: str | None, force: bool) -> None:
    from pxe_server.log_bundles import BUNDLE_NAME, no_bundle

    if name != "latest" and not BUNDLE_NAME.fullmatch(name):
        raise InputError(no_bundle(mac, name))  # as the server says it, before any file
    with open_fleet(directory) as fleet:
        if name == "latest":
            found = fleet.log_bundles(mac)
            if not found:
                raise InputError(f"host {mac} has no log bundles to fetch ({NO_BUNDLES})")
            name = found[-1].name
        if output == "-":
            shown = "stdout"
            with _to_stdout() as sink:
                size = fleet.fetch_log(mac, name, sink)
        else:
            target = Path(output or name)
            if target.is_dir():
                target = target / name
            shown = str(target)
            with _to_file(target, force) as sink:
                size = fleet.fetch_log(mac, name, sink)
    click.echo(f"wrote {size} bytes to {shown}: log bundle {name} of host {mac}", err=True)


@click.command("logs")
@click.argument("mac")
@dir_option
@click.option("--json", "as_json", is_flag=True, help="List the bundles as JSON.")
@click.option(
    "--fetch",
    "name",
    metavar="NAME|latest",
    help="Write this bundle (a NAME the list shows, or the latest) to a file.",
)
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    help="With --fetch: the file (default: the bundle's name, here; a directory: the name "
    "in it; -: stdout).",
)
@click.option("--force", is_flag=True, help="With --fetch: replace FILE if it exists.")
def host_logs(
    mac: str, directory: str, as_json: bool, *, name: str | None, output: str | None, force: bool
) -> None:
    """List the log bundles MAC's installer uploaded (name, size, when), oldest first, or
    write one to a file (--fetch); the size written is reported on stderr."""
    from pxe_server.model import normalise_mac

    mac = normalise_mac(mac)
    if name is None:
        if output is not None or force:
            raise InputError("-o and --force go with --fetch NAME|latest")
        _list(mac, directory, as_json)
        return
    if as_json:
        raise InputError("--json goes with the list, not with --fetch")
    _fetch(mac, directory, name, output, force)
