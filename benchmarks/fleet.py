"""A fleet of simulated hosts through the whole protocol against one real server.

    .venv/bin/python benchmarks/fleet.py [--hosts 1000] [--at-once 200] [--think 0.1]
    .venv/bin/python benchmarks/fleet.py --think 0,0.1,0.2,0.4   (or --sweep)

Makes a server directory (``netinstall server init``), registers ``--hosts`` hosts (each
with a ``root_password``), starts ``netinstall server run`` in another process on
loopback (SQLite registry, DHCP off), then runs ``--at-once`` hosts at a time, each
one a machine's whole install, one request after another with ``--think`` seconds
between them (a real install spends seconds to minutes there):

    config-tftp / config-http  the install boot config (half the hosts over TFTP:
                               pxelinux.cfg/01-<mac>; half over HTTP: /config/grub/...)
    enrol                      the installer enrols its key with the install token
    answerfile                 GET /answerfile/<mac> with the key (a root_password hash)
    progress                   14 installing events (steps, download 10%..100%)
    installed                  installed (netboot disarmed)
    config-local               the boot config again: must now boot the local disk
    running                    first boot's running (facts), the agent credential back
    checkin                    3 agent check-ins

and prints, per request kind, the count, errors and p50/p95/p99 latency, then the
server's CPU seconds and peak RSS over the run, and the load it measured: the requests a
second the hosts offered at most (``--at-once`` / ``--think``) and how many were served,
the server's busy share of a core (and its event loop thread's), the machine's, and
whether the server kept up (then the latencies are service times) or not (then they
are mostly queueing). Several ``--think`` values (``--sweep``) run one after the other,
each with a fresh server, and end with p99 per kind at each pacing; ``--think 0``
(hosts back to back) measures capacity. Every reply is checked (statuses, the
token in the install config, the local config after installed, the credential).
Not a test: nothing here is timed by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.loadclient import (
    CLOCK_TICKS,
    Connection,
    HttpError,
    Reply,
    cpu_split,
    peak_rss_mib,
    percentile,
    tftp_get,
)

HOST = "127.0.0.1"
VERSION = "1.0"
KINDS = (
    "config-tftp",
    "config-http",
    "enrol",
    "answerfile",
    "progress",
    "installed",
    "config-local",
    "running",
    "checkin",
)
STEPS = (
    ("plan", None),
    ("partition", None),
    *(("download", n / 10) for n in range(1, 11)),
    ("extract-root", None),
    ("bootloader", None),
)
CHECKINS = 3
# The installer's HTTP client (installer_core.report.ServerReporter): a request that gets
# no reply within HTTP_TIMEOUT, a broken connection or a 5xx is sent again on a new
# connection after 0.5 s, then 1 s: HTTP_ATTEMPTS in all.
HTTP_TIMEOUT = 10.0
HTTP_ATTEMPTS = 3
HTTP_BACKOFF = 0.5
# Server work by route, as the server's log names it (its request log, its TFTP log).
ROUTES = ("config", "enrol", "answerfile", "events", "checkin")
_ACCESS = re.compile(r"netinstall\.http: (\S+) (?:GET|POST) (\S+) (\d{3}) ")
_TFTP_START = re.compile(
    r"netinstall\.tftp: tftp (\S+):\d+ pxelinux\.cfg/\S+: (?:\d+ bytes in|failed)"
)
_TOKEN = re.compile(r"netinstall\.token=([A-Za-z0-9_-]+)")
_SERVING = re.compile(r"serving: TFTP [^:]+:(\d+) .*HTTP [^:]+:(\d+)")
NETINSTALL = Path(sys.executable).parent / "netinstall"


def mac_of(index: int) -> str:
    return "52:54:" + ":".join(f"{(index >> s) & 0xFF:02x}" for s in (24, 16, 8, 0))


def check(condition: bool, problem: str) -> None:
    if not condition:
        raise HttpError(problem)


def address_of(index: int) -> str:
    """The loopback address host ``index`` speaks from (each host has its own)."""
    return f"127.{1 + index // 62500}.{index // 250 % 250}.{index % 250 + 1}"


def prepare(directory: Path, hosts: int, *init: str) -> None:
    """A server directory with ``hosts`` hosts of the default profile, each with a root
    password (its hash given, so that setting up does not hash a thousand passwords).
    ``init``: more ``server init`` options (``--db URL``)."""
    from pxe_server.passwords import hash_password  # noqa: PLC0415 - after sys.path
    from pxe_server.registry import Registry  # noqa: PLC0415

    netboot, repo = directory.parent / "netboot", directory.parent / "repo"
    netboot.mkdir()
    repo.mkdir()
    (netboot / "pxelinux.0").write_bytes(b"\x7fpxelinux" * 100)
    argv = [str(NETINSTALL), "server", "init", str(directory), "--netboot", str(netboot)]
    argv += ["--repo", str(repo), *init]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    password = hash_password("fleet-password")
    with Registry.open(directory) as registry:
        for index in range(hosts):
            variables = {"root_password": password}
            registry.add_host(mac_of(index), name=f"host{index}", variables=variables)


def route_of(kind: str) -> str:
    """The server route a request kind is served by (``ROUTES``)."""
    if kind.startswith("config"):
        return "config"
    return {"progress": "events", "installed": "events", "running": "events"}.get(kind, kind)


def route_of_path(path: str) -> str | None:
    """The route (``ROUTES``) a request path of the server's log is, None if none."""
    if path.startswith("/config/"):
        return "config"
    if path.startswith("/answerfile/"):
        return "answerfile"
    last = path.rsplit("/", 1)[-1]
    return last if path.startswith("/api/v1/hosts/") and last in ROUTES else None


