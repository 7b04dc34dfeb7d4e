"""Updates in the registry (README "Updates"): a part of ``Registry``, which inherits it.
Their types and rules are updates.py's; update_ops.py adds, checks and applies them.

The update key (``update_key.UpdateKey``) is the registry's: its private half sealed in
the ``secrets`` table under the registry's key, made the first time a registry is opened
without one, so every server of one registry signs alike and an old server directory
gets one at its next start. Lock order, as the registry's: a job's row, then the host's
row, then its update rows."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from common.errors import InputError
from common.protocol.messages import HostUpdateState, RebootPolicy
from common.update_bundle import UpdateMeta
from pxe_server.jobs import Conflict, Job
from pxe_server.model import normalise_mac
from pxe_server.registry_base import LOCK_HOSTS, RegistryBase
from pxe_server.store.tables import host_updates, secrets, update_facts, updates
from pxe_server.update_key import SECRET_NAME, UpdateKey
from pxe_server.updates import (
    Facts,
    HostUpdate,
    Report,
    StoredUpdate,
    UnknownUpdate,
    after_checkin,
    different_content,
    host_update,
    stored_update,
)

# Free space a host reports is written again only when it moved this much (MiB): a
# routine check-in writes its facts row only when something the precheck reads changed.
FREE_MIB_SLACK = 64


class Updates(RegistryBase):
    """The registry's updates (``Registry`` inherits them)."""

    update_key: UpdateKey  # set by Registry.open (``_open_update_key``)

    if TYPE_CHECKING:

        def _held(self, conn: Connection, job_id: int, holder: str) -> Job: ...

    def _open_update_key(self, conn: Connection) -> UpdateKey:
        """The registry's update key, made the first time it is asked for (inside a write)."""
        found = conn.execute(_SECRET, {"name": SECRET_NAME}).scalar()
        if found is None:
            key = UpdateKey.generate()
            sealed = self._keys.seal(key.raw().hex())
            conn.execute(insert(secrets).values(name=SECRET_NAME, value=sealed))
            return key
        return UpdateKey.from_raw(bytes.fromhex(self._keys.unseal(str(found))))

    # -- updates -----------------------------------------------------------------

    def add_update(
        self, meta: UpdateMeta, *, metadata_sha256: str, size: int, sha256: str, added_by: str
    ) -> tuple[StoredUpdate, bool]:
        """Record an update (its signed file written by the caller); whether it was new.
        The same update again (the same update.json) is kept as it was, its file renewed
        (``cleaned`` cleared); another one with the same id is a Conflict."""
        now = time.time()
        with self._write() as conn:
            self._serialise(conn)
            row = conn.execute(_UPDATE.with_for_update(), {"id": meta.id}).first()
            if row is not None:
                old = _update(row)
                if old.metadata_sha256 != metadata_sha256:
                    raise Conflict(different_content(meta.id))
                values = {"size": size, "sha256": sha256, "cleaned": None}
                conn.execute(update(updates).where(updates.c.id == meta.id).values(values))
                return _update(conn.execute(_UPDATE, {"id": meta.id}).one()), False
            values = {
                "id": meta.id,
                "name": meta.name,
                "version": meta.version,
                "applies_to": json.dumps(list(meta.applies_to)),
                "reboot": meta.reboot,
                "size": size,
                "sha256": sha256,
                "metadata_sha256": metadata_sha256,
                "added": now,
                "added_by": added_by,
            }
            conn.execute(insert(updates).values(values))
            return _update(conn.execute(_UPDATE, {"id": meta.id}).one()), True

    def updates(self) -> list[StoredUpdate]:
        """Every update, by id."""
        return [_update(row) for row in self._query(_UPDATES)]

    def get_update(self, update_id: str) -> StoredUpdate | None:
        found = self._query(_UPDATE, {"id": update_id})
        return _update(found[0]) if found else None

    def known_update(self, update_id: str) -> StoredUpdate:
        found = self.get_update(update_id)
        if found is None:
            raise UnknownUpdate(f"no update {update_id!r}; see `netinstall update list`")
        return found

    def clean_update(self, update_id: str) -> StoredUpdate:
        """Mark the update's file removed (the caller removes it); its record stays."""
        with self._write() as conn:
            conn.execute(
                update(updates)
                .where(updates.c.id == update_id, updates.c.cleaned.is_(None))
                .values(cleaned=time.time())
            )
            row = conn.execute(_UPDATE, {"id": update_id}).first()
        if row is None:
            raise UnknownUpdate(f"no update {update_id!r}; see `netinstall update list`")
        return _update(row)

    def update_hosts(self, update_id: str | None = None) -> list[HostUpdate]:
        """The hosts an update (every update: None) is applied to, pending on or failed on."""
        if update_id is None:
            found = self._query(_HOST_UPDATES)
        else:
            found = self._query(_HOSTS_OF_UPDATE, {"update_id": update_id})
        return [_host_update(row) for row in found]

    def host_updates_of(self, mac: str) -> list[HostUpdate]:
        found = self._query(_UPDATES_OF_HOST, {"mac": normalise_mac(mac)})
        return [_host_update(row) for row in found]

    def update_facts(self, mac: str) -> Facts | None:
        found = self._query(_FACTS, {"mac": normalise_mac(mac)})
        if not found:
            return None
        row = dict(zip(FACTS_COLUMNS, found[0], strict=True))
        return Facts(
            row["mac"], tuple(json.loads(row["updates"])), row["free_mib"], row["boot_id"],
            float(row["seen"]),
        )  # fmt: skip

    # -- giving an update to a host -----------------------------------------------------

    def give_update(self, mac: str, update_id: str, policy: RebootPolicy) -> HostUpdate:
        """``update_id`` pending on ``mac`` (a failed try given again); the host's row and its
        update row locked. Conflict when the host has it applied or under way."""
        with self._write() as conn:
            return self._give(conn, normalise_mac(mac), update_id, policy)

    def give_update_for_job(
        self, job_id: int, holder: str, mac: str, update_id: str, policy: RebootPolicy
    ) -> HostUpdate:
        """``give_update`` for a job ``holder`` runs, in the transaction that checks it still
        does (``LeaseLost``, nothing given)."""
        with self._write() as conn:
            self._held(conn, job_id, holder)  # the job's row locked first
            return self._give(conn, normalise_mac(mac), update_id, policy)

    def _give(self, conn: Connection, mac: str, update_id: str, policy: RebootPolicy) -> HostUpdate:
        if not conn.execute(LOCK_HOSTS, {"macs": [mac]}).all():
            raise InputError(f"no host {mac} in the registry")
        found = conn.execute(_UPDATE, {"id": update_id}).first()
        if found is None:
            raise UnknownUpdate(f"no update {update_id!r}; see `netinstall update list`")
        if _update(found).cleaned is not None:
            raise InputError(f"update {update_id} was cleaned: add its bundle again first")
        now = time.time()
        old = conn.execute(_ROW, {"mac": mac, "update_id": update_id}).first()
        row = HostUpdate(mac, update_id, HostUpdateState.PENDING, policy, now)
        if old is not None:
            state = _host_update(old).state
            if state is not HostUpdateState.FAILED:
                raise Conflict(f"host {mac} has update {update_id} {state.value} already")
            conn.execute(_DELETE_ROW, {"w_mac": mac, "w_update": update_id})
        conn.execute(insert(host_updates).values(_row_values(row)))
        return row

    # -- check-ins --------------------------------------------------------------------------

    def update_offer(self, mac: str, report: Report) -> tuple[HostUpdate | None, bool]:
        """Reads only: the update a check-in's reply is to offer (the oldest pending one
        whose file is kept), and whether the check-in changes anything (then
        ``update_checkin`` writes it). A routine check-in of a host with no updates reads
        its rows and facts, nothing more, and writes nothing."""
        return self._plan(normalise_mac(mac), report, time.time())[:2]

    def update_checkin(self, mac: str, report: Report) -> HostUpdate | None:
        """Apply the update part of a check-in (``updates.after_checkin``) and keep the
        agent's facts; the update the reply is to offer, if any."""
        mac = normalise_mac(mac)
        now = time.time()
        offer, write, known = self._plan(mac, report, now)
        if not write:
            return offer
        with self._write() as conn:
            if not conn.execute(LOCK_HOSTS, {"macs": [mac]}).all():
                return None
            current = [_host_update(r) for r in conn.execute(_ROWS_OF, {"mac": mac}).all()]
            present = {r.update_id for r in current}
            for before, after in _changes(current, known, report, now):
                conn.execute(_DELETE_ROW, {"w_mac": mac, "w_update": before.update_id})
                if after is not None:
                    conn.execute(insert(host_updates).values(_row_values(after)))
            for row in _found(mac, report, known, present, now):
                conn.execute(insert(host_updates).values(_row_values(row)))
            if report.updates is not None:
                self._store_facts(conn, mac, report, now)
        return _offer(self.host_updates_of(mac), known)

    def _plan(
        self, mac: str, report: Report, now: float
    ) -> tuple[HostUpdate | None, bool, dict[str, StoredUpdate]]:
        rows = self.host_updates_of(mac)
        if report.updates is None and not rows:
            return None, False, {}
        # Every update's row only when the host has or names one.
        known = {u.id: u for u in self.updates()} if rows or report.updates else {}
        present = {r.update_id for r in rows}
        write = bool(_changes(rows, known, report, now) or _found(mac, report, known, present, now))
        if report.updates is not None and not write:
            facts = self.update_facts(mac)
            write = facts is None or _stale(facts, report)
        return _offer(rows, known), write, known

    @staticmethod
    def _store_facts(conn: Connection, mac: str, report: Report, now: float) -> None:
        values = {
            "updates": json.dumps(list(report.updates or ())),
            "free_mib": report.free_mib,
            "boot_id": report.boot_id,
            "seen": now,
        }
        done = conn.execute(update(update_facts).where(update_facts.c.mac == mac).values(values))
        if done.rowcount == 0:
            conn.execute(insert(update_facts).values(mac=mac, **values))


