"""What the web console's pages show, read from the registry (``http_ui`` serves them).

    fleet(registry, filters)            -> the page's hosts as FleetRows, what needs attention
                                           first, and how many of each state
    poll(registry, cursor, filters)     -> the rows changed since the cursor (Poll)
    host_page(registry, mac, shared)    -> one host: its record, time line, events, logs
    pools_page(registry)                -> every pool, its hosts and its latest job

The poll reads only the hosts with events since the cursor, the highest event id the
page has seen: every change of a host's state, step, progress or work is an event, on
whichever server it was reported. Event ids are not committed in order on PostgreSQL
(two writers take ids 7 and 8 and 8 commits first), so each poll reads ``OVERLAP`` ids
below its cursor again; and the page asks for everything (``full``) every minute or so,
which also shows hosts removed or renamed (no event). Every function blocks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from common.errors import InputError
from common.protocol.messages import ConsoleChanges, ConsoleRow
from pxe_server import timeline
from pxe_server.jobs import Job
from pxe_server.model import Event, Host, State, normalise_mac
from pxe_server.secrets import shown_variables

if TYPE_CHECKING:
    from pxe_server.registry import Registry

# Event ids below the cursor a poll reads again (ids committed out of order).
OVERLAP = 256
# Hosts a poll sends at most; past it the page is told to read everything.
MAX_CHANGED = 2000
EVENTS_SHOWN = 200  # a host's newest events listed on its page
MAX_FILTER = 128  # characters of a filter value
# Hosts on one page of the fleet: 10,000 hosts' rows on one page were ~7 MB of HTML and
# 0.4 s to render, and the page's full poll sent them all again every minute.
PAGE_ROWS = 250  # the default; a page may ask for 1 to MAX_PAGE_ROWS (``rows=``)
MAX_PAGE_ROWS = 1000
MAX_PAGE = 100_000

# What needs attention first: failed, then a conflict, then hosts on their way.
_RANK = {
    State.FAILED: 0,
    State.INSTALLING: 2,
    State.SIGNALLED: 2,
    State.INSTALLED: 2,
    State.PENDING: 3,
    State.RUNNING: 4,
}


def when(epoch: float | None) -> str:
    """A time for people: ``2026-12-07 22:10:39 UTC`` (empty: never)."""
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(query: Mapping[str, str], name: str, what: str, most: int) -> int | None:
    """The whole number ``name`` of a query string, 1 to ``most`` (None: not given);
    InputError naming it."""
    text = query.get(name, "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and 1 <= int(text[:7]) <= most):
        raise InputError(f"{name} {text[:32]!r}: expected {what}, 1 to {most}")
    return int(text)


@dataclass(frozen=True)
class Filters:
    """The fleet's filters (empty: any)."""

    state: str = ""
    profile: str = ""
    pool: str = ""
    mac: str = ""  # one host (its page follows it live)
    page: int = 1  # which ``rows`` rows of those the filters keep, from 1
    rows: int = 0  # hosts on a page (0: PAGE_ROWS)

    @classmethod
    def of(cls, query: Mapping[str, str]) -> Filters:
        """The filters of a query string; InputError naming a bad value."""
        values = {}
        for name in ("state", "profile", "pool", "mac"):
            value = query.get(name, "").strip()
            if len(value) > MAX_FILTER:
                raise InputError(f"filter {name}: at most {MAX_FILTER} characters")
            values[name] = value
        if values["state"] and values["state"] not in tuple(State):
            raise InputError(
                f"filter state {values['state']!r}: expected one of "
                + ", ".join(s.value for s in State)
            )
        if values["mac"]:
            values["mac"] = normalise_mac(values["mac"])
        page = _number(query, "page", "a page number", MAX_PAGE)
        rows = _number(query, "rows", "hosts on a page", MAX_PAGE_ROWS)
        return cls(**values, page=page or 1, rows=rows or 0)

    @property
    def page_rows(self) -> int:
        return self.rows or PAGE_ROWS

    def query(self, **changed: str | int) -> dict[str, str]:
        """These filters as a query string's values (the defaults left out), with
        ``changed`` values instead of theirs."""
        values = {**vars(self), **changed}
        return {k: str(v) for k, v in values.items() if v and not (k == "page" and v == 1)}

    def keeps(self, row: FleetRow) -> bool:
        return (
            (not self.state or row.state == self.state)
            and (not self.profile or row.profile == self.profile)
            and (not self.pool or row.pool == self.pool)
            and (not self.mac or row.mac == self.mac)
        )


