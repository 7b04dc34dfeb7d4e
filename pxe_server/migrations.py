"""The registry's hand-written SQLite migrations, 1..8: history, never changed (SPEC §9).

Registries made before the registry moved to SQLAlchemy and Alembic have a
``schema_version`` row and were migrated by these; ``pxe_server.store.schema`` still
brings such a registry to schema 8 with them, on the SQLite connection inside the
registry's write transaction, and then hands it to Alembic, whose baseline revision is
schema 8. New schema changes are Alembic revisions (``pxe_server/store/migrations``),
never new entries here. They are SQLite's own (``sqlite3``): no other engine ever had a
registry of these schemas.

Migration N takes a registry from schema version N-1 to N. Each is a list of
statements, or a function of the connection and the server directory, run inside the
caller's transaction (never ``executescript``, which commits on its own).

Secrets (migration 5, docs/protocol.md "Secrets"): the registry's key (``Keyring``)
is a row of ``secrets``; install tokens are stored sealed with their keyed hash,
agent credentials and the API token as keyed hashes only, password variables as
SHA-512 crypt hashes. A migration that removed clear text leaves ``scrub_pending``
in ``secrets``: the registry then vacuums the file and truncates its WAL.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from common.errors import NetinstallError
from pxe_server.passwords import password_hash
from pxe_server.registry_input import hashed_template
from pxe_server.secrets import (
    API_TOKEN_FILE,
    Keyring,
    Purpose,
    is_password_variable,
    new_key,
    write_secret_file,
)

Migration = tuple[str, ...] | Callable[[sqlite3.Connection, Path], None]
KEY = "registry_key"
API_TOKEN_HASH = "api_token_hash"  # noqa: S105 - a row name
SCRUB_PENDING = "scrub_pending"
SELECT_SECRET = "SELECT value FROM secrets WHERE name = ?"  # noqa: S105 - SQL

# The hosts table from migration 5 on: no secret in clear (see the module docstring).
_HOSTS_5 = """CREATE TABLE {name} (
    mac TEXT PRIMARY KEY,
    name TEXT,
    profile TEXT NOT NULL REFERENCES profiles(name),
    variables TEXT NOT NULL DEFAULT '{{}}',
    netboot_armed INTEGER NOT NULL,
    state TEXT NOT NULL,
    step TEXT,
    progress REAL,
    assigned_version TEXT,
    running_version TEXT,
    token_sealed TEXT,
    token_hash TEXT UNIQUE,
    agent_credential_hash TEXT UNIQUE,
    facts TEXT NOT NULL DEFAULT '{{}}',
    work TEXT,
    reboot_policy TEXT NOT NULL DEFAULT 'auto',
    last_checkin REAL,
    san TEXT
)"""
# What migration 5 copies as it is.
_KEPT_5 = (
    "mac, name, profile, netboot_armed, state, step, progress, assigned_version, "
    "running_version, facts, work, reboot_policy, last_checkin, san"
)


def keyring(conn: sqlite3.Connection) -> Keyring:
    """The registry's key, made the first time it is asked for (inside a write)."""
    row = conn.execute(SELECT_SECRET, (KEY,)).fetchone()
    if row is None:
        key = new_key()
        conn.execute("INSERT INTO secrets (name, value) VALUES (?, ?)", (KEY, key.hex()))
        return Keyring(key)
    return Keyring(bytes.fromhex(row[0]))


