"""The API's edge through aiohttp's in-process test client: every route from the
application's router refuses a missing or wrong secret before anything is looked up;
malformed bodies are 400s naming the field; today's (version 1) agent bodies, byte for
byte, still work; ``/api/v1/openapi.json`` describes the same routes."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from common.errors import InputError
from common.protocol.codec import REF
from common.protocol.messages import Event
from pxe_server import http_api, http_edge
from pxe_server.http import BOOT_API, make_app
from pxe_server.http_bmc import BMC_API
from pxe_server.http_edge import DECODED, ROUTES, BodyTooLarge, Caller, DecodedBodies, body_chunks
from pxe_server.http_files import Context
from pxe_server.http_updates import UPDATE_API
from pxe_server.limits import DECODED_BODIES, DECODED_BODY_BYTES, MAX_BODY
from pxe_server.model import ServerSettings, State
from pxe_server.registry import Registry, default_profile
from pxe_server.secrets import API_TOKEN_FILE

SETTINGS = ServerSettings(http_base="http://192.0.2.1:8080", tftp_address="192.0.2.1")
KNOWN = "52:54:00:12:34:56"
OTHER = "52:54:00:12:34:57"
UNKNOWN = "52:54:00:99:99:99"


class Spy:
    """The registry, recording every method called on it."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._registry, name)
        if callable(value):
            self.calls.append(name)
        return value


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry.open(tmp_path) as reg:
        reg.add_profile(default_profile())
        reg.add_host(KNOWN)
        reg.add_host(OTHER)
        yield reg


Reply = tuple[int, dict[str, Any], dict[str, str]]


def send(ctx: Context, method: str, path: str, body: bytes | None = None, **headers: str) -> Reply:
    if body is not None and "Content-Type" not in headers:
        headers["Content-Type"] = "application/json"  # as requests' json= sends it

    async def go() -> Reply:
        async with TestClient(TestServer(make_app(ctx))) as client:
            reply = await client.request(method, path, data=body, headers=headers)
            text = await reply.text()
            return reply.status, json.loads(text) if text else {}, dict(reply.headers)

    return asyncio.run(go())


def context(registry: Registry | Spy) -> Context:
    return Context(registry, Path(registry.path).parent, SETTINGS, None, None)  # type: ignore[arg-type]


def api_token(registry: Registry | Spy) -> str:
    """The operator's copy of the API token: the server directory's api-token file."""
    return (Path(registry.path).parent / API_TOKEN_FILE).read_text("utf-8").strip()


def enrolled_key(registry: Registry, mac: str = KNOWN) -> str:
    """A key enrolled for ``mac`` with its install token, as its installer does first."""
    token = registry.get_host(mac).token  # type: ignore[union-attr]
    assert token is not None
    key = f"{mac.replace(':', '')}-installer-key-0123456789abcdef"
    registry.enrol(mac, token, key, "192.0.2.50")
    return key


def at(path: str, mac: str) -> str:
    """A route's path with its parameters filled in."""
    boot = f"pxelinux.cfg/01-{mac.replace(':', '-')}"
    return path.format(mac=mac, path=boot, name="default", id="1")


def api_routes() -> list[tuple[str, str, Caller]]:
    """Every /api route of the application, taken from its router."""
    app = make_app(context_stub())
    found = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/api/"):
            found.append((route.method, path, app[ROUTES][route].caller))
    return found


def context_stub() -> Context:
    return Context(None, Path("/nonexistent"), SETTINGS, None, None)  # type: ignore[arg-type]


def test_the_router_holds_every_declared_route_and_no_other() -> None:
    routes = api_routes()
    declared = http_api.API + BOOT_API + BMC_API + UPDATE_API
    assert len(routes) == len(declared) == 43
    assert {(m, p) for m, p, _ in routes} == {(r.method, r.template) for r in declared}


