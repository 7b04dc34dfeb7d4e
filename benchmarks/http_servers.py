"""Which HTTP server should serve the netboot tree and the repository? Measured, not guessed.

    .venv/bin/python benchmarks/http_servers.py --suite big --suite small [--rounds 5]
    .venv/bin/python benchmarks/http_servers.py --suite candidates [--size-mb 100]

``--suite big`` and ``--suite small`` measure our server (``netinstall server run`` in
another process, SQLite registry) against nginx on loopback, in one run, medians of
``--rounds``: nginx is extracted from Debian's package (``apt-get download nginx`` and
``dpkg-deb -x`` into ~/.cache/netinstall/bench-peers/, never installed) and started by
the benchmark with a configuration of its own (one worker process, access log on, as
ours), then stopped.

* big: an install.img-size file (72 MB) and the root archive's size (191 MB) from
  ``/boot/``, one client and 50 at once (half of them with ``Range``): MB/s.
* small: a host's boot config (``/config/pxelinux.cfg/01-<mac>``: an install config,
  each fetch hands out the host's ticket, a registry write) and its answer file (the
  host has a ``root_password``; fetched with its enrolled install key) on 1 and 50
  keep-alive connections: requests a second and p50/p99; nginx serves static copies.

``--suite candidates`` is the original choice of a library (below).

One run serves the same 100 MB file with each candidate on loopback and fetches it with
50 concurrent clients (half of them with a ``Range`` header for the second half of the
file), then prints each server's wall time, its peak memory and the RATIOS between them.
Machines are noisy: compare the ratios of one run, not absolute timings across runs.

    .venv/bin/python benchmarks/http_servers.py [--size-mb 100] [--clients 50]

Each server runs in its own process (so the clients' threads do not share its GIL):

* ``aiohttp``: one asyncio process, ``web.FileResponse`` (sendfile, Range built in).
* ``stdlib``: ``http.server.ThreadingHTTPServer``, a thread per connection, with the
  Range handling that the standard library lacks written here (and ``socket.sendfile``).
* ``waitress``: werkzeug's ``send_file`` (Range built in) under waitress (a fixed pool
  of worker threads; no sendfile). Skipped if werkzeug or waitress is not installed.

Not a test: nothing here is timed by the test suite.
"""

# Each candidate is imported where it runs, so that a missing one is skipped, not fatal.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CANDIDATES = ("aiohttp", "stdlib", "waitress")
SUITES = ("candidates", "big", "small")
_CHUNK = 1 << 20
PEERS = Path.home() / ".cache" / "netinstall" / "bench-peers"
BIG_FILES = {"install.img": 72, "root.tar.zst": 191}  # name: MB
SMALL_SECONDS = 3.0  # each small-request measurement
MAC = "52:54:00:aa:bb:01"


# -- the servers (run in a child process: `--serve NAME FILE`) ---------------------------


def _serve_aiohttp(path: Path, sock: socket.socket) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/file", handler)
    web.run_app(app, sock=sock, print=None, access_log=None)


