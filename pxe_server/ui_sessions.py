"""The web console's sessions and login throttle: in memory, per server process.

An operator logs in with the server's API token (``Registry.api_token_matches``) and
gets a session id, 256 random bits, in an HttpOnly, SameSite=Strict cookie: the token
itself never goes back to the browser. A session ends ``IDLE`` seconds after its last
request, ``ABSOLUTE`` seconds after the login whatever happens, at logout, when the API
token is rotated (the session keeps a digest of the token's stored hash at its login:
``stamp``), or when the server stops (sessions live in this process only: a restart
logs everyone out). At most
``MAX_SESSIONS`` live at once; a login past that ends the oldest one.

Each session has a CSRF token of its own (another 256 random bits), which every
state-changing request must carry (a form field or a header) besides coming from the
console's own origin (``http_ui``).

Failed logins are counted per client address: ``MAX_FAILURES`` in ``FAILURE_WINDOW``
seconds and that address is refused (429) until the window has passed; the table keeps
``MAX_ADDRESSES`` addresses at most, the longest quiet dropped first.

Sessions are kept by the SHA-256 of their id: a memory dump shows no usable id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

IDLE = 30 * 60  # seconds without a request that end a session
ABSOLUTE = 12 * 3600  # seconds after its login that a session ends anyway
MAX_SESSIONS = 256
MAX_FAILURES = 5  # failed logins from one address ...
FAILURE_WINDOW = 60.0  # ... in this many seconds: that address waits
MAX_ADDRESSES = 4096  # addresses whose failures are counted, at most

Clock = Callable[[], float]


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass
class Session:
    """One operator's login: its CSRF token and its times (seconds, the monotonic clock)."""

    csrf: str
    created: float
    seen: float
    stamp: str = ""  # a digest of the API token's stored hash at the login

    def csrf_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())

    def stamp_matches(self, stamp: str | None) -> bool:
        """Whether the API token is still the one this session logged in with."""
        return stamp is not None and hmac.compare_digest(_digest(stamp), self.stamp)


@dataclass
class Sessions:
    """The live sessions of one server process (``http_ui`` keeps one in its app)."""

    clock: Clock = time.monotonic
    idle: float = IDLE
    absolute: float = ABSOLUTE
    most: int = MAX_SESSIONS
    _live: OrderedDict[str, Session] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._live)

    def create(self, stamp: str = "") -> tuple[str, Session]:
        """A new session: its id (for the cookie, kept nowhere) and the session.
        ``stamp``: the API token's stored hash the login was checked against."""
        now = self.clock()
        self._expire(now)
        while len(self._live) >= self.most:
            self._live.popitem(last=False)  # the oldest login
        session_id = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32), now, now, _digest(stamp))
        self._live[_digest(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of ``session_id`` (its idle time starts again), or None."""
        if not session_id or len(session_id) > 128:
            return None
        key = _digest(session_id)
        session = self._live.get(key)
        if session is None:
            return None
        now = self.clock()
        if now - session.seen > self.idle or now - session.created > self.absolute:
            del self._live[key]
            return None
        session.seen = now
        return session

    def end(self, session_id: str | None) -> None:
        """Logout: the session of ``session_id``, if any, ends now."""
        if session_id:
            self._live.pop(_digest(session_id), None)

    def end_all(self) -> None:
        self._live.clear()

    def _expire(self, now: float) -> None:
        dead = [
            key
            for key, s in self._live.items()
            if now - s.seen > self.idle or now - s.created > self.absolute
        ]
        for key in dead:
            del self._live[key]


@dataclass
class LoginThrottle:
    """Failed logins per client address (``MAX_FAILURES`` in ``FAILURE_WINDOW`` seconds)."""

    clock: Clock = time.monotonic
    most: int = MAX_FAILURES
    window: float = FAILURE_WINDOW
    addresses: int = MAX_ADDRESSES
    _failures: OrderedDict[str, list[float]] = field(default_factory=OrderedDict)

    def wait(self, address: str) -> float:
        """Seconds ``address`` must wait before its next login (0: it may try now)."""
        now = self.clock()
        recent = [t for t in self._failures.get(address, []) if now - t < self.window]
        if len(recent) < self.most:
            return 0.0
        return max(0.0, recent[0] + self.window - now)

    def failed(self, address: str) -> None:
        now = self.clock()
        recent = [t for t in self._failures.pop(address, []) if now - t < self.window]
        recent.append(now)
        self._failures[address] = recent[-self.most :]
        while len(self._failures) > self.addresses:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