@pytest.mark.parametrize(("method", "path", "caller"), api_routes())
def test_every_route_refuses_a_caller_without_a_secret_before_looking_anything_up(
    registry: Registry, method: str, path: str, caller: Caller
) -> None:
    spy = Spy(registry)
    ctx = context(spy)
    body = b'{"state": "installing"}'
    if caller is Caller.ANYONE:
        status, reply, _ = send(ctx, method, at(path, KNOWN))
        assert status == 200
        assert reply["openapi"].startswith("3.")
        return
    replies = []
    for mac in (KNOWN, UNKNOWN, "not-a-mac"):
        spy.calls.clear()
        status, reply, headers = send(ctx, method, at(path, mac), body)
        assert status == 401, (method, path, mac)
        assert headers["WWW-Authenticate"] == "Bearer"
        assert spy.calls == []  # nothing looked up for a caller without a secret
        replies.append(reply)
    assert replies[0] == replies[1] == replies[2]  # nothing tells which MACs are registered


@pytest.mark.parametrize(("method", "path", "caller"), api_routes())
def test_every_route_refuses_a_wrong_secret_alike_for_every_mac(
    registry: Registry, method: str, path: str, caller: Caller
) -> None:
    if caller is Caller.ANYONE:
        return
    spy = Spy(registry)
    ctx = context(spy)
    other = registry.get_host(OTHER)
    assert other is not None
    assert other.token is not None
    wrong = {
        "nope": 403 if caller is Caller.OPERATOR else 401,
        # another host's install token: no operator, and no secret of this host
        other.token: 403 if caller is Caller.OPERATOR else 401,
    }
    for secret, expected in wrong.items():
        answers = []
        for mac in (KNOWN, UNKNOWN):
            spy.calls.clear()
            status, reply, _ = send(
                ctx, method, at(path, mac), b"{}", Authorization=f"Bearer {secret}"
            )
            assert status == expected, (method, path, mac)
            assert set(spy.calls) <= {
                "host_by_token",
                "host_by_install_key",
                "host_by_agent_credential",
                "api_token_matches",
            }
            answers.append(reply)
        assert answers[0] == answers[1]


def test_an_agent_route_refuses_the_install_token(registry: Registry) -> None:
    token = registry.get_host(KNOWN).token  # type: ignore[union-attr]
    status, reply, _ = send(
        context(registry),
        "POST",
        f"/api/v1/hosts/{KNOWN}/checkin",
        b'{"running_version": "0.1.0"}',
        Authorization=f"Bearer {token}",
    )
    assert status == 401
    assert "agent credential" in reply["error"]


# -- bodies ----------------------------------------------------------------------------


def body_routes() -> list[tuple[str, str, Caller]]:
    with_body = {(r.method, r.path) for r in http_api.API if r.body.__name__ != "NoBody"}
    return [route for route in api_routes() if route[:2] in with_body]


def secret_for(registry: Registry, caller: Caller) -> str:
    if caller is Caller.OPERATOR:
        return api_token(registry)
    if caller is Caller.AGENT:
        registry.record_event(KNOWN, State.INSTALLED)
        _, reply = registry.record_event(KNOWN, State.RUNNING)
        credential = reply["agent_credential"]  # handed out this once
        assert isinstance(credential, str)
        return credential
    token = registry.get_host(KNOWN).token  # type: ignore[union-attr]
    assert token is not None
    return token if caller is Caller.TICKET else enrolled_key(registry)


BAD_BODIES = [
    (b"{nope", 400, "the request body is not JSON"),
    (b"", 400, "the body must be a JSON object"),
    (b"[1, 2]", 400, "the body must be a JSON object"),
    (b'"text"', 400, "the body must be a JSON object"),
    (b"[" * 30_000 + b"]" * 30_000, 400, "the request body nests too deeply"),
    (b'{"a": ' * 40 + b"1" + b"}" * 40, 400, "nests deeper than 32 levels"),
    (b'{"progress": NaN}', 400, "the request body is not JSON"),
    (b'{"n": 1' + b"0" * 5000 + b"}", 400, "the request body is not JSON"),
    (b"\xff\xfe\xfa", 400, "the request body is not JSON"),
    (b'{"x": "' + b"y" * MAX_BODY + b'"}', 413, f"at most {MAX_BODY} bytes"),
    (b'{"surely_unknown": "\\ud800"}', 400, "field 'surely_unknown' is not part of protocol"),
]


