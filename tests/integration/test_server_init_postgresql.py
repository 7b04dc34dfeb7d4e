"""``netinstall server init --db URL``: the server directory records a PostgreSQL registry
(0600), every later command opens it; what cannot work is one sentence and a non-zero
exit, never a traceback."""

from __future__ import annotations

import stat
from pathlib import Path

from sqlalchemy.engine import make_url

from pxe_server.registry import DATABASE_URL_FILE, REGISTRY_FILE, Registry
from tests import postgres
from tests.integration.conftest import netinstall


def refused(done: object, *words: str) -> None:
    assert getattr(done, "returncode", 0) != 0
    stderr = str(getattr(done, "stderr", ""))
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    for word in words:
        assert word in stderr, stderr


def test_init_records_the_database_and_every_command_uses_it(
    tmp_path: Path, postgres_url: str
) -> None:
    where = tmp_path / "srv"
    done = netinstall("server", "init", str(where), "--db", postgres_url)
    assert done.returncode == 0, done.stderr
    recorded = where / DATABASE_URL_FILE
    assert stat.S_IMODE(recorded.stat().st_mode) == 0o600
    assert not (where / REGISTRY_FILE).exists()
    assert "registry database: postgresql://postgres@/" in done.stdout
    again = netinstall("server", "init", str(where), "--db", postgres_url)
    assert again.returncode == 0, again.stderr
    assert "already initialised" in again.stdout
    added = netinstall("host", "add", "52:54:00:12:34:56", "--dir", str(where))
    assert added.returncode == 0, added.stderr
    with Registry.open(where) as registry:
        assert registry.get_host("52:54:00:12:34:56") is not None
        assert registry.get_profile("default") is not None
        assert registry.api_token_matches((where / "api-token").read_text().strip())


def test_what_cannot_work_is_one_sentence(
    tmp_path: Path, postgres_cluster: postgres.Cluster, postgres_url: str
) -> None:
    nohost = netinstall("server", "init", str(tmp_path / "a"), "--db", "postgresql://nohost/x")
    refused(nohost, "cannot open the registry postgresql://nohost/x", "nohost")
    assert not (tmp_path / "a" / DATABASE_URL_FILE).exists()  # nothing left half-made
    stranger = postgres_cluster.url(
        postgres_url.rsplit("/", 1)[1].split("?", maxsplit=1)[0], "nobody"
    )
    unknown_role = netinstall("server", "init", str(tmp_path / "b"), "--db", stranger)
    refused(unknown_role, "cannot open the registry", '"nobody"')
    not_pg = netinstall("server", "init", str(tmp_path / "c"), "--db", "mysql://u@h/db")
    refused(not_pg, "only PostgreSQL URLs")
    sqlite_dir = tmp_path / "d"
    assert netinstall("server", "init", str(sqlite_dir)).returncode == 0
    moved = netinstall("server", "init", str(sqlite_dir), "--db", postgres_url)
    refused(moved, "has a SQLite registry already")


def test_a_database_of_a_newer_schema_is_refused(tmp_path: Path, postgres_url: str) -> None:
    where = tmp_path / "srv"
    assert netinstall("server", "init", str(where), "--db", postgres_url).returncode == 0
    with Registry.open(where) as registry, registry._write() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00dfeed'")
    listing = netinstall("host", "list", "--dir", str(where))
    refused(listing, "schema revision f00dfeed, newer than this netinstall understands")


def test_a_role_with_a_password_opens_with_it_and_not_without(
    tmp_path: Path, postgres_cluster: postgres.Cluster, postgres_url: str
) -> None:
    database = str(make_url(postgres_url).database)
    url = postgres_cluster.password_role(database, "right-Passw0rd")
    wrong = url.replace(f"{postgres.PASSWORD_USER}@", f"{postgres.PASSWORD_USER}:wrong@")
    done = netinstall("server", "init", str(tmp_path / "a"), "--db", wrong)
    refused(done, "password authentication failed", "***")
    assert "wrong" not in done.stderr  # the password is never shown
    right = url.replace(f"{postgres.PASSWORD_USER}@", f"{postgres.PASSWORD_USER}:right-Passw0rd@")
    done = netinstall("server", "init", str(tmp_path / "b"), "--db", right)
    assert done.returncode == 0, done.stderr
    assert "right-Passw0rd" not in done.stdout
    assert "right-Passw0rd" in (tmp_path / "b" / DATABASE_URL_FILE).read_text()
