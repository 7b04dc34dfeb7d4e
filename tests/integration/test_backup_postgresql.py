"""``server migrate --to``, ``server backup`` and ``server restore`` across the engines,
on the session's throwaway PostgreSQL cluster (tests/postgres.py): a SQLite fleet with
one of everything (tests/fleet_records.py) migrated to PostgreSQL, every record and
secret checked there, backed up from PostgreSQL and restored into SQLite; and what
must be refused (a non-empty target, a registry in use, an unreachable database, a
tampered file)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from pxe_server.registry import DATABASE_URL_FILE, REGISTRY_FILE, Registry
from pxe_server.store.schema import HEAD
from tests.fleet_records import (
    as_revision_8,
    check_pools_and_jobs,
    check_secrets,
    make_fleet,
    records,
)
from tests.integration.conftest import netinstall
from tests.registry_engines import execute


def refused(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in last, done.stderr


def test_migrate_to_postgresql_then_back_up_and_restore_into_sqlite(
    tmp_path: Path, postgres_url: str
) -> None:
    where = tmp_path / "srv"
    secrets = make_fleet(where, tmp_path / "repo")
    before = records(where)

    done = netinstall("server", "migrate", str(where), "--to", postgres_url)
    assert done.returncode == 0, done.stderr
    assert "hosts 7" in done.stdout
    assert "hosts: 7 rows copied" in done.stderr  # progress, a table at a time
    # The directory now names the database; the SQLite file is kept aside, out of the way.
    assert make_url((where / DATABASE_URL_FILE).read_text().strip()) == make_url(postgres_url).set(
        drivername="postgresql+psycopg"
    )
    assert not (where / REGISTRY_FILE).exists()
    aside = [p for p in where.iterdir() if p.name.startswith(f"{REGISTRY_FILE}.migrated-")]
    assert len(aside) == 1
    assert f"kept as {aside[0]}" in done.stdout
    with Registry.open(where) as reg:
        assert reg.where.startswith("postgresql://")
    assert records(where) == before

    # Backup from PostgreSQL (the same records), restore into a new SQLite directory.
    backup = tmp_path / "fleet.zip"
    done = netinstall("server", "backup", str(where), "--to", str(backup))
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(backup) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert DATABASE_URL_FILE not in str(archive.namelist())  # the URL may hold a password
    assert manifest["engine"] == "postgresql"
    restored = tmp_path / "restored"
    done = netinstall("server", "restore", str(restored), "--from", str(backup))
    assert done.returncode == 0, done.stderr
    assert (restored / REGISTRY_FILE).is_file()
    assert records(restored) == before

    # A registry that holds a fleet is replaced only with --replace.
    done = netinstall("server", "restore", str(where), "--from", str(backup))
    refused(done, "is not empty", "7 hosts", "give --replace")
    done = netinstall("server", "restore", str(where), "--from", str(backup), "--replace")
    assert done.returncode == 0, done.stderr
    assert records(where) == before

    # A tampered backup: refused before the registry is touched.
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(backup) as source, zipfile.ZipFile(tampered, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name == "tables/secrets.jsonl":
                data = data.replace(b"a", b"b", 1)  # the same size: only sha256 tells
            target.writestr(name, data)
    done = netinstall("server", "restore", str(where), "--from", str(tampered), "--replace")
    refused(done, "fails its checksum: tables/secrets.jsonl")
    assert records(where) == before

    # Every secret verifies on both engines (each check also writes a new event).
    check_secrets(where, secrets)
    check_secrets(restored, secrets)


def test_migrate_refuses_a_database_that_is_not_empty(tmp_path: Path, postgres_url: str) -> None:
    other = netinstall("server", "init", str(tmp_path / "other"), "--db", postgres_url)
    assert other.returncode == 0, other.stderr
    where = tmp_path / "srv"
    make_fleet(where, tmp_path / "repo")
    done = netinstall("server", "migrate", str(where), "--to", postgres_url)
    refused(done, "is not empty (1 profiles", "migrate into an empty database")
    assert (where / REGISTRY_FILE).is_file()
    assert not (where / DATABASE_URL_FILE).exists()


def test_migrate_refuses_an_unreachable_database(tmp_path: Path) -> None:
    where = tmp_path / "srv"
    make_fleet(where, tmp_path / "repo")
    before = records(where)
    url = f"postgresql://u@/fleet?host={tmp_path / 'no-socket-here'}"
    done = netinstall("server", "migrate", str(where), "--to", url)
    refused(done, "cannot open the registry postgresql://u@/fleet", "No such file")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (where / DATABASE_URL_FILE).exists()
    assert records(where) == before


def test_migrate_refuses_a_registry_another_process_has_open(
    tmp_path: Path, postgres_url: str
) -> None:
    where = tmp_path / "srv"
    make_fleet(where, tmp_path / "repo")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]); "
            "c.execute('SELECT count(*) FROM hosts').fetchall(); print('open', flush=True); "
            "time.sleep(60)",
            str(where / REGISTRY_FILE),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"
        done = netinstall("server", "migrate", str(where), "--to", postgres_url)
        refused(done, f"process {holder.pid}", "has the registry", "stop the server")
    finally:
        holder.kill()
        holder.wait()
    assert not (where / DATABASE_URL_FILE).exists()


def test_restore_into_postgresql_with_db_and_refused_beside_a_server(
    tmp_path: Path, postgres_url: str
) -> None:
    source = tmp_path / "source"
    make_fleet(source, tmp_path / "repo")
    before = records(source)
    backup = tmp_path / "b.zip"
    assert netinstall("server", "backup", str(source), "--to", str(backup)).returncode == 0
    where = tmp_path / "pg"
    done = netinstall("server", "restore", str(where), "--from", str(backup), "--db", postgres_url)
    assert done.returncode == 0, done.stderr
    assert (where / DATABASE_URL_FILE).is_file()
    assert records(where) == before
    # Another netinstall connection on the database (a running server's): refused.
    with Registry.open(where) as running:
        assert running.get_host(next(iter(before["hosts"])).mac) is not None
        done = netinstall("server", "restore", str(where), "--from", str(backup), "--replace")
        refused(done, "other netinstall connection(s) use the database", "stop every server")


def test_a_backup_at_revision_8_restores_into_postgresql_and_ends_at_head(
    tmp_path: Path, postgres_url: str
) -> None:
    """A backup made before pools and jobs (Alembic 0008; its contents checked in
    tests/unit/test_backup.py) restored into PostgreSQL: loaded at 0008, upgraded to
    0011, every record and secret kept, pools and jobs usable."""
    source = tmp_path / "source"
    secrets = make_fleet(source, tmp_path / "repo")
    before = records(source)
    backup = tmp_path / "b.zip"
    assert netinstall("server", "backup", str(source), "--to", str(backup)).returncode == 0
    old = as_revision_8(backup, tmp_path / "at-0008.zip")
    where = tmp_path / "pg"
    done = netinstall("server", "restore", str(where), "--from", str(old), "--db", postgres_url)
    assert done.returncode == 0, done.stderr
    assert "revision 0008, from sqlite" in done.stderr
    (found,) = execute(where, text("SELECT version_num FROM alembic_version"))
    assert [tuple(row) for row in found] == [(HEAD,)]
    assert HEAD == "0012"
    assert records(where) == before
    check_secrets(where, secrets)
    check_pools_and_jobs(where)
