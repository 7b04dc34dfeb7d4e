"""Who may become a host without the operator: machines the registry does not know, under
``unknown_policy install`` (SPEC §3), are registered on their first boot-config request.

Anyone on the provisioning network can ask for a boot config under any MAC, so such
registrations are bounded twice: a rate (``UnknownGate``, a token bucket shared by TFTP
and HTTP: ``per_minute`` a minute, in bursts of as many) and a count (the registry's
``add_unknown_host``: hosts registered this way that have not reported running yet).
Past either, no host is made: HTTP answers 429 (rate) or 503 (count), TFTP "file not
found", and the server logs one line per burst of refusals, not one per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from common.errors import InputError
from pxe_server.limits import UNKNOWN_LIMIT, UNKNOWN_QUIET, UNKNOWN_RATE

log = logging.getLogger("netinstall.server")


@dataclass(frozen=True)
class UnknownLimits:
    """``server run --unknown-limit COUNT --unknown-rate PER_MINUTE``."""

    count: int = UNKNOWN_LIMIT
    per_minute: int = UNKNOWN_RATE

    def __post_init__(self) -> None:
        if self.count < 0 or self.per_minute < 0:
            raise InputError("--unknown-limit and --unknown-rate take a number of 0 or more")


class RegistrationRefused(InputError):
    """An unknown MAC not registered: too many at once (429) or too many waiting (503)."""

    def __init__(self, message: str, status: int, retry_after: int) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class UnknownGate:
    """The rate of unknown-MAC registrations, and the log of refusals (one line a burst).

    Thread-safe: TFTP's thread and HTTP's worker threads share one gate."""

    def __init__(self, limits: UnknownLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(limits.per_minute)
        self._filled = clock()
        self._last_refusal: float | None = None
        self._refused = 0  # refusals in the current burst

    def take(self, mac: str) -> None:
        """One registration's worth of the rate; RegistrationRefused (429) if none is left."""
        with self._lock:
            now = self._clock()
            rate = self.limits.per_minute / 60.0
            self._tokens = min(self.limits.per_minute, self._tokens + (now - self._filled) * rate)
            self._filled = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            wait = int((1 - self._tokens) / rate) + 1 if rate else 60
        self.refuse(
            RegistrationRefused(
                f"{mac} is not registered: unknown MACs are registered at most "
                f"{self.limits.per_minute} a minute (server run --unknown-rate); try again later",
                429,
                wait,
            )
        )

    def refuse(self, refusal: RegistrationRefused) -> NoReturn:
        """Log ``refusal`` if it starts a burst (none for ``UNKNOWN_QUIET`` s), then raise it."""
        with self._lock:
            now = self._clock()
            starts = self._last_refusal is None or now - self._last_refusal > UNKNOWN_QUIET
            previous, self._refused = self._refused, 1 if starts else self._refused + 1
            self._last_refusal = now
        if starts:
            before = f" ({previous} refused in the burst before)" if previous else ""
            log.warning(
                "refusing unknown MACs: %s%s; the refusals that follow within %g s of each "
                "other are not logged",
                refusal.problems[0],
                before,
                UNKNOWN_QUIET,
            )
        raise refusal
