"""``netinstall pack build``: supplemental packs (SPEC §8) for a repository or a driver source."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from common.errors import InputError, SourceError

if TYPE_CHECKING:
    from hypervisor_payload.packs import Pack


@click.group("pack")
def pack() -> None:
    """Build supplemental packs (drivers, extra files, install scripts)."""


@pack.command("build")
@click.argument(
    "sources", nargs=-1, required=True, metavar="SOURCE...", type=click.Path(path_type=Path)
)
@click.option(
    "--into",
    required=True,
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="The directory to build into (created if missing): a full repository, or a "
    'directory to serve as a <driver-source type="url">.',
)
def pack_build(sources: tuple[Path, ...], into: Path) -> None:
    """Build pack sources into DIR.

    Each SOURCE (a directory with pack.toml) becomes DIR/packages.<name>/, and
    DIR's XS-REPOSITORY-LIST then lists every pack in DIR: packs already there stay,
    one of the same name is replaced. A DIR with a .treeinfo is a full repository:
    its .treeinfo and SHA256SUMS are written again.
    """
    names = _check_sources(sources)  # click refuses an --into that is a file
    try:
        into.mkdir(parents=True, exist_ok=True)
        built = _build(sources, names, into)
    except SourceError as exc:  # a pack, a pack list or a .treeinfo that cannot be used
        raise InputError(str(exc)) from exc
    except OSError as exc:
        detail = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
        raise InputError(f"cannot build into {into}: {detail}") from exc
    for item in built:
        count = len(item.files)
        click.echo(
            f"{item.name} {item.version} (build {item.build}): "
            f"{count} file{'' if count == 1 else 's'} in {into / item.directory}"
        )


def _check_sources(sources: Sequence[Path]) -> list[str]:
    """Each source's pack name, every pack.toml read before anything is written."""
    from hypervisor_payload.packs import source_name

    names: dict[str, Path] = {}
    for source in sources:
        if not source.is_dir():
            what = "is not a directory" if source.exists() else "no such directory"
            raise InputError(f"pack source {source}: {what}")
        try:
            name = source_name(source)
        except SourceError as exc:
            raise InputError(str(exc)) from exc
        except OSError as exc:
            raise InputError(f"pack source {source}: pack.toml: {exc.strerror}") from exc
        if name in names:
            raise InputError(f"pack sources {names[name]} and {source} both build the pack {name}")
        names[name] = source
    return list(names)


def _build(sources: Sequence[Path], names: Sequence[str], into: Path) -> Sequence[Pack]:
    from hypervisor_payload.packs import add_to_repository, pack_directory, read_packs
    from hypervisor_payload.repo import add_packs
    from hypervisor_payload.treeinfo import TREEINFO

    if not (into / TREEINFO).is_file():
        return add_to_repository(into, sources)
    add_packs(into, sources)
    listed = {item.directory: item for item in read_packs(into, verify=False)}
    return [listed[pack_directory(name)] for name in names]