def _hash_secrets(conn: sqlite3.Connection, directory: Path) -> None:
    """Migration 5: every secret in clear becomes a keyed hash (tokens also sealed), every
    password variable and template password a SHA-512 crypt hash, ``sshpassword=`` leaves
    the profiles (the installer never used it); the API token stays only in its 0600
    file, ``DIR/api-token``, written again if it is missing or holds another token."""
    keys = keyring(conn)
    old = conn.execute("SELECT mac, variables, token, agent_credential FROM hosts").fetchall()
    conn.execute(_HOSTS_5.format(name="hosts_5"))
    conn.execute(f"INSERT INTO hosts_5 ({_KEPT_5}) SELECT {_KEPT_5} FROM hosts")  # noqa: S608
    for mac, variables, token, credential in old:
        conn.execute(
            "UPDATE hosts_5 SET variables = ?, token_sealed = ?, token_hash = ?, "
            "agent_credential_hash = ? WHERE mac = ?",
            (
                json.dumps(_hashed_passwords(json.loads(variables))),
                keys.seal(token) if token else None,
                keys.hash(Purpose.INSTALL_TOKEN, token) if token else None,
                keys.hash(Purpose.AGENT_CREDENTIAL, credential) if credential else None,
                mac,
            ),
        )
    conn.execute("DROP TABLE hosts")
    conn.execute("ALTER TABLE hosts_5 RENAME TO hosts")
    rows = conn.execute("SELECT name, template, xen_args, kernel_args FROM profiles")
    for name, template, xen_args, kernel_args in rows.fetchall():
        conn.execute(
            "UPDATE profiles SET template = ?, xen_args = ?, kernel_args = ? WHERE name = ?",
            (hashed_template(template), _without_ssh(xen_args), _without_ssh(kernel_args), name),
        )
    api = conn.execute(SELECT_SECRET, ("api_token",)).fetchone()
    if api is not None:
        token_file = directory / API_TOKEN_FILE
        try:
            kept = token_file.read_text("utf-8").strip()
        except OSError:
            kept = None
        if kept != api[0]:
            write_secret_file(token_file, api[0] + "\n")
        conn.execute(
            "INSERT INTO secrets (name, value) VALUES (?, ?)",
            (API_TOKEN_HASH, keys.hash(Purpose.API_TOKEN, api[0])),
        )
        conn.execute("DELETE FROM secrets WHERE name = 'api_token'")
    if old or api is not None or conn.execute("SELECT 1 FROM profiles").fetchone():
        conn.execute("INSERT INTO secrets (name, value) VALUES (?, '1')", (SCRUB_PENDING,))


def _hashed_passwords(variables: dict[str, str]) -> dict[str, str]:
    """Stored variables with each password's value hashed (names as they were)."""
    return {
        k: password_hash(str(v)) if is_password_variable(k) else v for k, v in variables.items()
    }


def _without_ssh(args: str) -> str:
    words = args.split()
    kept = [w for w in words if not w.startswith("sshpassword=")]
    return args if kept == words else " ".join(kept)


