"""The ``running`` report: first boot's last use of the install key.

The network may come up late, so the report is retried with a growing pause
(10 tries over about five minutes by default). A refusal (4xx) is not retried.
The reply carries the agent's own credential.
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