def _serve_stdlib(path: Path, sock: socket.socket) -> None:
    size = path.stat().st_size

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            start, end = 0, size - 1
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
            if match and (match[1] or match[2]):
                if match[1]:
                    start = int(match[1])
                    end = min(int(match[2]), size - 1) if match[2] else size - 1
                else:
                    start = max(0, size - int(match[2]))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            with path.open("rb") as file:
                self.connection.sendfile(file, start, end - start + 1)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(sock.getsockname()[:2], Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.serve_forever()


def _serve_waitress(path: Path, sock: socket.socket) -> None:
    import waitress
    from werkzeug.utils import send_file
    from werkzeug.wrappers import Request, Response

    @Request.application
    def app(request: Request) -> Response:
        return send_file(path, request.environ, conditional=True)

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "Task queue depth is 30"
    waitress.serve(app, sockets=[sock], threads=16, _quiet=True)


def serve(name: str, path: Path) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(sock.getsockname()[1], flush=True)
    {"aiohttp": _serve_aiohttp, "stdlib": _serve_stdlib, "waitress": _serve_waitress}[name](
        path, sock
    )


# -- the clients -----------------------------------------------------------------------


def fetch(port: int, range_header: str | None, path: str = "/file") -> int:
    """GET ``path`` over a raw socket; return the body's length (checked against the header)."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as conn:
        extra = f"Range: {range_header}\r\n" if range_header else ""
        request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n{extra}Connection: close\r\n\r\n"
        conn.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(4096)
            if not data:
                raise RuntimeError("connection closed inside the headers")
            head += data
        header, _, body_start = head.partition(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        expected = 206 if range_header else 200
        if status != expected:
            raise RuntimeError(f"status {status}, expected {expected}")
        length_match = re.search(rb"(?im)^content-length:\s*(\d+)", header)
        if length_match is None:
            raise RuntimeError("no Content-Length")
        length = int(length_match[1])
        received = len(body_start)
        buffer = bytearray(_CHUNK)
        while received < length:
            count = conn.recv_into(buffer)
            if not count:
                break
            received += count
        if received != length:
            raise RuntimeError(f"got {received} of {length} bytes")
        return received


def run_clients(port: int, clients: int, size: int, path: str = "/file") -> tuple[float, int]:
    errors: list[BaseException] = []
    totals: list[int] = []

    def client(index: int) -> None:
        try:
            totals.append(fetch(port, f"bytes={size // 2}-" if index % 2 else None, path))
        except (OSError, RuntimeError) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed, first: {errors[0]}")
    return elapsed, sum(totals)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def available(name: str) -> bool:
    modules = {"aiohttp": ["aiohttp"], "stdlib": [], "waitress": ["waitress", "werkzeug"]}[name]
    try:
        for module in modules:
            __import__(module)
    except ImportError:
        return False
    return True


def bench(name: str, path: Path, clients: int) -> tuple[float, float]:
    size = path.stat().st_size
    argv = [sys.executable, __file__, "--serve", name, str(path)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as child:
        try:
            if child.stdout is None:
                raise RuntimeError("no pipe from the server")
            port = int(child.stdout.readline())
            fetch(port, "bytes=0-0")  # warm up: imports done, page cache filled by the writer
            elapsed, total = run_clients(port, clients, size)
            rss = peak_rss_mib(child.pid)
        finally:
            child.terminate()
            child.wait(timeout=10)
    print(
        f"{name:9} {elapsed:7.2f} s  {total / elapsed / 1e9:6.2f} GB/s  peak RSS {rss:6.1f} MiB",
        flush=True,
    )
    return elapsed, rss


def candidates(args: argparse.Namespace) -> None:
    names = [n for n in (args.only or CANDIDATES) if available(n)]
    skipped = sorted(set(args.only or CANDIDATES) - set(names))
    if skipped:
        print(f"skipped (not installed): {', '.join(skipped)}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "payload.bin"
        with path.open("wb") as file:
            for _ in range(args.size_mb):
                file.write(os.urandom(_CHUNK))
        print(
            f"{args.size_mb} MB file, {args.clients} concurrent clients "
            f"(half with Range: the second half), loopback"
        )
        results = {name: bench(name, path, args.clients) for name in names}
    print("ratios of wall time (row / column; below 1: the row is faster):")
    print(" " * 10 + "".join(f"{n:>10}" for n in results))
    for row, (row_time, _) in results.items():
        cells = "".join(f"{row_time / col_time:10.2f}" for col_time, _ in results.values())
        print(f"{row:10}{cells}")


# -- ours against nginx ----------------------------------------------------------------


def nginx_binary() -> Path:
    """nginx from Debian's package, extracted (never installed: no service starts)."""
    binary = PEERS / "root" / "nginx" / "usr" / "sbin" / "nginx"
    if binary.is_file():
        return binary
    debs = PEERS / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", "nginx"], cwd=debs, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deb = max(debs.glob("nginx_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(PEERS / "root" / "nginx")], check=True)
    return binary


