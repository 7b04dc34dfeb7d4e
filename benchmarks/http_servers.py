"""Which HTTP server should serve the netboot tree and the repository? Measured, not guessed.

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
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CANDIDATES = ("aiohttp", "stdlib", "waitress")
_CHUNK = 1 << 20


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


def fetch(port: int, range_header: str | None) -> int:
    """GET /file over a raw socket; return the body's length (checked against the header)."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as conn:
        extra = f"Range: {range_header}\r\n" if range_header else ""
        request = f"GET /file HTTP/1.1\r\nHost: bench\r\n{extra}Connection: close\r\n\r\n"
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


def run_clients(port: int, clients: int, size: int) -> tuple[float, int]:
    errors: list[BaseException] = []
    totals: list[int] = []

    def client(index: int) -> None:
        try:
            totals.append(fetch(port, f"bytes={size // 2}-" if index % 2 else None))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=2, metavar=("NAME", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--only", choices=CANDIDATES, action="append")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], Path(args.serve[1]))
        return
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


if __name__ == "__main__":
    main()
