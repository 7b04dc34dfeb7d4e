"""Throughput of pxe_server.tftp on loopback, per blksize, measured in one run.

    .venv/bin/python benchmarks/tftp_throughput.py [--mb 50] [--blksizes 512,1468] [--clients 1]

The server runs in this process; the clients (tftpy's TftpClient) run in separate
processes so that they do not share the server's interpreter lock. Prints MB/s
per blksize and each blksize's ratio to the first one.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import tftpy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pxe_server.tftp import TftpServer


def download(port: int, blksize: int) -> str:
    out = io.BytesIO()
    tftpy.TftpClient("127.0.0.1", port, options={"blksize": blksize, "tsize": 0}).download(
        "payload.bin", out, timeout=10
    )
    return hashlib.sha256(out.getvalue()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--blksizes", default="512,1468,8192")
    parser.add_argument("--clients", type=int, default=1)
    args = parser.parse_args()
    blksizes = [int(size) for size in args.blksizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        payload = os.urandom(args.mb * 1024 * 1024)
        (Path(tmp) / "payload.bin").write_bytes(payload)
        digest = hashlib.sha256(payload).hexdigest()
        server = TftpServer(Path(tmp), lambda path, client: None, host="127.0.0.1", port=0)
        server.start()
        try:
            first = None
            with ProcessPoolExecutor(max_workers=args.clients) as pool:
                pool.submit(int, 0).result()  # workers up before the clock starts
                for blksize in blksizes:
                    start = time.monotonic()
                    jobs = [
                        pool.submit(download, server.port, blksize) for _ in range(args.clients)
                    ]
                    if any(job.result() != digest for job in jobs):
                        raise SystemExit("corrupt download")
                    rate = len(payload) * args.clients / 1e6 / (time.monotonic() - start)
                    first = first or rate
                    print(
                        f"blksize {blksize:>5}: {args.clients} x {args.mb} MiB "
                        f"{rate:7.1f} MB/s  ({rate / first:.2f}x blksize {blksizes[0]})"
                    )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
