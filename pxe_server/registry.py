"""The registry: hosts, profiles, events, repositories and settings in SQLite (SPEC §9).

One file, ``DIR/registry.sqlite``, shared by the running server and the CLI: WAL
mode (readers never block the writer), a busy timeout, and short transactions
(``BEGIN IMMEDIATE`` for every read-modify-write, so two writers never lose an
update). A ``Registry`` may be used from several threads; it serialises its own
calls. Install tokens live from the assignment of the work until ``running``;
every stored event message has the host's secrets replaced by ``REDACTED``.

No secret is stored in clear (docs/protocol.md, "Secrets"): install tokens are
sealed under the registry's key and found by their keyed hash, agent credentials
and the API token are kept as keyed hashes only (the API token's clear copy is the
operator's ``DIR/api-token``, 0600), passwords as SHA-512 crypt hashes. SQLite's
``secure_delete`` is on, so what a write replaces leaves no readable free page; after
a migration that removed clear text the file is vacuumed and its WAL truncated.
"""

from __future__ import annotations

import enum
import hmac
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from common.errors import InputError, NetinstallError
from pxe_server import migrations as schema
from pxe_server.checkin import OFFERED, Reported, apply_checkin, reported_state
from pxe_server.limits import EVENTS_PRUNE_SLACK, MAX_EVENT_MESSAGE, MAX_EVENTS_PER_HOST
from pxe_server.model import (
    AGENT_WORK,
    NOT_ENROLLED,
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
    install_done,
    mac_syntax,
    normalise_mac,
    rendered_view,
    reported_from,
    transition_allowed,
)
from pxe_server.registry_input import (
    Variables,
    choice,
    host_name,
    profile_input,
    progress_of,
    san_target,
    variables_of,
)
from pxe_server.render_cache import RenderCache
from pxe_server.secrets import (
    API_TOKEN_FILE,
    Keyring,
    Purpose,
    is_password_variable,
    new_token,
    redact,
    redact_tokens,
    write_secret_file,
)

log = logging.getLogger("netinstall.registry")

T = TypeVar("T")

REGISTRY_FILE = "registry.sqlite"
BUSY_TIMEOUT_MS = 10_000
# Writes done at once on the caller's thread (``Registry.write_now``: the event loop's)
# never checkpoint the WAL themselves (a checkpoint syncs the file: milliseconds, more on
# a busy disk); after this many of them the writer thread checkpoints (PASSIVE), which
# keeps the WAL as small as SQLite's own automatic checkpoint (1,000 pages) would.
NOW_CHECKPOINT = 256
CHECKIN_INTERVAL = 300  # seconds between agent check-ins, handed out with the credential
# The first event of a host registered by unknown_policy install: how they are counted.
UNKNOWN_REGISTERED = "registered as an unknown MAC (unknown_policy install)"


DEFAULT_TOKEN_TTL = 24 * 3600  # seconds an install token enrols, from its first hand-out
TOKEN_TTL_SETTING = "install_token_ttl"  # noqa: S105 - a setting's name


class EnrolRefused(InputError):
    """An enrolment the registry refuses: ``status`` 401 (dead or expired token) or 409
    (another installer holds the enrolment: a conflict, recorded for the operator)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UnknownHost(InputError):
    """No host with this MAC is registered (the HTTP API answers 404)."""


class WouldWait(Exception):
    """``Registry.write_now`` could not start its write without waiting (another thread
    of ours, or another process, is writing): nothing was written; write it on the
    writer thread."""


class TransitionRefused(InputError):
    """An event that would move a host's state backwards or out of ``failed``."""


def reportable(state: State | str) -> State:
    """``state`` as an event may report it; InputError otherwise."""
    try:
        new = State(state)
    except ValueError:
        raise InputError(f"unknown state {state!r}") from None
    if new not in REPORTABLE:
        names = ", ".join(s.value for s in REPORTABLE)
        raise InputError(f"state {new.value!r} cannot be reported; expected one of {names}")
    return new


def check_transition(host: Host, new: State) -> None:
    """TransitionRefused unless an event may move ``host`` to ``new``."""
    if not transition_allowed(reported_from(host), new):
        raise TransitionRefused(
            f"host {host.mac} is {host.state.value}; it cannot become {new.value} "
            "(rearm it for new work)"
        )


PROGRESS_BATCH = 256  # progress events queued at most; the reporter that fills it flushes
PROGRESS_DELAY = 0.05  # seconds a queued progress event waits at most before it is committed
# The flusher looks at the queue every PROGRESS_DELAY while progress comes (no wake-up
# from the reporter, the event loop, per batch); after this many looks in a row found
# nothing it sleeps until the next event wakes it.
PROGRESS_IDLE_LOOKS = 20


