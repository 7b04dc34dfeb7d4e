"""Our TFTP server against dnsmasq, tftpd-hpa and atftpd, on loopback, in one run.

    make bench                       # the whole matrix, medians of 5
    .venv/bin/python benchmarks/tftp_throughput.py --rounds 1 --big-mb 20 --cases 1468,w16

The matrix (issue 18): an install.img-size file (--big-mb, random bytes) to one client at
blksize 512 and 1468 (curl), the same with windowsize 4 and 16 asked (atftp, the RFC 7440
client), a vmlinuz-size file (--kernel-mb) to 10 and 50 clients at once (curl, aggregate
MB/s, each client from an address of its own in 127.0.0.0/8 as hosts are) and a 1 KiB
file fetched --small-count times, --small-parallel at once (fetches/s; ours serves it
through its resolve() callback, as it serves each host's boot config). Every figure is
the median of --rounds; each peer's is also given as a ratio to ours.

The peers and atftp come from Debian's packages, unpacked into a cache (benchmarks/
peers.py); nothing is installed. They listen on port 69 only, so the benchmark re-runs
itself (as root) in a network namespace of its own (unshare --net), where port 69 is free
and nothing outside can reach it; it starts each server there and stops it after each
case. Each case runs on every server in turn, round after round (the load of a shared
machine drifts; a ratio is fair only between figures taken side by side). Whether a
server granted windowsize is read from its OACK, not from its docs. Not a test: nothing
here is timed by the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers as peer_packages  # benchmarks/ is no package

from pxe_server.tftp import TftpServer

NETNS_MARK = "NETINSTALL_TFTP_BENCH_NETNS"
HOST, PORT = "127.0.0.1", 69
BIG, KERNEL, SMALL = "install.img", "vmlinuz", "pxelinux.cfg/01-52-54-00-00-00-01"


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    name: str  # the file fetched
    blksize: int
    clients: int = 1  # at once
    window: int = 0  # windowsize asked (atftp) or 0 (curl, lockstep)
    count: int = 0  # fetches in all (the small-file rate); 0: one per client

    @property
    def unit(self) -> str:
        return "fetches/s" if self.count else "MB/s"

    @property
    def per(self) -> str:
        """What the server's CPU is counted per."""
        return "fetch" if self.count else "block"


CASES = [
    Case("512", "install.img, blksize 512, 1 client (curl)", BIG, 512),
    Case("1468", "install.img, blksize 1468, 1 client (curl)", BIG, 1468),
    Case("w4", "install.img, blksize 1468, windowsize 4 asked (atftp)", BIG, 1468, window=4),
    Case("w16", "install.img, blksize 1468, windowsize 16 asked (atftp)", BIG, 1468, window=16),
    Case("c10", "vmlinuz, blksize 1468, 10 clients at once (curl)", KERNEL, 1468, clients=10),
    Case("c50", "vmlinuz, blksize 1468, 50 clients at once (curl)", KERNEL, 1468, clients=50),
    Case("small", "boot config (1 KiB) xN, M at once (curl)", SMALL, 1468, clients=30, count=600),
]


# -- clients ------------------------------------------------------------------------------


def source_address(index: int) -> str:
    return f"127.0.{100 + index // 250}.{index % 250 + 1}"


def curl(names: list[str], blksize: int, index: int) -> list[int]:
    """Fetch NAMES one after the other from one curl process; the sizes it got."""
    argv = ["curl", "-sS", "--max-time", "300", "--interface", source_address(index)]
    argv += ["--tftp-blksize", str(blksize), "-w", "%{size_download}\n"]
    for name in names:
        argv += ["-o", "/dev/null", f"tftp://{HOST}:{PORT}/{name}"]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return [int(line) for line in done.stdout.split()]


def atftp(tools: peer_packages.Peers, name: str, blksize: int, window: int, out: Path) -> int:
    argv = [tools.program("atftp"), "--option", f"blksize {blksize}"]
    argv += ["--option", f"windowsize {window}", "-g", "-r", name, "-l", str(out), HOST, str(PORT)]
    subprocess.run(argv, env=tools.env, capture_output=True, check=True, timeout=300)
    size = out.stat().st_size
    out.unlink()
    return size


def granted(name: str, options: dict[str, str]) -> dict[str, str]:
    """The options a server acknowledges for NAME (its OACK), the transfer then cancelled."""
    packet = b"\0\x01" + name.encode() + b"\0octet\0"
    packet += b"".join(f"{key}\0{value}\0".encode() for key, value in options.items())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(packet, (HOST, PORT))
        reply, peer = sock.recvfrom(65536)
        sock.sendto(b"\0\x05\0\0cancelled\0", peer)
    if reply[:2] != b"\0\x06":
        return {}
    items = reply[2:].split(b"\0")[:-1]
    return {
        key.decode(): value.decode() for key, value in zip(items[0::2], items[1::2], strict=False)
    }