class Fleet:
    def __init__(
        self,
        tftp_port: int,
        http_port: int,
        think: float,
        http_timeout: float = HTTP_TIMEOUT,
        *,
        more: tuple[tuple[int, int], ...] = (),
    ) -> None:
        """``more``: the (TFTP, HTTP) ports of more servers of the same registry; host
        ``index`` speaks to server ``index % (1 + len(more))`` for its whole install."""
        self.servers = ((tftp_port, http_port), *more)
        self.think = think
        self.http_timeout = http_timeout
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.errors: collections.Counter[str] = collections.Counter()
        self.first_error: dict[str, str] = {}
        self.done = 0
        # Requests the hosts meant to make, per (address, route): what the server should
        # have done once each; and the attempts past the first (timeouts, 5xx, resends).
        self.meant: collections.Counter[tuple[str, str]] = collections.Counter()
        self.retried: collections.Counter[str] = collections.Counter()
        self.shed: collections.Counter[str] = collections.Counter()
        self.tftp_resent = [0]

    async def timed(self, kind: str, coroutine: object, index: int) -> object:
        self.meant[address_of(index), route_of(kind)] += 1
        start = time.perf_counter()
        try:
            result = await coroutine  # type: ignore[misc]
        except (OSError, TimeoutError, HttpError, ValueError) as exc:
            self.errors[kind] += 1
            self.first_error.setdefault(kind, f"{type(exc).__name__}: {exc}")
            raise
        self.latency[kind].append(time.perf_counter() - start)
        await self.pause()
        return result

    async def pause(self) -> None:
        """A host's time between two requests: ``think`` on average, uniformly 0.5x to
        1.5x (hosts do not move in step)."""
        if self.think:
            await asyncio.sleep(self.think * random.uniform(0.5, 1.5))  # noqa: S311

    async def config(self, index: int) -> str:
        """The boot config as the boot loader fetches it: TFTP, or HTTP on a connection of
        its own (GRUB's http module opens one per file)."""
        mac = mac_of(index)
        if index % 2 == 0:
            data = await tftp_get(
                HOST,
                self.servers[index % len(self.servers)][0],
                f"pxelinux.cfg/01-{mac.replace(':', '-')}",
                source=address_of(index),
                resent=self.tftp_resent,
            )
            return data.decode()
        path = f"/config/grub/grub.cfg-01-{mac.replace(':', '-')}"
        conn = self.connection(index)
        try:
            reply = await self.call(conn, "config", "GET", path)
        finally:
            conn.close()
        if reply.status != 200:
            raise HttpError(f"config {reply.status}: {reply.body[:200]!r}")
        return reply.body.decode()

    async def post(
        self, conn: Connection, path: str, secret: str, body: Mapping[str, object]
    ) -> dict[str, object]:
        headers = {"Authorization": f"Bearer {secret}"}
        route = path.rsplit("/", 1)[1]  # enrol, events, checkin
        reply = await self.call(
            conn, route, "POST", path, body={"protocol": 2, **body}, headers=headers
        )
        if reply.status != 200:
            raise HttpError(f"POST {path}: {reply.status} {reply.body[:200]!r}")
        return reply.json()

    async def call(
        self,
        conn: Connection,
        route: str,
        method: str,
        path: str,
        *,
        body: object = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """One request as the installer sends it: ``HTTP_ATTEMPTS`` attempts, each on a
        new connection after a timeout, a broken connection or a 5xx; the last reply."""
        for attempt in range(HTTP_ATTEMPTS):
            if attempt:
                self.retried[route] += 1
                await asyncio.sleep(HTTP_BACKOFF * 2 ** (attempt - 1))
            try:
                reply = await conn.request(method, path, body=body, headers=headers)
            except (OSError, TimeoutError, HttpError, ValueError):
                conn.close()
                if attempt == HTTP_ATTEMPTS - 1:
                    raise
                continue
            if reply.status < 500 or attempt == HTTP_ATTEMPTS - 1:
                return reply
            if reply.status == 503:
                self.shed[route] += 1
        raise AssertionError("unreachable: the last attempt returns or raises")

    def connection(self, index: int) -> Connection:
        port = self.servers[index % len(self.servers)][1]
        return Connection(HOST, port, timeout=self.http_timeout, source=address_of(index))

    async def host(self, index: int) -> None:
        """One machine's install, each client on connections of its own as the real ones:
        the boot loader opens one per file (GRUB); the installer's reporter keeps one
        (enrolment, progress, installed: seconds apart, within the server's keep-alive)
        and its fetcher another (the answer file); first boot opens its own (running),
        and the agent a new one per check-in (300 s apart: the server has closed the
        last one after 10 s idle)."""
        mac = mac_of(index)
        api = f"/api/v1/hosts/{mac}"
        conn = self.connection(index)  # the installer's reporter
        kind = "config-tftp" if index % 2 == 0 else "config-http"
        try:
            config = str(await self.timed(kind, self.config(index), index))
            found = _TOKEN.search(config)
            check(found is not None, f"{mac}: no install token in its config")
            assert found is not None  # noqa: S101 - for the type checker
            token, key = found[1], f"fleet-key-{index:08d}-0123456789abcdefghijklmn"
            await self.timed("enrol", self.post(conn, f"{api}/enrol", token, {"key": key}), index)
            answer = await self.timed("answerfile", self.answer(index, mac, key), index)
            hashed = b'<root-password type="hash">$6$' in answer  # type: ignore[operator]
            check(hashed, f"{mac}: the answer file has no root password hash")
            for step, progress in STEPS:
                event = {"state": "installing", "step": step, "progress": progress}
                await self.timed("progress", self.post(conn, f"{api}/events", key, event), index)
            await self.timed(
                "installed", self.post(conn, f"{api}/events", key, {"state": "installed"}), index
            )
            conn.close()  # the installer is done
            local = str(await self.timed("config-local", self.config(index), index))
            check("netinstall.token=" not in local, f"{mac}: an install config after installed")
            facts = {"payload_version": VERSION, "hostname": f"host{index}"}
            running = {"state": "running", "facts": facts}
            conn = self.connection(index)  # first boot's
            reply = await self.timed(
                "running", self.post(conn, f"{api}/events", key, running), index
            )
            conn.close()
            credential = str(reply["agent_credential"])  # type: ignore[index]
            for _ in range(CHECKINS):
                body = {"running_version": VERSION, "state": "running"}
                conn = self.connection(index)  # the agent's, one per check-in
                await self.timed(
                    "checkin", self.post(conn, f"{api}/checkin", credential, body), index
                )
                conn.close()
            self.done += 1
        except (OSError, TimeoutError, HttpError, ValueError, KeyError):
            pass  # counted by timed(); the host's install stops there
        finally:
            conn.close()

    async def answer(self, index: int, mac: str, key: str) -> bytes:
        headers = {"Authorization": f"Bearer {key}"}
        conn = self.connection(index)  # the installer's fetcher
        try:
            path = f"/answerfile/{mac}"
            reply = await self.call(conn, "answerfile", "GET", path, headers=headers)
        finally:
            conn.close()
        if reply.status != 200:
            raise HttpError(f"answer file {reply.status}: {reply.body[:200]!r}")
        return reply.body

    async def run(self, hosts: int, at_once: int) -> float:
        queue = iter(range(hosts))

        async def worker() -> None:
            await asyncio.sleep(random.uniform(0, self.think))  # noqa: S311 - staggered
            for index in queue:
                await self.host(index)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(at_once)))
        return time.perf_counter() - start


