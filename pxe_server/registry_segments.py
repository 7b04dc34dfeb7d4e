"""Servers, hosts' segment servers and power requests in the registry: a part of
``Registry``, which inherits it.

Several ``server run`` processes may share one registry, one a segment (docs/deployment.md).
Each registers itself in ``servers`` and renews its ``last_seen`` (its heartbeat); a
host's segment server, the one that last served its network boot, enrolment or check-in
(or the one an operator pinned), is a row of ``host_segments``; a power call made on
another server becomes a row of ``power_requests`` that the segment server claims,
carries out and answers (``pxe_server.segments``). Here rows go in and out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update

from pxe_server.registry_base import RegistryBase
from pxe_server.store.tables import host_segments, hosts, power_requests, servers

# The states of a power request.
WAITING = "waiting"  # left for its server
RUNNING = "running"  # its server took it and asks the BMC
ANSWERED = "answered"  # the answer is in ``answer``


@dataclass(frozen=True)
class Server:
    """A server of the registry as it registered itself."""

    name: str
    address: str
    started: float
    last_seen: float


@dataclass(frozen=True)
class Segment:
    """A host's segment server, and whether an operator pinned it."""

    server: str
    pinned: bool


@dataclass(frozen=True)
class PowerAsk:
    """A power request as stored: ``request`` and ``answer`` are JSON objects."""

    id: int
    mac: str
    server: str
    asked_by: str
    request: Mapping[str, Any]
    state: str
    answer: Mapping[str, Any] | None
    created: float


class Segments(RegistryBase):
    """The registry's servers, segment servers and power requests (``Registry`` inherits
    them)."""

    # What learns the segment servers of the hosts this process serves (``served``): a
    # ``segments.SegmentLearner`` in a server, none elsewhere.
    segment_learner: Callable[[str], None] | None = None

    def served(self, mac: str) -> None:
        """This process served host ``mac``'s network boot, enrolment or check-in: its
        segment server is learnt (at no cost to the caller when nothing changed)."""
        learner = self.segment_learner
        if learner is not None:
            learner(mac)

    # -- servers -----------------------------------------------------------------------------

    def register_server(self, name: str, address: str, now: float) -> None:
        """Record server ``name`` as started now at ``address`` (a restart replaces its row)."""
        values = {"address": address, "started": now, "last_seen": now}
        with self._write() as conn:
            done = conn.execute(update(servers).where(servers.c.name == name).values(**values))
            if done.rowcount == 0:
                conn.execute(insert(servers).values(name=name, **values))

    def rename_server(self, old: str, new: str) -> int:
        """Server ``old`` runs as ``new`` now (``server run --name`` changed): its row goes,
        and the hosts it was the segment server of follow it; how many."""
        with self._write() as conn:
            conn.execute(delete(servers).where(servers.c.name == old))
            moved = conn.execute(
                update(host_segments).where(host_segments.c.server == old).values(server=new)
            )
            return int(moved.rowcount)

    def server_seen(self, name: str, now: float) -> bool:
        """Renew server ``name``'s heartbeat; False if it has no row (registered again by
        the caller)."""
        with self._write() as conn:
            done = conn.execute(_SEEN, {"where_name": name, "now": now})
            return bool(done.rowcount)

    def servers(self) -> list[Server]:
        """Every registered server, by name."""
        return [_server(row) for row in self._query(_SERVERS)]

    def server(self, name: str) -> Server | None:
        found = self._query(_SERVER, {"name": name})
        return _server(found[0]) if found else None

    # -- segment servers ---------------------------------------------------------------------

    def segment(self, mac: str) -> Segment | None:
        """Host ``mac``'s segment server (None: not known yet)."""
        found = self._query(_SEGMENT, {"mac": mac})
        return None if not found else Segment(str(found[0][0]), bool(found[0][1]))

    def segments(self) -> dict[str, Segment]:
        """Every host's segment server that is known, by MAC."""
        return {str(m): Segment(str(s), bool(p)) for m, s, p in self._query(_ALL_SEGMENTS)}

    def learn_segment(self, mac: str, server: str, now: float) -> Segment | None:
        """``server`` served host ``mac``: it becomes its segment server unless an operator
        pinned one. What the host's segment server is now (None: no such host). Written
        only when it changes."""
        with self._write() as conn:
            found = conn.execute(_SEGMENT_FOR_UPDATE, {"mac": mac}).first()
            if found is not None:
                if found[1] or found[0] == server:
                    return Segment(str(found[0]), bool(found[1]))
                conn.execute(_SET_SEGMENT, {"where_mac": mac, "server": server, "now": now})
                return Segment(server, False)
            if conn.execute(_HOST_EXISTS, {"mac": mac}).first() is None:
                return None
            conn.execute(insert(host_segments).values(mac=mac, server=server, updated=now))
        return Segment(server, False)

    def pin_segment(self, mac: str, server: str | None, now: float) -> bool:
        """Pin host ``mac``'s segment server to ``server``; None: learn it again from what
        serves the host (the one it has stays until then). False: no such host."""
        with self._write() as conn:
            if conn.execute(_HOST_EXISTS.with_for_update(), {"mac": mac}).first() is None:
                return False
            if server is None:
                conn.execute(update(host_segments).where(host_segments.c.mac == mac)
                             .values(pinned=False, updated=now))  # fmt: skip
                return True
            values = {"server": server, "pinned": True, "updated": now}
            done = conn.execute(
                update(host_segments).where(host_segments.c.mac == mac).values(**values)
            )
            if done.rowcount == 0:
                conn.execute(insert(host_segments).values(mac=mac, **values))
        return True

    # -- power requests ----------------------------------------------------------------------

    def ask_power(
        self, mac: str, server: str, asked_by: str, request: Mapping[str, Any], now: float,
        *, keep: float,
    ) -> int:  # fmt: skip
        """A power request for ``server`` to carry out; its id. Answered requests older
        than ``keep`` seconds, and unanswered ones older than ten times that, go."""
        with self._write() as conn:
            conn.execute(
                _PRUNE_POWER, {"answered_before": now - keep, "asked_before": now - 10 * keep}
            )
            done = conn.execute(
                insert(power_requests)
                .values(mac=mac, server=server, asked_by=asked_by, request=json.dumps(request),
                        state=WAITING, created=now)
                .returning(power_requests.c.id)
            )  # fmt: skip
            return int(done.scalar_one())

    def power_waiting(self, server: str) -> bool:
        """Whether a power request waits for ``server`` (one indexed read: its poll)."""
        return bool(self._query(_POWER_WAITING, {"server": server}))

    def claim_power(self, server: str, now: float, stale: float) -> PowerAsk | None:
        """The oldest power request waiting for ``server`` (asked within ``stale`` seconds),
        marked running; None: none. An older one is answered as unanswered."""
        with self._write() as conn:
            row = conn.execute(_CLAIM_POWER, {"server": server}).first()
            if row is None:
                return None
            ask = _ask(row)
            if ask.created < now - stale:
                answer = {"error": "stale", "message": "the request waited too long"}
                conn.execute(_ANSWER_POWER, {"where_id": ask.id, "answer": json.dumps(answer),
                                             "now": now})  # fmt: skip
                return None
            conn.execute(update(power_requests).where(power_requests.c.id == ask.id)
                         .values(state=RUNNING))  # fmt: skip
            return ask

    def answer_power(self, ident: int, answer: Mapping[str, Any], now: float) -> None:
        """Power request ``ident``'s answer: a reply, or an error's kind and message."""
        with self._write() as conn:
            conn.execute(
                _ANSWER_POWER, {"where_id": ident, "answer": json.dumps(answer), "now": now}
            )

    def power_ask(self, ident: int) -> PowerAsk | None:
        found = self._query(_POWER_ASK, {"id": ident})
        return _ask(found[0]) if found else None

    def drop_power(self, ident: int) -> None:
        """Forget power request ``ident`` (its asker stopped waiting for it)."""
        with self._write() as conn:
            conn.execute(delete(power_requests).where(power_requests.c.id == ident))


