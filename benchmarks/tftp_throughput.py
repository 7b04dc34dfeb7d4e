"""Throughput of pxe_server.tftp on loopback against its peers, measured in one run.

    .venv/bin/python benchmarks/tftp_throughput.py [--mb 50] [--blksizes 512,1468]
                                                   [--clients 10] [--rounds 3]
    make bench

Serves one file of --mb MiB and fetches it with curl (the TFTP client of this machine),
once per blksize with one client, then with --clients at once (blksize 1468, each client
from an address of its own in 127.0.0.0/8, as hosts are); prints MB/s (the median of
--rounds) per server and each peer's ratio to ours. Our server runs in this process; the
clients are separate processes.

Peers: dnsmasq's TFTP server when it is installed. It only listens on port 69, so as root
the benchmark re-runs itself in a network namespace of its own (unshare --net), where
port 69 is free and nothing outside can reach it; elsewhere it measures ours alone and
says so. Not a test: nothing here is timed by the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pxe_server.tftp import TftpServer

NETNS_MARK = "NETINSTALL_TFTP_BENCH_NETNS"


def fetch(port: int, blksize: int, index: int, out: Path) -> str:
    address = f"127.0.{100 + index // 250}.{index % 250 + 1}"
    subprocess.run(
        ["curl", "-sS", "--max-time", "300", "--interface", address, "--tftp-blksize",
         str(blksize), "-o", str(out), f"tftp://127.0.0.1:{port}/payload.bin"],
        check=True,
    )  # fmt: skip
    return hashlib.sha256(out.read_bytes()).hexdigest()


@contextmanager
def ours(root: Path) -> Iterator[int]:
    server = TftpServer(root, lambda path, client: None, host="127.0.0.1", port=0)
    server.start()
    try:
        yield server.port
    finally:
        server.stop()


@contextmanager
def dnsmasq(root: Path) -> Iterator[int]:
    argv = [
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
        "--pid-file=", "--user=root", "--bind-interfaces", "--listen-address=127.0.0.1",
        "--enable-tftp", f"--tftp-root={root}", "--tftp-max=1000", "--log-facility=/dev/null",
    ]  # fmt: skip
    process = subprocess.Popen(argv)
    try:
        time.sleep(0.5)
        if process.poll() is not None:
            raise SystemExit(f"dnsmasq exited with {process.returncode}")
        yield 69
    finally:
        process.terminate()
        process.wait()


def measure(port: int, blksize: int, clients: int, *, work: Path, digest: str, size: int) -> float:
    outs = [work / f"out-{index}" for index in range(clients)]
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        digests = list(pool.map(lambda i: fetch(port, blksize, i, outs[i]), range(clients)))
    seconds = time.monotonic() - start
    if any(got != digest for got in digests):
        raise SystemExit("corrupt download")
    for out in outs:
        out.unlink()
    return size * clients / 1e6 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--blksizes", default="512,1468")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl (the TFTP client) is missing")
    peers = {}
    if shutil.which("dnsmasq") and os.environ.get(NETNS_MARK):
        peers["dnsmasq"] = dnsmasq
    elif shutil.which("dnsmasq") and os.geteuid() == 0 and shutil.which("unshare"):
        os.environ[NETNS_MARK] = "1"
        script = 'ip link set lo up && exec "$0" "$@"'
        argv = ["unshare", "--net", "sh", "-c", script, sys.executable, *sys.argv]
        os.execvp("unshare", argv)  # noqa: S606 - a fixed program, no shell of the caller's
    else:
        print("dnsmasq is not installed or this is not root: measuring ours alone")
    cases = [(int(size), 1) for size in args.blksizes.split(",")] + [(1468, args.clients)]
    with tempfile.TemporaryDirectory() as tmp:
        root, work = Path(tmp) / "root", Path(tmp) / "work"
        root.mkdir(mode=0o755)
        work.mkdir()
        payload = os.urandom(args.mb * 1024 * 1024)
        (root / "payload.bin").write_bytes(payload)
        digest = hashlib.sha256(payload).hexdigest()
        servers = {"ours": ours, **peers}
        rates: dict[tuple[str, int, int], float] = {}
        for name, start in servers.items():
            with start(root) as port:
                for blksize, clients in cases:
                    runs = [
                        measure(port, blksize, clients, work=work, digest=digest, size=len(payload))
                        for _ in range(args.rounds)
                    ]
                    rates[name, blksize, clients] = statistics.median(runs)
        print(f"TFTP, {args.mb} MiB, MB/s (median of {args.rounds}); peers as a ratio to ours")
        for blksize, clients in cases:
            base = rates["ours", blksize, clients]
            row = f"  blksize {blksize:>5}, {clients:>2} client(s): ours {base:7.1f}"
            for peer in peers:
                rate = rates[peer, blksize, clients]
                row += f"  {peer} {rate:7.1f} ({rate / base:.2f}x ours)"
            print(row)


if __name__ == "__main__":
    main()
