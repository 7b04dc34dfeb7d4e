"""``netinstall pool``: named pools (a master and members in their upgrade order) and the
rolling upgrade, a job the server runs (``pxe_server.job_runner``) and this command follows
(``netinstall.cli_job``). Local (``--dir``) or over the API (``--server``), one body over
``netinstall.fleet``. A local job is run by a ``server run`` on that directory or on its
shared PostgreSQL registry, which the agents need anyway to hear of their work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from common.errors import InputError
from netinstall.cli_job import ended, follow_to_end, requester
from netinstall.cli_options import dir_option, echo_json, open_fleet, table

if TYPE_CHECKING:
    from common.protocol.messages import JobRecord, PoolRecord
    from netinstall.fleet import Fleet


def _seconds(option: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise InputError(f"{option} {text!r} must be a positive number of seconds")
    return value


@click.group("pool")
def pool() -> None:
    """Named pools of hosts and their rolling upgrades."""


def _show(record: PoolRecord) -> None:
    click.echo(f"pool {record.name}: master {record.master}")
    for position, mac in enumerate(record.members, 1):
        click.echo(f"  {position}. {mac}")
    if record.job is not None:
        click.echo(f"job {record.job} works on it (`netinstall job show {record.job}`)")


@pool.command("create")
@click.argument("name")
@click.argument("members", nargs=-1, metavar="[MAC]...")
@dir_option
@click.option("--master", required=True, help="The pool master: upgraded first.")
def pool_create(name: str, members: tuple[str, ...], directory: str, *, master: str) -> None:
    """Create pool NAME: its master, then its members in their upgrade order."""
    from common.protocol.messages import PoolSpec

    with open_fleet(directory) as fleet:
        record = fleet.create_pool(PoolSpec(name, master, members))
    click.echo(
        f"created pool {record.name}: {1 + len(record.members)} host(s), master {record.master}"
    )


@pool.command("list")
@dir_option
@click.option("--json", "as_json", is_flag=True)
def pool_list(directory: str, as_json: bool) -> None:
    """Every pool, its master, how many members and its job."""
    from common.protocol.codec import encode

    with open_fleet(directory) as fleet:
        found = fleet.pools()
    if as_json:
        echo_json([encode(p, envelope=False) for p in found])
        return
    if not found:
        click.echo("no pools")
        return
    lines = [("NAME", "MASTER", "MEMBERS", "JOB")]
    lines += [(p.name, p.master, str(len(p.members)), str(p.job or "-")) for p in found]
    click.echo(table(lines))


@pool.command("show")
@click.argument("name")
@dir_option
@click.option("--json", "as_json", is_flag=True)
def pool_show(name: str, directory: str, as_json: bool) -> None:
    """One pool: its master and members in their upgrade order."""
    from common.protocol.codec import encode

    with open_fleet(directory) as fleet:
        record = fleet.pool(name)
    if as_json:
        echo_json(encode(record, envelope=False))
    else:
        _show(record)


@pool.command("delete")
@click.argument("name")
@dir_option
def pool_delete(name: str, directory: str) -> None:
    """Forget pool NAME (its hosts stay); refused while a job works on it."""
    with open_fleet(directory) as fleet:
        fleet.delete_pool(name)
    click.echo(f"deleted pool {name}")


@pool.command("add")
@click.argument("name")
@click.argument("mac")
@dir_option
def pool_add(name: str, mac: str, directory: str) -> None:
    """MAC joins pool NAME as its last member (a host is in one pool at most)."""
    with open_fleet(directory) as fleet:
        record = fleet.add_to_pool(name, mac)
    _show(record)


@pool.command("remove")
@click.argument("name")
@click.argument("mac")
@dir_option
def pool_remove(name: str, mac: str, directory: str) -> None:
    """MAC leaves pool NAME (a member; the master stays while the pool is)."""
    with open_fleet(directory) as fleet:
        record = fleet.remove_from_pool(name, mac)
    _show(record)


def _upgrade_target(
    args: tuple[str, ...], master: str | None, version: str | None
) -> tuple[str | None, str]:
    """(the pool's name or None for the hosts given, the version) of the arguments."""
    if master is not None:
        if version is None:
            raise InputError("give the version to upgrade to with --version")
        return None, version
    if not args or len(args) > 2:
        raise InputError(
            "expected `pool upgrade NAME VERSION` (a named pool) or "
            "`pool upgrade --version VERSION --master MAC [MAC]...` (the hosts given)"
        )
    if len(args) == 2 and version is not None and version != args[1]:
        raise InputError(f"two versions given: {args[1]} and --version {version}")
    found = args[1] if len(args) == 2 else version
    if found is None:
        raise InputError(
            f"give the version to upgrade pool {args[0]} to: `pool upgrade {args[0]} VERSION`"
        )
    return args[0], found


@pool.command("upgrade")
@click.argument("args", nargs=-1, metavar="[NAME [VERSION] | MAC...]")
@dir_option
@click.option("--version", "version", help="The payload version to upgrade to.")
@click.option("--master", help="Without a pool's NAME: the master, upgraded first; then each MAC.")
@click.option("--timeout", default="3600", show_default=True, help="Seconds to wait per host.")
@click.option("--poll", default="5", show_default=True, help="Seconds between looks at a host.")
@click.option("--no-follow", is_flag=True, help="Print the job's number and return at once.")
def pool_upgrade(
    args: tuple[str, ...],
    directory: str,
    *,
    version: str | None,
    master: str | None,
    timeout: str,
    poll: str,
    no_follow: bool,
) -> None:
    """Upgrade pool NAME to VERSION (or --master MAC and each MAC given), master first, one
    host at a time: a job the server runs, followed here until it ends."""
    from common.protocol.messages import PoolUpgradeRequest

    name, target = _upgrade_target(args, master, version)
    limit, interval = _seconds("--timeout", timeout), _seconds("--poll", poll)
    request = PoolUpgradeRequest(
        version=target,
        pool=name,
        master=master,
        members=args if name is None else (),
        timeout=limit,
        poll=interval,
        by=requester(),
    )
    with open_fleet(directory) as fleet:
        job = fleet.start_pool_upgrade(request)
        if no_follow:
            click.echo(job.id)
            return
        what = f"pool {name}" if name else f"{len(job.hosts)} host(s)"
        intro = (
            f"job {job.id}: upgrade of {what} to {target} queued; Ctrl-C stops following, "
            f"not the job (`netinstall job follow {job.id}`)"
        )
        record = follow_with_bars(fleet, job, intro)
    ended(record, "pool upgrade")


def follow_with_bars(fleet: Fleet, job: JobRecord, intro: str) -> JobRecord:
    """``follow_to_end``, with a progress bar per host of the job below its log on a
    terminal (``netinstall.watch``'s board, looked at between the job's polls); as it
    was, the log lines only, anywhere else."""
    import time

    from netinstall import watch_view
    from netinstall.watch import Board

    if not watch_view.on_terminal():
        return follow_to_end(fleet, job.id, intro)
    view = watch_view.BarsView()
    board = Board(view, tuple(h.mac for h in job.hosts), keep_looking=True)
    began = time.monotonic()

    def look_then_sleep(seconds: float) -> None:
        board.look({r.mac: r for r in fleet.hosts()}, time.monotonic() - began)
        time.sleep(seconds)

    try:
        record = follow_to_end(fleet, job.id, intro, echo=view.say, sleep=look_then_sleep)
        board.look({r.mac: r for r in fleet.hosts()}, time.monotonic() - began)  # as it ended
    finally:
        view.close()
    return record
