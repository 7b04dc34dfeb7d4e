"""A throwaway PostgreSQL cluster for the integration tests and the benchmarks.

``cluster()`` runs ``initdb`` into a new directory and starts ``postgres`` on a unix
socket in that directory only (``listen_addresses=''``: no TCP port), fsync off, as the
``postgres`` system user when we are root (PostgreSQL refuses to run as root), and
stops and removes it all afterwards, also when the body fails. ``setpriv --pdeathsig``
makes the server stop if the process that started it dies without cleaning up. The
system's own clusters (``pg_lsclusters``) are never touched.

One cluster per test session (``tests/integration/conftest.py``); a fresh database per
test (``Cluster.database``). Skips (pytest) or fails with a sentence when PostgreSQL's
server binaries are missing (``make setup`` installs them: scripts/host-packages.txt).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg
from psycopg import sql

START_TIMEOUT = 60  # seconds for initdb and the server's start on a busy 2-core machine
SYSTEM_USER = "postgres"
SUPERUSER = "postgres"
MAX_CONNECTIONS = 300  # race tests open a reader connection per thread per registry
# A role that must give its password (scram-sha-256); every other role is trusted on the
# cluster's socket (only its owner reaches the socket's directory).
PASSWORD_USER = "netinstall_pw"


class Unavailable(Exception):
    """PostgreSQL's server binaries (initdb, postgres) are not installed."""


def binaries() -> Path:
    """The directory of the newest installed PostgreSQL server's binaries."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    for postgres in reversed(found):
        if (postgres.parent / "initdb").is_file():
            return postgres.parent
    on_path = shutil.which("initdb")
    if on_path and shutil.which("postgres"):
        return Path(on_path).parent
    raise Unavailable("PostgreSQL's server (initdb, postgres) is not installed; run `make setup`")


class Cluster:
    """A running throwaway cluster: its socket directory, and databases made on demand."""

    def __init__(self, root: Path, process: subprocess.Popen[bytes]) -> None:
        self.root = root
        self.socket_dir = root
        self.process = process
        self._made = 0

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@/{database}?host={self.socket_dir}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=str(self.socket_dir), dbname=database, user=SUPERUSER, autocommit=True
        )

    def password_role(self, database: str, password: str) -> str:
        """``PASSWORD_USER`` with ``password``, made the owner of ``database``; a URL of
        that database as that role, without the password."""
        role = sql.Identifier(PASSWORD_USER)
        with self.connect() as conn:
            if conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (PASSWORD_USER,)
            ).fetchone():
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, sql.Literal(password))
                )
            else:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(password))
                )
            conn.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(database), role)
            )
        return self.url(database, PASSWORD_USER)

    def create_database(self) -> str:
        """A new, empty database; its name."""
        self._made += 1
        name = f"test_{os.getpid()}_{self._made}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextmanager
    def database(self) -> Iterator[str]:
        """A fresh database for one test, dropped afterwards; its URL."""
        name = self.create_database()
        try:
            yield self.url(name)
        finally:
            self.drop_database(name)


def _as_owner(argv: list[str], *, pdeathsig: bool = False) -> list[str]:
    """``argv`` run as the postgres system user when we are root."""
    if os.geteuid() != 0:
        return argv
    death = ["--pdeathsig", "TERM"] if pdeathsig else []
    return [
        "setpriv",
        f"--reuid={SYSTEM_USER}",
        f"--regid={SYSTEM_USER}",
        "--init-groups",
        *death,
        "--",
        *argv,
    ]


@contextmanager
def cluster() -> Iterator[Cluster]:
    """Start a throwaway cluster; stop and remove it when the body ends."""
    bindir = binaries()
    root = Path(tempfile.mkdtemp(prefix="netinstall-pg-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        if os.geteuid() == 0:
            owner = pwd.getpwnam(SYSTEM_USER)
            os.chown(root, owner.pw_uid, owner.pw_gid)
        data = root / "data"
        done = subprocess.run(
            _as_owner(
                [
                    str(bindir / "initdb"),
                    "--pgdata",
                    str(data),
                    "--username",
                    SUPERUSER,
                    "--auth",
                    "trust",
                    "--encoding",
                    "UTF8",
                    "--locale",
                    "C",
                    "--no-sync",
                ]
            ),
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        hba = data / "pg_hba.conf"
        hba.write_text(f"local all {PASSWORD_USER} scram-sha-256\nlocal all all trust\n", "utf-8")
        log = (root / "postgres.log").open("wb")
        process = subprocess.Popen(
            _as_owner(
                [
                    str(bindir / "postgres"),
                    "-D",
                    str(data),
                    "-k",
                    str(root),
                    "-c",
                    "listen_addresses=",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    f"max_connections={MAX_CONNECTIONS}",
                ],
                pdeathsig=True,
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        running = Cluster(root, process)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                text = (root / "postgres.log").read_text(errors="replace")
                raise RuntimeError(f"postgres exited at its start: {text.strip()[-2000:]}")
            try:
                running.connect().close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield running
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(2)  # SIGINT: fast shutdown (connections closed)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with suppress(OSError):
            shutil.rmtree(root)
