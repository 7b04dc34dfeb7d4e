"""Hosts' BMCs in the registry: a part of ``Registry``, which inherits it.

A row of ``bmcs`` holds a host's BMC URL (a user, never a password), the password sealed
with the server directory's ``bmc-key`` (``secrets.BmcKey``: the registry alone cannot
open it) and that key's id, and how a Redfish BMC's certificate is verified. Sealing and
opening happen in ``bmc_control``, which has the server directory; here rows go in and
out. A host's BMC goes with the host (``Registry.delete_host``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update

from common.protocol.messages import BmcRecord, Presence
from pxe_server.bmc_url import BmcUrl, parse_bmc_url
from pxe_server.registry_base import RegistryBase
from pxe_server.store.tables import bmcs, hosts


@dataclass(frozen=True)
class StoredBmc:
    """A host's BMC as the registry keeps it (the password sealed)."""

    mac: str
    url: BmcUrl
    password_sealed: str
    key_id: str
    ca_pem: str | None
    insecure: bool

    def __repr__(self) -> str:
        return f"StoredBmc({self.mac}, {self.url}, <sealed>)"

    def record(self) -> BmcRecord:
        """What listings show: no password, only that there is one."""
        return BmcRecord(str(self.url), Presence.SET, self.ca_pem is not None, self.insecure)


class Bmcs(RegistryBase):
    """The registry's BMC rows (``Registry`` inherits them)."""

    def set_bmc(self, bmc: StoredBmc) -> bool:
        """Store ``bmc`` for its host (replacing any); False if there is no such host."""
        values = {
            "url": str(bmc.url),
            "password_sealed": bmc.password_sealed,
            "key_id": bmc.key_id,
            "ca_pem": bmc.ca_pem,
            "insecure": bmc.insecure,
            "updated": time.time(),
        }
        with self._write() as conn:
            found = conn.execute(
                select(hosts.c.mac).where(hosts.c.mac == bmc.mac).with_for_update()
            ).first()
            if found is None:
                return False
            done = conn.execute(update(bmcs).where(bmcs.c.mac == bmc.mac).values(**values))
            if done.rowcount == 0:
                conn.execute(insert(bmcs).values(mac=bmc.mac, **values))
        return True

    def clear_bmc(self, mac: str) -> bool:
        """Forget ``mac``'s BMC; whether it had one."""
        with self._write() as conn:
            return bool(conn.execute(delete(bmcs).where(bmcs.c.mac == mac)).rowcount)

    def bmc(self, mac: str) -> StoredBmc | None:
        found = self._query(_BMC, {"mac": mac})
        return _stored(found[0]) if found else None

    def bmc_key_ids(self) -> set[str]:
        """The ids of the keys that sealed the stored passwords (none: no BMC stored)."""
        return {str(row[0]) for row in self._query(_KEY_IDS)}

    def bmc_records(self) -> dict[str, BmcRecord]:
        """Every host's BMC as listings show it, by MAC."""
        return {row[0]: _stored(row).record() for row in self._query(_ALL_BMCS)}


def _stored(row: Sequence[Any]) -> StoredBmc:
    mac, url, sealed, key_id, ca_pem, insecure = row
    return StoredBmc(str(mac), parse_bmc_url(url), sealed, key_id, ca_pem, bool(insecure))


_COLUMNS = (
    bmcs.c.mac,
    bmcs.c.url,
    bmcs.c.password_sealed,
    bmcs.c.key_id,
    bmcs.c.ca_pem,
    bmcs.c.insecure,
)
_BMC = select(*_COLUMNS).where(bmcs.c.mac == bindparam("mac"))
_ALL_BMCS = select(*_COLUMNS).order_by(bmcs.c.mac)
_KEY_IDS = select(bmcs.c.key_id).distinct()
