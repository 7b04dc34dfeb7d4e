"""Migration 5: a registry written before issue 16 (schema 4, secrets in clear) opens with
every secret hashed, and neither the file nor its WAL keeps a byte of the old text."""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from pxe_server import migrations, render
from pxe_server.model import ServerSettings, State
from pxe_server.passwords import is_sha512_crypt, sha512_crypt
from pxe_server.registry import REGISTRY_FILE, Registry
from pxe_server.store.schema import ALEMBIC_MARK

SCHEMA_V4 = Path(__file__).parents[1] / "data" / "registry" / "schema-v4.sql"
INSTALLED = "52:54:00:00:00:01"  # installed, not booted yet: reports running with its token
RUNNING = "52:54:00:00:00:02"  # running: checks in with its agent credential
GONE = "52:54:00:00:00:03"  # removed before the upgrade: its row is a free cell
# Secrets as netinstall wrote them in clear (each long and unlike anything else in the file).
API = "ApiTokenInClear-0123456789abcdefg"
TOKEN = "InstallTokenInClear-0123456789abc"
CREDENTIAL = "AgentCredentialInClear-0123456789"
GONE_TOKEN = "RemovedHostTokenInClear-012345678"
PASSWORD = "root-Password-In-Clear-4711"
ADMIN_PASSWORD = "bmc-Password-In-Clear-0815"
GONE_PASSWORD = "removed-Host-Password-In-Clear-99"
TEMPLATE_PASSWORD = "template-Password-In-Clear-42"
SSH_PASSWORD = "ssh-Password-In-Clear-1234"
SECRETS = (
    API,
    TOKEN,
    CREDENTIAL,
    GONE_TOKEN,
    PASSWORD,
    ADMIN_PASSWORD,
    GONE_PASSWORD,
    TEMPLATE_PASSWORD,
    SSH_PASSWORD,
)
TEMPLATE = f"""<?xml version="1.0" encoding="UTF-8"?>
<installation mode="fresh">
  <primary-disk>sda</primary-disk>
  <root-password>{TEMPLATE_PASSWORD}</root-password>
  <source type="url">{{{{ repo_url | e }}}}</source>
  <admin-interface name="eth0" proto="dhcp"/>
  <timezone>Etc/UTC</timezone>
</installation>
"""
KERNEL_ARGS = f"console=hvc0 sshpassword={SSH_PASSWORD} net.ifnames=0"
SETTINGS = ServerSettings(http_base="http://192.0.2.1:8080", tftp_address="192.0.2.1")


def _host(conn: sqlite3.Connection, mac: str, state: str, **secrets: object) -> None:
    conn.execute(
        "INSERT INTO hosts (mac, profile, variables, netboot_armed, state, token, "
        "agent_credential, work) VALUES (?, 'default', ?, 0, ?, ?, ?, ?)",
        (
            mac,
            json.dumps(secrets["variables"]),
            state,
            secrets.get("token"),
            secrets.get("credential"),
            None if state == "running" else "install",
        ),
    )