def wait_until_serving(name: str, process: subprocess.Popen[bytes] | None = None) -> None:
    """Return once a server answers a request for NAME (PROCESS: the server, if it is one)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{process.args!r} exited with {process.returncode}")
        try:
            granted(name, {"tsize": "0"})
        except OSError:
            time.sleep(0.1)
        else:
            return
    raise SystemExit("the server did not answer within 10 s")


# -- servers ------------------------------------------------------------------------------

Running = AbstractContextManager["subprocess.Popen[bytes]"]  # a server, started till exit
Server = Callable[[Path, peer_packages.Peers], Running]


def cpu_seconds(pid: int) -> float:
    """The CPU time of process PID: its live threads' (the scheduler's figure, in ns), its
    ended threads' (atftpd runs one per transfer) and that of the children it has reaped,
    in clock ticks. tftpd-hpa's children (one per transfer) are never counted: it lets
    the kernel reap them."""
    ran, live_ticks = 0, 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            ran += int((task / "schedstat").read_text().split()[0])
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            live_ticks += int(fields[11]) + int(fields[12])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime: every thread, ended ones too
    reaped = int(fields[13]) + int(fields[14])  # cutime, cstime
    return ran / 1e9 + (max(0, ticks - live_ticks) + reaped) / os.sysconf("SC_CLK_TCK")


def serve_ours(root: Path) -> None:
    """Our server in this process until SIGTERM: a process of its own, as `netinstall
    server run` is, and as each peer is; logging a line per transfer as it does (into
    /dev/null, as dnsmasq's log goes here)."""
    logging.basicConfig(
        level=logging.INFO, filename=os.devnull, format="%(asctime)s %(name)s: %(message)s"
    )
    small = (root / SMALL).read_bytes()

    def resolve(path: str, client: tuple[str, int]) -> bytes | None:
        # the per-host boot config, given by the callback as the real server's resolve()
        # gives a rendered one (the peers serve the same bytes from a file)
        return small if path == SMALL else None

    # and, as the real server's resolve_now does for a config its render cache holds (there
    # after one read of the host), answered on the loop's thread
    server = TftpServer(root, resolve, host=HOST, port=PORT, resolve_now=resolve)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda number, frame: stop.set())
    stop.wait()
    server.stop()


def ours(root: Path, tools: peer_packages.Peers) -> Running:
    return spawned([sys.executable, __file__, "--serve-ours", str(root)], tools)


@contextmanager
def spawned(argv: list[str], tools: peer_packages.Peers) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(argv, env=tools.env, stdout=subprocess.DEVNULL)
    try:
        wait_until_serving(BIG, process)
        yield process
    finally:
        process.terminate()
        process.wait()


def dnsmasq(root: Path, tools: peer_packages.Peers) -> Running:
    argv = [
        tools.program("dnsmasq-base"), "--keep-in-foreground", "--conf-file=/dev/null",
        "--port=0", "--pid-file=", "--user=root", "--bind-interfaces",
        f"--listen-address={HOST}", "--enable-tftp", f"--tftp-root={root}", "--tftp-max=1000",
        "--log-facility=/dev/null",
    ]  # fmt: skip
    return spawned(argv, tools)


def tftpd_hpa(root: Path, tools: peer_packages.Peers) -> Running:
    # every address of the namespace (only loopback is up): its -a fails there (exit 66)
    argv = [tools.program("tftpd-hpa"), "-L", "-u", "root", "-s", str(root)]
    return spawned(argv, tools)


def atftpd(root: Path, tools: peer_packages.Peers) -> Running:
    argv = [
        tools.program("atftpd"), "--daemon", "--no-fork", "--user", "root.root",
        "--bind-address", HOST, "--port", str(PORT), "--maxthread", "1000",
        "--logfile", "/dev/null", "--verbose=0", str(root),
    ]  # fmt: skip
    return spawned(argv, tools)


SERVERS: dict[str, Server] = {
    "ours": ours,
    "dnsmasq": dnsmasq,
    "tftpd-hpa": tftpd_hpa,
    "atftpd": atftpd,
}


# -- one measurement ----------------------------------------------------------------------


