"""``netinstall host watch [MAC]...``: installs followed live until every watched host
runs or failed (``netinstall.watch``); ``cli.py`` attaches it to ``host``."""

from __future__ import annotations

import click

from netinstall.cli_options import dir_option, open_fleet

INTERRUPTED = 130  # Ctrl-C stopped the watching (the installs go on), as `job follow`


@click.command("watch")
@click.argument("macs", nargs=-1, metavar="[MAC]...")
@dir_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per change (JSON lines).")
@click.option(
    "--interval", default="2", show_default=True, help="Seconds between looks (0.2 to 60)."
)
@click.option(
    "--timeout", default="7200", show_default=True, help="Seconds to watch at most (exit 1 then)."
)
def host_watch(
    macs: tuple[str, ...], directory: str, as_json: bool, interval: str, timeout: str
) -> None:
    """Follow installs live until every host watched is running (exit 0) or failed (exit 1,
    naming them): MACs given, else every host not running yet (failed ones left out).

    On a terminal a progress bar per host (state, step, percent, elapsed); otherwise one
    line per change, or with --json one JSON object per change. Ctrl-C stops watching,
    not the installs."""
    from netinstall import watch_view
    from netinstall.watch import (
        MAX_INTERVAL,
        MAX_TIMEOUT,
        MIN_INTERVAL,
        WatchFailed,
        seconds,
        select,
        watch,
    )

    pause = seconds("--interval", interval, MIN_INTERVAL, MAX_INTERVAL)
    limit = seconds("--timeout", timeout, 1.0, MAX_TIMEOUT)
    with open_fleet(directory) as fleet:
        chosen = select(fleet.hosts(), macs)
        if not chosen.macs:
            click.echo("nothing to watch: every host is running or failed", err=True)
            return
        click.echo(chosen.said, err=True)
        view: watch_view.PlainView | watch_view.JsonView | watch_view.BarsView
        if as_json:
            view = watch_view.JsonView()
        elif watch_view.on_terminal():
            view = watch_view.BarsView()
        else:
            view = watch_view.PlainView()
        try:
            outcome = watch(
                fleet.hosts,
                chosen.macs,
                view,
                interval=pause,
                timeout=limit,
                warn=lambda line: click.echo(line, err=True),
            )
        except KeyboardInterrupt:
            click.echo("stopped watching; the installs go on", err=True)
            raise SystemExit(INTERRUPTED) from None
    if outcome.exit_code != 0:
        raise WatchFailed(outcome.sentence(limit))
    click.echo(outcome.sentence(limit), err=True)
