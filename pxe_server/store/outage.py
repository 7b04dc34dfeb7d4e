"""Which database errors are the database's passing trouble, not a bug of ours.

A request that meets one is answered 503 with ``Retry-After`` (``http_edge``) and one log
line, not a 500 with a traceback: its client sends it again (the installer, the agent
and the CLI all retry a 503), and the registry reconnects by itself (``Registry._query``,
``Store.transaction``: the next use of a lost connection opens a new one).

    reason(exc)      -> one line saying what went wrong, or None: not an outage
    conflicted(exc)  -> whether ``exc`` is a serialization failure or a deadlock: the
                        transaction was rolled back whole, so running it again is safe

Outages: a connection the server ended or lost (PostgreSQL restarted, an administrator's
``pg_terminate_backend``, the network), a server that cannot be reached or refuses new
connections, a statement or lock timeout, a serialization failure or deadlock, SQLite's
"database is locked" past its busy timeout. Anything else (a constraint violated, SQL
the database does not understand) is a bug and stays a 500.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, PendingRollbackError

# SQLSTATEs of a transaction the server rolled back whole: serialization_failure, deadlock_detected.
CONFLICT_STATES = frozenset({"40001", "40P01"})
# SQLite's primary result codes of the same kind: busy or locked past the busy timeout, the
# disk. Its other OperationalErrors (no such table, a syntax error) are bugs.
SQLITE_OUTAGES = frozenset(
    {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL}
)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def reason(exc: BaseException) -> str | None:
    """What the database's trouble was (one line, no SQL, no parameters), or None."""
    if isinstance(exc, PendingRollbackError):  # a connection lost earlier, not yet reset
        return "a connection to the registry database was lost"
    if not isinstance(exc, DBAPIError):
        return None
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        return _first_line(orig) if code is not None and code & 0xFF in SQLITE_OUTAGES else None
    if isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated:
        return _first_line(orig) if orig is not None else _first_line(exc)
    return None


def conflicted(exc: BaseException) -> bool:
    """Whether ``exc`` is a serialization failure or a deadlock (PostgreSQL)."""
    if not isinstance(exc, DBAPIError):
        return False
    return getattr(exc.orig, "sqlstate", None) in CONFLICT_STATES