@pytest.mark.parametrize("route", body_routes())
@pytest.mark.parametrize("bad", BAD_BODIES)
def test_malformed_bodies_are_refused_with_a_sentence_never_a_500(
    registry: Registry, route: tuple[str, str, Caller], bad: tuple[bytes, int, str]
) -> None:
    (method, path, caller), (body, status, words) = route, bad
    secret = secret_for(registry, caller)
    got, reply, _ = send(
        context(registry), method, at(path, KNOWN), body, Authorization=f"Bearer {secret}"
    )
    assert (got, words in reply["error"]) == (status, True), reply


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"state": "installing", "message": "\\ud800"}', "'message' must be valid Unicode"),
        (b'{"state": "installing", "progress": 2}', "'progress' must be a number between 0 and 1"),
        (b'{"state": "installing", "step": 7}', "event: field 'step' must be a string"),
        (b'{"state": "installing", "protocol": 9}', "event: field 'protocol' must be 1 or 2"),
    ],
)
def test_a_bad_event_is_a_400_naming_the_field(registry: Registry, body: bytes, words: str) -> None:
    token = secret_for(registry, Caller.HOST)
    status, reply, _ = send(
        context(registry),
        "POST",
        f"/api/v1/hosts/{KNOWN}/events",
        body,
        Authorization=f"Bearer {token}",
    )
    assert (status, words in reply["error"]) == (400, True), reply
    assert registry.get_host(KNOWN).state is State.PENDING  # type: ignore[union-attr]


# -- version 1: what the agents installed before protocol versions send ------------------

# Byte for byte what today's installer (installer_core.report, through requests' json=)
# and first boot (netinstall_dom0.report, facts.Facts.to_json) post.
V1_INSTALLING = b'{"state": "installing", "step": "partition", "progress": 0.35}'
V1_FAILED = b'{"state": "failed", "step": "download", "message": "sha256 mismatch for boot/xen.gz"}'
V1_INSTALLED = b'{"state": "installed"}'
V1_RUNNING = (
    b'{"state": "running", "facts": {"xen_version": "4.17.5", "host_memory_mib": 3071, '
    b'"cmdline": "root=UUID=0b6e9d7c ro console=hvc0", "payload_version": "0.1.0", '
    b'"sr_uuid": null, "sr_type": null, "hostname": "xenhost01", '
    b'"addresses": [{"interface": "xenbr0", "address": "192.168.77.50/24"}]}}'
)
# ... and the dom0 agent's check-in of a SAN host waiting for its manual reboot.
V1_CHECKIN = (
    b'{"running_version": "0.1.0", "state": "installed-reboot-required", "multipath": '
    b'[{"name": "mpatha", "wwid": "3500c50015ea71ac0", "paths": [{"device": "sda", '
    b'"state": "ready"}, {"device": "sdb", "state": "faulty"}]}]}'
)


