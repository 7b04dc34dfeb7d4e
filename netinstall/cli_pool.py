"""``netinstall pool upgrade``: a rolling upgrade, the master first (``pxe_server.pool``).

Polls the registry directly (safe beside the running server, which records the
hosts' reports), or the server over the API (``netinstall --server URL``): one body over
``netinstall.fleet.PoolOverFleet``. The server must be running for the agents to hear of
their work.
"""

from __future__ import annotations

import time

import click

from common.errors import InputError, NetinstallError
from netinstall.cli_options import dir_option, open_fleet


class PoolStopped(NetinstallError):
    """A host failed or timed out; the hosts after it were not started."""


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
    """Operations on a pool of hosts."""


@pool.command("upgrade")
@click.argument("members", nargs=-1, metavar="MAC...")
@dir_option
@click.option("--version", "version", required=True, help="The payload version to upgrade to.")
@click.option("--master", required=True, help="The pool master: upgraded first.")
@click.option("--timeout", default="3600", show_default=True, help="Seconds to wait per host.")
@click.option("--poll", default="5", show_default=True, help="Seconds between registry polls.")
def pool_upgrade(
    members: tuple[str, ...], directory: str, *, version: str, master: str, timeout: str, poll: str
) -> None:
    """Upgrade the master, then each MAC in turn, each after the previous one runs VERSION."""
    from netinstall.fleet import PoolOverFleet
    from pxe_server.pool import Pace, plan_pool, rolling_upgrade

    limit, interval = _seconds("--timeout", timeout), _seconds("--poll", poll)
    began = time.monotonic()

    def say(line: str) -> None:
        click.echo(f"[{time.monotonic() - began:6.0f} s] {line}")

    with open_fleet(directory) as fleet:
        registry = PoolOverFleet(fleet)
        plan = plan_pool(registry, version, master, members)
        order = ", ".join(plan.hosts)
        say(f"upgrading {len(plan.hosts)} host(s) to {version}, one at a time: {order}")
        pace = Pace(limit, interval, time.monotonic, time.sleep, say)
        result = rolling_upgrade(registry, plan, pace)
    if not result.ok:
        rest = ", ".join(result.not_started) or "none"
        raise PoolStopped(
            f"pool upgrade stopped at {result.stopped_at}: {result.reason}; "
            f"upgraded: {', '.join(result.done) or 'none'}; not started: {rest}"
        )
    click.echo(f"pool upgraded: {len(result.done)} host(s) run {version}")
