"""First boot's reports: its milestones and ``running``, its last use of the install key.

The network may come up late, so the ``running`` report is retried with a growing pause
(10 tries over about five minutes by default). A refusal (4xx) is not retried.
The reply carries the agent's own credential.

The milestones before it (``first-boot``, ``sr-created``: state ``installed`` with that
step, docs/protocol.md) are worth a line on the operator's timeline, never the first
boot: each is tried once when it happens, with a short timeout, and again, in order,
before ``running``; one the server does not take is logged and left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from common.protocol.messages import Event, EventReply, RunningFacts, State

from .config import DEFAULT_CHECKIN_INTERVAL
from .errors import NetworkError, ServerError
from .server import ServerClient

log = logging.getLogger(__name__)

# The pauses between tries: 10 tries, 302 s of waiting in all.
DEFAULT_DELAYS: tuple[float, ...] = (2, 4, 8, 16, 32, 60, 60, 60, 60)
# A milestone's one try waits this long for the server: the network may not be up yet,
# and the SR is not kept waiting for a line on a timeline.
MILESTONE_TIMEOUT = 5.0


@dataclass
class Milestones:
    """First boot's milestones for the server, sent in the order they happened.

    ``reached`` notes one and tries to send it and any still unsent before it; ``flush``
    tries the unsent ones again (before ``running``, once the network is up). A try that
    fails stops the round, so the server never hears them out of order; what it refuses
    (a 4xx: say the host is no longer ``installed``) is dropped with a log line.
    """

    client: ServerClient
    token: str = field(repr=False)
    clock: Callable[[], float] = time.monotonic
    unsent: list[tuple[str, str, float]] = field(default_factory=list)

    def reached(self, step: str, message: str) -> None:
        self.unsent.append((step, message, self.clock()))
        self.flush()

    def flush(self) -> None:
        while self.unsent:
            step, message, at = self.unsent[0]
            late = self.clock() - at
            if late >= 1:
                message = f"{message} ({late:.0f} s before this report)"
            event = Event(State.INSTALLED, step=step, message=message)
            try:
                self.client.post_event(self.token, event)
            except (NetworkError, ServerError) as exc:
                if isinstance(exc, NetworkError) or exc.transient:
                    log.info("milestone %s not reported yet: %s", step, exc)
                    return
                log.warning("milestone %s not taken by the server: %s", step, exc)
            else:
                log.info("reported milestone %s", step)
            self.unsent.pop(0)


@dataclass(frozen=True)
class RunningReply:
    agent_credential: str = field(repr=False)
    checkin_interval: int


def parse_running_reply(reply: EventReply) -> RunningReply:
    credential = reply.agent_credential
    if credential is None or not credential.strip():
        raise ServerError("the reply to the running report has no agent_credential")
    interval = reply.checkin_interval
    return RunningReply(credential, DEFAULT_CHECKIN_INTERVAL if interval is None else interval)


def report_running(
    client: ServerClient,
    token: str,
    facts: RunningFacts,
    *,
    sleep: Callable[[float], None] = time.sleep,
    delays: Sequence[float] = DEFAULT_DELAYS,
) -> RunningReply:
    event = Event(State.RUNNING, facts=facts)
    tries = len(delays) + 1
    for attempt, delay in enumerate(delays, start=1):
        try:
            reply = client.post_event(token, event)
        except (NetworkError, ServerError) as exc:
            if isinstance(exc, ServerError) and not exc.transient:
                raise
            log.warning(
                "running report, try %d of %d failed: %s; next try in %g s",
                attempt,
                tries,
                exc,
                delay,
            )
            sleep(delay)
        else:
            return _accepted(client, reply)
    return _accepted(client, client.post_event(token, event))


def _accepted(client: ServerClient, reply: EventReply) -> RunningReply:
    parsed = parse_running_reply(reply)
    log.info("reported running to %s", client.server)
    return parsed