@dataclass(frozen=True)
class Progress:
    """A progress event (``installing`` again: its step, its percent) not yet committed."""

    mac: str
    step: str | None
    progress: float | None
    message: str | None
    time: float = field(default_factory=time.time)


class ProgressQueue:
    """Progress events waiting for one transaction: at most ``batch`` of them, each at
    most ``delay`` seconds (one flusher thread, started at the first event and kept,
    commits them with ``flush``); the registry commits them before any other write and
    when it closes. Only progress is queued: a report that changes a host's state is
    committed before its reply.

    One thread for the queue's life, not a timer thread per batch: starting a thread
    costs the reporter's thread (the event loop) a hand-off and a wait for it to run,
    twenty times a second under a steady stream of progress. And while progress comes
    the flusher looks every ``delay`` by itself: the reporter wakes it only after
    ``PROGRESS_IDLE_LOOKS`` empty looks (a wake-up is a system call made with the GIL
    held, which on a busy machine often hands the core to the woken thread)."""

    def __init__(
        self,
        flush: Callable[[], None],
        batch: int = PROGRESS_BATCH,
        delay: float = PROGRESS_DELAY,
    ) -> None:
        self.batch, self.delay = batch, delay
        self._flush = flush
        self._events: list[Progress] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._flusher: threading.Thread | None = None
        self._asleep = False  # the flusher waits for put() to wake it
        self._stopped = False

    def __len__(self) -> int:
        return len(self._events)

    def put(self, event: Progress) -> bool:
        """Queue ``event``; True when the queue is full (the caller flushes it now)."""
        with self._lock:
            self._events.append(event)
            if len(self._events) == 1 and not self._stopped:
                if self._flusher is None:
                    self._flusher = threading.Thread(
                        target=self._run, name="registry-progress", daemon=True
                    )
                    self._flusher.start()
                elif self._asleep:  # else it looks again within `delay` by itself
                    self._wake.notify()
            return len(self._events) >= self.batch

    def take(self) -> list[Progress]:
        with self._lock:
            events, self._events = self._events, []
            return events

    def give_back(self, events: list[Progress]) -> None:
        """``events`` taken but not committed, first again (before any queued since)."""
        with self._lock:
            self._events[:0] = events

    def _run(self) -> None:
        """The flusher: wait for an event, give it ``delay`` seconds, commit the queue."""
        idle = 0  # looks in a row that found nothing
        while True:
            with self._lock:
                if not self._events and idle >= PROGRESS_IDLE_LOOKS:
                    self._asleep = True  # until put() wakes it
                    while not self._events and not self._stopped:
                        self._wake.wait()
                    self._asleep, idle = False, 0
                if self._stopped:
                    return
                self._wake.wait(self.delay)  # stop() cuts it short
                if self._stopped:
                    return
                if not self._events:
                    idle += 1
                    continue
                idle = 0
            try:
                self._flush()
            except Exception:  # this thread has no caller to tell; the next write retries
                log.exception("committing %d queued progress events", len(self._events))

    def stop(self) -> None:
        """No more flushes by the flusher (the registry closes and commits what is queued
        itself); its thread ends."""
        with self._lock:
            self._stopped, flusher = True, self._flusher
            self._wake.notify_all()
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(timeout=10)


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
        **NOT_ENROLLED,
    )


def capped_message(message: str) -> str:
    """``message`` as stored: at most ``MAX_EVENT_MESSAGE`` UTF-8 bytes, the cut marked
    with how much was cut (a failure's reason is kept, its start first, not refused)."""
    data = message.encode("utf-8")
    if len(data) <= MAX_EVENT_MESSAGE:
        return message
    marker = f" [... {len(data)} bytes; cut at {MAX_EVENT_MESSAGE}]"
    head = data[: MAX_EVENT_MESSAGE - len(marker)].decode("utf-8", errors="ignore")
    return head + marker


def _bound_events(conn: sqlite3.Connection, mac: str, count: int) -> None:
    """Keep ``mac``'s newest ``MAX_EVENTS_PER_HOST`` events once ``count`` (its events, as
    its row counts them) passes that by ``EVENTS_PRUNE_SLACK``: a host that floods its
    reports costs the registry a bounded number of rows, and a pruning every so often."""
    if count <= MAX_EVENTS_PER_HOST + EVENTS_PRUNE_SLACK:
        return
    conn.execute(
        "DELETE FROM events WHERE mac = ? AND id < "
        "(SELECT id FROM events WHERE mac = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
        (mac, mac, MAX_EVENTS_PER_HOST - 1),
    )
    kept = conn.execute("SELECT COUNT(*) FROM events WHERE mac = ?", (mac,)).fetchone()[0]
    conn.execute("UPDATE hosts SET event_count = ? WHERE mac = ?", (kept, mac))
    log.warning("host %s: more than %d events; the oldest were deleted", mac, MAX_EVENTS_PER_HOST)


