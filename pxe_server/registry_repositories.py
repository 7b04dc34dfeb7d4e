"""The repositories a server serves, by payload version, in the registry: a part of
``Registry``, which inherits it (``server repo add``; ``assign_work`` upgrades only to a
registered version). Registering one renews every host's revision: answer files name
the registered repositories."""

from __future__ import annotations

import time

from sqlalchemy import Connection, bindparam, insert, select, update

from common.errors import InputError
from pxe_server.model import Repository, check_version
from pxe_server.registry_base import RegistryBase
from pxe_server.store import rows
from pxe_server.store.tables import repositories


class Repositories(RegistryBase):
    """The registry's repositories (``Registry`` inherits them)."""

    def _registered(self, conn: Connection, version: str) -> Repository:
        row = self._first(conn, _REPOSITORY, {"version": version})
        if row is None:
            raise InputError(
                f"version {version} is not registered; see `netinstall server repo list`, "
                "add it with `netinstall server repo add DIR`"
            )
        return rows.repository_from(row)

    def add_repository(self, version: str, directory: str, *, replace: bool = False) -> str:
        """Register ``directory`` as the repository of ``version``: "added", "unchanged"
        or "replaced". InputError if another directory holds it and not ``replace``."""
        check_version(version)
        with self._write() as conn:
            self._serialise(conn)
            which = repositories.c.version == version
            found = conn.execute(select(repositories.c.directory).where(which)).scalar()
            if found is not None and found == directory:
                return "unchanged"
            if found is not None and not replace:
                raise InputError(
                    f"version {version} is registered to {found} already; "
                    "give --replace to serve it from the new directory"
                )
            self._bump_hosts(conn)  # answer files name the registered repositories
            if found is None:
                conn.execute(
                    insert(repositories).values(
                        version=version, directory=directory, added=time.time()
                    )
                )
            else:
                conn.execute(update(repositories).where(which).values(directory=directory))
        return "added" if found is None else "replaced"

    def repositories(self) -> list[Repository]:
        """Every registered repository, oldest first."""
        return [rows.repository_from(row) for row in self._query(_ALL_REPOSITORIES)]

    def repository(self, version: str) -> Repository | None:
        found = self._query(_REPOSITORY, {"version": version})
        return rows.repository_from(found[0]) if found else None


_REPOSITORY = select(repositories).where(repositories.c.version == bindparam("version"))
_ALL_REPOSITORIES = select(repositories).order_by(repositories.c.added, repositories.c.version)