def _found(
    mac: str, report: Report, known: dict[str, StoredUpdate], present: set[str], now: float
) -> list[HostUpdate]:
    """Rows for the known updates the host lists that it has no row for: applied."""
    return [
        HostUpdate(mac, update_id, HostUpdateState.APPLIED, RebootPolicy.AUTO, now)
        for update_id in report.updates or ()
        if update_id in known and update_id not in present
    ]


def _offer(rows: Sequence[HostUpdate], known: dict[str, StoredUpdate]) -> HostUpdate | None:
    for row in sorted(rows, key=lambda r: r.updated):
        stored = known.get(row.update_id)
        if row.state is HostUpdateState.PENDING and stored and stored.cleaned is None:
            return row
    return None


def _stale(facts: Facts, report: Report) -> bool:
    """Whether what the precheck reads of a host's facts changed."""
    if facts.updates != tuple(report.updates or ()) or facts.boot_id != report.boot_id:
        return True
    if (facts.free_mib is None) != (report.free_mib is None):
        return True
    if facts.free_mib is not None and report.free_mib is not None:
        return abs(facts.free_mib - report.free_mib) >= FREE_MIB_SLACK
    return False


def _changes(
    rows: Sequence[HostUpdate], known: dict[str, StoredUpdate], report: Report, now: float
) -> list[tuple[HostUpdate, HostUpdate | None]]:
    changed: list[tuple[HostUpdate, HostUpdate | None]] = []
    for row in rows:
        stored = known.get(row.update_id)
        after = after_checkin(row, bool(stored and stored.reboot), report, now)
        if after != row:
            changed.append((row, after))
    return changed