@dataclass(frozen=True)
class FleetRow:
    """One host as the fleet shows it, every value ready to be shown as text."""

    mac: str
    name: str
    state: str
    step: str
    progress: float | None  # percent
    assigned: str
    running: str
    last_checkin: str
    work: str
    profile: str
    pool: str
    conflict: str
    rank: int  # the attention order: lower first

    @property
    def label(self) -> str:
        """What the host is called: its name, else its MAC."""
        return self.name or self.mac

    @property
    def percent(self) -> str:
        return "" if self.progress is None else f"{self.progress:.0f} %"

    @property
    def key(self) -> str:
        """The order within a rank: by name, then MAC."""
        return f"{self.rank}:{self.name.lower()}:{self.mac}"

    def record(self) -> ConsoleRow:
        """The row as the poll sends it to the page's script."""
        return ConsoleRow(
            mac=self.mac,
            label=self.label,
            name=self.name,
            state=self.state,
            step=self.step,
            progress=self.progress,
            percent=self.percent,
            assigned=self.assigned,
            running=self.running,
            last_checkin=self.last_checkin,
            work=self.work,
            profile=self.profile,
            pool=self.pool,
            conflict=self.conflict,
            key=self.key,
        )


# An empty row: the page's pattern for rows the poll adds.
BLANK = FleetRow(
    mac="", name="", state="", step="", progress=None, assigned="", running="",
    last_checkin="", work="", profile="", pool="", conflict="", rank=9,
)  # fmt: skip


def row_of(host: Host, pool: str | None) -> FleetRow:
    rank = _RANK[host.state]
    if host.conflict and rank > 1:
        rank = 1
    progress = None if host.progress is None else round(max(0.0, min(1.0, host.progress)) * 100, 1)
    return FleetRow(
        mac=host.mac,
        name=host.name or "",
        state=host.state.value,
        step=host.step or "",
        progress=progress,
        assigned=host.assigned_version or "",
        running=host.running_version or "",
        last_checkin=when(host.last_checkin),
        work=host.work.value if host.work is not None else "",
        profile=host.profile,
        pool=pool or "",
        conflict=host.conflict or "",
        rank=rank,
    )


def _pools_by_mac(registry: Registry) -> dict[str, str]:
    return {mac: pool.name for pool in registry.pools() for mac in pool.hosts}


def _rows(hosts: Sequence[Host], pools: Mapping[str, str], filters: Filters) -> list[FleetRow]:
    found = (row_of(host, pools.get(host.mac)) for host in hosts)
    return sorted((row for row in found if filters.keeps(row)), key=lambda r: r.key)


@dataclass(frozen=True)
class Fleet:
    rows: list[FleetRow]  # the page's
    cursor: int  # the newest event id when it was read
    profiles: list[str]
    pools: list[str]
    total: int  # hosts registered, whatever the filters
    kept: int  # hosts the filters keep, on every page
    page: int  # this page, from 1 (the last one when the filters asked past it)
    pages: int  # pages of the hosts kept (at least 1)
    states: dict[str, int]  # hosts kept in each state, by the attention order

    page_rows: int  # hosts on a full page

    @property
    def first(self) -> int:
        """The number of the page's first row among the hosts kept (0: none)."""
        return (self.page - 1) * self.page_rows + 1 if self.rows else 0

    @property
    def last(self) -> int:
        return self.first + len(self.rows) - 1 if self.rows else 0