def _server(row: Sequence[Any]) -> Server:
    name, address, started, last_seen = row
    return Server(str(name), str(address), float(started), float(last_seen))


def _ask(row: Sequence[Any]) -> PowerAsk:
    ident, mac, server, asked_by, request, state, answer, created = row
    return PowerAsk(
        int(ident), str(mac), str(server), str(asked_by), json.loads(request), str(state),
        None if answer is None else json.loads(answer), float(created),
    )  # fmt: skip


_SEEN = (
    update(servers)
    .where(servers.c.name == bindparam("where_name"))
    .values(last_seen=bindparam("now"))
)
_SERVER_COLUMNS = (servers.c.name, servers.c.address, servers.c.started, servers.c.last_seen)
_SERVERS = select(*_SERVER_COLUMNS).order_by(servers.c.name)
_SERVER = select(*_SERVER_COLUMNS).where(servers.c.name == bindparam("name"))
_SEGMENT = select(host_segments.c.server, host_segments.c.pinned).where(
    host_segments.c.mac == bindparam("mac")
)
_SEGMENT_FOR_UPDATE = _SEGMENT.with_for_update()
_ALL_SEGMENTS = select(host_segments.c.mac, host_segments.c.server, host_segments.c.pinned)
_SET_SEGMENT = (
    update(host_segments)
    .where(host_segments.c.mac == bindparam("where_mac"))
    .values(server=bindparam("server"), updated=bindparam("now"))
)
_HOST_EXISTS = select(hosts.c.mac).where(hosts.c.mac == bindparam("mac"))
_ASK_COLUMNS = (
    power_requests.c.id,
    power_requests.c.mac,
    power_requests.c.server,
    power_requests.c.asked_by,
    power_requests.c.request,
    power_requests.c.state,
    power_requests.c.answer,
    power_requests.c.created,
)
_POWER_ASK = select(*_ASK_COLUMNS).where(power_requests.c.id == bindparam("id"))
_POWER_WAITING = (
    select(power_requests.c.id)
    .where(power_requests.c.server == bindparam("server"), power_requests.c.state == WAITING)
    .limit(1)
)
_CLAIM_POWER = (
    select(*_ASK_COLUMNS)
    .where(power_requests.c.server == bindparam("server"), power_requests.c.state == WAITING)
    .order_by(power_requests.c.id)
    .limit(1)
    .with_for_update(skip_locked=True)
)
_ANSWER_POWER = (
    update(power_requests)
    .where(power_requests.c.id == bindparam("where_id"))
    .values(state=ANSWERED, answer=bindparam("answer"), answered=bindparam("now"))
)
_PRUNE_POWER = delete(power_requests).where(
    (
        (power_requests.c.state == ANSWERED)
        & (power_requests.c.answered < bindparam("answered_before"))
    )
    | (power_requests.c.created < bindparam("asked_before"))
)
