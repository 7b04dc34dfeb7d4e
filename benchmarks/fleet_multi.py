"""The fleet simulation on two servers sharing one PostgreSQL registry, beside one server
on SQLite, in the same run (issue 19).

    .venv/bin/python benchmarks/fleet_multi.py [--hosts 1000[,10000]] [--at-once 200]
                                               [--think 0.1] [--http-timeout 10]

For each ``--hosts`` count, two set-ups one after the other, each with fresh server
directories and the same simulated fleet (``fleet.py``: every host's whole install,
``--at-once`` hosts at a time, ``--think`` seconds between a host's requests):

    1 server, SQLite       ``server run`` on ``DIR/registry.sqlite`` (the default)
    2 servers, PostgreSQL  two ``server run`` processes, each with its own directory and
                           ports, on one throwaway PostgreSQL cluster (tests/postgres.py:
                           a unix socket, fsync off); host ``index`` installs through
                           server ``index % 2``, so the hosts are split between them

and prints them side by side: per request kind the count, errors and p50/p95/p99 (ms);
the wall time and requests a second; each server's CPU seconds and peak RSS, and
PostgreSQL's CPU seconds (its postmaster and every backend); the work a server did twice.
Every reply is checked as ``fleet.py`` checks it. Exits 1 if a run had an error or did
work twice. Not a test: nothing here is timed by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fleet import (
    HTTP_TIMEOUT,
    KINDS,
    NETINSTALL,
    Fleet,
    cpu_split_of,
    prepare,
    server_work,
    start_server,
    thinks,
)
from benchmarks.loadclient import CLOCK_TICKS, cpu_split, peak_rss_mib, percentile


@dataclass
class Served:
    """One server's share of a run."""

    cpu: float  # CPU seconds (user + system) over the run
    rss: float  # peak RSS, MiB
    threads: dict[str, float]  # CPU seconds over the run by thread id


@dataclass
class Outcome:
    """One set-up's run: what the hosts saw and what it cost."""

    title: str
    elapsed: float
    latency: dict[str, list[float]]
    errors: collections.Counter[str]
    first_error: dict[str, str]
    done: int
    servers: list[Served] = field(default_factory=list)
    database_cpu: float | None = None  # PostgreSQL's, all its processes
    twice: int = 0

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latency.values())


