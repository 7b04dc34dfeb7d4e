"""HTTP, the updates' part: ``/api/v1/updates`` and ``/api/v1/jobs/update-apply``
(docs/protocol.md, README "Updates").

An update is added by POSTing its bundle (``update build``'s file, at most
``MAX_UPLOAD`` bytes) as the body: the server checks it, signs it with the registry's
update key and keeps it in the shared directory (``update_ops.add_bundle``). The agent's
download route is http_api's (``GET /api/v1/hosts/<mac>/updates/<id>``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

from common.errors import InputError
from common.protocol.messages import (
    MAX_WORD,
    JobRecord,
    NoBody,
    UpdateApplyRequest,
    UpdateList,
    UpdatePrecheck,
    UpdateRecord,
    UpdateTargets,
)
from common.update_bundle import MAX_BUNDLE_BYTES, MAX_METADATA, MAX_SIGNATURE
from pxe_server import update_ops
from pxe_server.http_api import requester
from pxe_server.http_edge import Call, Caller, Route, body_chunks, check_not_encoded
from pxe_server.http_files import blocking
from pxe_server.jobs import job_record
from pxe_server.updates import UPDATES_DIR

# A bundle as uploaded: its members, its metadata, a signature and the tar's headers.
MAX_UPLOAD = MAX_BUNDLE_BYTES + MAX_METADATA + MAX_SIGNATURE + 1024 * 1024


def _id(call: Call[Any]) -> str:
    return call.request.match_info["id"]


async def list_updates(call: Call[NoBody]) -> UpdateList:
    return UpdateList(tuple(await blocking(update_ops.records, call.ctx.registry)))


async def show_update(call: Call[NoBody]) -> UpdateRecord:
    return await blocking(update_ops.record, call.ctx.registry, _id(call))


class _Upload:
    """The uploaded bundle, written beside the kept ones under a name of its own."""

    def __init__(self, shared: Path) -> None:
        directory = shared / UPDATES_DIR
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.path = directory / f".upload.{secrets.token_hex(8)}"
        self.file = self.path.open("wb")

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def close(self) -> None:
        self.file.close()

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


async def add_update(call: Call[NoBody]) -> UpdateRecord:
    """The bundle in the body checked, signed and kept; its record (the id first)."""
    request, ctx = call.request, call.ctx
    check_not_encoded(request)
    given = request.query.get("by")
    if given is not None and (len(given) > MAX_WORD or not given.isprintable()):
        raise InputError(f"by: at most {MAX_WORD} printable characters")
    upload = await blocking(_Upload, ctx.shared)
    try:
        async for chunk in body_chunks(request, MAX_UPLOAD, "an update bundle"):
            await blocking(upload.write, chunk)
        await blocking(upload.close)
        by = requester(call, given)
        return await blocking(update_ops.add_bundle, ctx.registry, ctx.shared, upload.path, by)
    finally:
        await asyncio.shield(blocking(upload.discard))


async def clean_update(call: Call[NoBody]) -> UpdateRecord:
    return await blocking(update_ops.clean, call.ctx.registry, call.ctx.shared, _id(call))


async def precheck_update(call: Call[UpdateTargets]) -> UpdatePrecheck:
    return await blocking(update_ops.precheck, call.ctx.registry, _id(call), call.body, time.time())


async def start_update_apply(call: Call[UpdateApplyRequest]) -> JobRecord:
    """The precheck on every host, then queued: a server's job runner applies it."""
    by = requester(call, call.body.by)
    job = await blocking(
        update_ops.start_update_apply, call.ctx.registry, call.body, by, time.time()
    )
    return job_record(job)


UPDATES = "/api/v1/updates"
UPDATE = "/api/v1/updates/{id}"
OPERATOR = Caller.OPERATOR

UPDATE_API = (
    Route("GET", UPDATES, list_updates, OPERATOR,
          "every update, with the hosts it is applied to, pending on or failed on",
          reply=UpdateList),
    Route("POST", UPDATES, add_update, OPERATOR,
          "add an update: the body is its bundle (`update build`), which the server checks, "
          "signs and keeps (?by=NAME: who adds it)",
          reply=UpdateRecord, status=201, raw_body="application/x-tar", refusals=(409, 413)),
    Route("GET", UPDATE, show_update, OPERATOR, "one update", reply=UpdateRecord,
          refusals=(404,)),
    Route("POST", f"{UPDATE}/clean", clean_update, OPERATOR,
          "remove the update's file (its record stays)", reply=UpdateRecord, refusals=(404,)),
    Route("POST", f"{UPDATE}/precheck", precheck_update, OPERATOR,
          "check each host of a pool (or the hosts given) for the update", UpdateTargets,
          UpdatePrecheck, refusals=(404,)),
    Route("POST", "/api/v1/jobs/update-apply", start_update_apply, OPERATOR,
          "queue an update's roll-out (a named pool, or hosts) as a job, after its precheck",
          UpdateApplyRequest, JobRecord, status=201, refusals=(404, 409)),
)  # fmt: skip
