"""The registry: hosts, profiles, events, repositories and settings (SPEC §9).

SQLite, one file ``DIR/registry.sqlite`` (the default), or a PostgreSQL database the
server directory records (``pxe_server.store.engine``), shared by the running servers
and the CLI; one set of tables and queries (SQLAlchemy Core, ``pxe_server.store``).
Short transactions: every read-modify-write of a host is one transaction that locks
its row (``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` holds its one
write lock), so no two writers, threads, processes or servers, lose an update. Lock
order, so that PostgreSQL never deadlocks: host rows (several in MAC order); a write
that adds a row no host row guards (a host, a profile, a setting, a repository) takes
the counters row first. Host revisions are random (no row to wait for). A ``Registry`` may be
used from several threads; it serialises its own writes. Install tokens live from the
assignment of the work until ``running``; every stored event message has the host's
secrets replaced by ``REDACTED``.

No secret is stored in clear (docs/protocol.md, "Secrets"): install tokens are
sealed under the registry's key and found by their keyed hash, agent credentials
and the API token are kept as keyed hashes only (the API token's clear copy is the
operator's ``DIR/api-token``, 0600), passwords as SHA-512 crypt hashes. SQLite's
``secure_delete`` is on, so what a write replaces leaves no readable free page; after
a migration that removed clear text the file is vacuumed and its WAL truncated.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import replace
from importlib import resources
from pathlib import Path
from secrets import randbits
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar

from sqlalchemy import (
    Connection,
    Executable,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import PendingRollbackError, SQLAlchemyError

from common.errors import InputError, NetinstallError
from pxe_server import registry_reports
from pxe_server.jobs import Conflict
from pxe_server.limits import EVENTS_PRUNE_SLACK, MAX_EVENT_MESSAGE, MAX_EVENTS_PER_HOST
from pxe_server.migrations import API_TOKEN_HASH, SCRUB_PENDING
from pxe_server.migrations import KEY as REGISTRY_KEY
from pxe_server.model import (
    Event,
    Host,
    Profile,
    SanTarget,
    State,
    Work,
    mac_syntax,
    normalise_mac,
    rendered_view,
)
from pxe_server.registry_base import LOCK_HOSTS, SETTING, once_more_on_conflict
from pxe_server.registry_bmc import Bmcs
from pxe_server.registry_input import (
    Variables,
    edited_variables,
    host_name,
    profile_input,
    san_target,
    variables_of,
)
from pxe_server.registry_pools import PoolsAndJobs
from pxe_server.registry_progress import Progress, ProgressQueue
from pxe_server.registry_reports import Reports
from pxe_server.registry_repositories import Repositories
from pxe_server.registry_segments import Segments
from pxe_server.registry_updates import Updates
from pxe_server.render_cache import RenderCache
from pxe_server.secrets import (
    API_TOKEN_FILE,
    Keyring,
    Purpose,
    is_password_variable,
    new_key,
    new_token,
    redact,
    redact_tokens,
    write_secret_file,
)
from pxe_server.store import engine, outage, rows
from pxe_server.store import schema as store_schema
from pxe_server.store.engine import Store
from pxe_server.store.tables import (
    bmcs,
    counters,
    events,
    host_segments,
    hosts,
    pool_hosts,
    profiles,
    secrets,
    settings,
)

log = logging.getLogger("netinstall.registry")

T = TypeVar("T")
P = ParamSpec("P")

# Where the registry lives, and write_now's refusal (pxe_server.store.engine), as its
# users have always imported them from here.
REGISTRY_FILE = engine.REGISTRY_FILE
DATABASE_URL_FILE = engine.DATABASE_URL_FILE
BUSY_TIMEOUT_MS = engine.BUSY_TIMEOUT_MS
WouldWait = engine.WouldWait
has_registry = engine.has_registry
# The host lifecycle's names (pxe_server.registry_reports), likewise.
EnrolRefused = registry_reports.EnrolRefused
TransitionRefused = registry_reports.TransitionRefused
ANSWER_FILE_FETCHED = registry_reports.ANSWER_FILE_FETCHED
CHECKIN_INTERVAL = registry_reports.CHECKIN_INTERVAL
DEFAULT_TOKEN_TTL = registry_reports.DEFAULT_TOKEN_TTL
TOKEN_TTL_SETTING = registry_reports.TOKEN_TTL_SETTING

# Writes done at once on the caller's thread (``Registry.write_now``: the event loop's)
# never checkpoint the WAL themselves (a checkpoint syncs the file: milliseconds, more on
# a busy disk); after this many of them the writer thread checkpoints (PASSIVE), which
# keeps the WAL as small as SQLite's own automatic checkpoint (1,000 pages) would.
NOW_CHECKPOINT = 256
# Bits of a host revision (``Registry._next_revision``): random, and positive in a
# 64-bit signed column.
REVISION_BITS = 62
# A wrong API token reads the stored one again at most this often (seconds): a token
# rotated by another process (`server token rotate`) is taken without a restart.
API_TOKEN_RELOAD = 1.0
# The first event of a host registered by unknown_policy install: how they are counted.
UNKNOWN_REGISTERED = "registered as an unknown MAC (unknown_policy install)"


class UnknownHost(InputError):
    """No host with this MAC is registered (the HTTP API answers 404)."""


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP  # update_host: leave this field as it is


def default_profile() -> Profile:
    """The ``default`` profile: a fresh install from the server's repository."""
    template = resources.files("pxe_server").joinpath("default_profile.xml.j2")
    return Profile(name="default", template=template.read_text("utf-8"))