# nginx's temporary directories (Debian's build puts them under /var/lib/nginx).
_NGINX_TEMP = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Nginx:
    """nginx on loopback serving ``root``, one worker, its own prefix; stopped by stop()."""

    def __init__(self, root: Path, work: Path) -> None:
        self.port = free_port()
        work.mkdir(parents=True, exist_ok=True)
        conf = work / "nginx.conf"
        conf.write_text(
            "daemon off; master_process on; worker_processes 1; pid nginx.pid;\n"
            f"error_log {work}/error.log;\n"
            "events { worker_connections 1024; }\n"
            "http { sendfile on; tcp_nopush on; keepalive_requests 1000000;\n"
            + "".join(f"  {kind}_temp_path {work}/{kind};\n" for kind in _NGINX_TEMP)
            + f"  access_log {work}/access.log; types {{ }} default_type text/plain;\n"
            f"  server {{ listen 127.0.0.1:{self.port}; root {root}; }} }}\n"
        )
        argv = [str(nginx_binary()), "-p", str(work), "-c", str(conf)]
        self.child = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.child)
        self.pid = self.child.pid

    def stop(self) -> None:
        self.child.terminate()
        self.child.wait(timeout=10)


def wait_port(port: int, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"the server {child.args} stopped with status {child.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.05)
        else:
            return
    raise SystemExit(f"nothing listens on port {port} after 30 s")


class Ours:
    """``netinstall server run`` on loopback: a server directory with ``netboot`` as its
    netboot tree and one host (a root password) whose installer enrolled a key."""

    def __init__(self, netboot: Path, work: Path) -> None:
        from pxe_server.passwords import hash_password
        from pxe_server.registry import Registry

        directory = work / "server"
        netinstall = Path(sys.executable).parent / "netinstall"
        argv = [str(netinstall), "server", "init", str(directory), "--netboot", str(netboot)]
        subprocess.run([*argv, "--repo", str(work)], check=True, stdout=subprocess.DEVNULL)
        with Registry.open(directory) as registry:
            host = registry.add_host(MAC, variables={"root_password": hash_password("bench")})
        self.port = free_port()
        argv = [str(netinstall), "server", "run", str(directory), "--bind", "127.0.0.1"]
        argv += ["--tftp-port", "0", "--http-port", str(self.port)]
        self.log = (work / "server.log").open("wb")
        self.child = subprocess.Popen(argv, stderr=self.log)
        wait_port(self.port, self.child)
        self.pid = self.child.pid
        self.config_path = f"/config/pxelinux.cfg/01-{MAC.replace(':', '-')}"
        self.answer_path = f"/answerfile/{MAC}"
        self.key = "bench-installer-key-0123456789abcdefghijkl"
        import requests

        base = f"http://127.0.0.1:{self.port}"
        enrolled = requests.post(
            f"{base}/api/v1/hosts/{MAC}/enrol",
            json={"key": self.key},
            headers={"Authorization": f"Bearer {host.token}"},
            timeout=10,
        )
        enrolled.raise_for_status()
        self.config = requests.get(base + self.config_path, timeout=10).content
        self.answer = requests.get(
            base + self.answer_path, headers={"Authorization": f"Bearer {self.key}"}, timeout=10
        ).content
        if b"$6$" not in self.answer or b"netinstall.token=" not in self.config:
            raise SystemExit("the host's install config or answer file is not what it should be")

    def stop(self) -> None:
        self.child.terminate()
        self.child.wait(timeout=30)
        self.log.close()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def big(ours: Ours, nginx: Nginx, netboot: Path, rounds: int, clients: int) -> None:
    print(f"big files, MB/s (median of {rounds}; {clients} at once: aggregate, half with Range)")
    print(f"{'file':14}{'clients':>8}{'ours':>10}{'nginx':>10}{'ours/nginx':>12}")
    for name in BIG_FILES:
        size = (netboot / name).stat().st_size
        for count in (1, clients):
            rates: dict[str, list[float]] = {"ours": [], "nginx": []}
            for _ in range(rounds):
                for who, port, path in (("ours", ours.port, f"/boot/{name}"),
                                        ("nginx", nginx.port, f"/{name}")):  # fmt: skip
                    elapsed, total = run_clients(port, count, size, path)
                    rates[who].append(total / elapsed / 1e6)
            a, b = median(rates["ours"]), median(rates["nginx"])
            print(f"{name:14}{count:8}{a:10.0f}{b:10.0f}{a / b:12.2f}", flush=True)


def small(ours: Ours, nginx: Nginx, rounds: int, clients: int) -> None:
    import asyncio

    from benchmarks.loadclient import percentile, rate

    key = {"Authorization": f"Bearer {ours.key}"}
    print(f"small requests, requests/s (median of {rounds} runs of {SMALL_SECONDS:g} s; "
          "latency p50/p99 ms of the median run)")  # fmt: skip
    print(f"{'request':14}{'conns':>6}{'ours':>9}{'p50':>7}{'p99':>7}"
          f"{'nginx':>9}{'p50':>7}{'p99':>7}{'ours/nginx':>12}")  # fmt: skip
    for what, path, static, headers in (
        ("boot config", ours.config_path, "/config", None),
        ("answer file", ours.answer_path, "/answer.xml", key),
    ):
        for count in (1, clients):
            cells = []
            for port, target, extra in ((ours.port, path, headers), (nginx.port, static, None)):
                runs = [asyncio.run(rate("127.0.0.1", port, target, connections=count,
                                         seconds=SMALL_SECONDS, headers=extra))
                        for _ in range(rounds)]  # fmt: skip
                runs.sort(key=lambda run: run[0])
                value, latencies = runs[len(runs) // 2]
                cells.append((value, percentile(latencies, 0.5), percentile(latencies, 0.99)))
            (a, a50, a99), (b, b50, b99) = cells
            ours_cells = f"{a:9.0f}{a50 * 1000:7.1f}{a99 * 1000:7.1f}"
            nginx_cells = f"{b:9.0f}{b50 * 1000:7.1f}{b99 * 1000:7.1f}"
            print(f"{what:14}{count:6}{ours_cells}{nginx_cells}{a / b:12.2f}", flush=True)


def against_nginx(suites: list[str], rounds: int, clients: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work, netboot, static = Path(tmp), Path(tmp) / "netboot", Path(tmp) / "static"
        work.chmod(0o755)  # nginx's worker (user nobody) reads the static copies
        netboot.mkdir()
        static.mkdir()
        if "big" in suites:
            for name, megabytes in BIG_FILES.items():
                with (netboot / name).open("wb") as file:
                    for _ in range(megabytes):
                        file.write(os.urandom(_CHUNK))
                (static / name).hardlink_to(netboot / name)
        ours = Ours(netboot, work)
        nginx = None
        try:
            (static / "config").write_bytes(ours.config)
            (static / "answer.xml").write_bytes(ours.answer)
            nginx = Nginx(static, work / "nginx")
            if "big" in suites:
                big(ours, nginx, netboot, rounds, clients)
            if "small" in suites:
                small(ours, nginx, rounds, clients)
            print(f"peak RSS: ours {peak_rss_mib(ours.pid):.0f} MiB, "
                  f"nginx (master) {peak_rss_mib(nginx.pid):.0f} MiB")  # fmt: skip
        finally:
            if nginx is not None:
                nginx.stop()
            ours.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=2, metavar=("NAME", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--suite", choices=SUITES, action="append")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--only", choices=CANDIDATES, action="append")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], Path(args.serve[1]))
        return
    suites = args.suite or ["big", "small"]
    if "candidates" in suites:
        candidates(args)
    if "big" in suites or "small" in suites:
        against_nginx(suites, args.rounds, args.clients)


if __name__ == "__main__":
    main()
