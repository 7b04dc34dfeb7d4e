"""What the parts of the registry (mixins ``registry.Registry`` inherits:
registry_pools.py, registry_repositories.py) call on it, and the statements they share with it.

The calls are declared for the type checker only; ``Registry`` defines them (its
transactions and reads: registry.py), so a part checks against the real signatures
and adds nothing at run time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Executable, bindparam, select

from pxe_server.store.tables import hosts


class RegistryBase:
    """The registry's plumbing as its parts see it (defined by ``Registry``)."""

    if TYPE_CHECKING:

        @contextmanager
        def _write(self) -> Iterator[Connection]: ...

        def _query(
            self, statement: Executable, params: dict[str, Any] | None = None
        ) -> Sequence[Sequence[Any]]: ...

        def _first(
            self, conn: Connection, statement: Executable, params: dict[str, Any] | None = None
        ) -> Sequence[Any] | None: ...

        def _serialise(self, conn: Connection) -> None: ...

        def _bump_hosts(self, conn: Connection, profile: str | None = None) -> None: ...


# Several hosts' rows locked in MAC order (the registry's lock order).
LOCK_HOSTS = (
    select(hosts.c.mac)
    .where(hosts.c.mac.in_(bindparam("macs", expanding=True)))
    .order_by(hosts.c.mac)
    .with_for_update()
)