def threads_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of process ``pid``, by thread id."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):  # a thread that ended meanwhile
            found[task.name] = sum(cpu_split_of(task / "stat"))
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` and of its children it has waited for (a
    postmaster's ended backends), and of those still running."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLOCK_TICKS
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(OSError):
            total += sum(cpu_split(int(child)))
    return total


@contextlib.contextmanager
def servers(directories: list[Path], logs: list[Path]) -> Iterator[list[tuple[int, int, int]]]:
    """``server run`` for each directory: (pid, TFTP port, HTTP port) each."""
    started = []
    try:
        for directory, log in zip(directories, logs, strict=True):
            child, tftp, http = start_server(directory, log)
            started.append((child, tftp, http))
        yield [(child.pid, tftp, http) for child, tftp, http in started]
    finally:
        for child, _, _ in started:
            child.terminate()
        for child, _, _ in started:
            child.wait(timeout=60)


def run_setup(
    title: str, hosts: int, args: argparse.Namespace, tmp: Path, database: str | None
) -> tuple[Outcome, list[Path], list[Path]]:
    """One set-up: one directory on SQLite (``database`` None) or two on ``database``."""
    first = tmp / "a" / "server"
    first.parent.mkdir()
    init = ("--db", database) if database else ()
    prepare(first, hosts, *init)
    directories = [first]
    if database:
        second = tmp / "b" / "server"
        second.parent.mkdir()
        netboot, repo = first.parent / "netboot", first.parent / "repo"
        subprocess.run(
            [str(NETINSTALL), "server", "init", str(second), "--netboot", str(netboot),
             "--repo", str(repo), *init],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        directories.append(second)
    logs = [d.parent / "server.log" for d in directories]
    with servers(directories, logs) as running:
        (_, tftp, http), *more = running
        fleet = Fleet(tftp, http, args.think, args.http_timeout,
                      more=tuple((t, h) for _, t, h in more))  # fmt: skip
        before = [sum(cpu_split(pid)) for pid, _, _ in running]
        threads_before = [threads_cpu(pid) for pid, _, _ in running]
        postmaster = args.postmaster if database else None
        db_before = tree_cpu(postmaster) if postmaster else 0.0
        elapsed = asyncio.run(fleet.run(hosts, args.at_once))
        used = []
        for (pid, _, _), cpu, threads in zip(running, before, threads_before, strict=True):
            now = threads_cpu(pid)
            spent = {name: now[name] - threads.get(name, 0.0) for name in now}
            used.append(Served(sum(cpu_split(pid)) - cpu, peak_rss_mib(pid), spent))
        db_cpu = tree_cpu(postmaster) - db_before if postmaster else None
    done: collections.Counter[tuple[str, str]] = collections.Counter()
    for log in logs:
        done += server_work(log)
    twice = sum(max(0, n - fleet.meant[key]) for key, n in done.items())
    outcome = Outcome(title, elapsed, dict(fleet.latency), fleet.errors, fleet.first_error,
                      fleet.done, used, db_cpu, twice)  # fmt: skip
    return outcome, directories, logs


def side_by_side(hosts: int, args: argparse.Namespace, runs: list[Outcome], load: float) -> None:
    width = 42
    print(f"\nfleet: {hosts} hosts, {args.at_once} at once, think {args.think:g} s; "
          f"load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
          f"{os.cpu_count()} cores for the servers, PostgreSQL and the load client")  # fmt: skip
    print(f"{'':13}" + "".join(f"| {r.title:<{width - 2}}" for r in runs))
    head = f"{'count':>7}{'errors':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9} "
    print(f"{'kind':13}" + f"|{head:<{width - 1}}" * len(runs))
    for kind in KINDS:
        cells = []
        for run in runs:
            values = run.latency.get(kind, [])
            marks = [percentile(values, share) * 1000 for share in (0.5, 0.95, 0.99)]
            cells.append(f"{len(values):7}{run.errors[kind]:7}"
                         + "".join(f"{m:9.1f}" for m in marks) + " ")  # fmt: skip
        print(f"{kind:13}" + "".join(f"|{c:<{width - 1}}" for c in cells))
    rows = {
        "hosts done": [f"{r.done} of {hosts}" for r in runs],
        "errors": [str(sum(r.errors.values())) for r in runs],
        "wall time": [f"{r.elapsed:.1f} s, {r.requests / r.elapsed:,.0f} requests/s" for r in runs],
        "servers": [
            "; ".join(
                f"{s.cpu:.1f} s CPU ({s.cpu / r.elapsed:.0%} of a core), RSS {s.rss:.0f} MiB"
                for s in r.servers
            )
            for r in runs
        ],
        "database": [
            "in the server" if r.database_cpu is None else f"{r.database_cpu:.1f} s CPU"
            for r in runs
        ],
        "done twice": [str(r.twice) for r in runs],
    }
    for name, cells in rows.items():
        print(f"{name:13}" + "".join(f"| {c:<{width - 2}}" for c in cells))
    for run in runs:
        for number, server in enumerate(run.servers, 1):
            busiest = sorted(server.threads.values(), reverse=True)[:3]
            print(f"  {run.title}, server {number}: its busiest threads (the event loop, "
                  "the registry's writer, ...) "
                  + ", ".join(f"{cpu / run.elapsed:.0%}" for cpu in busiest)
                  + " of a core")  # fmt: skip
        for kind, said in run.first_error.items():
            print(f"  {run.title}: first {kind} error: {said}")


def main() -> None:
    from tests import postgres  # noqa: PLC0415 - after sys.path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--hosts", default="1000", help="hosts of a run; several, comma-separated, run in turn"
    )
    parser.add_argument("--at-once", type=int, default=200)
    parser.add_argument("--think", type=lambda t: thinks(t)[0], default=0.1)
    parser.add_argument("--http-timeout", type=float, default=HTTP_TIMEOUT)
    parser.add_argument("--keep", type=Path, help="keep the server directories and logs here")
    args = parser.parse_args()
    counts = [int(n) for n in args.hosts.split(",") if n.strip()]
    failed = False
    for hosts in counts:
        load = os.getloadavg()[0]
        runs = []
        for title, engine in (("1 server, SQLite", None), ("2 servers, PostgreSQL", "pg")):
            tmp = Path(tempfile.mkdtemp(prefix="fleet-multi-"))
            try:
                with contextlib.ExitStack() as stack:
                    url = None
                    if engine:
                        cluster = stack.enter_context(postgres.cluster())
                        args.postmaster = cluster.process.pid
                        url = cluster.url(cluster.create_database())
                    outcome, _, _ = run_setup(title, hosts, args, tmp, url)
                runs.append(outcome)
                print(f"{title}: {hosts} hosts in {outcome.elapsed:.1f} s, "
                      f"{sum(outcome.errors.values())} errors", flush=True)  # fmt: skip
            finally:
                if args.keep:
                    shutil.copytree(tmp, args.keep / f"{hosts}-{engine or 'sqlite'}",
                                    dirs_exist_ok=True)  # fmt: skip
                shutil.rmtree(tmp, ignore_errors=True)
        side_by_side(hosts, args, runs, load)
        failed |= any(sum(r.errors.values()) or r.twice for r in runs)
    if failed:
        os._exit(1)


if __name__ == "__main__":
    main()
