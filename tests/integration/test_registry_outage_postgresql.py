"""The registry's database in trouble while a server runs: its connections ended by an
administrator (``pg_terminate_backend``), new connections refused, a transaction rolled
back for a serialization failure or a deadlock. Requests get a 503 with ``Retry-After``
and the server logs one line (no traceback, no 500); service resumes by itself, with no
restart; a conflicted write is run once more inside the registry."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from pxe_server.http_edge import DB_RETRY_AFTER, DB_UNAVAILABLE
from pxe_server.model import State
from pxe_server.registry import Registry, default_profile
from pxe_server.store import outage
from pxe_server.store.engine import database_url, record_url
from tests import postgres
from tests.integration.two_servers import PAYLOAD, VERSION, BootClient, init, request, serving
from tests.repository import write_repository

pytestmark = pytest.mark.integration

MAC = "52:54:00:19:00:03"


def tftp_reply(port: int, name: str) -> bytes:
    """The first packet the server answers a TFTP read request for ``name`` with."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(struct.pack("!H", 1) + name.encode() + b"\0octet\0", ("127.0.0.1", port))
        return sock.recv(2048)


def terminate(cluster: postgres.Cluster, database: str) -> int:
    """End every connection to ``database`` but ours; how many were ended."""
    with cluster.connect() as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def refusing(cluster: postgres.Cluster, database: str) -> Iterator[None]:
    """``database`` accepts no new connection (its current ones ended) inside the body."""
    with cluster.connect() as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    try:
        terminate(cluster, database)
        yield
    finally:
        with cluster.connect() as conn:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


def test_requests_get_503_while_the_database_is_away_and_service_resumes(
    tmp_path: Path, postgres_url: str, postgres_cluster: postgres.Cluster
) -> None:
    database = str(make_url(postgres_url).database)
    repo = write_repository(tmp_path / "repo", {n: n.encode() for n in PAYLOAD}, VERSION, "b1")
    (tmp_path / "netboot").mkdir()
    init(tmp_path / "srv", postgres_url, repo, tmp_path / "netboot")
    token = (tmp_path / "srv" / "api-token").read_text().strip()
    with serving(tmp_path / "srv", tmp_path / "srv.log") as server:
        port = server.http_port
        assert request(port, "POST", "/api/v1/hosts", secret=token, body={"mac": MAC}).status == 201
        host = BootClient(MAC)
        # Connections ended under a stream of requests (reads and writes, on the loop's
        # thread, the workers and the writer): a 503 at worst, never a 500.
        statuses: list[int] = []
        stop = threading.Event()

        def load() -> None:
            index = 0
            while not stop.is_set():
                index += 1
                mac = f"52:54:00:20:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}"
                for method, path, body in (
                    ("GET", "/api/v1/hosts", None),
                    ("POST", "/api/v1/hosts", {"mac": mac}),
                    ("GET", f"/config/grub/grub.cfg-01-{MAC.replace(':', '-')}", None),
                ):
                    statuses.append(request(port, method, path, secret=token, body=body).status)

        loader = threading.Thread(target=load)
        loader.start()
        try:
            ended = 0
            for _ in range(4):
                time.sleep(0.3)
                ended += terminate(postgres_cluster, database)
        finally:
            stop.set()
            loader.join(timeout=60)
        assert ended >= 4
        assert statuses
        assert set(statuses) <= {200, 201, 503}, sorted(set(statuses))
        print(
            f"{len(statuses)} requests while connections were ended: "
            f"{ {s: statuses.count(s) for s in set(statuses)} }"
        )

        # New connections refused: every request that needs the registry gets a 503 with
        # Retry-After and one sentence; the server logs one line a request.
        with refusing(postgres_cluster, database):
            listed = request(port, "GET", "/api/v1/hosts", secret=token)
            config = request(port, "GET", f"/config/grub/grub.cfg-01-{MAC.replace(':', '-')}")
            new = {"mac": MAC[:-1] + "9"}
            added = request(port, "POST", "/api/v1/hosts", secret=token, body=new)
            for reply in (listed, config, added):
                assert reply.status == 503, reply
                assert reply.headers["retry-after"] == str(DB_RETRY_AFTER)
                assert reply.json()["error"] == DB_UNAVAILABLE
            # TFTP: an error naming it, one log line.
            refused = tftp_reply(server.tftp_port, f"pxelinux.cfg/01-{MAC.replace(':', '-')}")
            assert refused[:2] == b"\0\5"
            assert b"server busy, try again" in refused
        # Back: served again by the same process, no restart.
        assert request(port, "GET", "/api/v1/hosts", secret=token).status == 200
        token_of = host.token_of(host.boot_config(port))
        assert token_of is not None
        assert host.enrol(port, token_of).status == 200
        assert host.event(port, "installing", step="plan").status == 200
        assert server.process.poll() is None
        log = server.log_text()
        assert "Traceback" not in log
        assert " 500 " not in log
        outages = [line for line in log.splitlines() if "503, the registry's database" in line]
        assert len(outages) >= 3, log[-3000:]
        assert all("not currently accepting connections" in line for line in outages[-3:])
        assert "not currently accepting connections" in next(
            line for line in log.splitlines() if "netinstall.tftp" in line and "failed" in line
        )


# -- a transaction rolled back for a conflict: run once more ------------------------------


@pytest.fixture
def registry(tmp_path: Path, postgres_url: str) -> Iterator[Registry]:
    record_url(tmp_path, database_url(postgres_url))
    with Registry.open(tmp_path) as opened:
        opened.add_profile(default_profile())
        opened.add_host(MAC)
        yield opened


def conflicts(registry: Registry, times: int, sqlstate: str) -> list[int]:
    """The next ``times`` write transactions of ``registry`` end in a PostgreSQL error of
    ``sqlstate`` (raised by the server inside the transaction, as a real conflict is);
    the list counts the transactions begun."""
    store, begun = registry._store, [0]
    original = store.transaction

    @contextmanager
    def transaction(conn: Connection, *, now: bool = False) -> Iterator[Connection]:
        with original(conn, now=now) as inside:
            begun[0] += 1
            if begun[0] <= times:
                inside.exec_driver_sql(
                    "DO $$BEGIN RAISE EXCEPTION 'conflict for the test' "
                    f"USING ERRCODE = '{sqlstate}'; END$$"
                )
            yield inside

    store.transaction = transaction  # type: ignore[method-assign]
    return begun


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])  # serialization failure, deadlock
def test_a_conflicted_write_is_run_once_more(
    registry: Registry, sqlstate: str, caplog: pytest.LogCaptureFixture
) -> None:
    signalled = registry.mark_signalled(MAC)
    assert signalled is not None
    begun = conflicts(registry, 1, sqlstate)
    host, _ = registry.record_event(MAC, State.INSTALLING, step="plan")
    assert begun[0] == 2
    assert host.state is State.INSTALLING
    assert [e.state for e in registry.events(MAC)].count(State.INSTALLING) == 1
    assert "record_event rolled back" in caplog.text


def test_a_second_conflict_is_an_outage(registry: Registry) -> None:
    before = registry.get_host(MAC)
    begun = conflicts(registry, 2, "40001")
    with pytest.raises(DBAPIError) as raised:
        registry.rearm(MAC)
    assert begun[0] == 2
    assert outage.conflicted(raised.value)
    assert outage.reason(raised.value) is not None  # the request's client gets a 503
    assert registry.get_host(MAC) == before  # nothing of either attempt committed
