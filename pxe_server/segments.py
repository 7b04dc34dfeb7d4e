"""Several servers, one registry: each server's name, each host's segment server, and
power calls sent through the registry to the server on the host's own segment.

    server_name(directory) -> str | None     this directory's server name (None: no server ran)
    name_server(directory, name | None)      the name `server run` uses, recorded
    power_route(registry, mac) -> str | None the server to carry a power call out (None: here)
    ask_segment_server(registry, mac, request, server) -> PowerReply   asked and waited for
    SegmentLearner                           learns the hosts a server serves (no hot-path write)

A host's BMC network is usually reachable from its rack's server only. A power call
(status, on, off, cycle, the next boot's override) made on a server that is not the
host's segment server becomes a row of ``power_requests`` for that server; its
``power_desk`` thread takes it within ``DESK_POLL`` seconds, asks the BMC and writes the
answer, which the asking server waits for ``ANSWER_WAIT`` seconds at most. No server
calls another over the network: the registry is their one channel, so no trust or TLS
between servers is needed. On SQLite (one server), for a host whose segment server is
this one, and for one whose segment server is not known yet, the call runs here.
"""

from __future__ import annotations

import logging
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import InputError
from common.protocol.codec import decode, encode
from common.protocol.messages import PowerReply, PowerRequest
from pxe_server.bmc_url import BmcError
from pxe_server.registry_segments import ANSWERED, Segment, Server
from pxe_server.secrets import write_secret_file

if TYPE_CHECKING:
    from pxe_server.registry import Registry

log = logging.getLogger("netinstall.segments")

SERVER_ID_FILE = "server-id"  # this directory's id, made at its first `server run`
SERVER_NAME_FILE = "server-name"  # the name `server run --name` gave, recorded
MAX_SERVER_NAME = 63
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# The paces of several servers (docs/deployment.md "Several servers"; each proved by a test).
HEARTBEAT = 5.0  # seconds between a server's renewals of its last_seen
GONE_AFTER = 30.0  # a server not seen for this long does not run: a call for it fails at once
DESK_POLL = 0.5  # seconds between a server's looks for power requests left for it
ANSWER_WAIT = 45.0  # seconds a server waits for another's answer to a power request
ANSWER_POLL = 0.25  # seconds between the asking server's looks for the answer
ANSWERS_KEPT = 3600.0  # seconds an answered request stays (then pruned)
RECHECK = 120.0  # seconds a server trusts that it is the segment server of a host it served
MAX_LEARNING = 10_000  # hosts waiting for their segment server to be learnt


class PowerNotAnswered(InputError):
    """The host's segment server does not run, or did not answer in time: one sentence
    naming it (the API answers 504)."""


