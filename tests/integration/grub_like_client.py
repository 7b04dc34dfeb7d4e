"""A client that speaks TCP as GRUB 2.06 does, on a tun device, against our HttpServer.

Run as root inside a network namespace of its own (the test makes one):
``python grub_like_client.py NETBOOT_DIR FILE REGISTRY_DIR [--mss N]``. It opens the tun
device ``gtun0`` (the server's side 10.99.0.1/24, the client 10.99.0.2), starts an
``HttpServer`` on 10.99.0.1:8080 serving NETBOOT_DIR, and fetches ``/boot/FILE`` with a
TCP of its own written into the tun: a bare SYN (no options: no MSS, as GRUB's
grub-core/net/tcp.c), a fixed 8192-byte window, one ACK for every segment in order
(``--mss N``: a SYN that names MSS N instead). It prints one JSON line: the body's
sha256 and length, the data segments' sizes and how often each came, and the server's
policy count of raised connections.

No kernel TCP on the client side: every packet is built here and read back from the
tun, so what the server's kernel sends is seen exactly as GRUB would see it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import socket
import struct
import subprocess
import sys
from pathlib import Path

from pxe_server.http import HttpServer
from pxe_server.model import ServerSettings
from pxe_server.registry import Registry

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
SERVER, CLIENT = "10.99.0.1", "10.99.0.2"
PORT, CLIENT_PORT = 8080, 21550  # GRUB's first source port
WINDOW = 8192  # GRUB's my_window
SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01
READ_TIMEOUT = 10.0  # seconds without a packet: the fetch failed


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Tun:
    def __init__(self) -> None:
        self.fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", b"gtun0", IFF_TUN | IFF_NO_PI))
        for argv in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", f"{SERVER}/24", "dev", "gtun0"],
            ["ip", "link", "set", "gtun0", "up"],
        ):
            subprocess.run(argv, check=True)
        self.src, self.dst = socket.inet_aton(CLIENT), socket.inet_aton(SERVER)

    def send(
        self, seq: int, ack: int, flags: int, payload: bytes = b"", options: bytes = b""
    ) -> None:
        offset = (20 + len(options)) // 4
        header = struct.pack(
            "!HHIIHHHH", CLIENT_PORT, PORT, seq, ack, (offset << 12) | flags, WINDOW, 0, 0
        )
        segment = header + options + payload
        pseudo = self.src + self.dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(segment))
        segment = segment[:16] + struct.pack("!H", checksum(pseudo + segment)) + segment[18:]
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 0, 0, 64, 6, 0, self.src, self.dst
        )
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        os.write(self.fd, ip + segment)

    def receive(self) -> tuple[int, int, bytes] | None:
        """The next TCP segment to the client: (seq, flags, payload); None for others."""
        ready, _, _ = select.select([self.fd], [], [], READ_TIMEOUT)
        if not ready:
            raise SystemExit("no packet from the server in time")
        packet = os.read(self.fd, 65536)
        if packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_TCP:
            return None
        tcp = packet[(packet[0] & 0x0F) * 4 :]
        seq, offset_flags = struct.unpack("!4xI4xH", tcp[:14])
        return seq, offset_flags & 0x3F, tcp[(offset_flags >> 12) * 4 :]


def fetch(tun: Tun, path: str, mss: int | None) -> tuple[bytes, dict[int, int]]:
    """GET ``path`` as GRUB would; the body and the data segments' sizes."""
    seq = 56
    options = struct.pack("!BBH", 2, 4, mss) if mss else b""
    tun.send(seq, 0, SYN, options=options)
    while (got := tun.receive()) is None or got[1] & (SYN | ACK) != SYN | ACK:
        pass
    theirs, seq = got[0] + 1, seq + 1
    tun.send(seq, theirs, ACK)
    request = f"GET {path} HTTP/1.1\r\nHost: {SERVER}:{PORT}\r\nUser-Agent: GRUB 2.06\r\n\r\n"
    tun.send(seq, theirs, ACK | PSH, request.encode())
    seq += len(request)
    reply, sizes = b"", {}
    while True:
        got = tun.receive()
        if got is None:
            continue
        their_seq, flags, data = got
        if data:
            sizes[len(data)] = sizes.get(len(data), 0) + 1
            if their_seq == theirs:
                theirs += len(data)
                reply += data
        if flags & FIN:
            break
        tun.send(seq, theirs, ACK)
        head, _, body = reply.partition(b"\r\n\r\n")
        length = [
            line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        ]
        if length and len(body) >= int(length[0].split(b":")[1]):
            return body, sizes
    raise SystemExit(f"the server closed the connection: {reply[:200]!r}")


def main() -> None:
    netboot, name, registry_dir = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    mss = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--mss" else None
    tun = Tun()
    Registry.open(registry_dir).close()
    settings = ServerSettings(http_base=f"http://{SERVER}:{PORT}", tftp_address=SERVER)
    with HttpServer(registry_dir, settings, netboot, None, host=SERVER, port=PORT) as server:
        body, sizes = fetch(tun, f"/boot/{name}", mss)
        ctx = server._ctx
        raised = ctx.segments.raised if ctx is not None else -1
    print(
        json.dumps(
            {
                "sha256": hashlib.sha256(body).hexdigest(),
                "length": len(body),
                "sizes": {str(size): count for size, count in sizes.items()},
                "raised": raised,
            }
        )
    )


if __name__ == "__main__":
    main()
