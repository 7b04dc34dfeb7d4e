"""The lab's door (netinstall/lab/door.py): a loopback port on the host that leads to a
server inside a lab namespace, which the host cannot reach otherwise. A namespace of the
lab's own (``netns.create``) with a small HTTP server on its bridge address, both removed
at the end."""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from netinstall.lab import door, netns, services

pytestmark = pytest.mark.integration

PORT = 8080


@pytest.fixture
def lab_network(tmp_path: Path) -> Iterator[netns.LabNetwork]:
    if os.geteuid() != 0:
        pytest.skip("a network namespace needs root")
    net = netns.new_network()
    netns.create(net)
    try:
        yield net
    finally:
        netns.destroy(net.namespace)


def test_the_door_leads_to_the_server_inside_the_namespace(
    lab_network: netns.LabNetwork, tmp_path: Path
) -> None:
    (tmp_path / "index.html").write_text("inside the lab\n")
    argv = [sys.executable, "-m", "http.server", "--bind", lab_network.server_ip, str(PORT),
            "--directory", str(tmp_path)]  # fmt: skip
    server = services.Child(
        "http", netns.netns_exec(lab_network.namespace, argv), tmp_path / "http.log"
    )
    entrance = door.Door(lab_network.namespace, lab_network.server_ip, PORT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                url = f"http://127.0.0.1:{entrance.port}/index.html"
                with urllib.request.urlopen(url, timeout=5) as reply:
                    assert reply.read() == b"inside the lab\n"
                break
            except OSError:
                assert time.monotonic() < deadline, server.output()
                time.sleep(0.2)
    finally:
        entrance.close()
        server.stop()
    with pytest.raises(ConnectionRefusedError):  # closed: nothing listens there any more
        socket.create_connection(("127.0.0.1", entrance.port), 1).close()
