"""``netinstall update``: update bundles (hotfixes) for running hosts (README "Updates").

``update build`` makes an unsigned bundle from a source directory (``common.update_bundle``,
``hypervisor_payload.updates``); the server signs it when it is added.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.group("update")
def update() -> None:
    """Build update bundles (hotfixes for running hosts)."""


@update.command("build")
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The bundle to write (default: <id>.update in the current directory).",
)
def update_build(source: Path, output: Path | None) -> None:
    """Build the update whose source is SOURCE (a directory with update.toml) into one
    unsigned bundle file; `netinstall update add FILE` signs it and hands it to hosts."""
    from hypervisor_payload.updates import build_update

    meta, target = build_update(source, output)
    count = len(meta.members)
    click.echo(
        f"{meta.id} {meta.version}: {count} member{'' if count == 1 else 's'}, "
        f"{meta.total_bytes} bytes, for {', '.join(meta.applies_to)}"
        f"{', reboot after' if meta.reboot else ''} -> {target}"
    )