def measure(
    case: Case, sizes: dict[str, int], tools: peer_packages.Peers, work: Path
) -> tuple[float, int]:
    """CASE's rate, and the datagrams of data it took (blocks; for the small file, fetches)."""
    expected = sizes[case.name]
    start = time.monotonic()
    if case.window:
        got = [atftp(tools, case.name, case.blksize, case.window, work / "out")]
    else:
        total = case.count or case.clients
        shares = [total // case.clients + (i < total % case.clients) for i in range(case.clients)]
        with ThreadPoolExecutor(max_workers=case.clients) as pool:
            runs = pool.map(
                lambda i: curl([case.name] * shares[i], case.blksize, i), range(case.clients)
            )
            got = [size for run in runs for size in run]
    seconds = time.monotonic() - start
    if got != [expected] * len(got):
        raise SystemExit(f"{case.label}: short download ({got[:3]}..., {expected} expected)")
    if case.count:
        return len(got) / seconds, len(got)
    return expected * len(got) / 1e6 / seconds, (expected // case.blksize + 1) * len(got)


def window_note(case: Case) -> str:
    if not case.window:
        return ""
    options = granted(case.name, {"blksize": str(case.blksize), "windowsize": str(case.window)})
    return "" if options.get("windowsize") == str(case.window) else " (not granted)"


def enter_namespace() -> None:
    if os.environ.get(NETNS_MARK):
        return
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        raise SystemExit("the benchmark needs root and unshare (it runs in a network namespace)")
    os.environ[NETNS_MARK] = "1"
    script = 'ip link set lo up && exec "$0" "$@"'
    argv = ["unshare", "--net", "sh", "-c", script, sys.executable, *sys.argv]
    os.execvp("unshare", argv)  # noqa: S606 - a fixed program, no shell of the caller's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-mb", type=float, default=72)
    parser.add_argument("--kernel-mb", type=float, default=12)
    parser.add_argument("--small-count", type=int, default=600)
    parser.add_argument("--small-parallel", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--cases", default=",".join(case.key for case in CASES))
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--serve-ours", type=Path, help=argparse.SUPPRESS)  # ours, spawned
    args = parser.parse_args()
    if args.serve_ours:
        serve_ours(args.serve_ours)
        return
    if shutil.which("curl") is None:
        raise SystemExit("curl (the TFTP client) is missing")
    tools = peer_packages.ensure()
    enter_namespace()
    servers = {name: SERVERS[name] for name in args.servers.split(",")}
    keys = args.cases.split(",")
    cases = []
    for case in CASES:
        if case.key not in keys:
            continue
        if case.count:
            label = case.label.replace("xN", f"x{args.small_count}")
            label = label.replace("M at", f"{args.small_parallel} at")
            small = (args.small_parallel, 0, args.small_count)
            cases.append(Case(case.key, label, case.name, case.blksize, *small))
        else:
            cases.append(case)
    with tempfile.TemporaryDirectory() as tmp:
        root, work = Path(tmp) / "root", Path(tmp) / "work"
        (root / "pxelinux.cfg").mkdir(parents=True)
        work.mkdir()
        contents = {
            BIG: os.urandom(int(args.big_mb * 1e6)),
            KERNEL: os.urandom(int(args.kernel_mb * 1e6)),
            SMALL: b"".join(b"# host 52:54:00:00:00:01, line %04d\n" % i for i in range(30))[:1024],
        }
        for name, content in contents.items():
            (root / name).write_bytes(content)
        sizes = {name: len(content) for name, content in contents.items()}
        runs: dict[tuple[str, str], list[float]] = {}
        costs: dict[tuple[str, str], list[float]] = {}  # server CPU, us a block (or fetch)
        notes: dict[tuple[str, str], str] = {}
        # Each case on every server in turn, round after round: the load of this shared
        # machine drifts within seconds, and a ratio is fair only between figures taken
        # side by side. Each server is started for its case and stopped after it.
        for round_number in range(1, args.rounds + 1):
            for case in cases:
                for name, start in servers.items():
                    with start(root, tools) as process:
                        before = cpu_seconds(process.pid)
                        rate, blocks = measure(case, sizes, tools, work)
                        cost = (cpu_seconds(process.pid) - before) * 1e6 / blocks
                        if round_number == 1:
                            notes[name, case.key] = window_note(case)
                    runs.setdefault((name, case.key), []).append(rate)
                    costs.setdefault((name, case.key), []).append(cost)
                    print(f"  round {round_number} {name:10} {case.label}: "
                          f"{rate:,.1f} {case.unit}{notes[name, case.key]}, "
                          f"server CPU {cost:.2f} us a {case.per}",
                          flush=True)  # fmt: skip
        rates = {key: statistics.median(values) for key, values in runs.items()}
        cpu = {key: statistics.median(values) for key, values in costs.items()}
    report(cases, list(servers), rates, notes, args)
    print()
    print("Server CPU (user and system, all threads and reaped children; not tftpd-hpa's "
          "forked transfers), median, us a block (the small file: us a fetch); each peer "
          "also as a ratio to ours")  # fmt: skip
    report(cases, list(servers), cpu, {key: "" for key in cpu}, args, cpu=True)


def report(
    cases: list[Case],
    names: list[str],
    rates: dict[tuple[str, str], float],
    notes: dict[tuple[str, str], str],
    args: argparse.Namespace,
    *,
    cpu: bool = False,
) -> None:
    """A table of RATES (CPU: of server CPU figures) by case and server."""
    if not cpu:
        print()
        print(f"TFTP on loopback, median of {args.rounds}; install.img {args.big_mb:g} MB, "
              f"vmlinuz {args.kernel_mb:g} MB; each peer also as a ratio to ours")  # fmt: skip
    header = ["", *names]
    rows = []
    for case in cases:
        row = [f"{case.label}, {f'us a {case.per}' if cpu else case.unit}"]
        for name in names:
            rate = rates[name, case.key]
            cell = f"{rate:,.{2 if cpu else 1}f}{notes[name, case.key]}"
            if name != "ours" and "ours" in names:
                cell += f" ({rate / rates['ours', case.key]:.2f}x)"
            row.append(cell)
        rows.append(row)
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