def capped_message(message: str) -> str:
    """``message`` as stored: at most ``MAX_EVENT_MESSAGE`` UTF-8 bytes, the cut marked
    with how much was cut (a failure's reason is kept, its start first, not refused)."""
    data = message.encode("utf-8")
    if len(data) <= MAX_EVENT_MESSAGE:
        return message
    marker = f" [... {len(data)} bytes; cut at {MAX_EVENT_MESSAGE}]"
    head = data[: MAX_EVENT_MESSAGE - len(marker)].decode("utf-8", errors="ignore")
    return head + marker


def _bound_events(conn: Connection, mac: str, count: int) -> None:
    """Keep ``mac``'s newest ``MAX_EVENTS_PER_HOST`` events once ``count`` (its events, as
    its row counts them) passes that by ``EVENTS_PRUNE_SLACK``: a host that floods its
    reports costs the registry a bounded number of rows, and a pruning every so often."""
    if count <= MAX_EVENTS_PER_HOST + EVENTS_PRUNE_SLACK:
        return
    conn.execute(_PRUNE_EVENTS, {"mac": mac, "keep": MAX_EVENTS_PER_HOST - 1})
    kept = conn.execute(_COUNT_EVENTS, {"mac": mac}).scalar_one()
    conn.execute(_SET_EVENT_COUNT, {"where_mac": mac, "n": kept})
    log.warning("host %s: more than %d events; the oldest were deleted", mac, MAX_EVENTS_PER_HOST)


# Statements built once (SQLAlchemy caches their compiled forms); the request path's
# reads and writes use these.
_HOST = select(*rows.HOST_COLUMNS)
_HOST_BY_MAC = _HOST.where(hosts.c.mac == bindparam("mac"))
_HOST_FOR_UPDATE = _HOST_BY_MAC.with_for_update()
_HOST_BY_SECRET = {
    name: _HOST.where(hosts.c[name] == bindparam("digest"))
    for name in ("token_hash", "install_key_hash", "agent_credential_hash")
}
_UPDATE_HOST = update(hosts).where(hosts.c.mac == bindparam("where_mac"))
_UPDATE_HOST_COUNTED = _UPDATE_HOST.values(event_count=hosts.c.event_count + 1).returning(
    hosts.c.event_count
)
_LOCK_COUNTERS = select(counters.c.value).where(counters.c.name == "revision").with_for_update()
_SECRET = select(secrets.c.value).where(secrets.c.name == bindparam("name"))
_PROFILE = select(profiles).where(profiles.c.name == bindparam("name"))
_INSERT_EVENT = insert(events).inline()  # no RETURNING of the new id: nobody reads it
_COUNT_EVENT = (
    update(hosts)
    .where(hosts.c.mac == bindparam("where_mac"))
    .values(event_count=hosts.c.event_count + 1)
    .returning(hosts.c.event_count)
)
_PROGRESS = (
    update(hosts)
    .where(hosts.c.mac == bindparam("where_mac"), hosts.c.state == State.INSTALLING.value)
    .values(
        step=func.coalesce(bindparam("new_step", type_=hosts.c.step.type), hosts.c.step),
        progress=func.coalesce(
            bindparam("new_progress", type_=hosts.c.progress.type), hosts.c.progress
        ),
        event_count=hosts.c.event_count + 1,
    )
    .returning(hosts.c.step, hosts.c.progress, hosts.c.event_count)
)
_HOST_EXISTS = select(hosts.c.mac).where(hosts.c.mac == bindparam("mac"))
_INSERT_HOST = insert(hosts)
_ALL_HOSTS = _HOST.order_by(hosts.c.mac)
_PROFILE_VERSION = select(profiles.c.payload_version).where(profiles.c.name == bindparam("name"))
_PROFILE_SAN = select(profiles.c.san_boot, profiles.c.multipath).where(
    profiles.c.name == bindparam("name")
)
_ALL_PROFILES = select(profiles).order_by(profiles.c.name)
_ALL_SETTINGS = select(settings.c.key, settings.c.value)
_EVENTS = select(events).where(events.c.mac == bindparam("mac")).order_by(events.c.id.desc())
_LATEST_EVENTS = _EVENTS.limit(bindparam("limit"))
_LAST_IDS = select(func.max(events.c.id).label("id")).group_by(events.c.mac).subquery()
_LAST_EVENTS = select(events).join(_LAST_IDS, events.c.id == _LAST_IDS.c.id)
# The web console's poll (``Registry.changed_since``): the newest event id, and the hosts
# with events in an id range (the primary key's range; one row a host).
_NEWEST_EVENT = select(func.max(events.c.id))
_CHANGED = (
    select(events.c.mac)
    .where(events.c.id > bindparam("after"), events.c.id <= bindparam("upto"))
    .group_by(events.c.mac)
    .order_by(events.c.mac)
    .limit(bindparam("most"))
)
_HOSTS_IN = _HOST.where(hosts.c.mac.in_(bindparam("macs", expanding=True))).order_by(hosts.c.mac)
_UNKNOWN_WAITING = select(func.count()).where(
    hosts.c.state != State.RUNNING.value,
    hosts.c.mac.in_(select(events.c.mac).where(events.c.message == UNKNOWN_REGISTERED)),
)
_DELETE_EVENTS = delete(events).where(events.c.mac == bindparam("mac"))
_DELETE_HOST = delete(hosts).where(hosts.c.mac == bindparam("mac"))
_OLDEST_KEPT = (
    select(events.c.id)
    .where(events.c.mac == bindparam("mac"))
    .order_by(events.c.id.desc())
    .limit(1)
    .offset(bindparam("keep"))
    .scalar_subquery()
)
_PRUNE_EVENTS = delete(events).where(events.c.mac == bindparam("mac"), events.c.id < _OLDEST_KEPT)
_COUNT_EVENTS = select(func.count()).where(events.c.mac == bindparam("mac"))
_SET_EVENT_COUNT = (
    update(hosts).where(hosts.c.mac == bindparam("where_mac")).values(event_count=bindparam("n"))
)