def _row_values(row: HostUpdate) -> dict[str, Any]:
    return {
        "mac": row.mac,
        "update_id": row.update_id,
        "state": row.state.value,
        "reason": row.reason,
        "reboot_policy": row.reboot_policy.value,
        "boot_id": row.boot_id,
        "updated": row.updated,
    }


UPDATE_COLUMNS = tuple(c.name for c in updates.c)
HOST_UPDATE_COLUMNS = tuple(c.name for c in host_updates.c)
FACTS_COLUMNS = tuple(c.name for c in update_facts.c)


def _update(row: Sequence[Any]) -> StoredUpdate:
    return stored_update(dict(zip(UPDATE_COLUMNS, row, strict=True)))


def _host_update(row: Sequence[Any]) -> HostUpdate:
    return host_update(dict(zip(HOST_UPDATE_COLUMNS, row, strict=True)))


_SECRET = select(secrets.c.value).where(secrets.c.name == bindparam("name"))
_UPDATES = select(updates).order_by(updates.c.id)
_UPDATE = select(updates).where(updates.c.id == bindparam("id"))
_HOST_UPDATES = select(host_updates).order_by(host_updates.c.update_id, host_updates.c.mac)
# Built once, with bound parameters: a statement made per call is compiled per call (a
# check-in's read: 6% of a server's busy time at 1,000 hosts) and kept by the store's
# cache of compiled statements.
_UPDATES_OF_HOST = _HOST_UPDATES.where(host_updates.c.mac == bindparam("mac"))
_HOSTS_OF_UPDATE = _HOST_UPDATES.where(host_updates.c.update_id == bindparam("update_id"))
_ROWS_OF = select(host_updates).where(host_updates.c.mac == bindparam("mac"))
_ROW = _ROWS_OF.where(host_updates.c.update_id == bindparam("update_id"))
_DELETE_ROW = delete(host_updates).where(
    host_updates.c.mac == bindparam("w_mac"), host_updates.c.update_id == bindparam("w_update")
)
_FACTS = select(update_facts).where(update_facts.c.mac == bindparam("mac"))