def fleet(registry: Registry, filters: Filters) -> Fleet:
    """The page of hosts the filters keep, what needs attention first (failed,
    conflicts, hosts on their way, pending, running), then by name; and how many of
    those in each state."""
    cursor = registry.newest_event_id()  # first: what changes while we read comes next poll
    hosts = registry.hosts_of([filters.mac]) if filters.mac else registry.list_hosts()
    pools = _pools_by_mac(registry)
    kept = _rows(hosts, pools, filters)
    size = filters.page_rows
    pages = max(1, -(-len(kept) // size))
    page = min(filters.page, pages)
    states: dict[str, int] = {}
    for row in kept:
        states[row.state] = states.get(row.state, 0) + 1
    return Fleet(
        rows=kept[(page - 1) * size : page * size],
        cursor=cursor,
        profiles=[p.name for p in registry.list_profiles()],
        pools=sorted(set(pools.values())),
        total=len(hosts),
        kept=len(kept),
        page=page,
        pages=pages,
        states=states,
        page_rows=size,
    )


@dataclass(frozen=True)
class Poll:
    """A poll's answer: the new cursor, the changed rows the filters keep, and the MACs the
    page should drop (changed and no longer kept, or gone). ``full``: ``rows`` is
    everything, and the page drops every row not in it."""

    cursor: int
    full: bool
    rows: list[FleetRow]
    removed: list[str]

    def record(self, now: float) -> ConsoleChanges:
        """The answer as the poll sends it (``now``: when it was read)."""
        return ConsoleChanges(
            cursor=self.cursor,
            full=self.full,
            rows=tuple(row.record() for row in self.rows),
            removed=tuple(self.removed),
            at=when(now),
        )


def poll_after(cursor: int, overlap: int = OVERLAP) -> int:
    """Where a poll with ``cursor`` starts reading event ids: ``overlap`` below it."""
    return max(0, cursor - overlap)


def poll(
    registry: Registry,
    cursor: int,
    filters: Filters,
    *,
    full: bool = False,
    overlap: int = OVERLAP,
) -> Poll:
    """The rows changed since ``cursor`` (0 or ``full``: every row of the filters'
    page), the ``overlap`` event ids below it read again. A changed row is sent whatever
    its page: the page's script updates the rows it shows and places a new one only
    where its order falls within them (the full read puts every page right again)."""
    if full or cursor <= 0:
        everything = fleet(registry, filters)
        return Poll(everything.cursor, True, everything.rows, [])
    newest, macs = registry.changed_since(poll_after(cursor, overlap), MAX_CHANGED)
    if macs is None:  # too many to send one by one
        everything = fleet(registry, filters)
        return Poll(everything.cursor, True, everything.rows, [])
    if filters.mac:
        macs = [mac for mac in macs if mac == filters.mac]
    hosts = registry.hosts_of(macs)
    pools = _pools_by_mac(registry) if hosts else {}
    rows = _rows(hosts, pools, filters)
    kept = {row.mac for row in rows}
    return Poll(newest, False, rows, [mac for mac in macs if mac not in kept])


# -- one host ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LogFile:
    name: str
    size: int
    time: str


@dataclass(frozen=True)
class HostPage:
    host: Host
    row: FleetRow
    variables: list[tuple[str, str]]  # passwords shown as set, never their hash
    facts: list[tuple[str, str]]  # each value as JSON text
    bars: list[timeline.Bar]
    total: str  # the latest run's length
    events: list[Event]  # newest first, at most EVENTS_SHOWN
    event_count: int
    logs: list[LogFile]
    versions: list[str]  # the registered repositories, for an upgrade
    bmc: str | None  # the host's BMC as shown (its URL, no password; flags), if it has one
    segment: str  # its segment server (the one its power calls go through), as shown


def host_page(
    registry: Registry, mac: str, logs: Sequence[tuple[str, int, float]], now: float
) -> HostPage:
    """``mac``'s page; UnknownHost (a 404) if there is no such host. ``logs``: its log
    bundles (name, size, time), as ``http_api`` lists them."""
    from pxe_server.registry import UnknownHost  # noqa: PLC0415 - no SQLAlchemy at import

    host = registry.get_host(mac)
    if host is None:
        raise UnknownHost(f"no host {mac} in the registry")
    events = registry.events(mac)
    run = timeline.phases(timeline.latest_run(events), now)
    total = run[-1].end - run[0].start if run else 0.0
    facts = [(key, json.dumps(value, sort_keys=True)) for key, value in sorted(host.facts.items())]
    return HostPage(
        host=host,
        row=row_of(host, registry.pool_of(mac)),
        variables=sorted(shown_variables(host.variables).items()),
        facts=facts,
        bars=timeline.bars(run),
        total=timeline.duration_text(total),
        events=list(reversed(events))[:EVENTS_SHOWN],
        event_count=len(events),
        logs=[LogFile(name, size, when(at)) for name, size, at in reversed(logs)],
        versions=[r.version for r in registry.repositories()],
        bmc=_bmc_shown(registry, mac),
        segment=_segment_shown(registry, mac),
    )


def _segment_shown(registry: Registry, mac: str) -> str:
    """The host's segment server as its page shows it (``segments``)."""
    segment = registry.segment(mac)
    if segment is None:
        return "not known yet (power calls run on the server asked)"
    return f"{segment.server}{' (pinned)' if segment.pinned else ''}"


def _bmc_shown(registry: Registry, mac: str) -> str | None:
    """The host's BMC as its page shows it: the URL (a user, never the password), and
    whether its certificate goes unchecked."""
    bmc = registry.bmc(mac)
    if bmc is None:
        return None
    return f"{bmc.url}{', certificate not checked (--bmc-insecure)' if bmc.insecure else ''}"


# -- pools -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolView:
    name: str
    rows: list[FleetRow]  # the master first, then the members in their upgrade order
    job: Job | None  # its latest job

    def label(self, mac: str) -> str:
        """What a host of the pool's job is called (its MAC if it left the pool)."""
        return next((row.label for row in self.rows if row.mac == mac), mac)


def pools_page(registry: Registry) -> list[PoolView]:
    """Every pool, its hosts in upgrade order and its latest job (pool upgrades)."""
    pools = registry.pools()
    latest: dict[str, Job] = {}
    for job in registry.jobs():  # newest first
        if job.pool is not None and job.pool not in latest:
            latest[job.pool] = job
    macs = [mac for pool in pools for mac in pool.hosts]
    hosts = {host.mac: host for host in registry.hosts_of(macs)}
    views = []
    for pool in pools:
        rows = [row_of(hosts[mac], pool.name) for mac in pool.hosts if mac in hosts]
        views.append(PoolView(pool.name, rows, latest.get(pool.name)))
    return views
