"""Updates on the server: what they are, their rows, their records and rules (no I/O).

An **update** is a signed bundle (``common.update_bundle``) added with ``update add``: its
record stays; its file (``<shared dir>/updates/<id>.update``) stays until ``update
clean``. A **host update** is where one host stands with one update
(``HostUpdateState``), moved by what the host's agent says at its check-ins
(``after_checkin``):

    pending ──(the agent applied it)──> applied
       │                 └─(the update reboots)─> rebooting | reboot-required
       │                                               └─(a check-in from a new boot)─> applied
       └──(the agent failed)──> failed

The host's own update log decides in the end: an update it lists is applied (a row is
added for a known update the server never gave it), an applied one it no longer lists
(a reinstall, a restore) is forgotten.

    report = Report(updates, boot_id, result)    # from a check-in
    after_checkin(row, reboot, report) -> the row after it (None: forget it)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from common.errors import InputError
from common.protocol.messages import (
    HostUpdateState,
    RebootPolicy,
    UpdateHostRecord,
    UpdateOutcome,
    UpdateRecord,
    UpdateResult,
)

UPDATES_DIR = "updates"  # in the shared directory: the signed bundles, <id>.update
BUNDLE_SUFFIX = ".update"
# A host's agent is "seen recently" (the precheck) when it checked in this long ago at most.
RECENT_CHECKIN = 3 * 3600.0
# Free space the precheck asks for beyond the bundle: it is unpacked beside itself.
UNPACK_FACTOR = 2

WAITING = (HostUpdateState.PENDING, HostUpdateState.REBOOTING, HostUpdateState.REBOOT_REQUIRED)


class UnknownUpdate(InputError):
    """No update of that id (the API answers 404)."""


@dataclass(frozen=True)
class StoredUpdate:
    """An ``updates`` row."""

    id: str
    name: str
    version: str
    applies_to: tuple[str, ...]
    reboot: bool
    size: int
    sha256: str
    metadata_sha256: str
    added: float
    added_by: str
    cleaned: float | None = None


@dataclass(frozen=True)
class HostUpdate:
    """A ``host_updates`` row."""

    mac: str
    update_id: str
    state: HostUpdateState
    reboot_policy: RebootPolicy
    updated: float
    reason: str | None = None
    boot_id: str | None = None


@dataclass(frozen=True)
class Facts:
    """What a host's agent last said of its updates (an ``update_facts`` row)."""

    mac: str
    updates: tuple[str, ...]
    free_mib: int | None
    boot_id: str | None
    seen: float


@dataclass(frozen=True)
class Report:
    """The update part of a check-in (``updates`` None: the agent knows no updates)."""

    updates: tuple[str, ...] | None
    boot_id: str | None
    free_mib: int | None
    result: UpdateResult | None


def stored_update(row: Mapping[str, Any]) -> StoredUpdate:
    return StoredUpdate(
        id=row["id"],
        name=row["name"],
        version=row["version"],
        applies_to=tuple(json.loads(row["applies_to"])),
        reboot=bool(row["reboot"]),
        size=int(row["size"]),
        sha256=row["sha256"],
        metadata_sha256=row["metadata_sha256"],
        added=float(row["added"]),
        added_by=row["added_by"],
        cleaned=row["cleaned"],
    )


def host_update(row: Mapping[str, Any]) -> HostUpdate:
    return HostUpdate(
        mac=row["mac"],
        update_id=row["update_id"],
        state=HostUpdateState(row["state"]),
        reboot_policy=RebootPolicy(row["reboot_policy"]),
        updated=float(row["updated"]),
        reason=row["reason"],
        boot_id=row["boot_id"],
    )


def after_checkin(row: HostUpdate, reboot: bool, report: Report, now: float) -> HostUpdate | None:
    """``row`` after a check-in that says ``report`` (``reboot``: the update needs one);
    None: the host no longer has it (forget the row)."""
    if report.updates is None:
        return row  # an agent from before updates: it says nothing of them
    listed = row.update_id in report.updates
    result = report.result if report.result and report.result.id == row.update_id else None
    state = row.state
    if state is HostUpdateState.PENDING:
        if result is not None and result.outcome is UpdateOutcome.FAILED:
            return replace(row, state=HostUpdateState.FAILED, reason=result.reason, updated=now)
        if not listed:
            return row
        if not reboot:
            return replace(row, state=HostUpdateState.APPLIED, reason=None, updated=now)
        manual = result is not None and result.outcome is UpdateOutcome.REBOOT_REQUIRED
        waiting = HostUpdateState.REBOOT_REQUIRED if manual else HostUpdateState.REBOOTING
        return replace(row, state=waiting, reason=None, boot_id=report.boot_id, updated=now)
    if state in (HostUpdateState.REBOOTING, HostUpdateState.REBOOT_REQUIRED):
        if not listed:
            return None  # reinstalled or restored meanwhile: its disk has it not
        if report.boot_id is not None and report.boot_id != row.boot_id:
            return replace(row, state=HostUpdateState.APPLIED, boot_id=None, updated=now)
        return row
    if state is HostUpdateState.APPLIED:
        return row if listed else None
    if listed:  # failed here, applied there (by hand, or a later try the server missed)
        return replace(row, state=HostUpdateState.APPLIED, reason=None, updated=now)
    return row


def update_record(update: StoredUpdate, hosts: Sequence[HostUpdate]) -> UpdateRecord:
    return UpdateRecord(
        id=update.id,
        name=update.name,
        version=update.version,
        applies_to=update.applies_to,
        reboot=update.reboot,
        size=update.size,
        sha256=update.sha256,
        added=update.added,
        added_by=update.added_by,
        cleaned=update.cleaned,
        hosts=tuple(
            UpdateHostRecord(h.mac, h.state, h.reason, h.updated)
            for h in sorted(hosts, key=lambda h: h.mac)
        ),
    )


def different_content(update_id: str) -> str:
    return (
        f"update {update_id} exists already with other content; an update never changes: "
        "give the new one another id"
    )


def bundle_name(update_id: str) -> str:
    return f"{update_id}{BUNDLE_SUFFIX}"