def test_version_1_bodies_byte_for_byte_still_work(registry: Registry) -> None:
    ctx = context(registry)
    token = secret_for(registry, Caller.HOST)
    events = f"/api/v1/hosts/{KNOWN}/events"
    bearer = {"Authorization": f"Bearer {token}"}
    for body in (V1_INSTALLING, V1_INSTALLED):
        status, reply, _ = send(ctx, "POST", events, body, **bearer)
        assert (status, reply) == (200, {"protocol": 2})
    status, reply, _ = send(ctx, "POST", events, V1_RUNNING, **bearer)
    assert status == 200
    assert reply["checkin_interval"] == 300  # what a version 1 first boot reads
    credential = reply["agent_credential"]
    host = registry.get_host(KNOWN)
    assert host is not None
    assert (host.state, host.running_version) == (State.RUNNING, "0.1.0")
    assert host.facts["addresses"] == [{"interface": "xenbr0", "address": "192.168.77.50/24"}]
    assert host.facts["host_memory_mib"] == 3071

    registry.add_repository("0.2.0", str(Path(registry.path).parent / "repo"))
    registry.assign_work(KNOWN, "upgrade", version="0.2.0", reboot="manual")
    checkin = f"/api/v1/hosts/{KNOWN}/checkin"
    status, reply, _ = send(ctx, "POST", checkin, V1_CHECKIN, Authorization=f"Bearer {credential}")
    assert status == 200
    assert (reply["action"], reply["version"], reply["reboot"]) == ("upgrade", "0.2.0", "manual")
    host = registry.get_host(KNOWN)
    assert host is not None
    assert (host.state, host.step) == (State.INSTALLED, "reboot-required")
    assert host.facts["multipath"][0]["paths"][1] == {"device": "sdb", "state": "faulty"}

    bearer = {"Authorization": f"Bearer {enrolled_key(registry, OTHER)}"}
    status, _, _ = send(ctx, "POST", f"/api/v1/hosts/{OTHER}/events", V1_FAILED, **bearer)
    assert status == 200
    assert registry.get_host(OTHER).state is State.FAILED  # type: ignore[union-attr]


# -- OpenAPI -----------------------------------------------------------------------------


