"""What the parts of the registry (mixins ``registry.Registry`` inherits:
registry_reports.py, registry_pools.py, registry_repositories.py, registry_bmc.py) call
on it, and the statements they share with it.

The calls are declared for the type checker only; ``Registry`` defines them (its
transactions and reads: registry.py), so a part checks against the real signatures
and adds nothing at run time."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Executable, bindparam, select
from sqlalchemy.exc import SQLAlchemyError

from pxe_server.store import outage
from pxe_server.store.tables import hosts, settings

if TYPE_CHECKING:
    from pxe_server.model import Host, Repository, State
    from pxe_server.registry_progress import ProgressQueue
    from pxe_server.secrets import Keyring
    from pxe_server.store.engine import Store

log = logging.getLogger("netinstall.registry")

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R", bound="RegistryBase")


class RegistryBase:
    """The registry's plumbing as its parts see it (defined by ``Registry``)."""

    if TYPE_CHECKING:
        where: str
        progress: ProgressQueue
        _keys: Keyring
        _store: Store

        @contextmanager
        def _write(self) -> Iterator[Connection]: ...

        def _write_alone(self, statement: Executable, params: dict[str, Any]) -> int: ...

        def _reader(self) -> Connection: ...

        def _scalar(
            self, conn: Connection, statement: Executable, params: dict[str, Any] | None = None
        ) -> Any: ...

        @staticmethod
        def _next_revision() -> int: ...

        def _load(self, conn: Connection, mac: str) -> Host: ...

        def _store_host(
            self,
            conn: Connection,
            host: Host,
            before: Host,
            *,
            logged: bool = False,
            message: str | None = None,
            secrets_of: Host | None = None,
        ) -> Host: ...

        def _log(
            self,
            conn: Connection,
            host: Host,
            message: str | None,
            old: Host | None,
            *,
            counted: int | None = None,
        ) -> None: ...

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
        ) -> None: ...

        def _redacted(self, message: str, host: Host, old: Host | None) -> str: ...

        def _assigned_version(self, conn: Connection, profile: str) -> str | None: ...

        def _registered(self, conn: Connection, version: str) -> Repository: ...

        def _query(
            self, statement: Executable, params: dict[str, Any] | None = None
        ) -> Sequence[Sequence[Any]]: ...

        def _first(
            self, conn: Connection, statement: Executable, params: dict[str, Any] | None = None
        ) -> Sequence[Any] | None: ...

        def _serialise(self, conn: Connection) -> None: ...

        def _bump_hosts(self, conn: Connection, profile: str | None = None) -> None: ...


SETTING = select(settings.c.value).where(settings.c.key == bindparam("key"))

# Several hosts' rows locked in MAC order (the registry's lock order).
LOCK_HOSTS = (
    select(hosts.c.mac)
    .where(hosts.c.mac.in_(bindparam("macs", expanding=True)))
    .order_by(hosts.c.mac)
    .with_for_update()
)


def once_more_on_conflict(
    method: Callable[Concatenate[R, P], T],
) -> Callable[Concatenate[R, P], T]:
    """A registry write run once more when PostgreSQL rolled its transaction back whole for
    a serialization failure or a deadlock (``outage.conflicted``): nothing of it was
    committed, and it reads what it decides on afresh inside its new transaction. Only
    for writes whose every effect is inside their transaction. A second conflict is
    raised (the request's client gets a 503 and asks again)."""

    @functools.wraps(method)
    def retried(self: R, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(self, *args, **kwargs)
        except SQLAlchemyError as exc:
            if not outage.conflicted(exc):
                raise
            log.warning(
                "registry %s: %s rolled back (%s); running it once more",
                self.where,
                method.__name__,
                outage.reason(exc),
            )
        return method(self, *args, **kwargs)

    return retried
