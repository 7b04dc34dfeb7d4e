"""The registry: hosts, profiles, events, repositories and settings in SQLite (SPEC §9).

One file, ``DIR/registry.sqlite``, shared by the running server and the CLI: WAL
mode (readers never block the writer), a busy timeout, and short transactions
(``BEGIN IMMEDIATE`` for every read-modify-write, so two writers never lose an
update). A ``Registry`` may be used from several threads; it serialises its own
calls. Install tokens live from the assignment of the work until ``running``;
every stored event message has the host's secrets replaced by ``REDACTED``.
"""

from __future__ import annotations

import enum
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import replace
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from common.errors import InputError, NetinstallError
from pxe_server import migrations as schema
from pxe_server.checkin import Reported, apply_checkin, reported_state
from pxe_server.model import (
    AGENT_WORK,
    REPORTABLE,
    Event,
    Host,
    Profile,
    RebootPolicy,
    Repository,
    SanTarget,
    State,
    Work,
    check_version,
    normalise_mac,
    reported_from,
    transition_allowed,
)
from pxe_server.registry_input import (
    Variables,
    check_profile,
    choice,
    host_name,
    progress_of,
    san_target,
    variables_of,
)
from pxe_server.secrets import new_token, redact, same_token

REGISTRY_FILE = "registry.sqlite"
BUSY_TIMEOUT_MS = 10_000
CHECKIN_INTERVAL = 300  # seconds between agent check-ins, handed out with the credential


class UnknownHost(InputError):
    """No host with this MAC is registered (the HTTP API answers 404)."""


class TransitionRefused(InputError):
    """An event that would move a host's state backwards or out of ``failed``."""


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP  # update_host: leave this field as it is


def default_profile() -> Profile:
    """The ``default`` profile: a fresh install from the server's repository."""
    template = resources.files("pxe_server").joinpath("default_profile.xml.j2")
    return Profile(name="default", template=template.read_text("utf-8"))


def _new_work(
    old: Host,
    work: Work,
    *,
    netboot_armed: bool,
    assigned_version: str | None,
    reboot_policy: RebootPolicy = RebootPolicy.AUTO,
) -> Host:
    """``old`` given new work: state pending, step cleared, a new install token."""
    return replace(
        old,
        state=State.PENDING,
        step=None,
        progress=None,
        token=new_token(),
        work=work,
        netboot_armed=netboot_armed,
        assigned_version=assigned_version,
        reboot_policy=reboot_policy,
    )


