"""A door into the lab's namespace: a loopback port on the host forwarded to the server.

The lab's server listens on the namespace's bridge only (``lab/netns.py``), which the
host cannot reach. ``Door`` listens on 127.0.0.1 in the host's network and carries each
connection to the server's HTTP port inside the namespace, so that a browser on the host
can open the web console of a running lab (``netinstall demo --console-port``, and the
end-to-end browser test). Each connection has a thread of its own, which enters the
namespace (``setns(2)`` moves the calling thread only) before it connects, and then
copies bytes both ways until either side closes or stays silent too long.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import socket
import threading

from common.errors import NetinstallError

log = logging.getLogger("netinstall.lab")

CLONE_NEWNET = 0x40000000  # setns(2): a network namespace
NETNS_DIR = "/run/netns"
MAX_CONNECTIONS = 32
IDLE_TIMEOUT = 300.0  # seconds a forwarded connection may stay silent both ways
CONNECT_TIMEOUT = 10.0
CHUNK = 65536


def _enter(namespace: str) -> None:
    """Move the calling thread into ``namespace``'s network (``ip netns add``'s name)."""
    descriptor = os.open(os.path.join(NETNS_DIR, namespace), os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(descriptor, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns into {namespace}: {os.strerror(error)}")
    finally:
        os.close(descriptor)


class Door:
    """127.0.0.1:``port`` (0: any free port) forwarded to ``address``:``target`` inside
    ``namespace``; ``close`` stops listening and ends the connections."""

    def __init__(self, namespace: str, address: str, target: int, port: int = 0) -> None:
        self.namespace, self.address, self.target = namespace, address, target
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind(("127.0.0.1", port))
        except OSError as exc:
            self._listener.close()
            raise NetinstallError(
                f"the lab's console port 127.0.0.1:{port}: {exc.strerror}"
            ) from None
        self._listener.listen()
        self.port = int(self._listener.getsockname()[1])
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="lab door", daemon=True)
        self._thread.start()
        log.info("lab: 127.0.0.1:%d leads to %s:%d in %s", self.port, address, target, namespace)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if self._closed or len(self._open) >= MAX_CONNECTIONS:
                    client.close()
                    continue
                self._open.add(client)
            threading.Thread(target=self._carry, args=(client,), daemon=True).start()

    def _carry(self, client: socket.socket) -> None:
        server: socket.socket | None = None
        try:
            _enter(self.namespace)  # this thread only, for its own socket
            server = socket.create_connection((self.address, self.target), CONNECT_TIMEOUT)
            with self._lock:
                self._open.add(server)
            _copy(client, server)
        except OSError as exc:
            log.debug("lab door: %s", exc)
        finally:
            with self._lock:
                self._open.discard(client)
                if server is not None:
                    self._open.discard(server)
            client.close()
            if server is not None:
                server.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = list(self._open)
        with contextlib.suppress(OSError):  # wakes the accept (close alone would not)
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)


def _copy(one: socket.socket, other: socket.socket) -> None:
    """Bytes both ways until a side closes (its half) and the other too, or silence."""
    peers = {one: other, other: one}
    with selectors.DefaultSelector() as selector:
        for each in peers:
            selector.register(each, selectors.EVENT_READ, each)
        while selector.get_map():
            ready = selector.select(IDLE_TIMEOUT)
            if not ready:
                return
            for key, _ in ready:
                sock: socket.socket = key.data
                data = sock.recv(CHUNK)
                if data:
                    peers[sock].sendall(data)
                else:
                    selector.unregister(sock)
                    with contextlib.suppress(OSError):
                        peers[sock].shutdown(socket.SHUT_WR)