def refs(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                yield str(item)
            yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


def test_openapi_describes_every_route_with_its_caller_and_messages(registry: Registry) -> None:
    status, doc, _ = send(context(registry), "GET", "/api/v1/openapi.json")
    assert status == 200
    assert doc["openapi"] == "3.1.0"
    assert doc["servers"] == [{"url": SETTINGS.http_base}]
    schemas = doc["components"]["schemas"]
    for ref in refs(doc):
        assert ref.startswith(REF)
        assert ref.removeprefix(REF) in schemas, ref
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert described == {(m, p) for m, p, _ in api_routes()}
    for method, path, caller in api_routes():
        op = doc["paths"][path][method.lower()]
        schemes = {name for alt in op["security"] for name in alt}
        expected = {
            Caller.ANYONE: set(),
            Caller.OPERATOR: {"apiToken"},
            Caller.TICKET: {"installToken"},
            Caller.HOST: {"installKey", "agentCredential"},
            Caller.AGENT: {"agentCredential"},
        }[caller]
        assert schemes == expected, path
        if caller is not Caller.ANYONE:
            assert "401" in op["responses"]
        if "{" in path:  # each of the path's parameters, in order
            assert [p["name"] for p in op["parameters"]] == re.findall(r"\{(\w+)\}", path)
    checkin = doc["paths"]["/api/v1/hosts/{mac}/checkin"]["post"]
    request = checkin["requestBody"]["content"]["application/json"]["schema"]
    assert request == {"$ref": REF + "Checkin"}
    assert schemas["Checkin"]["required"] == ["running_version"]
    assert schemas["Checkin"]["additionalProperties"] is False
    assert schemas["PathState"]["properties"]["device"]["maxLength"] == 128
    reply = checkin["responses"]["200"]["content"]["application/json"]["schema"]
    assert reply["allOf"][0] == {"$ref": REF + "CheckinReply"}
    logs = doc["paths"]["/api/v1/hosts/{mac}/logs"]["put"]
    assert "application/x-bzip2" in logs["requestBody"]["content"]
    assert set(doc["components"]["securitySchemes"]) == {
        "apiToken",
        "installToken",
        "installKey",
        "agentCredential",
    }
    text = json.dumps(doc)
    assert api_token(registry) not in text
    assert not re.search(r"\bclass\b|object at 0x", text)  # no Python leaking into it


def test_openapi_is_the_only_route_without_a_caller() -> None:
    open_routes = [r.path for r in http_api.API if r.caller is Caller.ANYONE]
    assert open_routes == ["/api/v1/openapi.json"]
    assert isinstance(make_app(context_stub()), web.Application)


def test_the_403_names_a_command_that_exists(registry: Registry) -> None:
    import click

    from netinstall.cli import main

    status, reply, _ = send(
        context(registry), "GET", "/api/v1/hosts", Authorization="Bearer not-the-token"
    )
    assert status == 403
    commands = re.findall(r"`netinstall ([^`]+)`", reply["error"])
    assert commands, reply["error"]  # it tells the operator what to run
    for command in commands:
        group: click.Command = main
        words = [w for w in command.split() if w.isalpha() and w.islower()]
        for word in words:
            assert isinstance(group, click.Group), command
            found = group.get_command(click.Context(group), word)
            assert found is not None, f"`netinstall {command}`: no command {word!r}"
            group = found
        assert not isinstance(group, click.Group), f"`netinstall {command}` is a group"


@pytest.mark.parametrize(
    ("content_type", "status", "words"),
    [
        ("text/plain", 400, "must be JSON (Content-Type: application/json), not text/plain"),
        ("application/x-www-form-urlencoded", 400, "not application/x-www-form-urlencoded"),
        ("multipart/form-data; boundary=x", 400, "not multipart/form-data"),
        ("application/octet-stream", 400, "not application/octet-stream"),
        ("application/json; charset=latin-1", 400, "must be UTF-8 JSON, not charset latin-1"),
        ("application/json", 200, ""),
        ("application/json; charset=UTF-8", 200, ""),
        ("application/vnd.netinstall+json", 200, ""),
        (None, 200, ""),  # no Content-Type at all: read as JSON, as before
    ],
)
def test_a_body_of_another_media_type_is_a_400_naming_it(
    registry: Registry, content_type: str | None, status: int, words: str
) -> None:
    token = secret_for(registry, Caller.HOST)

    async def go() -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        async with TestClient(TestServer(make_app(context(registry)))) as client:
            reply = await client.post(
                f"/api/v1/hosts/{KNOWN}/events",
                data=b'{"state": "installing"}',
                headers=headers,
                skip_auto_headers=("Content-Type",),  # else bytes go as octet-stream
            )
            return reply.status, await reply.json()

    got, reply = asyncio.run(go())
    assert got == status, reply
    if words:
        assert words in reply["error"]
        assert registry.get_host(KNOWN).state is State.PENDING  # type: ignore[union-attr]
    else:
        assert registry.get_host(KNOWN).state is State.INSTALLING  # type: ignore[union-attr]


# -- what a host makes the server store is bounded ---------------------------------------


def test_event_messages_are_cut_to_4_kib_with_a_marker_after_redaction(
    registry: Registry,
) -> None:
    from pxe_server.limits import MAX_EVENT_MESSAGE

    token = secret_for(registry, Caller.HOST)
    ctx = context(registry)
    events = f"/api/v1/hosts/{KNOWN}/events"
    # The token straddles the cut: redacted first, so not even half of it is kept.
    message = "é" * 2000 + "x" * (MAX_EVENT_MESSAGE - 4030) + token + "y" * 50_000
    for _ in range(20):
        body = json.dumps({"state": "installing", "message": message}).encode()
        assert len(body) < MAX_BODY
        status, _, _ = send(ctx, "POST", events, body, Authorization=f"Bearer {token}")
        assert status == 200
    registry.flush_progress()  # progress is committed within PROGRESS_DELAY; now, for the test
    stored = [e.message for e in registry.events(KNOWN) if e.message and "é" in e.message]
    assert len(stored) == 20
    for text in stored:
        assert len(text.encode("utf-8")) <= MAX_EVENT_MESSAGE
        assert text.startswith("é" * 2000)
        assert text.endswith(f" bytes; cut at {MAX_EVENT_MESSAGE}]")
        assert token[:8] not in text
    status, listed, _ = send(ctx, "GET", events, Authorization=f"Bearer {api_token(registry)}")
    assert status == 200
    sizes = [len(json.dumps(e, ensure_ascii=False).encode()) for e in listed["events"]]
    assert max(sizes) < MAX_EVENT_MESSAGE + 200


@pytest.mark.parametrize(
    ("event", "words"),
    [
        ({"state": "installing", "step": "s" * 129}, "field 'step' must be a string of 128"),
        (
            {"state": "running", "facts": {"cmdline": "c" * 4097}},
            "field 'facts.cmdline' must be a string of 4096",
        ),
        (
            {"state": "running", "facts": {"hostname": "h" * 257}},
            "field 'facts.hostname' must be a string of 256",
        ),
        (
            {
                "state": "running",
                "facts": {"addresses": [{"interface": "i" * 129, "address": "a"}]},
            },
            "field 'facts.addresses[0].interface' must be a string of 128",
        ),
    ],
)
def test_other_strings_a_host_reports_are_bounded(
    registry: Registry, event: dict[str, object], words: str
) -> None:
    token = secret_for(registry, Caller.HOST)
    status, reply, _ = send(
        context(registry),
        "POST",
        f"/api/v1/hosts/{KNOWN}/events",
        json.dumps(event).encode(),
        Authorization=f"Bearer {token}",
    )
    assert (status, words in reply["error"]) == (400, True), reply


@pytest.mark.parametrize("size", [0, 1, MAX_BODY, MAX_BODY + 1])
def test_a_body_all_in_already_is_read_at_once_and_still_bounded(size: int) -> None:
    """A chunked body (no Content-Length to refuse it by) that is all in before its
    handler reads it is taken in one piece, and refused past the limit all the same."""

    async def read() -> list[bytes]:
        content = StreamReader(
            mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop()
        )
        content.feed_data(b"x" * size)
        content.feed_eof()
        request = make_mocked_request("POST", "/", payload=content)
        return [chunk async for chunk in body_chunks(request, MAX_BODY)]

    if size > MAX_BODY:
        with pytest.raises(BodyTooLarge):
            asyncio.run(read())
    else:
        assert asyncio.run(read()) == ([b"x" * size] if size else [])


# -- bodies many hosts send alike: decoded once, a bounded number of them ------------------


def test_alike_bodies_are_decoded_once_per_body_and_shared() -> None:
    bodies = DecodedBodies(entries=4, longest=200)
    data = b'{"protocol": 2, "state": "installing", "step": "download", "progress": 0.5}'
    with mock.patch("pxe_server.http_edge.decode", wraps=http_edge.decode) as decoded:
        first, second = bodies.decode(Event, data), bodies.decode(Event, bytes(data))
    assert first is second
    assert (first.step, first.progress) == ("download", 0.5)
    assert decoded.call_count == 1


def test_alike_bodies_are_bounded_oldest_out_first() -> None:
    """``DECODED_BODIES`` distinct bodies at most: a host sending a new body each time
    costs the server no more than that."""
    bodies = DecodedBodies(entries=3, longest=200)
    for index in range(10):
        bodies.decode(Event, b'{"protocol": 2, "state": "installing", "step": "s%d"}' % index)
        assert len(bodies) == min(index + 1, 3)
    with mock.patch("pxe_server.http_edge.decode", wraps=http_edge.decode) as decoded:
        bodies.decode(Event, b'{"protocol": 2, "state": "installing", "step": "s9"}')
        bodies.decode(Event, b'{"protocol": 2, "state": "installing", "step": "s0"}')
    assert decoded.call_count == 1  # s9 kept, s0 dropped long ago
    assert (DECODED.entries, DECODED.longest) == (DECODED_BODIES, DECODED_BODY_BYTES)


def test_alike_bodies_keep_no_refused_and_no_long_body() -> None:
    bodies = DecodedBodies(entries=8, longest=64)
    with pytest.raises(InputError, match="state"):
        bodies.decode(Event, b'{"protocol": 2, "state": "exploded"}')
    long = b'{"protocol": 2, "state": "installing", "message": "%s"}' % (b"x" * 64)
    assert bodies.decode(Event, long).message == "x" * 64
    assert len(bodies) == 0


def test_only_bodies_without_secrets_are_kept() -> None:
    """The enrolment carries the installer's key: its body is never kept."""
    alike = {route.path.rsplit("/", 1)[-1] for route in http_api.API if route.alike}
    assert alike == {"events", "checkin"}