class Registry:
    """The registry file of one server directory. Open with ``Registry.open(directory)``."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.path = path

    @classmethod
    def open(cls, directory: Path) -> Registry:
        """Open ``directory/registry.sqlite``, creating it (0600, dir 0700) or migrating it."""
        path = Path(directory) / REGISTRY_FILE
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Created 0600 before SQLite sees it: it holds tokens (WAL files copy the mode).
            # Only when missing: closing any descriptor of a file drops every POSIX lock
            # this process holds on it, and a connection of ours without its shared lock
            # lets another process's close delete the WAL under us (split registries).
            if not path.exists():
                with suppress(FileExistsError):
                    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise NetinstallError(f"cannot open the registry {path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        registry = cls(conn, path)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            with registry._write():
                schema.migrate(conn)
                if conn.execute(schema.SELECT_API_KEY).fetchone() is None:
                    conn.execute("INSERT INTO secrets VALUES ('api_token', ?)", (new_token(),))
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise NetinstallError(f"cannot open the registry {path}: {exc}") from exc
            raise
        return registry

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, taken up front so that reads inside it stay valid."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # -- server settings -------------------------------------------------------

    def api_token(self) -> str:
        return str(self._query(schema.SELECT_API_KEY)[0][0])

    def settings(self) -> dict[str, str]:
        return {row["key"]: row["value"] for row in self._query("SELECT key, value FROM settings")}

    def set_setting(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- profiles --------------------------------------------------------------

    def add_profile(self, profile: Profile) -> None:
        check_profile(profile)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM profiles WHERE name = ?", (profile.name,)).fetchone():
                raise InputError(f"profile {profile.name!r} exists already")
            conn.execute(schema.INSERT_PROFILE, schema.profile_row(profile))

    def update_profile(self, profile: Profile) -> None:
        """Replace a profile; refused when a host of it would no longer fit (``_check_san``)."""
        check_profile(profile)
        with self._write() as conn:
            hosts = conn.execute(f"{schema.SELECT_HOSTS} WHERE profile = ?", (profile.name,))
            for host_row in hosts.fetchall():
                self._check_san_of(schema.host_from(host_row), profile.san_boot, profile.multipath)
            row = schema.profile_row(profile)
            done = conn.execute(schema.UPDATE_PROFILE, (*row[1:], row[0]))
            if done.rowcount == 0:
                raise InputError(f"no profile {profile.name!r}")

    def get_profile(self, name: str) -> Profile | None:
        rows = self._query("SELECT * FROM profiles WHERE name = ?", (name,))
        return schema.profile_from(rows[0]) if rows else None

    def list_profiles(self) -> list[Profile]:
        return [schema.profile_from(r) for r in self._query("SELECT * FROM profiles ORDER BY name")]

    # -- hosts -----------------------------------------------------------------

    @staticmethod
    def _assigned_version(conn: sqlite3.Connection, profile: str) -> str | None:
        """The profile's payload version, else the server's ``payload_version`` setting."""
        found = conn.execute("SELECT payload_version FROM profiles WHERE name = ?", (profile,))
        row = found.fetchone()
        if row is None:
            raise InputError(f"no profile {profile!r}; see `netinstall profile list`")
        if row[0] is None:
            row = conn.execute(
                "SELECT value FROM settings WHERE key = 'payload_version'"
            ).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _load(conn: sqlite3.Connection, mac: str) -> Host:
        row = conn.execute(f"{schema.SELECT_HOSTS} WHERE mac = ?", (mac,)).fetchone()
        if row is None:
            raise UnknownHost(f"no host {mac} in the registry")
        return schema.host_from(row)

    @staticmethod
    def _store(conn: sqlite3.Connection, host: Host) -> None:
        row = schema.host_row(host)
        conn.execute(schema.UPDATE_HOST, (*row[1:], row[0]))

    @staticmethod
    def _log(conn: sqlite3.Connection, host: Host, message: str | None, old: str | None) -> None:
        """Store an event from the host's fields; its secrets (and ``old``) become REDACTED."""
        if message is not None:
            secret = [
                host.token,
                host.agent_credential,
                old,
                conn.execute(schema.SELECT_API_KEY).fetchone()[0],
            ]
            secret += [v for k, v in host.variables if "password" in k.lower()]
            message = redact(message, secret)
        conn.execute(
            "INSERT INTO events (time, mac, state, step, progress, message) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), host.mac, host.state.value, host.step, host.progress, message),
        )

    def add_host(
        self,
        mac: str,
        *,
        profile: str = "default",
        name: str | None = None,
        variables: Variables = (),
        san: SanTarget | None = None,
    ) -> Host:
        """Register a host: state pending, netboot armed, a fresh install token."""
        mac = normalise_mac(mac)
        pairs, name, san = variables_of(variables), host_name(name), san_target(san)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM hosts WHERE mac = ?", (mac,)).fetchone():
                raise InputError(f"host {mac} exists already; see `netinstall host show {mac}`")
            host = Host(
                mac=mac,
                name=name,
                profile=profile,
                variables=pairs,
                assigned_version=self._assigned_version(conn, profile),
                token=new_token(),
                work=Work.INSTALL,
                san=san,
            )
            self._check_san(conn, host)
            conn.execute(schema.INSERT_HOST, schema.host_row(host))
            self._log(conn, host, "added to the registry", None)
        return host

    def get_host(self, mac: str) -> Host | None:
        rows = self._query(f"{schema.SELECT_HOSTS} WHERE mac = ?", (normalise_mac(mac),))
        return schema.host_from(rows[0]) if rows else None

    def list_hosts(self) -> list[Host]:
        return [schema.host_from(row) for row in self._query(f"{schema.SELECT_HOSTS} ORDER BY mac")]

    def update_host(
        self,
        mac: str,
        *,
        name: str | Literal[_Keep.KEEP] | None = KEEP,
        profile: str | Literal[_Keep.KEEP] = KEEP,
        variables: Variables | Literal[_Keep.KEEP] = KEEP,
        san: SanTarget | Literal[_Keep.KEEP] | None = KEEP,
    ) -> Host:
        """Operator edits; a field left at ``KEEP`` is unchanged. A new profile sets the
        assigned version (an installed host then shows assigned != running)."""
        mac = normalise_mac(mac)
        with self._write() as conn:
            host = self._load(conn, mac)
            if name is not KEEP:
                host = replace(host, name=host_name(name))
            if profile is not KEEP:
                version = self._assigned_version(conn, profile)
                host = replace(host, profile=profile, assigned_version=version)
            if variables is not KEEP:
                host = replace(host, variables=variables_of(variables))
            if san is not KEEP:
                host = replace(host, san=san_target(san))
            self._check_san(conn, host)
            self._store(conn, host)
        return host

    @classmethod
    def _check_san(cls, conn: sqlite3.Connection, host: Host) -> None:
        row = conn.execute(
            "SELECT san_boot, multipath FROM profiles WHERE name = ?", (host.profile,)
        ).fetchone()
        if row is not None:
            cls._check_san_of(host, bool(row[0]), bool(row[1]))

    @staticmethod
    def _check_san_of(host: Host, san_boot: bool, multipath: bool) -> None:
        """A host of a SAN-boot profile needs its root LUN (its iPXE script hooks it); a
        LUN reached over several paths needs the profile's multipath (else the installer
        and dom0 would see one disk twice)."""
        if san_boot and host.san is None:
            raise InputError(
                f"host {host.mac}: profile {host.profile!r} boots from a SAN; give the "
                "host its root LUN with --san-target iscsi:<server>::<port>:<lun>:<target IQN>"
            )
        if san_boot and host.san is not None and host.san.paths and not multipath:
            raise InputError(
                f"host {host.mac}: its root LUN has {len(host.san.root_paths)} paths, but "
                f"profile {host.profile!r} has no multipath: replace the profile with "
                f"`netinstall profile add {host.profile} --update --multipath ...`"
            )

    def delete_host(self, mac: str) -> None:
        """Forget a host and its events."""
        mac = normalise_mac(mac)
        with self._write() as conn:
            self._load(conn, mac)
            conn.execute("DELETE FROM events WHERE mac = ?", (mac,))
            conn.execute("DELETE FROM hosts WHERE mac = ?", (mac,))

    def _by_secret(self, column: str, given: str) -> Host | None:
        if not given:
            return None
        found: Host | None = None
        rows = self._query(f"{schema.SELECT_HOSTS} WHERE {column} IS NOT NULL")
        for row in rows:  # every stored secret is compared: no SQL equality, no early exit
            if same_token(given, row[column]) and found is None:
                found = schema.host_from(row)
        return found

    def host_by_token(self, token: str) -> Host | None:
        """The host whose live install token this is (constant-time comparisons)."""
        return self._by_secret("token", token)

    def host_by_agent_credential(self, credential: str) -> Host | None:
        return self._by_secret("agent_credential", credential)

    # -- state -----------------------------------------------------------------

    def record_event(
        self,
        mac: str,
        state: State | str,
        *,
        step: str | None = None,
        progress: float | None = None,
        message: str | None = None,
        facts: Mapping[str, object] | None = None,
    ) -> tuple[Host, dict[str, object]]:
        """Apply a reported event; the host after it and the reply body for the client.

        Repeating the current state keeps step/progress that are not given; a new
        state replaces them. ``installed``/``failed`` disarm netboot. The first
        ``running`` kills the install token and hands out the agent credential.
        """
        mac = normalise_mac(mac)
        try:
            new = State(state)
        except ValueError:
            raise InputError(f"unknown state {state!r}") from None
        if new not in REPORTABLE:
            names = ", ".join(s.value for s in REPORTABLE)
            raise InputError(f"state {new.value!r} cannot be reported; expected one of {names}")
        progress = progress_of(progress)
        reply: dict[str, object] = {}
        with self._write() as conn:
            old = self._load(conn, mac)
            current = reported_from(old)
            if not transition_allowed(current, new):
                raise TransitionRefused(
                    f"host {mac} is {old.state.value}; it cannot become {new.value} "
                    "(rearm it for new work)"
                )
            if new is current:
                step = old.step if step is None else step
                progress = old.progress if progress is None else progress
            host = replace(old, state=new, step=step, progress=progress)
            if new in (State.INSTALLED, State.FAILED):
                host = replace(host, netboot_armed=False)
            if new is State.RUNNING:
                host = replace(host, work=None)
                if facts is not None:
                    host = replace(host, facts=dict(facts))
                version = (facts or {}).get("payload_version")
                if isinstance(version, str) and version:
                    host = replace(host, running_version=version)
                if old.state is not State.RUNNING:
                    host = replace(host, token=None, agent_credential=new_token())
                    reply = {
                        "agent_credential": host.agent_credential,
                        "checkin_interval": CHECKIN_INTERVAL,
                    }
            self._store(conn, host)
            self._log(conn, host, message, old.token)
        return host, reply

    def mark_signalled(self, mac: str) -> Host:
        """A boot config (or the installer) was fetched: pending -> signalled, else unchanged."""
        mac = normalise_mac(mac)
        with self._write() as conn:
            host = self._load(conn, mac)
            if host.state is State.PENDING:
                host = replace(host, state=State.SIGNALLED, step=None, progress=None)
                self._store(conn, host)
                self._log(conn, host, "fetched its boot configuration", None)
        return host

    def rearm(self, mac: str) -> Host:
        """New network-install work: state pending, netboot armed, a new install token.

        The agent credential (if any) stays valid until the new system reports running.
        """
        mac = normalise_mac(mac)
        with self._write() as conn:
            old = self._load(conn, mac)
            host = _new_work(
                old,
                Work.INSTALL,
                netboot_armed=True,
                assigned_version=self._assigned_version(conn, old.profile),
            )
            self._store(conn, host)
            self._log(conn, host, "rearmed: new install work", old.token)
        return host

    def assign_work(
        self,
        mac: str,
        work: Work | str,
        *,
        version: str | None = None,
        reboot: RebootPolicy | str = RebootPolicy.AUTO,
    ) -> Host:
        """New agent-driven work (SPEC §8, §9): an upgrade to ``version``, or a restore.

        State pending, a new install token, the reboot policy; netboot is never armed
        (the agent boots the installer; a network-first boot order must not wipe the
        host). The agent credential stays valid until the new system reports running.
        InputError unless the host has an agent credential (it reported running
        before) and, for an upgrade, ``version`` is a registered repository.
        """
        mac = normalise_mac(mac)
        kind = choice(Work, work, "work", AGENT_WORK)
        policy = choice(RebootPolicy, reboot, "reboot policy", tuple(RebootPolicy))
        with self._write() as conn:
            old = self._load(conn, mac)
            if old.agent_credential is None:
                raise InputError(
                    f"host {mac} has never reported running, so it has no agent to "
                    f"{kind.value} it; install it over the network (`netinstall host rearm {mac}`)"
                )
            assigned = old.assigned_version
            what = "restore from the backup partition"
            if kind is Work.UPGRADE:
                if version is None:
                    raise InputError("an upgrade needs the version to upgrade to")
                assigned = self._registered(conn, version).version
                what = f"upgrade to {assigned}"
            host = _new_work(
                old, kind, netboot_armed=False, assigned_version=assigned, reboot_policy=policy
            )
            self._store(conn, host)
            self._log(conn, host, f"assigned: {what} (reboot {policy.value})", old.token)
        return host

    def check_in(
        self,
        mac: str,
        running_version: str,
        reported: Reported | str,
        multipath: list[dict[str, object]] | None = None,
    ) -> Host:
        """Record an agent check-in (``checkin.apply_checkin``); the host after it."""
        mac = normalise_mac(mac)
        state = reported_state(reported)
        with self._write() as conn:
            old = self._load(conn, mac)
            host, message = apply_checkin(old, running_version, state, time.time(), multipath)
            self._store(conn, host)
            if message is not None:
                self._log(conn, host, message, old.token)
        return host

    # -- repositories ----------------------------------------------------------

    @staticmethod
    def _registered(conn: sqlite3.Connection, version: str) -> Repository:
        row = conn.execute("SELECT * FROM repositories WHERE version = ?", (version,)).fetchone()
        if row is None:
            raise InputError(
                f"version {version} is not registered; see `netinstall server repo list`, "
                "add it with `netinstall server repo add DIR`"
            )
        return schema.repository_from(row)

    def add_repository(self, version: str, directory: str, *, replace: bool = False) -> str:
        """Register ``directory`` as the repository of ``version``: "added", "unchanged"
        or "replaced". InputError if another directory holds it and not ``replace``."""
        check_version(version)
        with self._write() as conn:
            found = conn.execute(
                "SELECT directory FROM repositories WHERE version = ?", (version,)
            ).fetchone()
            if found is not None and found[0] == directory:
                return "unchanged"
            if found is not None and not replace:
                raise InputError(
                    f"version {version} is registered to {found[0]} already; "
                    "give --replace to serve it from the new directory"
                )
            conn.execute(
                "INSERT INTO repositories (version, directory, added) VALUES (?, ?, ?) "
                "ON CONFLICT (version) DO UPDATE SET directory = excluded.directory",
                (version, directory, time.time()),
            )
        return "added" if found is None else "replaced"

    def repositories(self) -> list[Repository]:
        """Every registered repository, oldest first."""
        rows = self._query("SELECT * FROM repositories ORDER BY added, version")
        return [schema.repository_from(row) for row in rows]

    def repository(self, version: str) -> Repository | None:
        rows = self._query("SELECT * FROM repositories WHERE version = ?", (version,))
        return schema.repository_from(rows[0]) if rows else None

    # -- events ----------------------------------------------------------------

    def events(self, mac: str, limit: int | None = None) -> list[Event]:
        """The host's events, oldest first; with ``limit``, only the latest ``limit``."""
        sql = "SELECT * FROM events WHERE mac = ? ORDER BY id DESC LIMIT ?"
        rows = self._query(sql, (normalise_mac(mac), -1 if limit is None else max(limit, 0)))
        return [schema.event_from(row) for row in reversed(rows)]

    def last_event(self, mac: str) -> Event | None:
        found = self.events(mac, limit=1)
        return found[0] if found else None
