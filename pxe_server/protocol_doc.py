"""docs/protocol.md's reference part, generated from the route table and the messages.

    python -m pxe_server.protocol_doc docs/protocol.md    # rewrite the generated part

The prose above the marker is written by hand; everything below it comes from
``http_api.API`` and ``common.protocol.messages`` (a unit test fails when the
committed page is stale: run ``make generated``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.protocol import codec
from common.protocol.codec import Absent, Rule, describe, fields_of, message_name, nested
from common.protocol.messages import ErrorReply, NoBody
from pxe_server.http import BOOT_API
from pxe_server.http_api import API
from pxe_server.http_bmc import BMC_API
from pxe_server.http_edge import Caller, Route
from pxe_server.http_updates import UPDATE_API
from pxe_server.limits import MAX_BODY

MARKER = (
    "<!-- Generated from pxe_server/http_api.py and common/protocol/messages.py by "
    "`make generated`; do not edit below this line. -->"
)
CALLERS = {
    Caller.ANYONE: "anyone",
    Caller.OPERATOR: "API token",
    Caller.TICKET: "install token",
    Caller.HOST: "install key or agent credential",
    Caller.AGENT: "agent credential",
}


def _link(cls: type) -> str:
    return f"[{cls.__name__}](#{cls.__name__.lower()})"


def _type_text(kind: Any, r: Rule) -> str:
    union = codec.members(kind)
    shown = [m for m in union if m not in (type(None), Absent)]
    nullable = type(None) in union
    inner = shown[0]
    origin = typing.get_origin(inner)
    if dataclasses.is_dataclass(inner):
        text = _link(typing.cast(type, inner))
    elif origin is tuple and dataclasses.is_dataclass(typing.get_args(inner)[0]):
        most = f" ({r.max_items} at most)" if r.max_items else ""
        text = f"list of {_link(typing.get_args(inner)[0])}{most}"
    elif origin is tuple:
        text = "list of strings"
    else:
        return describe(kind, r)
    return f"{text} or null" if nullable else text


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def message_table(cls: type) -> list[str]:
    doc = " ".join((cls.__doc__ or "").split()).replace("``", "`")
    lines = [f"### {cls.__name__}", ""]
    if doc and not doc.startswith(f"{cls.__name__}("):
        lines += [doc, ""]
    lines += ["| field | type | required | what |", "|---|---|---|---|"]
    for spec in fields_of(cls):
        notes = [spec.rule.doc] if spec.rule.doc else []
        if spec.rule.since > 1:
            notes.append(f"protocol {spec.rule.since} on")
        if spec.rule.secret:
            notes.append("**secret**, handed to its owner only")
        if not spec.required and spec.default not in (None, codec.ABSENT, (), {}):
            notes.append(f"default `{json.dumps(codec.plain(spec.default))}`")
        required = "yes" if spec.required else "no"
        lines.append(
            f"| `{spec.name}` | {_cell(_type_text(spec.kind, spec.rule))} | {required} "
            f"| {_cell('; '.join(notes))} |"
        )
    return [*lines, ""]


def _messages(routes: Sequence[Route]) -> list[type]:
    found: dict[type, None] = {}
    for route in routes:
        for cls in (route.body, route.reply, ErrorReply):
            if cls is not None and cls is not NoBody:
                for each in nested(cls):
                    found.setdefault(each)
    return list(found)


def reference(routes: Sequence[Route] = API + BOOT_API + BMC_API + UPDATE_API) -> str:
    versions = ", ".join(str(v) for v in codec.SUPPORTED)
    lines = [
        MARKER,
        "",
        "## Reference",
        "",
        f'Protocol version {codec.VERSION}. Every message carries `"{codec.VERSION_FIELD}": '
        f"{codec.VERSION}`; the server accepts requests of versions {versions} (a body without "
        f"`{codec.VERSION_FIELD}` is version 1, what agents installed before versions existed "
        "send), refuses a field the message's version does not know, and answers in version "
        f"{codec.VERSION}; clients ignore reply fields they do not know. A JSON body may have "
        f"{MAX_BODY} bytes and {codec.MAX_DEPTH} levels of nesting at most. The same "
        "description, as OpenAPI 3.1: `GET /api/v1/openapi.json`.",
        "",
        "| method | path | caller | request | reply |",
        "|---|---|---|---|---|",
    ]
    for route in routes:
        body = "-" if route.body is NoBody else _link(route.body)
        if route.raw_body:
            body = f"`{route.raw_body}`"
        reply = "OpenAPI document" if route.reply is None else _link(route.reply)
        if route.raw_reply:
            reply = f"`{route.raw_reply}`"
        lines.append(
            f"| {route.method} | `{route.template}` | {CALLERS[route.caller]} | {body} "
            f"| {route.status} {reply} |"
        )
    secrets = [
        f"`{cls.__name__}.{spec.name}`"
        for cls in _messages(routes)
        for spec in fields_of(cls)
        if spec.rule.secret
    ]
    lines += [
        "",
        "Secrets a message hands to their owner (no other message carries one): "
        + ", ".join(secrets)
        + ". Refusals are an "
        + _link(ErrorReply)
        + ".",
        "",
    ]
    for cls in _messages(routes):
        lines += message_table(cls)
    names = ", ".join(f"`{message_name(c)}`" for c in _messages(routes) if getattr(c, "NAME", ""))
    lines += [f"Errors name the message ({names}) and the field.", ""]
    return "\n".join(lines)


def updated(text: str) -> str:
    """``text`` with its generated part (from the marker on) replaced by ``reference()``."""
    head = text.split(MARKER, 1)[0].rstrip("\n")
    return f"{head}\n\n{reference()}"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m pxe_server.protocol_doc docs/protocol.md", file=sys.stderr)
        return 2
    path = Path(args[0])
    path.write_text(updated(path.read_text("utf-8")), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
