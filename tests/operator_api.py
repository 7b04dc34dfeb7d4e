"""The CLI's operator commands both ways, for unit tests: on a server directory (``--dir``)
and with ``--server`` against that directory's API, served by the server's own app
(``pxe_server.http.make_app``) from a thread of this process on loopback over plain HTTP
(which the client allows to loopback only). No process is started.

    serving(directory)        -> the API's base URL while the block runs
    operator_of(directory, way) -> an ``Operator``, ``local`` or ``remote``
    operator                  a fixture: an ``Operator`` of a new server directory (default
                         profile), once ``local`` and once ``remote``
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from click.testing import CliRunner

from netinstall.cli import main
from pxe_server import shared_dir
from pxe_server.http import make_app
from pxe_server.http_files import Context
from pxe_server.model import ServerSettings
from pxe_server.registry import Registry, default_profile


@contextmanager
def serving(directory: Path) -> Iterator[str]:
    """``directory``'s HTTP routes (the API among them) on a loopback port, served from a
    thread with an event loop of its own; the base URL, ``http://127.0.0.1:PORT``."""
    registry = Registry.open(directory)
    ctx = Context(
        registry=registry,
        registry_dir=directory,
        settings=ServerSettings(http_base="http://127.0.0.1:8080", tftp_address="127.0.0.1"),
        netboot=None,
        repo=None,
        shared_dir=shared_dir.shared(directory),
    )
    sock = socket.create_server(("127.0.0.1", 0))
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(make_app(ctx))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.SockSite(runner, sock).start())
    thread = threading.Thread(target=loop.run_forever, name="test-api", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        sock.close()
        registry.close()


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str
    data: bytes  # stdout as bytes (what `-o -` writes)


@dataclass(frozen=True)
class Operator:
    """Runs ``netinstall`` commands on ``directory``: with ``--dir`` (``url`` None), or
    with ``--server url`` and the directory's API token."""

    directory: Path
    url: str | None

    @property
    def way(self) -> str:
        return "local" if self.url is None else "remote"

    def run(self, *args: str) -> Result:
        env: dict[str, str | None] = {"NETINSTALL_SERVER": None, "NETINSTALL_TOKEN": None}
        argv: Sequence[str] = [*args, "--dir", str(self.directory)]
        if self.url is not None:
            env["NETINSTALL_TOKEN"] = (self.directory / "api-token").read_text().strip()
            argv = ["--server", self.url, *args]
        done = CliRunner().invoke(main, list(argv), env=env, catch_exceptions=False)
        assert "Traceback" not in done.stderr
        return Result(done.exit_code, done.stdout, done.stderr, done.stdout_bytes)


@contextmanager
def operator_of(directory: Path, way: str) -> Iterator[Operator]:
    """An operator of ``directory`` (a registry there), ``local`` or ``remote`` (its API
    served while the block runs: a shared directory is read when it starts)."""
    if way == "local":
        yield Operator(directory, None)
        return
    with serving(directory) as url:
        yield Operator(directory, url)


@pytest.fixture(params=["local", "remote"])
def operator(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Operator]:
    directory = tmp_path / "srv"
    with Registry.open(directory) as registry:
        registry.add_profile(default_profile())
    with operator_of(directory, request.param) as made:
        yield made