def server_name_of(name: str) -> str:
    """``name`` as a server's name; InputError saying what a name may hold."""
    if not (0 < len(name) <= MAX_SERVER_NAME) or not _NAME.fullmatch(name):
        raise InputError(
            f"server name {name[:MAX_SERVER_NAME]!r}: 1 to {MAX_SERVER_NAME} letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return name


def _read_small(path: Path) -> str | None:
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            return file.read(MAX_SERVER_NAME + 2).strip() or None
    except FileNotFoundError:
        return None


def server_name(directory: Path) -> str | None:
    """The name of the server that runs from ``directory``: the one ``server run --name``
    recorded, else the machine's host name and the directory's id. None if no server
    ran from it (then no host has it as its segment server)."""
    named = _read_small(directory / SERVER_NAME_FILE)
    if named is not None and _NAME.fullmatch(named):
        return named
    ident = _read_small(directory / SERVER_ID_FILE)
    if ident is None:
        return None
    host = socket.gethostname().split(".")[0] or "server"
    return f"{host[: MAX_SERVER_NAME - len(ident) - 1]}-{ident}"


def name_server(directory: Path, name: str | None) -> str:
    """The name ``server run`` runs under: ``name`` (recorded for the CLI on this
    directory), else the one recorded before, else the default (``server_name``; the
    directory's id made now, stable across restarts)."""
    if name is not None:
        server_name_of(name)
        if _read_small(directory / SERVER_NAME_FILE) != name:
            write_secret_file(directory / SERVER_NAME_FILE, name + "\n")
        return name
    if _read_small(directory / SERVER_ID_FILE) is None:
        write_secret_file(directory / SERVER_ID_FILE, secrets.token_hex(4) + "\n")
    return server_name(directory) or "server"  # (the id was just made)


# -- where a power call runs ----------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """Where a power call for a host runs: here (``server`` None), through ``server``, or
    nowhere (``gone``: one sentence why)."""

    server: str | None = None
    gone: str | None = None


def route(
    mac: str,
    me: str | None,
    segment: Segment | None,
    server: Server | None,
    *,
    shared: bool,
    now: float,
) -> Route:
    """Where a power call for ``mac`` runs: here on a registry of one server (``shared``
    False: SQLite), for a host with no segment server known, or whose segment server is
    ``me``; else through its segment server, unless that one was never registered or has
    not been seen for ``GONE_AFTER`` seconds (said at once, not waited for)."""
    if not shared or segment is None or segment.server == me:
        return Route()
    name = segment.server
    if server is None:
        return Route(gone=f"host {mac}'s segment server {name} never ran on this registry; pin "
                          f"another: `netinstall host set {mac} --server NAME|auto`")  # fmt: skip
    ago = now - server.last_seen
    if ago > GONE_AFTER:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(server.last_seen))
        return Route(gone=f"host {mac}'s segment server {name} was last seen {ago:.0f} s ago "
                          f"({when}): it does not run, so its BMC cannot be reached from here; "
                          f"start it, or pin another: `netinstall host set {mac} --server "
                          "NAME`")  # fmt: skip
    return Route(server=name)


def power_route(registry: Registry, mac: str) -> str | None:
    """The server that is to carry out a power call for ``mac`` (None: this one);
    PowerNotAnswered at once if that server does not run."""
    if not registry.networked:
        return None
    segment = registry.segment(mac)
    if segment is None:
        return None
    me = server_name(registry.directory)
    server = None if segment.server == me else registry.server(segment.server)
    found = route(mac, me, segment, server, shared=True, now=time.time())
    if found.gone is not None:
        raise PowerNotAnswered(found.gone)
    return found.server


# -- a power call through another server ----------------------------------------------------

# How a refusal travels in a request's answer: its kind, and the class it is raised as.
_ERRORS: dict[str, Callable[[str], InputError]] = {
    "bmc": BmcError,
    "input": InputError,
    "stale": PowerNotAnswered,
}


def answer_of(reply: PowerReply | None, error: Exception | None) -> dict[str, Any]:
    """What a segment server writes as a request's answer: the reply, or the refusal."""
    if reply is not None:
        return {"reply": encode(reply)}
    from pxe_server.registry import UnknownHost  # noqa: PLC0415 - SQLAlchemy's import

    if isinstance(error, UnknownHost):
        return {"error": "unknown", "message": " ".join(error.problems)}
    if isinstance(error, BmcError):
        return {"error": "bmc", "message": " ".join(error.problems)}
    if isinstance(error, InputError):
        return {"error": "input", "message": " ".join(error.problems)}
    return {"error": "bmc", "message": f"it failed: {error}"}


def ask_segment_server(
    registry: Registry,
    mac: str,
    request: PowerRequest,
    server: str,
    *,
    wait: float = ANSWER_WAIT,
    poll: float = ANSWER_POLL,
) -> PowerReply:
    """``request`` for ``mac`` carried out by ``server`` (its segment server): left in the
    registry, its answer waited for ``wait`` seconds at most. A refusal is raised as the
    segment server met it; no answer in time, PowerNotAnswered naming the server (the
    request is withdrawn if it was not taken yet)."""
    me = server_name(registry.directory) or f"the CLI on {socket.gethostname()}"
    ident = registry.ask_power(mac, server, me, encode(request), time.time(), keep=ANSWERS_KEPT)
    log.info("host %s: power %s left for its segment server %s (request %d)",
             mac, request.action.value, server, ident)  # fmt: skip
    deadline = time.monotonic() + wait
    while True:
        ask = registry.power_ask(ident)
        if ask is None:
            raise PowerNotAnswered(f"the power request for {mac} to server {server} was deleted")
        if ask.state == ANSWERED and ask.answer is not None:
            return _answered(mac, server, ask.answer)
        if time.monotonic() >= deadline:
            taken = ask.state != "waiting"
            if not taken:
                registry.drop_power(ident)
            raise PowerNotAnswered(
                f"host {mac}'s segment server {server} did not answer its power request "
                f"within {wait:.0f} s"
                + ("; it took it and may still carry it out" if taken else "; it was withdrawn")
            )
        time.sleep(poll)


def _answered(mac: str, server: str, answer: Any) -> PowerReply:
    if "reply" in answer:
        reply = decode(PowerReply, answer["reply"], strict=False)
        return replace(reply, via=server)
    message = f"server {server}: {answer.get('message', 'no message')}"
    if answer.get("error") == "unknown":
        from pxe_server.registry import UnknownHost  # noqa: PLC0415 - SQLAlchemy's import

        raise UnknownHost(message)
    raise _ERRORS.get(str(answer.get("error")), BmcError)(message)


# -- learning a host's segment server -------------------------------------------------------


class SegmentLearner:
    """Learns the segment server of the hosts this server serves. ``__call__(mac)`` is the
    hot path's (a boot config served, an enrolment, a check-in): a dictionary look-up when
    this server checked the host within ``RECHECK`` seconds, else the MAC is noted for
    ``flush`` (the power desk's thread), which reads the host's segment server and writes
    only if it changes. At most ``MAX_LEARNING`` hosts wait; more are learnt later."""

    def __init__(
        self,
        name: str,
        *,
        recheck: float = RECHECK,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.recheck, self.clock = name, recheck, clock
        self._checked: dict[str, float] = {}  # MAC -> when its segment server was looked at
        self._waiting: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, mac: str) -> None:
        checked = self._checked.get(mac)
        if checked is not None and self.clock() - checked < self.recheck:
            return
        with self._lock:
            if len(self._waiting) < MAX_LEARNING:
                self._waiting.add(mac)

    def flush(self, registry: Registry) -> int:
        """Learn what waits; how many segment servers were written."""
        with self._lock:
            macs, self._waiting = sorted(self._waiting), set()
        written = 0
        for mac in macs:
            found = registry.segment(mac)
            if found is None or not (found.pinned or found.server == self.name):
                learnt = registry.learn_segment(mac, self.name, time.time())
                if learnt is not None and learnt.server == self.name and not learnt.pinned:
                    written += 1
                    log.info("host %s: its segment server is %s now", mac, self.name)
            if len(self._checked) >= MAX_LEARNING:
                self._checked.clear()
            self._checked[mac] = self.clock()
        return written