def start_server(directory: Path, log: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    argv = [str(NETINSTALL), "server", "run", str(directory), "--bind", HOST]
    with log.open("wb") as out:
        child = subprocess.Popen([*argv, "--tftp-port", "0", "--http-port", "0"], stderr=out)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = _SERVING.search(log.read_text(errors="replace"))
        if found:
            return child, int(found[1]), int(found[2])
        if child.poll() is not None:
            raise SystemExit(f"the server stopped: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    child.kill()
    raise SystemExit("the server did not start in 30 s")


def server_work(log: Path) -> collections.Counter[tuple[str, str]]:
    """What the server did, per (client address, route), from its log: every request it
    answered with other than 503 (a 503 is a refusal that did no work), and every TFTP
    transfer of a boot config it started (ended sent, or failed)."""
    done: collections.Counter[tuple[str, str]] = collections.Counter()
    with log.open(errors="replace") as lines:
        for line in lines:
            if (found := _ACCESS.search(line)) is not None:
                route = route_of_path(found[2])
                if route is not None and found[3] != "503":
                    done[found[1], route] += 1
            elif (found := _TFTP_START.search(line)) is not None:
                done[found[1], "config"] += 1
    return done


@dataclass(frozen=True)
class Usage:
    user: float  # the server's CPU seconds over the run
    system: float
    rss: float  # its peak RSS, MiB
    client: float  # the clients' CPU seconds (this process)
    busiest: float  # CPU seconds of the server's busiest thread (its event loop's)
    machine: float  # share of all the machine's cores busy over the run (anyone's work)

    @property
    def cpu(self) -> float:
        return self.user + self.system


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of process ``pid`` so far."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found[int(task.name)] = sum(cpu_split_of(task / "stat"))
        except (OSError, ValueError):  # a thread that ended meanwhile
            continue
    return found


def cpu_split_of(stat: Path) -> tuple[float, float]:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def machine_ticks() -> tuple[int, int]:
    """The machine's CPU ticks so far, all cores: (busy, all)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


SERVED_SHARE = 0.8  # served under this share of the most offered: saturated
BUSY_SHARE = 0.9  # or the server's CPU at this share of a core or more


@dataclass(frozen=True)
class Result:
    """One run's figures, for the sweep's summary."""

    think: float
    at_once: int
    requests: int
    elapsed: float
    usage: Usage
    p99: dict[str, float]  # ms, per kind
    errors: int
    twice: int

    @property
    def offered(self) -> float:
        """The most requests a second the hosts would send: each sends its next one
        ``think`` seconds (on average) after its last reply; inf without think time."""
        return self.at_once / self.think if self.think else float("inf")

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed


def load_lines(result: Result) -> list[str]:
    """What load the run offered and how busy the server was: read the latencies with it."""
    usage, rate = result.usage, result.rate
    cpu_each = usage.cpu / max(result.requests, 1)
    if result.think:
        offered = (f"{result.at_once} hosts, each sending its next request {result.think:g} s "
                   f"(0.5-1.5x) after its last reply: at most {result.offered:,.0f} requests/s "
                   f"offered, {rate:,.0f} served ({rate / result.offered:.0%})")  # fmt: skip
    else:
        offered = (f"{result.at_once} hosts sending back to back (no think time): as much "
                   f"as the server takes; {rate:,.0f} requests/s served")  # fmt: skip
    busy = (f"server busy: {usage.cpu:.1f} s CPU in {result.elapsed:.1f} s = "
            f"{usage.cpu / result.elapsed:.0%} of a core; its event loop's thread "
            f"{usage.busiest / result.elapsed:.0%}; the machine's {os.cpu_count()} cores "
            f"{usage.machine:.0%} busy (server, clients and anything else running)")  # fmt: skip
    capacity = (f"capacity at {cpu_each * 1e6:.0f} us of server CPU a request: about "
                f"{1 / cpu_each:,.0f} requests/s on one core")  # fmt: skip
    # Saturated: the hosts got well under the most they would send (the ramp-up and the
    # last hosts' tail alone cost a run about 10%), or the server's Python, one core's
    # worth under the GIL, was nearly always busy.
    saturated = rate < SERVED_SHARE * result.offered or usage.cpu >= BUSY_SHARE * result.elapsed
    full = usage.machine >= BUSY_SHARE
    verdict = (
        "saturated (served under 80% of the most offered, or the server at 90% of a core "
        "or more"
        + ("; the machine's cores were full too" if full else "")
        + "): these latencies are mostly time spent queueing"
        if saturated
        else "not saturated: these latencies are service times, not a queue"
    )
    return [offered, busy, capacity, verdict]


def report(fleet: Fleet, hosts: int, elapsed: float, usage: Usage, log: Path) -> int:
    """Print the run's figures; the count of requests the server did more than once."""
    total = sum(len(v) for v in fleet.latency.values())
    errors = sum(fleet.errors.values())
    print(f"{hosts} hosts, {fleet.done} completed, {errors} errors, {total} requests "
          f"in {elapsed:.1f} s ({total / elapsed:.0f} requests/s)")  # fmt: skip
    print(f"{'kind':14}{'count':>7}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for kind in KINDS:
        values = fleet.latency.get(kind, [])
        cells = [percentile(values, share) * 1000 for share in (0.5, 0.95, 0.99)]
        print(f"{kind:14}{len(values):7}{fleet.errors[kind]:8}"
              + "".join(f"{c:9.1f}" for c in cells))  # fmt: skip
    for kind, said in fleet.first_error.items():
        print(f"  first {kind} error: {said}")
    done = server_work(log)
    extra: collections.Counter[str] = collections.Counter()
    for (address, route), count in done.items():
        extra[route] += max(0, count - fleet.meant[address, route])
    print(f"{'route':14}{'meant':>7}{'served':>8}{'twice':>7}{'retried':>9}{'shed':>6}")
    for route in ROUTES:
        meant = sum(n for (_, r), n in fleet.meant.items() if r == route)
        served = sum(n for (_, r), n in done.items() if r == route)
        print(f"{route:14}{meant:7}{served:8}{extra[route]:7}{fleet.retried[route]:9}"
              f"{fleet.shed[route]:6}")  # fmt: skip
    print(f"duplicated work: {sum(extra.values())} requests served or TFTP transfers started "
          f"more than once; TFTP packets resent by clients: {fleet.tftp_resent[0]}")  # fmt: skip
    cpu = usage.cpu
    print(f"server: {cpu:.1f} s CPU ({usage.user:.1f} user, {usage.system:.1f} system) in "
          f"{elapsed:.1f} s ({cpu / elapsed:.0%} of a core), "
          f"{cpu / max(total, 1) * 1e6:.0f} us a request, peak RSS {usage.rss:.0f} MiB; "
          f"the clients: {usage.client:.1f} s CPU")  # fmt: skip
    return sum(extra.values())


def run_once(args: argparse.Namespace, think: float) -> Result:
    """One run at ``think``: a fresh server directory and server; its report printed."""
    tmp = Path(tempfile.mkdtemp(prefix="fleet-"))
    directory, log = tmp / "server", tmp / "server.log"
    spy = None
    try:
        prepare(directory, args.hosts)
        child, tftp_port, http_port = start_server(directory, log)
        try:
            if args.profile:
                py_spy = Path(sys.executable).parent / "py-spy"
                spy = subprocess.Popen(
                    [str(py_spy), "record", "-p", str(child.pid), "-o", str(args.profile),
                     "--nonblocking", "-r", "200", "--format", "raw", "--threads",
                     *(["--gil"] if args.gil else [])],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            fleet = Fleet(tftp_port, http_port, think, args.http_timeout)
            before, client_before = cpu_split(child.pid), sum(cpu_split(os.getpid()))
            threads_before, machine_before = thread_cpu(child.pid), machine_ticks()
            elapsed = asyncio.run(fleet.run(args.hosts, args.at_once))
            after, threads_after, machine_after = (
                cpu_split(child.pid),
                thread_cpu(child.pid),
                machine_ticks(),
            )
            busy, ticks = (a - b for a, b in zip(machine_after, machine_before, strict=True))
            usage = Usage(
                after[0] - before[0],
                after[1] - before[1],
                peak_rss_mib(child.pid),
                sum(cpu_split(os.getpid())) - client_before,
                max(t - threads_before.get(tid, 0.0) for tid, t in threads_after.items()),
                busy / max(ticks, 1),
            )
        finally:
            if spy is not None:
                spy.send_signal(2)
                spy.wait(timeout=60)
            child.terminate()
            child.wait(timeout=30)
        print(f"-- think {think:g} s")
        twice = report(fleet, args.hosts, elapsed, usage, log)
        p99 = {k: percentile(fleet.latency.get(k, []), 0.99) * 1000 for k in KINDS}
        total = sum(len(v) for v in fleet.latency.values())
        result = Result(think, args.at_once, total, elapsed, usage, p99,
                        sum(fleet.errors.values()), twice)  # fmt: skip
        for line in load_lines(result):
            print(line)
        return result
    finally:
        if args.keep:
            shutil.copytree(tmp, args.keep / f"think-{think:g}", dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)


def summary(results: list[Result]) -> None:
    """The sweep: p99 per kind at each pacing, with the load offered and served."""
    short = {"config-tftp": "cfg-tftp", "config-http": "cfg-http", "answerfile": "answer",
             "progress": "progr", "installed": "instd", "config-local": "cfg-loc"}  # fmt: skip
    print("\nsweep: p99 ms per kind at each pacing (offered: the most the hosts would send)")
    head = f"{'think s':>8}{'offered/s':>10}{'served/s':>9}{'core':>6}{'us/req':>7}"
    print(head + "".join(f"{short.get(k, k):>9}" for k in KINDS))
    for r in results:
        offered = f"{r.offered:,.0f}" if r.think else "max"
        row = (f"{r.think:8g}{offered:>10}{r.rate:9,.0f}{r.usage.cpu / r.elapsed:6.0%}"
               f"{r.usage.cpu / max(r.requests, 1) * 1e6:7.0f}")  # fmt: skip
        print(row + "".join(f"{r.p99[k]:9.1f}" for k in KINDS))


def thinks(text: str) -> list[float]:
    """``--think``: one pacing or several, comma-separated (a sweep)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds, e.g. 0.1 or 0.1,0.2,0.4") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: one or more seconds >= 0")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--at-once", type=int, default=200)
    parser.add_argument(
        "--think",
        type=thinks,
        default=[0.1],
        help="seconds between a host's requests; several, comma-separated, run one after "
        "the other and summed up (a sweep: e.g. 0,0.1,0.2,0.4; 0 measures capacity)",
    )
    parser.add_argument(
        "--sweep", action="store_const", const=[0.0, 0.1, 0.2, 0.4], dest="think",
        help="--think 0,0.1,0.2,0.4",
    )  # fmt: skip
    parser.add_argument(
        "--http-timeout",
        type=float,
        default=HTTP_TIMEOUT,
        help="seconds an HTTP attempt waits for its reply (the installer's: 10)",
    )
    parser.add_argument("--keep", type=Path, help="keep the server directory and log here")
    parser.add_argument(
        "--profile", type=Path, help="py-spy record the server (collapsed stacks) into this file"
    )
    parser.add_argument(
        "--gil", action="store_true", help="profile only the threads holding the GIL (CPU)"
    )
    args = parser.parse_args()
    results = [run_once(args, think) for think in args.think]
    if len(results) > 1:
        summary(results)
    if any(r.errors or r.twice for r in results):
        os._exit(1)


if __name__ == "__main__":
    main()
