"""``netinstall job``: the server-side jobs (a ``pool upgrade`` is one): list, show,
follow, cancel; and ``follow``, which ``pool upgrade`` uses too.

A job runs in a server (``pxe_server.job_runner``), not here: following it only reads
it every ``FOLLOW_POLL`` seconds and prints its new log lines, so Ctrl-C (or a laptop
that sleeps) stops the following, never the job. Locally (``--dir``) a job needs a
``server run`` on that directory (or on the shared PostgreSQL registry) to take it; a
job still queued after ``QUEUED_NOTICE`` seconds is said to be waiting for one.
"""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from common.errors import InputError, NetinstallError
from netinstall.cli_options import dir_option, echo_json, open_fleet, table, when

if TYPE_CHECKING:
    from common.protocol.messages import JobRecord
    from netinstall.fleet import Fleet

FOLLOW_POLL = 1.0  # seconds between a follower's looks at its job
QUEUED_NOTICE = 10.0  # seconds a followed job may stay queued before the follower says so
INTERRUPTED = 130  # the exit code when Ctrl-C stops the following (the job goes on)


class JobStopped(NetinstallError):
    """The job followed failed or was cancelled (exit 1)."""


def requester() -> str:
    """Who starts or cancels a job from here, for its record: user@machine."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "someone"
    return f"{user}@{socket.gethostname()}"


def job_number(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise InputError(f"job {text[:32]!r}: a job is named by its number (see `job list`)")
    return int(text)


def follow(
    fleet: Fleet,
    job_id: int,
    *,
    echo: Callable[[str], None] = click.echo,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> JobRecord:
    """Print the job's log as it grows (each line with its seconds since the job was
    created) until the job ends; the job as it ended."""
    from common.protocol.messages import JobState

    printed, began, told = 0, clock(), False
    while True:
        job = fleet.job(job_id, printed)
        for line in job.log:
            if line.n > printed:
                echo(f"[{line.time - job.created:6.0f} s] {line.text}")
                printed = line.n
        if job.state not in (JobState.QUEUED, JobState.RUNNING):
            return job
        if job.state is JobState.QUEUED and not told and clock() - began >= QUEUED_NOTICE:
            echo(
                f"job {job_id} is still queued: no server has taken it; is `netinstall "
                "server run` running on this registry? (Ctrl-C stops following, not the job)"
            )
            told = True
        sleep(FOLLOW_POLL)


def follow_to_end(
    fleet: Fleet,
    job_id: int,
    intro: str | None = None,
    *,
    echo: Callable[[str], None] = click.echo,
    sleep: Callable[[float], None] | None = None,
) -> JobRecord:
    """``intro`` printed, then ``follow`` (its lines through ``echo``, its pauses through
    ``sleep``, else ``time.sleep``); on Ctrl-C, say the job goes on and how to find it
    again (exit 130)."""
    try:
        if intro is not None:
            echo(intro)
        return follow(fleet, job_id, echo=echo, sleep=sleep or time.sleep)
    except KeyboardInterrupt:
        click.echo(
            f"stopped following job {job_id}; it goes on: `netinstall job follow {job_id}`, "
            f"`netinstall job cancel {job_id}`",
            err=True,
        )
        raise SystemExit(INTERRUPTED) from None


@click.group("job")
def job() -> None:
    """Server-side jobs: rolling pool upgrades run by a server, followed from here."""


def _json(record: JobRecord) -> dict[str, object]:
    from common.protocol.codec import encode

    return encode(record, envelope=False)


def _hosts_done(record: JobRecord) -> str:
    done = sum(1 for h in record.hosts if h.state in ("done", "skipped"))
    return f"{done}/{len(record.hosts)}"


@job.command("list")
@dir_option
@click.option("--json", "as_json", is_flag=True)
def job_list(directory: str, as_json: bool) -> None:
    """Every job kept, newest first."""
    with open_fleet(directory) as fleet:
        found = fleet.jobs()
    if as_json:
        echo_json([_json(j) for j in found])
        return
    if not found:
        click.echo("no jobs")
        return
    lines = [("ID", "KIND", "STATE", "POOL", "HOSTS", "CREATED", "BY")]
    lines += [
        (str(j.id), j.kind.value, j.state.value, j.pool or "-", _hosts_done(j), when(j.created),
         j.started_by)
        for j in found
    ]  # fmt: skip
    click.echo(table(lines))


@job.command("show")
@click.argument("job_id", metavar="ID")
@dir_option
@click.option("--json", "as_json", is_flag=True)
def job_show(job_id: str, directory: str, as_json: bool) -> None:
    """One job: its state, its hosts, who runs it and its log."""
    with open_fleet(directory) as fleet:
        record = fleet.job(job_number(job_id))
    if as_json:
        echo_json(_json(record))
        return
    fields = [
        ("job", f"{record.id} ({record.kind.value})"),
        ("state", record.state.value),
        ("pool", record.pool or "(hosts given)"),
        ("parameters", ", ".join(f"{k} {v}" for k, v in sorted(record.parameters.items()))),
        ("started by", record.started_by),
        ("created", when(record.created)),
        ("started", when(record.started) if record.started else "-"),
        ("ended", when(record.ended) if record.ended else "-"),
        ("run by", record.lease_holder or "-"),
        ("lease until", when(record.lease_until) if record.lease_until else "-"),
        ("cancel asked by", record.cancel_requested or "-"),
        ("reason", record.reason or "-"),
    ]
    for label, value in fields:
        click.echo(f"{label + ':':<17}{value}")
    click.echo("hosts:")
    for host in record.hosts:
        note = f"  {host.note}" if host.note else ""
        click.echo(f"  {host.mac}  {host.state.value}{note}")
    click.echo("log:")
    for line in record.log:
        click.echo(f"  [{line.time - record.created:6.0f} s] {line.text}")


def ended(record: JobRecord, what: str) -> None:
    """Nothing for a job done; JobStopped (exit 1) saying why for one that is not."""
    if record.state.value == "done":
        return
    if record.state.value == "cancelled":
        raise JobStopped(f"{what} {record.reason or 'cancelled'}")
    raise JobStopped(f"{what} {record.reason or record.state.value}")


@job.command("follow")
@click.argument("job_id", metavar="ID")
@dir_option
def job_follow(job_id: str, directory: str) -> None:
    """Print the job's log as it grows, until it ends (Ctrl-C stops following, not the job);
    exit 1 if it failed or was cancelled."""
    number = job_number(job_id)
    with open_fleet(directory) as fleet:
        record = follow_to_end(fleet, number)
    ended(record, f"job {number} {record.state.value}:")


@job.command("cancel")
@click.argument("job_id", metavar="ID")
@dir_option
def job_cancel(job_id: str, directory: str) -> None:
    """Cancel a job: a queued one at once, a running one before its next host."""
    number = job_number(job_id)
    with open_fleet(directory) as fleet:
        record = fleet.cancel_job(number, requester())
    if record.state.value == "cancelled":
        click.echo(f"job {number} cancelled")
    else:
        click.echo(f"job {number}: cancel asked; it stops before its next host")