MIGRATIONS: tuple[Migration, ...] = (
    # 1: the first schema.
    (
        """CREATE TABLE settings (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
        # Server secrets (the API token); kept out of settings() on purpose.
        """CREATE TABLE secrets (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
        """CREATE TABLE profiles (
            name TEXT PRIMARY KEY,
            template TEXT NOT NULL,
            boot_chain TEXT NOT NULL,
            xen_args TEXT NOT NULL,
            kernel_args TEXT NOT NULL,
            payload_version TEXT
        )""",
        """CREATE TABLE hosts (
            mac TEXT PRIMARY KEY,
            name TEXT,
            profile TEXT NOT NULL REFERENCES profiles(name),
            variables TEXT NOT NULL DEFAULT '{}',
            netboot_armed INTEGER NOT NULL,
            state TEXT NOT NULL,
            step TEXT,
            progress REAL,
            assigned_version TEXT,
            running_version TEXT,
            token TEXT UNIQUE,
            agent_credential TEXT UNIQUE
        )""",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time REAL NOT NULL,
            mac TEXT NOT NULL,
            state TEXT NOT NULL,
            step TEXT,
            progress REAL,
            message TEXT
        )""",
        "CREATE INDEX events_by_mac ON events (mac, id)",
    ),
    # 2: what the installed system last reported with running (a JSON object).
    ("ALTER TABLE hosts ADD COLUMN facts TEXT NOT NULL DEFAULT '{}'",),
    # 3: several repositories side by side; agent-driven work (upgrade, restore).
    (
        """CREATE TABLE repositories (
            version TEXT PRIMARY KEY,
            directory TEXT NOT NULL,
            added REAL NOT NULL
        )""",
        # The default repository of an older registry (server init --repo DIR) is the first.
        """INSERT INTO repositories (version, directory, added)
            SELECT v.value, r.value, CAST(strftime('%s', 'now') AS REAL)
            FROM settings AS v, settings AS r
            WHERE v.key = 'payload_version' AND r.key = 'repo' AND r.value NOT LIKE '%://%'""",
        "ALTER TABLE hosts ADD COLUMN work TEXT",
        "ALTER TABLE hosts ADD COLUMN reboot_policy TEXT NOT NULL DEFAULT 'auto'",
        "ALTER TABLE hosts ADD COLUMN last_checkin REAL",
        # Until running, a host's work is the network install it was added or rearmed for.
        "UPDATE hosts SET work = 'install' WHERE state != 'running'",
    ),
    # 4: SAN boot: a profile's iSCSI/iBFT and multipath settings, a host's root LUN (JSON).
    (
        "ALTER TABLE profiles ADD COLUMN san_boot INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE profiles ADD COLUMN multipath INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE profiles ADD COLUMN storage_nic TEXT NOT NULL DEFAULT 'net1'",
        "ALTER TABLE hosts ADD COLUMN san TEXT",
    ),
    # 5: no secret in clear (the module docstring).
    _hash_secrets,
    # 6: install tokens become enrolment tickets (docs/protocol.md, "Install tokens"):
    # the key an installer enrolled, where from and when; when the token was last handed
    # to a boot, when it expires, and the conflict an operator must see.
    (
        "ALTER TABLE hosts ADD COLUMN install_key_hash TEXT",
        "CREATE UNIQUE INDEX hosts_by_install_key ON hosts (install_key_hash)",
        "ALTER TABLE hosts ADD COLUMN enrolled_from TEXT",
        "ALTER TABLE hosts ADD COLUMN enrolled_at REAL",
        "ALTER TABLE hosts ADD COLUMN ticket_issued_at REAL",
        "ALTER TABLE hosts ADD COLUMN token_expires REAL",
        "ALTER TABLE hosts ADD COLUMN conflict TEXT",
    ),
    # 7: render caching (README "Fast request path"): each host's revision of what its
    # renders read, new from the registry-wide counter with every write that changes it.
    (
        "ALTER TABLE hosts ADD COLUMN revision INTEGER NOT NULL DEFAULT 0",
        "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "INSERT INTO counters (name, value) VALUES ('revision', 0)",
        "CREATE INDEX hosts_by_profile ON hosts (profile)",
    ),
    # 8: a bound on each host's events (limits.MAX_EVENTS_PER_HOST): their count, kept in
    # the host's row by every write that adds one.
    (
        "ALTER TABLE hosts ADD COLUMN event_count INTEGER NOT NULL DEFAULT 0",
        "UPDATE hosts SET event_count = (SELECT COUNT(*) FROM events WHERE events.mac = hosts.mac)",
    ),
)

LATEST = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The registry's schema version; 0 for an empty file."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: sqlite3.Connection, directory: Path) -> int:
    """Bring the schema of the registry in ``directory`` up to date inside the caller's
    (write) transaction; the new version.

    A registry written by a newer netinstall is refused rather than misread.
    """
    current = schema_version(conn)
    if current > LATEST:
        raise NetinstallError(
            f"the registry has schema version {current}, newer than this netinstall "
            f"understands ({LATEST}); upgrade netinstall"
        )
    for migration in MIGRATIONS[current:]:
        if callable(migration):
            migration(conn, directory)
            continue
        for statement in migration:
            conn.execute(statement)
    if current == 0:
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (LATEST,))
    elif current < LATEST:
        conn.execute("UPDATE schema_version SET version = ?", (LATEST,))
    return LATEST