def old_registry(directory: Path) -> None:
    """A schema-4 registry left as a crashed server leaves it: part of its history in
    the file (with a removed host's row in a free cell), the rest only in the WAL."""
    build = directory.parent / "build"
    build.mkdir()
    conn = sqlite3.connect(build / REGISTRY_FILE, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("PRAGMA secure_delete = OFF")
    lines = SCHEMA_V4.read_text().splitlines()
    for statement in "\n".join(x for x in lines if not x.startswith("--")).split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO settings VALUES ('payload_version', '0.1.0')")
    conn.execute("INSERT INTO secrets VALUES ('api_token', ?)", (API,))
    conn.execute(
        "INSERT INTO profiles (name, template, boot_chain, xen_args, kernel_args) "
        "VALUES ('default', ?, 'seed', 'dom0_mem=1G', ?)",
        (TEMPLATE, KERNEL_ARGS),
    )
    _host(conn, GONE, "pending", token=GONE_TOKEN, variables={"root_password": GONE_PASSWORD})
    conn.execute(
        "INSERT INTO events (time, mac, state, message) VALUES (1.0, ?, 'pending', 'added')",
        (GONE,),
    )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all of it in the file itself
    conn.execute("DELETE FROM hosts WHERE mac = ?", (GONE,))  # a free cell keeps its text
    variables = {"root_password": PASSWORD, "bmc_password": ADMIN_PASSWORD, "disk": "vda"}
    _host(conn, INSTALLED, "installed", token=TOKEN, variables=variables)
    _host(conn, RUNNING, "running", credential=CREDENTIAL, variables={"disk": "sda"})
    # Crash: copy the file and its WAL while the connection still holds them.
    directory.mkdir(mode=0o700)
    for suffix in ("", "-wal"):
        shutil.copy2(build / (REGISTRY_FILE + suffix), directory / (REGISTRY_FILE + suffix))
    conn.close()
    (directory / REGISTRY_FILE).chmod(0o600)


def raw(directory: Path) -> bytes:
    """The registry file and its WAL (and shared-memory index), byte for byte."""
    files = [directory / (REGISTRY_FILE + s) for s in ("", "-wal", "-shm")]
    return b"".join(f.read_bytes() for f in files if f.exists())


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    where = tmp_path / "srv"
    old_registry(where)
    (where / "api-token").write_text(API + "\n")
    (where / "api-token").chmod(0o600)
    return where


def test_the_fixture_holds_every_secret_in_clear(directory: Path) -> None:
    before = raw(directory)
    for secret in SECRETS:
        assert secret.encode() in before, secret
    assert (directory / (REGISTRY_FILE + "-wal")).stat().st_size > 0


def test_migration_leaves_no_secret_in_the_file_or_its_wal(directory: Path) -> None:
    with Registry.open(directory) as registry:
        assert registry.get_host(INSTALLED) is not None
        during = raw(directory)
    after = raw(directory)
    for secret in SECRETS:
        assert secret.encode() not in during, secret
        assert secret.encode() not in after, secret
    wal = directory / (REGISTRY_FILE + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    conn = sqlite3.connect(directory / REGISTRY_FILE)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (ALEMBIC_MARK,)
        names = {row[0] for row in conn.execute("SELECT name FROM secrets")}
        assert migrations.LATEST < ALEMBIC_MARK
        # no scrub left pending; the update key (sealed) made at the first open
        assert names == {"registry_key", "api_token_hash", "update-key"}
        assert conn.execute("PRAGMA freelist_count").fetchone() == (0,)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(hosts)")}
        assert {"token", "agent_credential"}.isdisjoint(columns)
    finally:
        conn.close()


def test_migrated_secrets_keep_working(directory: Path) -> None:
    with Registry.open(directory) as registry:
        installed = registry.get_host(INSTALLED)
        assert installed is not None
        # The token the installed host holds still reports running; it is what its config
        # would carry; and the running host's agent checks in with its credential.
        assert installed.token == TOKEN
        assert registry.host_by_token(TOKEN) == installed
        assert registry.host_by_agent_credential(CREDENTIAL) == registry.get_host(RUNNING)
        assert registry.api_token_matches(API)
        assert registry.get_host(GONE) is None
        stored = dict(installed.variables)
        for name, password in (("root_password", PASSWORD), ("bmc_password", ADMIN_PASSWORD)):
            assert is_sha512_crypt(stored[name])
            assert sha512_crypt(password, stored[name].split("$")[2]) == stored[name]
        assert stored["disk"] == "vda"
        profile = registry.get_profile("default")
        assert profile is not None
        assert profile.kernel_args == "console=hvc0 net.ifnames=0"
        hashed = profile.template.split('<root-password type="hash">')[1].split("<")[0]
        assert sha512_crypt(TEMPLATE_PASSWORD, hashed.split("$")[2]) == hashed
        text = render.answer_file(installed, profile, SETTINGS, "http://192.0.2.1:8080/repo/")
        assert hashed in text
        _, reply = registry.record_event(INSTALLED, State.RUNNING)
        assert isinstance(reply["agent_credential"], str)
        assert registry.host_by_token(TOKEN) is None
    assert (directory / "api-token").read_text() == API + "\n"


def test_a_missing_api_token_file_is_written_from_the_old_token(directory: Path) -> None:
    (directory / "api-token").unlink()
    with Registry.open(directory) as registry:
        assert registry.api_token_matches(API)
    assert (directory / "api-token").read_text() == API + "\n"
    assert stat.S_IMODE((directory / "api-token").stat().st_mode) == 0o600
    assert API.encode() not in raw(directory)


def test_an_api_token_file_with_another_token_gets_the_one_the_server_accepted(
    directory: Path,
) -> None:
    (directory / "api-token").write_text("a token that no registry knows\n")
    Registry.open(directory).close()
    assert (directory / "api-token").read_text() == API + "\n"


def test_a_postponed_clean_up_is_done_at_the_next_open(directory: Path) -> None:
    with Registry.open(directory):
        pass
    conn = sqlite3.connect(directory / REGISTRY_FILE, isolation_level=None)
    conn.execute("INSERT INTO secrets VALUES ('scrub_pending', '1')")
    conn.execute("PRAGMA secure_delete = OFF")
    conn.execute("CREATE TABLE leftover (text TEXT)")
    conn.execute("INSERT INTO leftover VALUES (?)", (PASSWORD * 20,))
    conn.execute("DROP TABLE leftover")  # free pages with the text, the WAL too
    conn.close()
    with sqlite3.connect(directory / REGISTRY_FILE) as check:
        assert check.execute("PRAGMA freelist_count").fetchone()[0] > 0
    with Registry.open(directory):
        pass
    assert PASSWORD.encode() not in raw(directory)
    with sqlite3.connect(directory / REGISTRY_FILE) as check:
        assert check.execute("SELECT 1 FROM secrets WHERE name = 'scrub_pending'").fetchall() == []
