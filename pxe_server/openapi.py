"""The API described as OpenAPI 3.1, from the route table and the message declarations.

    document(http_api.API, server_url) -> the document ``GET /api/v1/openapi.json`` serves

Nothing here is written by hand per route: paths, methods, who may call each route
(``security``), request and reply schemas (``common.protocol.codec.json_schema``) and
the refusals all come from ``http_edge.Route`` and ``common.protocol.messages``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from common import __version__
from common.protocol import codec
from common.protocol.codec import REF, VERSION, VERSION_FIELD, json_schema, nested
from common.protocol.messages import ErrorReply, NoBody
from pxe_server.http_edge import Caller, Route
from pxe_server.limits import MAX_BODY

SECURITY: dict[Caller, list[dict[str, list[str]]]] = {
    Caller.ANYONE: [],
    Caller.OPERATOR: [{"apiToken": []}],
    Caller.TICKET: [{"installToken": []}],
    Caller.HOST: [{"installKey": []}, {"agentCredential": []}],
    Caller.AGENT: [{"agentCredential": []}],
}
SCHEMES = {
    "apiToken": "the server's API token (the server directory's api-token file)",
    "installToken": "the host's install token (netinstall.token= of its boot config): "
    "it only enrols an install key",
    "installKey": "the key the host's installer enrolled (POST /api/v1/hosts/{mac}/enrol)",
    "agentCredential": "the host's agent credential (the reply to its running event)",
}
STATUS_WORDS = {
    200: "done",
    201: "created",
    400: "a malformed request: the error names the field",
    401: "no or a wrong secret for this route (whatever the MAC)",
    403: "a wrong API token, or any operator call on the HTTP port of a server with TLS on",
    404: "no such host or profile",
    409: "a state change the host's state does not allow",
    413: "the body is too large",
    500: "the server cannot answer (its own configuration)",
    502: "the host's BMC could not be reached, refused, or answered wrongly (one sentence)",
    504: "the host's segment server does not run, or did not answer in time (one sentence)",
}
ENVELOPE = "Envelope"
PARAMETERS = {
    "mac": "the host's MAC: colons, dashes or none, any case",
    "name": "the profile's or the pool's name",
    "id": "the job's number",
    "path": "a boot config's path as TFTP serves it, e.g. pxelinux.cfg/01-52-54-00-12-34-56",
}


def _reply(cls: type | None) -> dict[str, object]:
    if cls is None:
        return {"type": "object"}
    return {"allOf": [{"$ref": REF + cls.__name__}, {"$ref": REF + ENVELOPE}]}


def _refusals(route: Route) -> list[int]:
    found = set(route.refusals) | {500}
    if route.body is not NoBody or "{mac}" in route.path or "{id}" in route.path:
        found.add(400)
    if route.caller is not Caller.ANYONE:
        found.add(401)
    if route.caller is Caller.OPERATOR:
        found.add(403)
    if route.body is not NoBody:
        found.add(413)
    return sorted(found)


def operation(route: Route) -> dict[str, object]:
    """One route as an OpenAPI operation."""
    content: dict[str, object] = {"application/json": {"schema": _reply(route.reply)}}
    if route.raw_reply:
        content = {route.raw_reply: {"schema": {"type": "string"}}}
    responses: dict[str, object] = {
        str(route.status): {"description": STATUS_WORDS[route.status], "content": content}
    }
    for status in _refusals(route):
        responses[str(status)] = {
            "description": STATUS_WORDS[status],
            "content": {"application/json": {"schema": _reply(ErrorReply)}},
        }
    op: dict[str, object] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "security": SECURITY[route.caller],
        "responses": responses,
    }
    names = re.findall(r"\{(\w+)", route.path)
    if names:
        op["parameters"] = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": PARAMETERS.get(name, name),
                "schema": {"type": "string"},
            }
            for name in names
        ]
    if route.body is not NoBody:
        schema = {"$ref": REF + route.body.__name__}
        op["requestBody"] = {
            "required": True,
            "description": f"a JSON object of {MAX_BODY} bytes at most",
            "content": {"application/json": {"schema": schema}},
        }
    elif route.raw_body is not None:
        binary = {"schema": {"type": "string", "format": "binary"}}
        op["requestBody"] = {"required": True, "content": {route.raw_body: binary}}
    return op


def schemas(routes: Iterable[Route]) -> dict[str, object]:
    """Every message the routes take or give, by name (requests strict, replies open)."""
    found: dict[str, object] = {}
    table = list(routes)
    for route in table:
        if route.body is NoBody:
            continue
        for cls in nested(route.body):
            found[cls.__name__] = json_schema(cls, strict=True, envelope=cls is route.body)
    for cls in [r.reply for r in table if r.reply is not None] + [ErrorReply]:
        for each in nested(cls):
            found.setdefault(each.__name__, json_schema(each))
    found[ENVELOPE] = {
        "type": "object",
        "properties": {VERSION_FIELD: {"type": "integer", "const": VERSION}},
        "required": [VERSION_FIELD],
        "description": "every reply carries the protocol version it is written in",
    }
    return dict(sorted(found.items()))


def document(routes: Iterable[Route], server_url: str | None = None) -> dict[str, object]:
    table = list(routes)
    paths: dict[str, dict[str, object]] = {}
    for route in table:
        paths.setdefault(route.template, {})[route.method.lower()] = operation(route)
    versions = ", ".join(str(v) for v in codec.SUPPORTED)
    doc: dict[str, object] = {
        "openapi": "3.1.0",
        "info": {
            "title": "netinstall provisioning server",
            "version": __version__,
            "description": (
                f"Protocol version {VERSION}; requests of versions {versions} are accepted "
                f"(a body without `{VERSION_FIELD}` is version 1). docs/protocol.md says "
                "what each call does."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas(table),
            "securitySchemes": {
                name: {"type": "http", "scheme": "bearer", "description": text}
                for name, text in SCHEMES.items()
            },
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
