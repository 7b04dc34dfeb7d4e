"""``netinstall update``: update bundles (hotfixes) for running hosts (README "Updates").

``update build`` makes an unsigned bundle from a source directory (``common.update_bundle``,
``hypervisor_payload.updates``); the server signs it when it is added (``update add``).
The rest works on a server directory (``--dir``) or over the API (``--server``), one body
over ``netinstall.fleet``, as ``pool`` does; ``update apply`` is a job the server runs
(``pxe_server.update_ops``), followed as ``pool upgrade`` is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from common.errors import InputError
from common.protocol.messages import HostUpdateState
from netinstall.cli_options import dir_option, echo_json, open_fleet, table

if TYPE_CHECKING:
    from common.protocol.messages import UpdateRecord, UpdateTargets


@click.group("update")
def update() -> None:
    """Update bundles (hotfixes for running hosts): build, add, check, apply, clean."""


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


def _targets(pool: str | None, macs: tuple[str, ...]) -> UpdateTargets:
    from common.protocol.messages import UpdateTargets

    if (pool is None) == (not macs):
        raise InputError("give --pool NAME or --host MAC (one or more), not both")
    return UpdateTargets(pool=pool, hosts=macs)


def _show(record: UpdateRecord) -> None:
    reboot = "reboots" if record.reboot else "no reboot"
    click.echo(
        f"update {record.id} {record.version}: {record.name} (for {', '.join(record.applies_to)}; "
        f"{reboot})"
    )
    kept = (
        "cleaned" if record.cleaned is not None else f"{record.size} bytes, sha256 {record.sha256}"
    )
    click.echo(f"  added by {record.added_by}; file: {kept}")
    for state in HostUpdateState:
        macs = [h for h in record.hosts if h.state is state]
        if macs:
            click.echo(f"  {state.value}: {', '.join(h.mac for h in macs)}")
        for host in macs:
            if host.reason:
                click.echo(f"    {host.mac}: {host.reason}")


@update.command("add")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@dir_option
def update_add(file: Path, directory: str) -> None:
    """Add the bundle FILE (`update build`'s): checked, signed with the server's update key
    and kept where every server hands it to agents. Prints the update's id."""
    from netinstall.cli_job import requester

    if not file.is_file():
        raise InputError(f"{file}: no such file")
    with open_fleet(directory) as fleet:
        record = fleet.add_update(file, requester())
    click.echo(record.id)


@update.command("list")
@dir_option
@click.option("--json", "as_json", is_flag=True)
def update_list(directory: str, as_json: bool) -> None:
    """Every update and how many hosts have it applied, pending or failed."""
    from common.protocol.codec import encode

    with open_fleet(directory) as fleet:
        found = fleet.updates()
    if as_json:
        echo_json([encode(u, envelope=False) for u in found])
        return
    if not found:
        click.echo("no updates")
        return
    lines = [("ID", "VERSION", "REBOOT", "APPLIED", "PENDING", "FAILED", "FILE")]
    for u in found:
        count = {s: sum(1 for h in u.hosts if h.state is s) for s in HostUpdateState}
        waiting = count[HostUpdateState.PENDING] + count[HostUpdateState.REBOOTING]
        waiting += count[HostUpdateState.REBOOT_REQUIRED]
        lines.append((
            u.id, u.version, "yes" if u.reboot else "no", str(count[HostUpdateState.APPLIED]),
            str(waiting), str(count[HostUpdateState.FAILED]),
            "cleaned" if u.cleaned is not None else "kept",
        ))  # fmt: skip
    click.echo(table(lines))


@update.command("show")
@click.argument("update_id", metavar="ID")
@dir_option
@click.option("--json", "as_json", is_flag=True)
def update_show(update_id: str, directory: str, as_json: bool) -> None:
    """One update: what it is, and on which hosts it is applied, pending or failed."""
    from common.protocol.codec import encode

    with open_fleet(directory) as fleet:
        record = fleet.update(update_id)
    if as_json:
        echo_json(encode(record, envelope=False))
    else:
        _show(record)


@update.command("clean")
@click.argument("update_id", metavar="ID")
@dir_option
def update_clean(update_id: str, directory: str) -> None:
    """Remove the update's file (its record, and which hosts have it, stay)."""
    with open_fleet(directory) as fleet:
        fleet.clean_update(update_id)
    click.echo(f"cleaned update {update_id}: its file is removed, its record kept")


@update.command("precheck")
@click.argument("update_id", metavar="ID")
@dir_option
@click.option("--pool", help="A named pool: each of its hosts, the master first.")
@click.option("--host", "macs", multiple=True, metavar="MAC", help="A host (repeatable).")
@click.option("--json", "as_json", is_flag=True)
def update_precheck(
    update_id: str, directory: str, pool: str | None, macs: tuple[str, ...], as_json: bool
) -> None:
    """Check each host for the update: its base version, free space in dom0 for the
    download, an agent seen recently that knows updates, no other work. Exit 1 when a
    host fails."""
    from common.protocol.codec import encode

    with open_fleet(directory) as fleet:
        found = fleet.precheck_update(update_id, _targets(pool, macs))
    if as_json:
        echo_json(encode(found, envelope=False))
    else:
        lines = [("HOST", "RUNS", "FREE MIB", "OK", "PROBLEMS")]
        for h in found.hosts:
            free = "-" if h.free_mib is None else str(h.free_mib)
            lines.append((h.mac, h.running_version or "-", free, "yes" if h.ok else "no",
                          "; ".join(h.problems) or "-"))  # fmt: skip
        click.echo(table(lines))
    if not found.ok:
        raise click.exceptions.Exit(1)


@update.command("apply")
@click.argument("update_id", metavar="ID")
@dir_option
@click.option("--pool", help="A named pool: its master first, then each member.")
@click.option(
    "--host", "macs", multiple=True, metavar="MAC", help="A host (repeatable; the first first)."
)
@click.option(
    "--reboot",
    type=click.Choice(["auto", "manual"]),
    default="auto",
    show_default=True,
    help="For an update that reboots: at once, or when the operator reboots the host.",
)
@click.option("--timeout", default="3600", show_default=True, help="Seconds to wait per host.")
@click.option("--poll", default="5", show_default=True, help="Seconds between looks at a host.")
@click.option("--no-follow", is_flag=True, help="Print the job's number and return at once.")
def update_apply(
    update_id: str,
    directory: str,
    *,
    pool: str | None,
    macs: tuple[str, ...],
    reboot: str,
    timeout: str,
    poll: str,
    no_follow: bool,
) -> None:
    """Apply the update to a pool (master first) or the hosts given, one host at a time,
    each after the previous one has it (and rebooted, when the update reboots): the
    precheck first, then a job the server runs, followed here until it ends."""
    from common.protocol.messages import RebootPolicy, UpdateApplyRequest
    from netinstall.cli_job import ended, follow_to_end, requester
    from netinstall.cli_pool import _seconds

    targets = _targets(pool, macs)
    request = UpdateApplyRequest(
        update=update_id,
        pool=targets.pool,
        hosts=targets.hosts,
        reboot=RebootPolicy(reboot),
        timeout=_seconds("--timeout", timeout),
        poll=_seconds("--poll", poll),
        by=requester(),
    )
    with open_fleet(directory) as fleet:
        job = fleet.start_update_apply(request)
        if no_follow:
            click.echo(job.id)
            return
        what = f"pool {pool}" if pool else f"{len(job.hosts)} host(s)"
        intro = (
            f"job {job.id}: {update_id} for {what} queued; Ctrl-C stops following, not the "
            f"job (`netinstall job follow {job.id}`)"
        )
        record = follow_to_end(fleet, job.id, intro)
    ended(record, "update apply")
