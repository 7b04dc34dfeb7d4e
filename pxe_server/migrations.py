"""The registry's schema: numbered migrations, and rows <-> model values (SPEC §9).

Migration N takes a registry from schema version N-1 to N. Each is a list of
statements run inside the caller's transaction (never ``executescript``, which
commits on its own). Append new migrations; never edit one that has shipped.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict

from common.errors import NetinstallError
from pxe_server.model import (
    BootChain,
    Event,
    Host,
    Profile,
    RebootPolicy,
    Repository,
    SanTarget,
    State,
    Work,
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
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
)

LATEST = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The registry's schema version; 0 for an empty file."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date inside the caller's (write) transaction; the new version.

    A registry written by a newer netinstall is refused rather than misread.
    """
    current = schema_version(conn)
    if current > LATEST:
        raise NetinstallError(
            f"the registry has schema version {current}, newer than this netinstall "
            f"understands ({LATEST}); upgrade netinstall"
        )
    for statements in MIGRATIONS[current:]:
        for statement in statements:
            conn.execute(statement)
    if current == 0:
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (LATEST,))
    elif current < LATEST:
        conn.execute("UPDATE schema_version SET version = ?", (LATEST,))
    return LATEST


# -- rows <-> values ------------------------------------------------------------

HOST_COLUMNS = (
    "mac",
    "name",
    "profile",
    "variables",
    "netboot_armed",
    "state",
    "step",
    "progress",
    "assigned_version",
    "running_version",
    "token",
    "agent_credential",
    "facts",
    "work",
    "reboot_policy",
    "last_checkin",
    "san",
)
PROFILE_COLUMNS = (
    "name",
    "template",
    "boot_chain",
    "xen_args",
    "kernel_args",
    "payload_version",
    "san_boot",
    "multipath",
    "storage_nic",
)
# Statements built from the constant column lists above (no user text reaches them).
SELECT_HOSTS = f"SELECT {', '.join(HOST_COLUMNS)} FROM hosts"  # noqa: S608
_PLACEHOLDERS = ", ".join("?" * len(HOST_COLUMNS))
INSERT_HOST = f"INSERT INTO hosts ({', '.join(HOST_COLUMNS)}) VALUES ({_PLACEHOLDERS})"  # noqa: S608
UPDATE_HOST = f"UPDATE hosts SET {', '.join(f'{c} = ?' for c in HOST_COLUMNS[1:])} WHERE mac = ?"  # noqa: S608
INSERT_PROFILE = (
    f"INSERT INTO profiles ({', '.join(PROFILE_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(PROFILE_COLUMNS))})"
)
UPDATE_PROFILE = (
    f"UPDATE profiles SET {', '.join(f'{c} = ?' for c in PROFILE_COLUMNS[1:])} WHERE name = ?"  # noqa: S608
)
SELECT_API_KEY = "SELECT value FROM secrets WHERE name = 'api_token'"

Row = tuple[str | int | float | None, ...]


def host_row(host: Host) -> Row:
    """``host`` as values in ``HOST_COLUMNS`` order (variables as a JSON object)."""
    return (
        host.mac,
        host.name,
        host.profile,
        json.dumps(dict(host.variables)),
        int(host.netboot_armed),
        host.state.value,
        host.step,
        host.progress,
        host.assigned_version,
        host.running_version,
        host.token,
        host.agent_credential,
        json.dumps(dict(host.facts), sort_keys=True),
        None if host.work is None else Work(host.work).value,
        RebootPolicy(host.reboot_policy).value,
        host.last_checkin,
        None if host.san is None else json.dumps(asdict(host.san), sort_keys=True),
    )


def host_from(row: sqlite3.Row) -> Host:
    return Host(
        mac=row["mac"],
        name=row["name"],
        profile=row["profile"],
        variables=tuple(json.loads(row["variables"]).items()),
        netboot_armed=bool(row["netboot_armed"]),
        state=State(row["state"]),
        step=row["step"],
        progress=row["progress"],
        assigned_version=row["assigned_version"],
        running_version=row["running_version"],
        token=row["token"],
        agent_credential=row["agent_credential"],
        facts=_facts(row["facts"]),
        work=None if row["work"] is None else Work(row["work"]),
        reboot_policy=RebootPolicy(row["reboot_policy"]),
        last_checkin=row["last_checkin"],
        san=_san(row["san"]),
    )


def _san(text: str | None) -> SanTarget | None:
    if text is None:
        return None
    value = json.loads(text)
    fields = {k: v for k, v in value.items() if k in SanTarget.__dataclass_fields__}
    fields["paths"] = tuple(fields.get("paths") or ())  # stored as a JSON list
    return SanTarget(**fields)


def _facts(text: str) -> dict[str, object]:
    """The stored facts; a damaged value reads as none rather than breaking every listing."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def profile_row(profile: Profile) -> Row:
    """``profile`` as values in ``PROFILE_COLUMNS`` order."""
    return (
        profile.name,
        profile.template,
        BootChain(profile.boot_chain).value,
        profile.xen_args,
        profile.kernel_args,
        profile.payload_version,
        int(profile.san_boot),
        int(profile.multipath),
        profile.storage_nic,
    )


def profile_from(row: sqlite3.Row) -> Profile:
    return Profile(
        name=row["name"],
        template=row["template"],
        boot_chain=BootChain(row["boot_chain"]),
        xen_args=row["xen_args"],
        kernel_args=row["kernel_args"],
        payload_version=row["payload_version"],
        san_boot=bool(row["san_boot"]),
        multipath=bool(row["multipath"]),
        storage_nic=row["storage_nic"],
    )


def event_from(row: sqlite3.Row) -> Event:
    return Event(
        time=row["time"],
        mac=row["mac"],
        state=State(row["state"]),
        step=row["step"],
        progress=row["progress"],
        message=row["message"],
    )


def repository_from(row: sqlite3.Row) -> Repository:
    return Repository(version=row["version"], directory=row["directory"])