def _when(epoch: float | None) -> str:
    """``epoch`` as an ISO UTC time for messages."""
    if epoch is None:
        return "an unknown time"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def issue_ticket(host: Host, now: float, ttl: int, *, renew: bool = False) -> Host:
    """``host`` after its install token was handed to one of its boots (an install
    config fetched while armed, agent work in a check-in reply): the ticket is issued
    now, and expires ``ttl`` seconds after its first hand-out (after this one, with
    ``renew``)."""
    if not host.token:
        return host
    expires = host.token_expires
    if expires is None or renew:
        expires = now + ttl
    return replace(host, ticket_issued_at=now, token_expires=expires)


class Registry:
    """The registry file of one server directory. Open with ``Registry.open(directory)``."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = threading.RLock()  # the writer connection's
        self.path = path
        self._keys: Keyring  # set by open(), inside its first transaction
        self._api_token_hash: str | None = None
        self._readers = threading.local()  # each thread's read connection
        self._reader_conns: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()  # _reader_conns'
        self._closed = False
        self._now: sqlite3.Connection | None = None  # write_now's connection, while it writes
        self._now_conn: sqlite3.Connection | None = None  # opened at the first write_now
        self._now_commits = 0  # write_now calls since the last checkpoint
        self.progress = ProgressQueue(self.flush_progress)
        # The one thread a server's writes run on (started at the first write through it).
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="registry-writer")
        self.renders = RenderCache()  # renders of this registry's hosts, by revision

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
            conn.execute("PRAGMA secure_delete = ON")
            with registry._write():
                schema.migrate(conn, path.parent)
                registry._keys = schema.keyring(conn)
                found = conn.execute(schema.SELECT_SECRET, (schema.API_TOKEN_HASH,)).fetchone()
                if found is None:
                    registry._issue_api_token(conn)
                else:
                    registry._api_token_hash = str(found[0])
                scrub = conn.execute(schema.SELECT_SECRET, (schema.SCRUB_PENDING,)).fetchone()
            if scrub is not None:
                registry._scrub()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise NetinstallError(f"cannot open the registry {path}: {exc}") from exc
            raise
        return registry

    def writer(self) -> ThreadPoolExecutor:
        """The one thread a server's writes run on: they queue there, not on the writer
        connection's lock, and leave the event loop alone."""
        return self._writer

    def write_now(self, call: Callable[[], T]) -> T:
        """``call()`` (one of the write methods) on this thread if it can write without
        waiting, else WouldWait with nothing written.

        For the event loop: a write that would hop to the writer thread and back costs
        two thread wake-ups, each with the GIL held, more than the write itself. It never
        waits: not for the writer lock (another thread of ours writing: WouldWait), not
        for SQLite's (another process writing: its own connection with no busy timeout,
        WouldWait), and never for a checkpoint (its connection does none; the writer
        thread does one every ``NOW_CHECKPOINT`` of these writes)."""
        if not self._lock.acquire(blocking=False):
            raise WouldWait
        try:
            if self._closed:
                raise NetinstallError(f"the registry {self.path} is closed")
            self._now = self._now_conn or self._open_now()
            try:
                result = call()
            finally:
                self._now = None
            self._now_commits += 1
            if self._now_commits >= NOW_CHECKPOINT:
                self._now_commits = 0
                self._writer.submit(self._checkpoint)
            return result
        finally:
            self._lock.release()

    def _open_now(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        for pragma in (
            "busy_timeout = 0",  # another process writing: SQLITE_BUSY at once, no wait
            "wal_autocheckpoint = 0",  # checkpoints on the writer thread (NOW_CHECKPOINT)
            "synchronous = NORMAL",
            "foreign_keys = ON",
            "secure_delete = ON",
        ):
            conn.execute(f"PRAGMA {pragma}")
        self._now_conn = conn
        return conn

    def _checkpoint(self) -> None:
        """A PASSIVE checkpoint (it waits for no reader or writer) on the writer thread."""
        with self._lock:
            if not self._closed:
                with suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        """Apply the queued progress events, then close every connection."""
        self.progress.stop()
        self._writer.shutdown(wait=True)
        with self._lock:
            if self._closed:
                return
            with suppress(sqlite3.Error):
                self.flush_progress()
            self._conn.close()
            if self._now_conn is not None:
                self._now_conn.close()
            with self._readers_lock:
                self._closed = True
                for conn in self._reader_conns:
                    conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, taken up front so that reads inside it stay valid.
        The queued progress events are committed first, in a transaction of their own
        (``ProgressQueue``): a host's reports are applied in the order they came, and a
        write refused later does not take them back."""
        with self._lock:
            events = self.progress.take()
            if events:
                try:
                    with self._transaction() as conn:
                        self._apply_progress(conn, events)
                except WouldWait:
                    self.progress.give_back(events)  # for the writer thread, in order
                    raise
            with self._transaction() as conn:
                yield conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._now or self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if conn is self._now and exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                raise WouldWait from None
            raise
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection. In WAL mode a reader never waits for the writer
        (ours or another process's) and sees every committed write, so reads need no lock
        and may run on an event loop's thread."""
        conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA query_only = ON")
            with self._readers_lock:  # not the writer's lock: a read never waits for a write
                if self._closed:
                    conn.close()
                    raise NetinstallError(f"the registry {self.path} is closed")
                self._reader_conns.append(conn)
            self._readers.conn = conn
        return conn

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return self._reader().execute(sql, params).fetchall()

    @staticmethod
    def _next_revision(conn: sqlite3.Connection) -> int:
        """A new host revision (inside a write): never one handed out before."""
        return int(conn.execute(schema.NEXT_REVISION).fetchone()[0])

    def _bump_hosts(self, conn: sqlite3.Connection, profile: str | None = None) -> None:
        """Every host's revision (``profile``'s hosts only) is new: what their renders
        read (a profile, a setting, the repositories) changed in this transaction."""
        revision = self._next_revision(conn)
        if profile is None:
            conn.execute("UPDATE hosts SET revision = ?", (revision,))
        else:
            conn.execute("UPDATE hosts SET revision = ? WHERE profile = ?", (revision, profile))

    def _scrub(self) -> None:
        """Leave no page of the file or its WAL with text a migration removed: vacuum (no
        free pages), then checkpoint and truncate the WAL. While another connection's
        reads hold the WAL the truncation waits (the busy timeout); if it cannot finish,
        ``scrub_pending`` stays and the next open tries again."""
        with self._lock:
            try:
                self._conn.execute("VACUUM")
                busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.OperationalError as exc:
                busy, why = 1, str(exc)
            else:
                why = "the WAL is in use by another connection"
            if busy:
                log.warning("registry %s: clean-up after migration postponed: %s", self.path, why)
                return
            with self._write() as conn:
                conn.execute("DELETE FROM secrets WHERE name = ?", (schema.SCRUB_PENDING,))
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- server settings -------------------------------------------------------

    def _issue_api_token(self, conn: sqlite3.Connection) -> str:
        """A new API token: its keyed hash stored, the token written to ``DIR/api-token``."""
        token = new_token()
        write_secret_file(self.path.parent / API_TOKEN_FILE, token + "\n")
        self._api_token_hash = self._keys.hash(Purpose.API_TOKEN, token)
        conn.execute(
            "INSERT INTO secrets (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (schema.API_TOKEN_HASH, self._api_token_hash),
        )
        return token

    def new_api_token(self) -> None:
        """Replace the API token (the old one stops working here at once, in a running
        server at its restart); the new one is in ``DIR/api-token`` (0600) only."""
        with self._write() as conn:
            self._issue_api_token(conn)

    def api_token_matches(self, given: str) -> bool:
        """Whether ``given`` is the API token (its keyed hash, compared in constant time).
        No SQL: the hash is read when the registry is opened."""
        return bool(given) and self._keys.matches(Purpose.API_TOKEN, given, self._api_token_hash)

    def settings(self) -> dict[str, str]:
        return {row["key"]: row["value"] for row in self._query("SELECT key, value FROM settings")}

    def set_setting(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
            self._bump_hosts(conn)  # renders read settings (the default payload version)

    # -- profiles --------------------------------------------------------------

    def add_profile(self, profile: Profile) -> None:
        profile = profile_input(profile)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM profiles WHERE name = ?", (profile.name,)).fetchone():
                raise InputError(f"profile {profile.name!r} exists already")
            conn.execute(schema.INSERT_PROFILE, schema.profile_row(profile))

    def update_profile(self, profile: Profile) -> None:
        """Replace a profile; refused when a host of it would no longer fit (``_check_san``)."""
        profile = profile_input(profile)
        with self._write() as conn:
            hosts = conn.execute(f"{schema.SELECT_HOSTS} WHERE profile = ?", (profile.name,))
            for host_row in hosts.fetchall():
                host = schema.host_from(host_row, self._keys)
                self._check_san_of(host, profile.san_boot, profile.multipath)
            row = schema.profile_row(profile)
            done = conn.execute(schema.UPDATE_PROFILE, (*row[1:], row[0]))
            if done.rowcount == 0:
                raise InputError(f"no profile {profile.name!r}")
            self._bump_hosts(conn, profile.name)

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

    def _load(self, conn: sqlite3.Connection, mac: str) -> Host:
        row = conn.execute(f"{schema.SELECT_HOSTS} WHERE mac = ?", (mac,)).fetchone()
        if row is None:
            raise UnknownHost(f"no host {mac} in the registry")
        return schema.host_from(row, self._keys)

    def _store(self, conn: sqlite3.Connection, host: Host, before: Host) -> Host:
        """Write ``host`` (read as ``before`` in this transaction); the host as stored: with
        a new revision if a field its renders read changed (``model.UNRENDERED``)."""
        revision = before.revision
        if rendered_view(host) != rendered_view(before):
            revision = self._next_revision(conn)
        host = replace(host, revision=revision)
        row = schema.host_row(host, self._keys)
        conn.execute(schema.UPDATE_HOST, (*row[1:], row[0]))
        return host

    def _insert(self, conn: sqlite3.Connection, host: Host) -> Host:
        host = replace(host, revision=self._next_revision(conn))
        conn.execute(schema.INSERT_HOST, schema.host_row(host, self._keys))
        return host

    def _is_secret(self, word: str, hosts: tuple[Host, ...]) -> bool:
        """Whether ``word`` is the API token or an agent credential of ``hosts``."""
        found = self.api_token_matches(word)
        for host in hosts:
            found |= self._keys.matches(Purpose.AGENT_CREDENTIAL, word, host.agent_credential_hash)
        return found

    def _log(
        self, conn: sqlite3.Connection, host: Host, message: str | None, old: Host | None
    ) -> None:
        """Store an event from the host's fields; its secrets (and ``old``'s) become REDACTED:
        install tokens and password hashes by value, the API token and agent credentials
        (known only by their keyed hashes) by checking each token-shaped word."""
        if message is not None:
            message = self._redacted(message, host, old)
        conn.execute(
            "INSERT INTO events (time, mac, state, step, progress, message) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), host.mac, host.state.value, host.step, host.progress, message),
        )
        count = conn.execute(
            "UPDATE hosts SET event_count = event_count + 1 WHERE mac = ? RETURNING event_count",
            (host.mac,),
        ).fetchone()
        if count is not None:
            _bound_events(conn, host.mac, int(count[0]))

    def _redacted(self, message: str, host: Host, old: Host | None) -> str:
        hosts = (host,) if old is None else (host, old)
        secret = [h.token for h in hosts]
        secret += [v for h in hosts for k, v in h.variables if is_password_variable(k)]
        message = redact(message, secret)
        message = redact_tokens(message, lambda word: self._is_secret(word, hosts))
        return capped_message(message)  # after redaction: no secret is cut in half

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
            host = self._insert(conn, host)
            self._log(conn, host, "added to the registry", None)
        return host

    def add_unknown_host(self, mac: str, limit: int) -> tuple[Host | None, int]:
        """Register an unknown MAC with the default profile (``unknown_policy install``)
        unless ``limit`` hosts registered so are not running yet; atomic, so concurrent
        requests never pass the limit. (The host, or the one made meanwhile; None if the
        limit refused it), and how many such hosts wait now."""
        mac = normalise_mac(mac)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM hosts WHERE mac = ?", (mac,)).fetchone():
                return self._load(conn, mac), self._unknown_waiting(conn)
            waiting = self._unknown_waiting(conn)
            if waiting >= limit:
                return None, waiting
            host = Host(
                mac=mac,
                assigned_version=self._assigned_version(conn, "default"),
                token=new_token(),
                work=Work.INSTALL,
            )
            self._check_san(conn, host)
            host = self._insert(conn, host)
            self._log(conn, host, UNKNOWN_REGISTERED, None)
        return host, waiting + 1

    @staticmethod
    def _unknown_waiting(conn: sqlite3.Connection) -> int:
        """Hosts registered as unknown MACs that have not reported running (yet)."""
        sql = (
            "SELECT COUNT(*) FROM hosts WHERE state != ? "
            "AND mac IN (SELECT mac FROM events WHERE message = ?)"
        )
        return int(conn.execute(sql, (State.RUNNING.value, UNKNOWN_REGISTERED)).fetchone()[0])

    def get_host(self, mac: str) -> Host | None:
        rows = self._query(f"{schema.SELECT_HOSTS} WHERE mac = ?", (normalise_mac(mac),))
        return schema.host_from(rows[0], self._keys) if rows else None

    def list_hosts(self) -> list[Host]:
        rows = self._query(f"{schema.SELECT_HOSTS} ORDER BY mac")
        return [schema.host_from(row, self._keys) for row in rows]

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
            host = old = self._load(conn, mac)
            if name is not KEEP:
                host = replace(host, name=host_name(name))
            if profile is not KEEP:
                version = self._assigned_version(conn, profile)
                host = replace(host, profile=profile, assigned_version=version)
            if variables is not KEEP:
                host = replace(host, variables=variables_of(variables, host.variables))
            if san is not KEEP:
                host = replace(host, san=san_target(san))
            self._check_san(conn, host)
            host = self._store(conn, host, old)
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
        """Forget a host and its events (any MAC of the right shape: a record made before
        group addresses were refused can still go)."""
        mac = mac_syntax(mac)
        with self._write() as conn:
            self._load(conn, mac)
            conn.execute("DELETE FROM events WHERE mac = ?", (mac,))
            conn.execute("DELETE FROM hosts WHERE mac = ?", (mac,))

    def _by_secret(self, column: str, purpose: Purpose, given: str) -> Host | None:
        """One indexed lookup by keyed hash. The lookup's timing can only tell about the
        hash, which nobody without the registry's key can compute for a guess."""
        if not given:
            return None
        sql = f"{schema.SELECT_HOSTS} WHERE {column} = ?"
        rows = self._query(sql, (self._keys.hash(purpose, given),))
        return schema.host_from(rows[0], self._keys) if rows else None

    def host_by_token(self, token: str) -> Host | None:
        """The host whose live install token this is (its keyed hash, an indexed column)."""
        return self._by_secret("token_hash", Purpose.INSTALL_TOKEN, token)

    def host_by_install_key(self, key: str) -> Host | None:
        """The host whose enrolled install key this is (its keyed hash, an indexed column)."""
        return self._by_secret("install_key_hash", Purpose.INSTALL_KEY, key)

    def host_by_agent_credential(self, credential: str) -> Host | None:
        """The host whose agent credential this is (its keyed hash, an indexed column)."""
        return self._by_secret("agent_credential_hash", Purpose.AGENT_CREDENTIAL, credential)

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
        by_install_key: bool = False,
    ) -> tuple[Host, dict[str, object]]:
        """Apply a reported event; the host after it and the reply body for the client.

        Repeating the current state keeps step/progress that are not given; a new
        state replaces them. ``installed``/``failed`` disarm netboot. The first
        ``running`` kills the install token and hands out the agent credential; a
        ``running`` again ``by_install_key`` before the agent's first check-in hands out a
        new one (first boot lost the reply: a power cut before it saved it).
        """
        mac = normalise_mac(mac)
        new = reportable(state)
        progress = progress_of(progress)
        reply: dict[str, object] = {}
        with self._write() as conn:
            old = self._load(conn, mac)
            current = reported_from(old)
            check_transition(old, new)
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
                # The first running hands out the credential; a running again with the
                # install key, before the agent ever checked in, means first boot lost
                # the reply (a power cut before it saved it): a new one replaces it.
                again = by_install_key and old.install_key_hash is not None
                if old.state is not State.RUNNING or again:
                    credential = new_token()  # handed out here once; only its hash is kept
                    digest = self._keys.hash(Purpose.AGENT_CREDENTIAL, credential)
                    host = replace(install_done(host), agent_credential_hash=digest)
                    reply = {"agent_credential": credential, "checkin_interval": CHECKIN_INTERVAL}
            host = self._store(conn, host, old)
            self._log(conn, host, message, old)
        return host, reply

    def queue_progress(
        self,
        seen: Host,
        *,
        step: str | None = None,
        progress: float | None = None,
        message: str | None = None,
    ) -> bool:
        """A progress event (``installing`` again, with its step and percent) of ``seen``,
        the host as this request read it, queued rather than committed (``ProgressQueue``:
        applied within ``PROGRESS_DELAY`` s, before any other write, at close). Never
        blocks; True when the queue is full and the caller must ``flush_progress()``.
        TransitionRefused unless ``seen`` is installing."""
        if reported_from(seen) is not State.INSTALLING:
            check_transition(seen, State.INSTALLING)
            raise TransitionRefused(f"host {seen.mac} is not installing; report installing")
        redacted = None if message is None else self._redacted(message, seen, None)
        return self.progress.put(Progress(seen.mac, step, progress_of(progress), redacted))

    def flush_progress(self) -> None:
        """Apply the queued progress events now (one transaction)."""
        with self._write():
            pass

    @staticmethod
    def _apply_progress(conn: sqlite3.Connection, events: list[Progress]) -> None:
        """Queued progress events, in the order they came, each applied only if its host
        is still installing (a rearm or a failure since drops it)."""
        insert = (
            "INSERT INTO events (time, mac, state, step, progress, message) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        installing = State.INSTALLING.value
        rows: list[tuple[object, ...]] = []  # the events' rows, inserted in one call
        for event in events:
            row = conn.execute(
                "UPDATE hosts SET step = COALESCE(?, step), progress = COALESCE(?, progress), "
                "event_count = event_count + 1 "
                "WHERE mac = ? AND state = ? RETURNING step, progress, event_count",
                (event.step, event.progress, event.mac, installing),
            ).fetchone()
            if row is None:
                log.info("host %s: a progress event dropped: no longer installing", event.mac)
                continue
            rows.append((event.time, event.mac, installing, row[0], row[1], event.message))
            if int(row[2]) > MAX_EVENTS_PER_HOST + EVENTS_PRUNE_SLACK:  # its rows in first
                conn.executemany(insert, rows)
                rows.clear()
                _bound_events(conn, event.mac, int(row[2]))
        conn.executemany(insert, rows)

    def token_ttl(self) -> int:
        """Seconds an install token enrols, counted from its first hand-out to a boot."""
        return self._token_ttl(self._reader())

    @staticmethod
    def _token_ttl(conn: sqlite3.Connection) -> int:
        found = conn.execute("SELECT value FROM settings WHERE key = ?", (TOKEN_TTL_SETTING,))
        row = found.fetchone()
        return int(row[0]) if row else DEFAULT_TOKEN_TTL

    def mark_signalled(self, mac: str, seen: Host | None = None) -> Host | None:
        """An install config was fetched: pending -> signalled, and the install token was
        handed to a boot of the host (a later enrolment replaces the key; the token's
        lifetime starts at the first hand-out).

        With ``seen`` (the host as the request read it, its config rendered from that):
        the host is not read again; the write applies only if the host's revision is
        still ``seen``'s, else nothing is written and the result is None (the config was
        rendered from a state that is gone: render it again)."""
        mac = normalise_mac(mac)
        with self._write() as conn:
            ttl = self._token_ttl(conn)
            if seen is not None:
                return self._signalled(conn, seen, ttl)
            host = old = self._load(conn, mac)
            if host.netboot_armed:
                host = issue_ticket(host, time.time(), ttl)
            logged = host.state is State.PENDING
            if logged:
                host = replace(host, state=State.SIGNALLED, step=None, progress=None)
            if host.netboot_armed or logged:
                host = self._store(conn, host, old)
            if logged:
                self._log(conn, host, "fetched its boot configuration", None)
        return host

    def _signalled(self, conn: sqlite3.Connection, seen: Host, ttl: int) -> Host | None:
        """``mark_signalled`` of an armed host read as ``seen``: only the columns it
        changes, and only at ``seen``'s revision (no other write changed what it read)."""
        now = time.time()
        pending = seen.state is State.PENDING
        revision = self._next_revision(conn) if pending else seen.revision
        done = conn.execute(
            "UPDATE hosts SET ticket_issued_at = ?, token_expires = COALESCE(token_expires, ?), "
            "state = ?, step = CASE WHEN ? THEN NULL ELSE step END, "
            "progress = CASE WHEN ? THEN NULL ELSE progress END, revision = ? "
            "WHERE mac = ? AND revision = ? AND netboot_armed AND token_hash IS NOT NULL "
            "RETURNING token_expires",
            (now, now + ttl, (State.SIGNALLED if pending else seen.state).value, pending,
             pending, revision, seen.mac, seen.revision),
        ).fetchone()  # fmt: skip
        if done is None:
            return None
        host = replace(seen, ticket_issued_at=now, token_expires=done[0], revision=revision)
        if pending:
            host = replace(host, state=State.SIGNALLED, step=None, progress=None)
            self._log(conn, host, "fetched its boot configuration", None)
        return host

    def enrol(self, mac: str, token: str, key: str, address: str) -> tuple[Host, str]:
        """Enrol the installer ``key`` with the host's install ``token`` (docs/protocol.md,
        "Install tokens"); the host and "new", "again" or "replaced".

        The first key is taken; the same key again is a retry. Another key replaces it
        only after the token was handed to a new boot of the host since (a power cut, a
        retry: the old key is retired); from another address that is also recorded as a
        conflict. Without a new boot it is refused (409) and recorded as a conflict, never
        silent. A dead or expired token: 401.
        """
        mac = normalise_mac(mac)
        now = time.time()
        digest = self._keys.hash(Purpose.INSTALL_KEY, key)
        refused: EnrolRefused | None = None
        with self._write() as conn:
            host = loaded = self._load(conn, mac)
            if not host.token or not hmac.compare_digest(host.token.encode(), token.encode()):
                raise EnrolRefused(401, f"wrong or dead install token for host {mac}")
            if host.token_expires is not None and now > host.token_expires:
                raise EnrolRefused(
                    401,
                    f"the install token of host {mac} expired at {_when(host.token_expires)}; "
                    f"rearm the host (`netinstall host rearm {mac}`) for a new one",
                )
            if host.install_key_hash == digest:
                return host, "again"
            outcome, message = "new", f"installer enrolled from {address}"
            if host.install_key_hash is not None:
                earlier = f"the key enrolled from {host.enrolled_from} at {_when(host.enrolled_at)}"
                fresh_boot = (host.ticket_issued_at or 0) > (host.enrolled_at or 0)
                if not fresh_boot:
                    conflict = (
                        f"{_when(now)}: an installer at {address} presented the install token "
                        f"while {earlier} is live; refused"
                    )
                    host = self._store(conn, replace(host, conflict=conflict), loaded)
                    self._log(conn, host, f"enrolment refused: {conflict}", None)
                    log.warning("host %s: %s", mac, conflict)
                    refused = EnrolRefused(
                        409,
                        f"host {mac} has an installer enrolled already and was not booted "
                        "since; the operator is told",
                    )
                else:
                    outcome = "replaced"
                    message = f"a new boot enrolled from {address}; {earlier} is retired"
                    if address != host.enrolled_from:
                        conflict = f"{_when(now)}: {message} (another address)"
                        host = replace(host, conflict=conflict)
                        log.warning("host %s: %s", mac, conflict)
            if refused is None:
                host = replace(
                    host, install_key_hash=digest, enrolled_from=address, enrolled_at=now
                )
                host = self._store(conn, host, loaded)
                self._log(conn, host, message, None)
        if refused is not None:
            raise refused
        return host, outcome

    def rearm(self, mac: str) -> Host:
        """New network-install work: state pending, netboot armed, a new install token.

        The agent credential (if any) stays valid until the new system reports running,
        unless the host had an enrolment conflict (then it is revoked at once).
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
            if old.conflict:  # whoever won that enrolment may hold the agent credential
                host = replace(host, agent_credential_hash=None)
            host = self._store(conn, host, old)
            self._log(conn, host, "rearmed: new install work", old)
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
            if old.agent_credential_hash is None:
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
            host = self._store(conn, host, old)
            self._log(conn, host, f"assigned: {what} (reboot {policy.value})", old)
        return host

    def check_in(
        self,
        mac: str,
        running_version: str,
        reported: Reported | str,
        multipath: list[dict[str, object]] | None = None,
        seen: Host | None = None,
    ) -> Host:
        """Record an agent check-in (``checkin.apply_checkin``); the host after it.

        With ``seen`` (the host as the request read it): a routine check-in (running, no
        work, no storage paths, the version it reported last, the install key spent)
        only writes its time, without reading the host again, provided nothing it
        depends on changed since ``seen``; anything else is applied as without it."""
        mac = normalise_mac(mac)
        state = reported_state(reported)
        with self._write() as conn:
            routine = (
                seen is not None
                and state is Reported.RUNNING
                and multipath is None
                and seen.work is None
                and seen.state is State.RUNNING
                and seen.install_key_hash is None
                and seen.last_checkin is not None
                and seen.running_version == running_version
            )
            if routine and seen is not None:
                now = time.time()
                done = conn.execute(
                    "UPDATE hosts SET last_checkin = ? WHERE mac = ? AND revision = ? "
                    "AND running_version = ? AND install_key_hash IS NULL "
                    "AND last_checkin IS NOT NULL",
                    (now, seen.mac, seen.revision, running_version),
                )
                if done.rowcount:
                    return replace(seen, last_checkin=now)
            ttl = self._token_ttl(conn)
            old = self._load(conn, mac)
            now = time.time()
            host, message = apply_checkin(old, running_version, state, now, multipath)
            if host.state is State.RUNNING:  # the agent holds its credential: the key is spent
                host = replace(host, install_key_hash=None)
            if host.work in AGENT_WORK and host.state in OFFERED:
                # The reply hands the agent the installer and its token (over the agent's
                # credential): a new boot of the installer may enrol, and the token lives
                # on while the host waits for its reboot.
                host = issue_ticket(host, now, ttl, renew=True)
            host = self._store(conn, host, old)
            if message is not None:
                self._log(conn, host, message, old)
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
            self._bump_hosts(conn)  # answer files name the registered repositories
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
        """The host's events, oldest first; with ``limit``, only the latest ``limit``
        (the progress events queued in this process included: they are committed first)."""
        if len(self.progress):
            self.flush_progress()
        sql = "SELECT * FROM events WHERE mac = ? ORDER BY id DESC LIMIT ?"
        rows = self._query(sql, (normalise_mac(mac), -1 if limit is None else max(limit, 0)))
        return [schema.event_from(row) for row in reversed(rows)]

    def last_events(self) -> dict[str, Event]:
        """Every host's latest event, by MAC: one query (the events index), not one a host."""
        if len(self.progress):
            self.flush_progress()
        rows = self._query(
            "SELECT events.* FROM events JOIN "
            "(SELECT mac, MAX(id) AS id FROM events GROUP BY mac) AS latest USING (id)"
        )
        return {row["mac"]: schema.event_from(row) for row in rows}

    def last_event(self, mac: str) -> Event | None:
        found = self.events(mac, limit=1)
        return found[0] if found else None