class Registry(Reports, PoolsAndJobs, Repositories, Bmcs, Segments, Updates):
    """The registry of one server directory. Open with ``Registry.open(directory)``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._conn = store.connect("writer")
        self._lock = threading.RLock()  # the writer connection's
        self.path = store.path  # DIR/registry.sqlite, or DIR/database-url (PostgreSQL)
        self.directory = store.directory
        self.where = store.where  # for messages: the file, or the URL without its password
        self._keys: Keyring  # set by open(), inside its first transaction
        self._api_token_hash: str | None = None
        self._api_token_read = -math.inf  # when the stored hash was last read again
        self.api_token_clock: Callable[[], float] = time.monotonic  # (tests give theirs)
        self._readers = threading.local()  # each thread's read connection
        self._reader_conns: list[Connection] = []
        self._readers_lock = threading.Lock()  # _reader_conns'
        self._closed = False
        self._now: Connection | None = None  # write_now's connection, while it writes
        self._now_conn: Connection | None = None  # opened at the first write_now
        self._now_commits = 0  # write_now calls since the last checkpoint
        self.progress = ProgressQueue(self.flush_progress)
        # The one thread a server's writes run on (started at the first write through it).
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="registry-writer")
        self.renders = RenderCache()  # renders of this registry's hosts, by revision

    @classmethod
    def open(cls, directory: Path) -> Registry:
        """Open the registry of ``directory``: its recorded PostgreSQL database, else
        ``directory/registry.sqlite`` (created 0600, dir 0700); create or migrate its
        schema. A database that cannot be reached or used: NetinstallError, one sentence."""
        store = Store(Path(directory))
        try:
            registry = cls(store)
        except SQLAlchemyError as exc:
            store.dispose()
            raise store.error(exc) from None
        try:
            with registry._write() as conn:
                done = store_schema.migrate(conn, store)
                registry._keys = registry._keyring(conn)
                registry.update_key = registry._open_update_key(conn)
                found = conn.execute(_SECRET, {"name": API_TOKEN_HASH}).scalar()
                if found is None:
                    registry._issue_api_token(conn)
                else:
                    registry._api_token_hash = str(found)
                scrub = conn.execute(_SECRET, {"name": SCRUB_PENDING}).scalar()
            if done is not None:
                log.info("registry %s: %s", store.where, done)
            if scrub is not None:
                registry._scrub()
        except BaseException as exc:
            registry._close_connections()
            if isinstance(exc, SQLAlchemyError):
                raise store.error(exc) from None
            raise
        return registry

    @staticmethod
    def _keyring(conn: Connection) -> Keyring:
        """The registry's key, made the first time it is asked for (inside a write)."""
        found = conn.execute(_SECRET, {"name": REGISTRY_KEY}).scalar()
        if found is None:
            key = new_key()
            conn.execute(insert(secrets).values(name=REGISTRY_KEY, value=key.hex()))
            return Keyring(key)
        return Keyring(bytes.fromhex(found))

    @property
    def networked(self) -> bool:
        """Whether a read or write waits on the network (PostgreSQL), not on a local file."""
        return not self._store.writes_now

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
        thread does one every ``NOW_CHECKPOINT`` of these writes). On PostgreSQL always
        WouldWait: a write there waits for the network and may wait for another server's
        row lock, which the event loop must never do."""
        if not self._store.writes_now:
            raise WouldWait
        if not self._lock.acquire(blocking=False):
            raise WouldWait
        try:
            if self._closed:
                raise NetinstallError(f"the registry {self.where} is closed")
            if self._now_conn is None:
                self._now_conn = self._store.connect("now")
            self._now = self._now_conn
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

    def _checkpoint(self) -> None:
        """A PASSIVE checkpoint (it waits for no reader or writer) on the writer thread."""
        with self._lock:
            if not self._closed:
                self._store.checkpoint(self._conn)

    def close(self) -> None:
        """Apply the queued progress events, then close every connection."""
        self.progress.stop()
        self._writer.shutdown(wait=True)
        with self._lock:
            if self._closed:
                return
            with suppress(SQLAlchemyError, NetinstallError):
                self.flush_progress()
            self._close_connections()

    def _close_connections(self) -> None:
        with self._lock:
            conns = [self._conn, *([self._now_conn] if self._now_conn is not None else [])]
            with self._readers_lock:
                self._closed = True
                conns += self._reader_conns
            for conn in conns:
                with suppress(SQLAlchemyError):
                    conn.close()
            self._store.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One short write transaction, taken up front so that reads inside it stay valid.
        The queued progress events are committed first, in a transaction of their own
        (``ProgressQueue``): a host's reports are applied in the order they came, and a
        write refused later does not take them back."""
        with self._lock:
            self._commit_queued()
            with self._transaction() as conn:
                yield conn

    def _commit_queued(self) -> None:
        """The queued progress events committed, in a transaction of their own (under
        the writer lock, before any other write)."""
        events = self.progress.take()
        if events:
            try:
                with self._transaction() as conn:
                    self._apply_progress(conn, events)
            except BaseException:
                self.progress.give_back(events)  # for the writer thread, in order
                raise

    def _write_alone(self, statement: Executable, params: dict[str, Any]) -> int:
        """A write that is one statement (how many rows it changed), as ``_write`` would
        make it but, on PostgreSQL, with no BEGIN and COMMIT around it: a statement
        alone is a transaction of its own there, so two round trips of three go."""
        if not self.networked:
            with self._write() as conn:
                return self._store.rowcount(conn, statement, params)
        with self._lock:
            self._commit_queued()
            if self._closed:
                raise NetinstallError(f"the registry {self.where} is closed")
            return self._store.alone(self._conn, statement, params)

    def _apply_progress(self, conn: Connection, queued: list[Progress]) -> None:
        """Queued progress events, in the order they came, each applied only if its host
        is still installing (a rearm or a failure since drops it). Several hosts' rows
        are locked first, in MAC order (the registry's lock order). The hosts' updates go
        in one call (``Store.rows_each``), then the events' rows in one; a host whose
        events pass the bound is pruned after its rows are in (``_bound_events``)."""
        macs = sorted({event.mac for event in queued})
        if len(macs) > 1:
            conn.execute(LOCK_HOSTS, {"macs": macs}).all()
        installing = State.INSTALLING.value
        updated = self._store.rows_each(
            conn,
            _PROGRESS,
            [
                {"where_mac": event.mac, "new_step": event.step, "new_progress": event.progress}
                for event in queued
            ],
        )
        added: list[dict[str, object]] = []  # the events' rows, inserted in one call
        counts: dict[str, int] = {}  # each host's event count after the batch
        for event, found in zip(queued, updated, strict=True):
            if not found:
                log.info("host %s: a progress event dropped: no longer installing", event.mac)
                continue
            step, progress, count = found[0]
            added.append(
                {
                    "time": event.time,
                    "mac": event.mac,
                    "state": installing,
                    "step": step,
                    "progress": progress,
                    "message": event.message,
                }
            )
            counts[event.mac] = int(count)
        self._store.many(conn, _INSERT_EVENT, added)
        for mac, count in counts.items():
            _bound_events(conn, mac, count)

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        if self._closed:
            raise NetinstallError(f"the registry {self.where} is closed")
        conn = self._now or self._conn
        with self._store.transaction(conn, now=conn is self._now) as conn:
            yield conn

    def _reader(self) -> Connection:
        """This thread's read connection. It sees every committed write; on SQLite (WAL)
        a read never waits for the writer (ours or another process's), so reads need no
        lock and may run on an event loop's thread."""
        conn: Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            conn = self._store.connect("reader")
            with self._readers_lock:  # not the writer's lock: a read never waits for a write
                if self._closed:
                    conn.close()
                    raise NetinstallError(f"the registry {self.where} is closed")
                self._reader_conns.append(conn)
            self._readers.conn = conn
        return conn

    def _query(
        self, statement: Executable, params: dict[str, Any] | None = None
    ) -> Sequence[Sequence[Any]]:
        """Rows read on this thread's read connection (``_reader``). A connection the
        database lost (restarted, or ended by an administrator) is reset and the read, which
        changes nothing, asked once more on a new one; if that fails too, the error (an
        outage: ``store.outage``) goes to the caller, and the next read connects again."""
        conn = self._reader()
        try:
            return self._store.rows(conn, statement, params)
        except SQLAlchemyError as exc:
            if not (conn.invalidated or isinstance(exc, PendingRollbackError)):
                raise
            log.info("registry %s: a read connection was lost (%s)", self.where, outage.reason(exc))
        with suppress(SQLAlchemyError):
            conn.rollback()  # the next statement connects again
        try:
            return self._store.rows(conn, statement, params)
        except SQLAlchemyError:
            if conn.invalidated:
                with suppress(SQLAlchemyError):
                    conn.rollback()
            raise

    def _first(
        self, conn: Connection, statement: Executable, params: dict[str, Any] | None = None
    ) -> Sequence[Any] | None:
        """The first row a statement returns (inside a write), or None."""
        found = self._store.rows(conn, statement, params)
        return found[0] if found else None

    def _scalar(
        self, conn: Connection, statement: Executable, params: dict[str, Any] | None = None
    ) -> Any:
        """The first column of the first row (inside a write), or None."""
        found = self._store.rows(conn, statement, params)
        return found[0][0] if found else None

    @staticmethod
    def _next_revision() -> int:
        """A new host revision: a random 62-bit number, so that no write waits for another
        to hand out the next one. A render cache entry (``RenderCache``) is served only at
        the revision it was rendered at, and the chance that a write's new revision equals
        the one it replaces is 2**-62. (A counter row did this before: every host write on
        every server queued on its lock until the writer's commit, 0.29 ms a write at two
        servers' fleet, the registry's busiest wait.)"""
        return randbits(REVISION_BITS) + 1

    def _serialise(self, conn: Connection) -> None:
        """Take the counters row first (inside a write): for writes that add rows no host
        row guards, so that two servers never both pass a check (exists? how many?)."""
        self._store.rows(conn, _LOCK_COUNTERS)

    def _bump_hosts(self, conn: Connection, profile: str | None = None) -> None:
        """Every host's revision (``profile``'s hosts only) is new: what their renders
        read (a profile, a setting, the repositories) changes in this transaction. Their
        rows are locked first, in MAC order."""
        which = select(hosts.c.mac).order_by(hosts.c.mac).with_for_update()
        bump = update(hosts)
        if profile is not None:
            which = which.where(hosts.c.profile == profile)
            bump = bump.where(hosts.c.profile == profile)
        conn.execute(which).all()
        conn.execute(bump.values(revision=self._next_revision()))

    def _scrub(self) -> None:
        """Leave no page of the file or its WAL with text a migration removed (SQLite:
        ``Store.scrub``). While another connection's reads hold the WAL the truncation
        waits (the busy timeout); if it cannot finish, ``scrub_pending`` stays and the
        next open tries again."""
        with self._lock:
            why = self._store.scrub(self._conn)
            if why is not None:
                log.warning("registry %s: clean-up after migration postponed: %s", self.where, why)
                return
            with self._write() as conn:
                conn.execute(delete(secrets).where(secrets.c.name == SCRUB_PENDING))
            self._store.truncate_wal(self._conn)

    # -- server settings -------------------------------------------------------

    def _issue_api_token(self, conn: Connection) -> str:
        """A new API token: its keyed hash stored, the token written to ``DIR/api-token``."""
        token = new_token()
        write_secret_file(self.directory / API_TOKEN_FILE, token + "\n")
        self._api_token_hash = self._keys.hash(Purpose.API_TOKEN, token)
        values = {"value": self._api_token_hash}
        done = conn.execute(update(secrets).where(secrets.c.name == API_TOKEN_HASH), values)
        if done.rowcount == 0:
            conn.execute(insert(secrets).values(name=API_TOKEN_HASH, **values))
        return token

    def new_api_token(self) -> None:
        """Replace the API token (the old one stops working here at once, in a running
        server within ``API_TOKEN_RELOAD`` s); the new one is in ``DIR/api-token`` (0600)
        only."""
        with self._write() as conn:
            self._issue_api_token(conn)

    def api_token_matches(self, given: str) -> bool:
        """Whether ``given`` is the API token (its keyed hash, compared in constant time).
        No SQL for the right token: the hash is kept. A wrong one reads the stored hash
        again, at most once every ``API_TOKEN_RELOAD`` seconds (another process rotated
        the token: ``server token rotate``), so a running server takes a new token
        without a restart and a flood of wrong tokens costs one read a second."""
        if not given:
            return False
        if self._keys.matches(Purpose.API_TOKEN, given, self._api_token_hash):
            return True
        now = self.api_token_clock()
        if now - self._api_token_read < API_TOKEN_RELOAD:
            return False
        self._api_token_read = now
        found = self._query(_SECRET, {"name": API_TOKEN_HASH})
        stored = str(found[0][0]) if found else None
        if stored is None or stored == self._api_token_hash:
            return False
        self._api_token_hash = stored
        log.info("registry %s: the API token was rotated; the new one is in use", self.where)
        return self._keys.matches(Purpose.API_TOKEN, given, stored)

    def api_token_stamp(self) -> str | None:
        """The stored API token's keyed hash as it is now (one read, no cache): it changes
        when the token is rotated, by any process (the web console's sessions end then)."""
        found = self._query(_SECRET, {"name": API_TOKEN_HASH})
        return str(found[0][0]) if found else None

    def settings(self) -> dict[str, str]:
        found = self._query(_ALL_SETTINGS)
        return {key: value for key, value in found}

    def set_setting(self, key: str, value: str) -> None:
        with self._write() as conn:
            self._bump_hosts(conn)  # renders read settings (the default payload version)
            done = conn.execute(update(settings).where(settings.c.key == key).values(value=value))
            if done.rowcount == 0:
                conn.execute(insert(settings).values(key=key, value=value))

    # -- profiles --------------------------------------------------------------

    def add_profile(self, profile: Profile) -> None:
        profile = profile_input(profile)
        with self._write() as conn:
            self._serialise(conn)
            if conn.execute(_PROFILE, {"name": profile.name}).first() is not None:
                raise InputError(f"profile {profile.name!r} exists already")
            conn.execute(insert(profiles).values(rows.profile_values(profile)))

    def update_profile(self, profile: Profile) -> None:
        """Replace a profile; refused when a host of it would no longer fit (``_check_san``)."""
        profile = profile_input(profile)
        with self._write() as conn:
            mine = _HOST.where(hosts.c.profile == profile.name).order_by(hosts.c.mac)
            for host_row in conn.execute(mine.with_for_update()).all():
                host = rows.host_from(host_row, self._keys)
                self._check_san_of(host, profile.san_boot, profile.multipath)
            values = rows.profile_values(profile)
            del values["name"]
            done = conn.execute(
                update(profiles).where(profiles.c.name == profile.name).values(values)
            )
            if done.rowcount == 0:
                raise InputError(f"no profile {profile.name!r}")
            self._bump_hosts(conn, profile.name)

    def get_profile(self, name: str) -> Profile | None:
        found = self._query(_PROFILE, {"name": name})
        return rows.profile_from(found[0]) if found else None

    def list_profiles(self) -> list[Profile]:
        found = self._query(_ALL_PROFILES)
        return [rows.profile_from(row) for row in found]

    # -- hosts -----------------------------------------------------------------

    def _assigned_version(self, conn: Connection, profile: str) -> str | None:
        """The profile's payload version, else the server's ``payload_version`` setting."""
        row = self._first(conn, _PROFILE_VERSION, {"name": profile})
        if row is None:
            raise InputError(f"no profile {profile!r}; see `netinstall profile list`")
        if row[0] is not None:
            return str(row[0])
        found = self._scalar(conn, SETTING, {"key": "payload_version"})
        return None if found is None else str(found)

    def _load(self, conn: Connection, mac: str) -> Host:
        """The host (inside a write), its row locked until the commit."""
        row = self._first(conn, _HOST_FOR_UPDATE, {"mac": mac})
        if row is None:
            raise UnknownHost(f"no host {mac} in the registry")
        return rows.host_from(row, self._keys)

    def _store_host(
        self,
        conn: Connection,
        host: Host,
        before: Host,
        *,
        logged: bool = False,
        message: str | None = None,
        secrets_of: Host | None = None,
    ) -> Host:
        """Write ``host`` (read as ``before`` in this transaction); the host as stored: with
        a new revision if a field its renders read changed (``model.UNRENDERED``).

        With ``logged``, an event with ``message`` is stored too (``_log``: its secrets and
        ``secrets_of``'s redacted), the host's event count kept by the same UPDATE that
        writes the host: one statement fewer a report than counting on its own, and on
        PostgreSQL one round trip fewer on the writer's connection."""
        revision = before.revision
        if rendered_view(host) != rendered_view(before):
            revision = self._next_revision()
        host = replace(host, revision=revision)
        values = rows.host_values(host, self._keys)
        values["where_mac"] = values.pop("mac")
        if not logged:
            self._store.rowcount(conn, _UPDATE_HOST, values)
            return host
        count = self._scalar(conn, _UPDATE_HOST_COUNTED, values)
        self._log(conn, host, message, secrets_of, counted=None if count is None else int(count))
        return host

    def _insert(self, conn: Connection, host: Host) -> Host:
        host = replace(host, revision=self._next_revision())
        self._store.rowcount(conn, _INSERT_HOST, rows.host_values(host, self._keys))
        return host

    def _is_secret(self, word: str, hosts: tuple[Host, ...]) -> bool:
        """Whether ``word`` is the API token or an agent credential of ``hosts``."""
        found = self.api_token_matches(word)
        for host in hosts:
            found |= self._keys.matches(Purpose.AGENT_CREDENTIAL, word, host.agent_credential_hash)
        return found

    def _log(
        self,
        conn: Connection,
        host: Host,
        message: str | None,
        old: Host | None,
        *,
        counted: int | None = None,
    ) -> None:
        """Store an event from the host's fields; its secrets (and ``old``'s) become REDACTED:
        install tokens and password hashes by value, the API token and agent credentials
        (known only by their keyed hashes) by checking each token-shaped word. ``counted``:
        the host's event count with this event, kept already (``_store_host``)."""
        if message is not None:
            message = self._redacted(message, host, old)
        self._insert_event(
            conn,
            host.mac,
            state=host.state,
            step=host.step,
            progress=host.progress,
            message=message,
            counted=counted,
        )

    def _insert_event(
        self,
        conn: Connection,
        mac: str,
        *,
        state: State,
        step: str | None,
        progress: float | None,
        message: str | None,
        counted: int | None = None,
    ) -> None:
        """One event row as given (its message already redacted), the host's count kept
        (``counted``: kept already, the count with this event)."""
        row = {"time": time.time(), "mac": mac, "state": state.value, "step": step}
        self._store.rowcount(conn, _INSERT_EVENT, {**row, "progress": progress, "message": message})
        count = counted
        if count is None:
            count = self._scalar(conn, _COUNT_EVENT, {"where_mac": mac})
        if count is not None:
            _bound_events(conn, mac, int(count))

    def _redacted(self, message: str, host: Host, old: Host | None) -> str:
        hosts = (host,) if old is None else (host, old)
        secret = [h.token for h in hosts]
        secret += [v for h in hosts for k, v in h.variables if is_password_variable(k)]
        message = redact(message, secret)
        message = redact_tokens(message, lambda word: self._is_secret(word, hosts))
        return capped_message(message)  # after redaction: no secret is cut in half

    def _exists(self, conn: Connection, mac: str) -> bool:
        return self._first(conn, _HOST_EXISTS, {"mac": mac}) is not None

    @once_more_on_conflict
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
            self._serialise(conn)
            if self._exists(conn, mac):
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

    @once_more_on_conflict
    def add_unknown_host(self, mac: str, limit: int) -> tuple[Host | None, int]:
        """Register an unknown MAC with the default profile (``unknown_policy install``)
        unless ``limit`` hosts registered so are not running yet; atomic, so concurrent
        requests (of any server) never pass the limit. (The host, or the one made
        meanwhile; None if the limit refused it), and how many such hosts wait now."""
        mac = normalise_mac(mac)
        with self._write() as conn:
            self._serialise(conn)
            if self._exists(conn, mac):
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

    def _unknown_waiting(self, conn: Connection) -> int:
        """Hosts registered as unknown MACs that have not reported running (yet)."""
        return int(self._scalar(conn, _UNKNOWN_WAITING))

    def get_host(self, mac: str) -> Host | None:
        found = self._query(_HOST_BY_MAC, {"mac": normalise_mac(mac)})
        return rows.host_from(found[0], self._keys) if found else None

    def list_hosts(self) -> list[Host]:
        found = self._query(_ALL_HOSTS)
        return [rows.host_from(row, self._keys) for row in found]

    @once_more_on_conflict
    def update_host(
        self,
        mac: str,
        *,
        name: str | Literal[_Keep.KEEP] | None = KEEP,
        profile: str | Literal[_Keep.KEEP] = KEEP,
        variables: Variables | Literal[_Keep.KEEP] = KEEP,
        set_variables: Variables | Literal[_Keep.KEEP] = KEEP,
        unset_variables: Iterable[str] | Literal[_Keep.KEEP] = KEEP,
        san: SanTarget | Literal[_Keep.KEEP] | None = KEEP,
    ) -> Host:
        """Operator edits; a field left at ``KEEP`` is unchanged. A new profile sets the
        assigned version (an installed host then shows assigned != running).
        ``variables`` replaces all of the host's variables; ``set_variables`` and
        ``unset_variables`` change those named, merged with the stored ones under the
        row's lock (``registry_input.edited_variables``), so that two operators changing
        different variables at once both keep their change. Not both ways at once."""
        mac = normalise_mac(mac)
        if variables is not KEEP and (set_variables is not KEEP or unset_variables is not KEEP):
            raise InputError(
                "host edit: field 'variables' replaces all of a host's variables and cannot "
                "be combined with 'set_variables' or 'unset_variables'"
            )
        with self._write() as conn:
            host = old = self._load(conn, mac)
            if name is not KEEP:
                host = replace(host, name=host_name(name))
            if profile is not KEEP:
                version = self._assigned_version(conn, profile)
                host = replace(host, profile=profile, assigned_version=version)
            if variables is not KEEP:
                host = replace(host, variables=variables_of(variables, host.variables))
            if set_variables is not KEEP or unset_variables is not KEEP:
                given = () if set_variables is KEEP else set_variables
                unset = () if unset_variables is KEEP else unset_variables
                merged = edited_variables(host.variables, mac, given, unset)
                host = replace(host, variables=merged)
            if san is not KEEP:
                host = replace(host, san=san_target(san))
            self._check_san(conn, host)
            host = self._store_host(conn, host, old)
        return host

    def _check_san(self, conn: Connection, host: Host) -> None:
        row = self._first(conn, _PROFILE_SAN, {"name": host.profile})
        if row is not None:
            self._check_san_of(host, bool(row[0]), bool(row[1]))

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

    @once_more_on_conflict
    def delete_host(self, mac: str) -> None:
        """Forget a host, its BMC and its events (any MAC of the right shape: a record made before
        group addresses were refused can still go). A pool member leaves its pool; a
        pool's master is refused (Conflict): the pool would have none."""
        mac = mac_syntax(mac)
        with self._write() as conn:
            self._load(conn, mac)
            membership = conn.execute(
                select(pool_hosts.c.pool, pool_hosts.c.position).where(pool_hosts.c.mac == mac)
            ).first()
            if membership is not None:
                name, position = membership
                if position == 0:
                    raise Conflict(
                        f"host {mac} is the master of pool {name}; delete the pool first "
                        f"(`netinstall pool delete {name}`)"
                    )
                conn.execute(delete(pool_hosts).where(pool_hosts.c.mac == mac))
                log.info("host %s removed: it left pool %s", mac, name)
            conn.execute(delete(bmcs).where(bmcs.c.mac == mac))  # its BMC goes with it
            conn.execute(delete(host_segments).where(host_segments.c.mac == mac))
            conn.execute(_DELETE_EVENTS, {"mac": mac})
            conn.execute(_DELETE_HOST, {"mac": mac})

    def _by_secret(self, column: str, purpose: Purpose, given: str) -> Host | None:
        """One indexed lookup by keyed hash. The lookup's timing can only tell about the
        hash, which nobody without the registry's key can compute for a guess."""
        if not given:
            return None
        found = self._query(_HOST_BY_SECRET[column], {"digest": self._keys.hash(purpose, given)})
        return rows.host_from(found[0], self._keys) if found else None

    def host_by_token(self, token: str) -> Host | None:
        """The host whose live install token this is (its keyed hash, an indexed column)."""
        return self._by_secret("token_hash", Purpose.INSTALL_TOKEN, token)

    def host_by_install_key(self, key: str) -> Host | None:
        """The host whose enrolled install key this is (its keyed hash, an indexed column)."""
        return self._by_secret("install_key_hash", Purpose.INSTALL_KEY, key)

    def host_by_agent_credential(self, credential: str) -> Host | None:
        """The host whose agent credential this is (its keyed hash, an indexed column)."""
        return self._by_secret("agent_credential_hash", Purpose.AGENT_CREDENTIAL, credential)

    # -- events ----------------------------------------------------------------

    def events(self, mac: str, limit: int | None = None) -> list[Event]:
        """The host's events, oldest first; with ``limit``, only the latest ``limit``
        (the progress events queued in this process included: they are committed first)."""
        if len(self.progress):
            self.flush_progress()
        mac = normalise_mac(mac)
        if limit is None:
            found = self._query(_EVENTS, {"mac": mac})
        else:
            found = self._query(_LATEST_EVENTS, {"mac": mac, "limit": max(limit, 0)})
        return [rows.event_from(row) for row in reversed(found)]

    def last_events(self) -> dict[str, Event]:
        """Every host's latest event, by MAC: one query (the events index), not one a host."""
        if len(self.progress):
            self.flush_progress()
        latest = (rows.event_from(row) for row in self._query(_LAST_EVENTS))
        return {event.mac: event for event in latest}

    def last_event(self, mac: str) -> Event | None:
        found = self.events(mac, limit=1)
        return found[0] if found else None

    def newest_event_id(self) -> int:
        """The highest event id (0: no event yet), the progress events queued in this
        process committed first."""
        if len(self.progress):
            self.flush_progress()
        newest = self._query(_NEWEST_EVENT)[0][0]
        return int(newest) if newest is not None else 0

    def changed_since(self, after: int, most: int) -> tuple[int, list[str] | None]:
        """The newest event id now, and the MACs of the hosts with an event of an id above
        ``after`` up to it (sorted; None: more than ``most`` of them, read them all). What
        the web console polls with: every change of a host's state, step or work is an
        event (the progress events queued in this process are committed first)."""
        upto = self.newest_event_id()
        if upto <= after:
            return upto, []
        found = self._query(_CHANGED, {"after": after, "upto": upto, "most": most + 1})
        macs = [str(row[0]) for row in found]
        return upto, None if len(macs) > most else macs

    def hosts_of(self, macs: Sequence[str]) -> list[Host]:
        """The registered hosts among ``macs`` (normalised), by MAC; one query."""
        if not macs:
            return []
        found = self._query(_HOSTS_IN, {"macs": list(macs)})
        return [rows.host_from(row, self._keys) for row in found]

    # -- profiles removed --------------------------------------------------------

    def delete_profile(self, name: str) -> None:
        """Remove profile ``name``; Conflict (naming how many) while hosts use it. The
        ``default`` profile stays (unknown MACs are registered with it)."""
        if name == "default":
            raise Conflict(
                "the default profile cannot be removed: hosts registered as unknown MACs get "
                "it; change it with `netinstall profile edit default`"
            )
        with self._write() as conn:
            self._serialise(conn)  # no host takes the profile while it goes
            if conn.execute(_PROFILE, {"name": name}).first() is None:
                raise InputError(f"no profile {name!r}; see `netinstall profile list`")
            users = conn.execute(select(func.count()).where(hosts.c.profile == name)).scalar_one()
            if users:
                raise Conflict(
                    f"profile {name!r} is used by {users} host(s); give them another profile "
                    "first (`netinstall host set MAC --profile NAME`)"
                )
            conn.execute(delete(profiles).where(profiles.c.name == name))
