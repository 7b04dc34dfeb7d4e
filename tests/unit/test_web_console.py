"""The web console (pxe_server/http_ui.py) through aiohttp's in-process test client: the
login, sessions and their cookie, refusals without a session or CSRF token, escaping of
what hosts send, the poll's cursor, the actions and the plain port's refusal under TLS."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import update

from common.protocol.messages import PoolUpgradeRequest
from pxe_server import ui_view
from pxe_server.http import make_app
from pxe_server.http_files import Context
from pxe_server.http_ui import COOKIE, SECURITY_HEADERS
from pxe_server.job_runner import start_pool_upgrade
from pxe_server.log_bundles import log_dir
from pxe_server.model import RebootPolicy, ServerSettings, State, Work
from pxe_server.registry import Registry
from pxe_server.secrets import API_TOKEN_FILE
from pxe_server.store.tables import hosts
from pxe_server.ui_sessions import MAX_FAILURES
from pxe_server.ui_view import OVERLAP, Filters, poll, poll_after
from tests.registry_engines import execute

SETTINGS = ServerSettings(http_base="http://192.0.2.1:8080", tftp_address="192.0.2.1")
MAC = "52:54:00:12:34:56"
OTHER = "52:54:00:12:34:57"
MARKUP = "<script>alert(1)</script>"


def context(registry: Registry, operator_base: str | None = None) -> Context:
    directory = Path(registry.path).parent
    return Context(registry, directory, SETTINGS, None, None, operator_base=operator_base)


def api_token(registry: Registry) -> str:
    return (Path(registry.path).parent / API_TOKEN_FILE).read_text("utf-8").strip()


@dataclass
class Reply:
    status: int
    text: str
    headers: dict[str, str]
    cookies: list[str]

    def json(self) -> Any:
        return json.loads(self.text)


class Browser:
    """A client that keeps the session cookie and sends its own origin, as a browser
    does on a form post."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client
        self.cookie: str | None = None
        self.origin = str(client.make_url("")).rstrip("/")

    async def send(
        self, method: str, path: str, form: dict[str, str] | None = None, **headers: str
    ) -> Reply:
        sent = dict(headers)
        if self.cookie is not None:
            sent["Cookie"] = f"{COOKIE}={self.cookie}"
        if method == "POST":
            sent.setdefault("Origin", self.origin)
        if not sent.get("Origin", True):  # Origin="": send none (an older browser's form)
            del sent["Origin"]
        reply = await self.client.request(
            method, path, data=form, headers=sent, allow_redirects=False
        )
        text = await reply.text()
        cookies = reply.headers.getall("Set-Cookie", [])
        for cookie in cookies:
            found = re.match(rf"{COOKIE}=([^;]*)", cookie)
            if found:
                self.cookie = found[1] or None
        return Reply(reply.status, text, dict(reply.headers), cookies)

    async def login(self, token: str) -> Reply:
        return await self.send("POST", "/ui/login", {"token": token, "next": "/ui/"})

    async def csrf(self) -> str:
        page = await self.send("GET", "/ui/")
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found, page.text[:500]
        return found[1]


def browse(ctx: Context, script: Callable[[Browser], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        async with TestClient(TestServer(make_app(ctx))) as client:
            return await script(Browser(client))

    return asyncio.run(go())


@pytest.fixture
def fleet(reg: Registry) -> Registry:
    reg.add_host(MAC, name="web-1")
    reg.add_host(OTHER, name="web-2")
    return reg


# -- login and sessions -------------------------------------------------------------------


def test_login_gives_a_session_cookie_not_the_token(fleet: Registry) -> None:
    token = api_token(fleet)

    async def script(browser: Browser) -> tuple[Reply, Reply]:
        return await browser.login(token), await browser.send("GET", "/ui/")

    login, page = browse(context(fleet), script)
    assert login.status == 303
    assert login.headers["Location"] == "/ui/"
    (cookie,) = login.cookies
    assert re.match(rf"{COOKIE}=[A-Za-z0-9_-]{{43}}; ", cookie)
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain HTTP here: Secure under TLS only
    assert token not in cookie
    assert page.status == 200
    assert "web-1" in page.text
    assert token not in page.text


def test_a_wrong_token_is_refused_and_then_throttled(fleet: Registry) -> None:
    async def script(browser: Browser) -> list[Reply]:
        replies = [await browser.login("wrong-token") for _ in range(MAX_FAILURES)]
        replies.append(await browser.login(api_token(fleet)))  # even the right one waits
        return replies

    replies = browse(context(fleet), script)
    assert [r.status for r in replies] == [403] * MAX_FAILURES + [429]
    assert "Wrong API token" in replies[0].text
    assert not any(r.cookies for r in replies)
    assert "Too many failed logins" in replies[-1].text
    assert int(replies[-1].headers["Retry-After"]) > 0


def test_a_login_from_another_origin_is_refused(fleet: Registry) -> None:
    async def script(browser: Browser) -> Reply:
        return await browser.send("POST", "/ui/login", {"token": api_token(fleet)},
                                  Origin="http://evil.example")  # fmt: skip

    reply = browse(context(fleet), script)
    assert reply.status == 403
    assert not reply.cookies


@pytest.mark.parametrize(
    "path", ["/ui/", "/ui/pools", f"/ui/hosts/{MAC}", f"/ui/hosts/{MAC}/rearm", "/ui/static/ui.js"]
)
def test_without_a_session_pages_go_to_the_login_form(fleet: Registry, path: str) -> None:
    async def script(browser: Browser) -> Reply:
        return await browser.send("GET", path)

    reply = browse(context(fleet), script)
    assert reply.status == 303
    assert reply.headers["Location"].startswith("/ui/login?next=")
    assert "web-1" not in reply.text


def test_without_a_session_the_poll_is_401_and_actions_403(fleet: Registry) -> None:
    async def script(browser: Browser) -> tuple[Reply, Reply, Reply]:
        polled = await browser.send("GET", "/ui/api/fleet?cursor=0")
        rearm = await browser.send("POST", f"/ui/hosts/{MAC}/rearm", {"csrf": "x"})
        browser.cookie = "made-up-session-id"
        return polled, rearm, await browser.send("GET", "/ui/api/fleet?cursor=0")

    polled, rearm, made_up = browse(context(fleet), script)
    assert polled.status == 401
    assert "log in" in polled.json()["error"]
    assert rearm.status == 403
    assert made_up.status == 401
    assert fleet.get_host(MAC).state is State.PENDING  # type: ignore[union-attr]


def test_the_login_form_and_its_stylesheet_need_no_session(fleet: Registry) -> None:
    async def script(browser: Browser) -> tuple[Reply, Reply]:
        return await browser.send("GET", "/ui/login"), await browser.send("GET", "/ui/login.css")

    form, style = browse(context(fleet), script)
    assert form.status == 200
    assert 'type="password" name="token"' in form.text
    assert style.status == 200
    assert style.headers["Content-Type"].startswith("text/css")


def test_logout_ends_the_session(fleet: Registry) -> None:
    async def script(browser: Browser) -> tuple[Reply, Reply]:
        await browser.login(api_token(fleet))
        old = browser.cookie
        out = await browser.send("POST", "/ui/logout", {"csrf": await browser.csrf()})
        browser.cookie = old  # a copy kept of the old cookie is worth nothing now
        return out, await browser.send("GET", "/ui/api/fleet?cursor=0")

    out, after = browse(context(fleet), script)
    assert out.status == 303
    assert out.headers["Location"] == "/ui/login"
    assert after.status == 401


def test_every_reply_forbids_framing_caching_and_inline_script(fleet: Registry) -> None:
    async def script(browser: Browser) -> list[Reply]:
        replies = [await browser.send("GET", "/ui/login")]
        await browser.login(api_token(fleet))
        for path in ("/ui/", f"/ui/hosts/{MAC}", "/ui/pools", "/ui/api/fleet?cursor=0"):
            replies.append(await browser.send("GET", path))
        return replies

    for reply in browse(context(fleet), script):
        assert reply.status == 200
        for name, value in SECURITY_HEADERS.items():
            assert reply.headers[name] == value
        policy = reply.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy
        assert "<script>" not in reply.text  # only <script src=...> of our own


# -- CSRF and actions ---------------------------------------------------------------------


def test_an_action_needs_the_sessions_csrf_token_and_our_origin(fleet: Registry) -> None:
    fleet.record_event(MAC, State.SIGNALLED)
    path = f"/ui/hosts/{MAC}/rearm"

    async def script(browser: Browser) -> list[Reply]:
        await browser.login(api_token(fleet))
        csrf = await browser.csrf()
        return [
            await browser.send("POST", path, {}),
            await browser.send("POST", path, {"csrf": csrf[:-1] + "x"}),
            await browser.send("POST", path, {"csrf": csrf}, Origin="http://evil.example"),
            await browser.send("GET", path),  # the confirmation step changes nothing
        ]

    replies = browse(context(fleet), script)
    assert [r.status for r in replies] == [403, 403, 403, 200]
    assert "CSRF" in replies[0].text
    assert 'action="/ui/hosts/52:54:00:12:34:56/rearm"' in replies[3].text
    assert fleet.get_host(MAC).state is State.SIGNALLED  # type: ignore[union-attr]


def test_a_confirmed_rearm_is_the_registrys_rearm(fleet: Registry) -> None:
    fleet.record_event(MAC, State.SIGNALLED)
    before = fleet.get_host(MAC)

    async def script(browser: Browser) -> tuple[Reply, Reply]:
        await browser.login(api_token(fleet))
        done = await browser.send("POST", f"/ui/hosts/{MAC}/rearm", {"csrf": await browser.csrf()})
        return done, await browser.send("GET", done.headers["Location"])

    done, page = browse(context(fleet), script)
    assert done.status == 303
    assert done.headers["Location"] == f"/ui/hosts/{MAC}?done=rearm"
    assert "Rearmed" in page.text
    after = fleet.get_host(MAC)
    assert after is not None
    assert before is not None
    assert after.state is State.PENDING
    assert after.token != before.token
    assert "rearmed: new install work" in [e.message for e in fleet.events(MAC)]


def test_an_upgrade_without_an_agent_is_one_sentence_and_changes_nothing(fleet: Registry) -> None:
    async def script(browser: Browser) -> list[Reply]:
        await browser.login(api_token(fleet))
        csrf = await browser.csrf()
        return [
            await browser.send("POST", f"/ui/hosts/{MAC}/upgrade", {"csrf": csrf}),
            await browser.send("POST", f"/ui/hosts/{MAC}/restore", {"csrf": csrf}),
            await browser.send("POST", f"/ui/hosts/{MAC}/explode", {"csrf": csrf}),
            await browser.send("GET", "/ui/hosts/52:54:00:99:99:99"),
            await browser.send("GET", "/ui/hosts/not-a-mac"),
        ]

    replies = browse(context(fleet), script)
    assert [r.status for r in replies] == [400, 400, 404, 404, 400]

    async def host_page(browser: Browser) -> Reply:
        await browser.login(api_token(fleet))
        return await browser.send("GET", f"/ui/hosts/{MAC}")

    page = browse(context(fleet), host_page)
    assert page.text.count("needs the host's agent") == 2  # upgrade and restore, no links
    assert f'href="/ui/hosts/{MAC}/upgrade"' not in page.text
    assert f'href="/ui/hosts/{MAC}/rearm"' in page.text
    assert "needs a version" in replies[0].text
    assert "has no agent to restore it" in replies[1].text
    assert "Traceback" not in "".join(r.text for r in replies)
    assert fleet.get_host(MAC).work.value == "install"  # type: ignore[union-attr]


def test_a_form_body_is_bounded(fleet: Registry) -> None:
    async def script(browser: Browser) -> Reply:
        await browser.login(api_token(fleet))
        return await browser.send("POST", f"/ui/hosts/{MAC}/rearm", {"csrf": "x" * 20_000})

    assert browse(context(fleet), script).status == 413


# -- what hosts send, shown as text ---------------------------------------------------------


def test_markup_from_hosts_is_shown_as_text(fleet: Registry) -> None:
    fleet.record_event(MAC, State.SIGNALLED)
    fleet.record_event(MAC, State.INSTALLING, step=MARKUP, message=f"copied {MARKUP}")
    # A name no `host add` accepts, as a database edited by hand or an older release has it.
    facts = json.dumps({"vendor": MARKUP, MARKUP: "x"})
    execute(Path(fleet.path).parent,
            update(hosts).where(hosts.c.mac == MAC).values(name=MARKUP, facts=facts))  # fmt: skip

    async def script(browser: Browser) -> list[Reply]:
        await browser.login(api_token(fleet))
        return [
            await browser.send("GET", "/ui/"),
            await browser.send("GET", f"/ui/hosts/{MAC}"),
            await browser.send("GET", f"/ui/hosts/{MAC}/rearm"),
            await browser.send("GET", "/ui/api/fleet?cursor=0"),
        ]

    fleet_page, host_page, confirm, polled = browse(context(fleet), script)
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for page in (fleet_page, host_page, confirm):
        assert MARKUP not in page.text
        assert escaped in page.text
    assert f"copied {escaped}" in host_page.text  # the event's message
    assert host_page.text.count(escaped) >= 5  # name, step, message, fact key and value
    row = next(r for r in polled.json()["rows"] if r["mac"] == MAC)
    assert row["name"] == MARKUP  # JSON for the script, which sets it as text only
    assert polled.headers["Content-Type"].startswith("application/json")


def test_no_secret_is_shown(fleet: Registry) -> None:
    fleet.update_host(MAC, variables={"root_password": "hunter2-secret", "disk": "vda"})
    host = fleet.get_host(MAC)
    assert host is not None
    assert host.token is not None

    async def script(browser: Browser) -> Reply:
        await browser.login(api_token(fleet))
        return await browser.send("GET", f"/ui/hosts/{MAC}")

    page = browse(context(fleet), script)
    assert host.token not in page.text
    assert "hunter2-secret" not in page.text
    assert dict(host.variables)["root_password"] not in page.text  # nor its hash
    assert "vda" in page.text


def test_the_host_page_shows_its_segment_server(fleet: Registry) -> None:
    async def script(browser: Browser) -> list[Reply]:
        await browser.login(api_token(fleet))
        before = await browser.send("GET", f"/ui/hosts/{MAC}")
        fleet.pin_segment(MAC, "rack-3", 1.0)
        return [before, await browser.send("GET", f"/ui/hosts/{MAC}")]

    before, after = browse(context(fleet), script)
    assert (
        "<dt>Segment server</dt><dd>not known yet (power calls run on the server asked)</dd>"
        in before.text
    )
    assert "<dt>Segment server</dt><dd>rack-3 (pinned)</dd>" in after.text


# -- the poll -------------------------------------------------------------------------------


def test_the_poll_sends_only_hosts_changed_since_its_cursor(fleet: Registry) -> None:
    everything = poll(fleet, 0, Filters())
    assert everything.full
    assert {r.mac for r in everything.rows} == {MAC, OTHER}
    cursor = everything.cursor
    fleet.record_event(MAC, State.SIGNALLED)
    fleet.record_event(MAC, State.INSTALLING, step="copy", progress=0.4)
    changed = poll(fleet, cursor, Filters(), overlap=0)
    assert not changed.full
    assert [r.mac for r in changed.rows] == [MAC]
    (row,) = changed.rows
    assert (row.state, row.step, row.progress, row.percent) == ("installing", "copy", 40.0, "40 %")
    assert changed.cursor == cursor + 2
    assert poll(fleet, changed.cursor, Filters(), overlap=0).rows == []  # nothing new
    again = poll(fleet, changed.cursor, Filters())  # the overlap: the last ids read again
    assert {r.mac for r in again.rows} == {MAC, OTHER}
    assert again.cursor == changed.cursor


def test_hosts_whose_events_left_the_overlap_are_not_sent_again(fleet: Registry) -> None:
    fleet.record_event(OTHER, State.SIGNALLED)
    for _ in range(OVERLAP):
        fleet.record_event(MAC, State.SIGNALLED)  # a repeated state is an event too
    newest = fleet.newest_event_id()
    assert [r.mac for r in poll(fleet, newest, Filters()).rows] == [MAC]


def test_the_poll_reads_an_overlap_below_its_cursor() -> None:
    assert poll_after(1000) == 1000 - OVERLAP
    assert poll_after(10) == 0
    assert poll_after(0) == 0


def test_an_event_committed_late_below_the_cursor_is_still_seen(fleet: Registry) -> None:
    """On PostgreSQL a smaller id may commit after a larger one was read: the overlap."""
    fleet.record_event(MAC, State.SIGNALLED)
    fleet.record_event(OTHER, State.SIGNALLED)
    newest = fleet.newest_event_id()
    # The page saw the cursor at `newest`, but MAC's latest event (just below it) had
    # not been read yet when it did.
    changed = poll(fleet, newest, Filters())
    assert {r.mac for r in changed.rows} == {MAC, OTHER}


def test_the_poll_keeps_to_the_filters_and_names_rows_to_drop(fleet: Registry) -> None:
    cursor = fleet.newest_event_id()
    fleet.record_event(MAC, State.SIGNALLED)
    fleet.record_event(MAC, State.FAILED, message="disk gone")
    pending = poll(fleet, cursor, Filters(state="pending"), overlap=0)
    assert pending.rows == []
    assert pending.removed == [MAC]
    failed = poll(fleet, cursor, Filters(state="failed"), overlap=0)
    assert [r.mac for r in failed.rows] == [MAC]
    one = poll(fleet, cursor, Filters(mac=OTHER), overlap=0)
    assert one.rows == []
    assert one.removed == []


def test_the_fleet_puts_what_needs_attention_first(fleet: Registry) -> None:
    third = "52:54:00:12:34:58"
    fleet.add_host(third, name="a-first-by-name")
    fleet.record_event(OTHER, State.SIGNALLED)
    fleet.record_event(OTHER, State.FAILED)
    fleet.record_event(MAC, State.SIGNALLED)
    rows = poll(fleet, 0, Filters()).rows
    assert [r.mac for r in rows] == [OTHER, MAC, third]  # failed, on its way, pending


def test_the_fleet_comes_in_pages_with_counts_of_every_state(
    fleet: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ui_view, "PAGE_ROWS", 2)
    third = "52:54:00:12:34:58"
    fleet.add_host(third, name="web-3")
    fleet.record_event(third, State.SIGNALLED)
    fleet.record_event(third, State.FAILED)
    first = ui_view.fleet(fleet, Filters())
    assert [r.mac for r in first.rows] == [third, MAC]  # failed first, then by name
    assert (first.page, first.pages, first.kept, first.total) == (1, 2, 3, 3)
    assert (first.first, first.last) == (1, 2)
    assert list(first.states.items()) == [("failed", 1), ("pending", 2)]  # attention order
    second = ui_view.fleet(fleet, Filters(page=2))
    assert [r.mac for r in second.rows] == [OTHER]
    assert (second.first, second.last) == (3, 3)
    past = ui_view.fleet(fleet, Filters(page=9))  # past the last page: the last one
    assert past.page == 2
    assert [r.mac for r in past.rows] == [OTHER]
    assert [r.mac for r in poll(fleet, 0, Filters(page=2)).rows] == [OTHER]  # a full poll
    pending = ui_view.fleet(fleet, Filters(state="pending"))
    assert (pending.kept, pending.total, pending.pages) == (2, 3, 1)


def test_the_fleet_page_links_its_pages_and_states(
    fleet: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ui_view, "PAGE_ROWS", 1)
    fleet.add_host("52:54:00:12:34:58", name="web-3", profile="default")

    async def script(browser: Browser) -> list[Reply]:
        await browser.login(api_token(fleet))
        return [
            await browser.send("GET", "/ui/?page=2&profile=default"),
            await browser.send("GET", "/ui/?page=0"),
            await browser.send("GET", "/ui/api/fleet?cursor=0&page=x"),
            await browser.send("GET", "/ui/?rows=1001"),
            await browser.send("GET", "/ui/?rows=1&page=2"),
        ]

    page, zero, bad, many, small = browse(context(fleet), script)
    assert page.status == 200
    assert "Hosts 2 to 2 of 3" in page.text
    assert "Page 2 of 3" in page.text
    assert 'href="/ui/?profile=default&amp;page=3"' in page.text  # next, and last
    assert 'href="/ui/?profile=default"' in page.text  # the first page, no page=1
    assert 'data-page="2"' in page.text
    assert 'href="/ui/?state=pending&amp;profile=default"' in page.text
    assert page.text.count('<tr data-mac="52:54:00:') == 1
    assert (zero.status, bad.status) == (400, 400)
    assert "page &#39;0&#39;: expected a page number" in zero.text
    assert "page 'x'" in bad.json()["error"]
    assert many.status == 400
    assert "rows &#39;1001&#39;: expected hosts on a page, 1 to 1000" in many.text
    assert small.status == 200
    assert "Hosts 2 to 2 of 3" in small.text
    assert 'data-page-rows="1"' in small.text
    assert 'href="/ui/?rows=1"' in small.text  # its first page keeps its size


def test_a_bad_cursor_or_filter_is_a_400(fleet: Registry) -> None:
    async def script(browser: Browser) -> list[Reply]:
        await browser.login(api_token(fleet))
        return [
            await browser.send("GET", "/ui/api/fleet?cursor=-1"),
            await browser.send("GET", "/ui/api/fleet?cursor=1e9"),
            await browser.send("GET", "/ui/api/fleet?cursor=0&state=melted"),
            await browser.send("GET", "/ui/?state=melted"),
        ]

    replies = browse(context(fleet), script)
    assert [r.status for r in replies] == [400, 400, 400, 400]
    assert "cursor" in replies[0].json()["error"]
    assert "filter state" in replies[3].text


def test_the_poll_over_http(fleet: Registry) -> None:
    async def script(browser: Browser) -> tuple[Any, Any]:
        await browser.login(api_token(fleet))
        first = (await browser.send("GET", "/ui/api/fleet?cursor=0")).json()
        fleet.record_event(OTHER, State.SIGNALLED)
        cursor = first["cursor"]
        return first, (await browser.send("GET", f"/ui/api/fleet?cursor={cursor}")).json()

    first, second = browse(context(fleet), script)
    assert first["full"] is True
    assert {r["mac"] for r in first["rows"]} == {MAC, OTHER}
    assert second["full"] is False
    assert {r["mac"] for r in second["rows"]} == {MAC, OTHER}  # OTHER's, and the overlap
    assert next(r for r in second["rows"] if r["mac"] == OTHER)["state"] == "signalled"
    assert second["cursor"] > first["cursor"]


# -- log bundles, pools, TLS ----------------------------------------------------------------


def test_a_hosts_log_bundles_are_listed_and_downloaded(fleet: Registry) -> None:
    ctx = context(fleet)
    directory = log_dir(ctx.shared, MAC)
    directory.mkdir(parents=True)
    name = "20261207T101010.000001Z.tar.bz2"
    (directory / name).write_bytes(b"BZh9 bundle")

    async def script(browser: Browser) -> list[Reply]:
        await browser.login(api_token(fleet))
        return [
            await browser.send("GET", f"/ui/hosts/{MAC}"),
            await browser.send("GET", f"/ui/hosts/{MAC}/logs/{name}"),
            await browser.send("GET", f"/ui/hosts/{MAC}/logs/..%2Fapi-token"),
            await browser.send("GET", f"/ui/hosts/{OTHER}/logs/{name}"),
        ]

    page, bundle, escape, other = browse(ctx, script)
    assert f'href="/ui/hosts/{MAC}/logs/{name}"' in page.text
    assert bundle.status == 200
    assert bundle.text == "BZh9 bundle"
    assert "attachment" in bundle.headers["Content-Disposition"]
    assert escape.status == 404
    assert other.status == 404


def test_the_pools_page_shows_each_pool_and_its_latest_job(fleet: Registry) -> None:
    fleet.create_pool("rack-1", MAC, [OTHER])

    async def script(browser: Browser) -> Reply:
        await browser.login(api_token(fleet))
        return await browser.send("GET", "/ui/pools")

    page = browse(context(fleet), script)
    assert page.status == 200
    assert "rack-1" in page.text
    assert page.text.index("web-1") < page.text.index("web-2")  # the master first
    assert "No upgrade job yet" in page.text


def test_with_tls_on_the_plain_port_names_the_https_console(fleet: Registry) -> None:
    ctx = context(fleet, operator_base="https://192.0.2.1:8443")

    async def script(browser: Browser) -> list[Reply]:
        return [
            await browser.send("GET", "/ui/login"),
            await browser.send("POST", "/ui/login", {"token": api_token(fleet)}),
            await browser.send("GET", "/ui/"),
            await browser.send("GET", "/ui/api/fleet?cursor=0"),
        ]

    for reply in browse(ctx, script):
        assert reply.status == 403
        assert "https://192.0.2.1:8443/ui/" in reply.text
        assert not reply.cookies


def test_a_session_is_per_server_process(fleet: Registry) -> None:
    """A cookie of one app (process) means nothing to another: sessions are in memory."""
    holder: dict[str, str | None] = {}

    async def first(browser: Browser) -> None:
        await browser.login(api_token(fleet))
        holder["cookie"] = browser.cookie

    async def second(browser: Browser) -> Reply:
        browser.cookie = holder["cookie"]
        return await browser.send("GET", "/ui/api/fleet?cursor=0")

    browse(context(fleet), first)
    assert browse(context(fleet), second).status == 401


def test_rotating_the_api_token_ends_every_session(fleet: Registry) -> None:
    async def script(browser: Browser) -> tuple[Reply, Reply, Reply]:
        await browser.login(api_token(fleet))
        before = await browser.send("GET", "/ui/api/fleet?cursor=0")
        fleet.new_api_token()  # as `server token rotate DIR` does, from any process
        after = await browser.send("GET", "/ui/api/fleet?cursor=0")
        page = await browser.send("GET", "/ui/")
        return before, after, page

    before, after, page = browse(context(fleet), script)
    assert before.status == 200
    assert after.status == 401
    assert page.status == 303


def _running(reg: Registry, *macs: str) -> None:
    """``macs`` installed and running their system (their agents hold a credential)."""
    for mac in macs:
        reg.record_event(mac, State.INSTALLED)
        reg.record_event(mac, State.RUNNING, facts={"payload_version": "0.1.0"})


def test_a_confirmed_upgrade_and_restore_assign_the_agents_work(fleet: Registry) -> None:
    fleet.add_repository("0.2.0", "/srv/repo-0.2.0")
    _running(fleet, MAC, OTHER)

    async def script(browser: Browser) -> list[Reply]:
        await browser.login(api_token(fleet))
        csrf = await browser.csrf()
        confirm = await browser.send("GET", f"/ui/hosts/{MAC}/upgrade")
        upgrade = {"csrf": csrf, "version": "0.2.0", "reboot": "manual"}
        return [
            confirm,
            await browser.send("POST", f"/ui/hosts/{MAC}/upgrade", upgrade),
            # The token in a header instead of the form, as a script would send it.
            await browser.send("POST", f"/ui/hosts/{OTHER}/restore", {}, **{"X-CSRF-Token": csrf}),
        ]

    confirm, upgrade, restore = browse(context(fleet), script)
    assert "<option>0.2.0</option>" in confirm.text
    assert "needs the host's agent" not in confirm.text
    assert [upgrade.status, restore.status] == [303, 303]
    upgraded, restored = fleet.get_host(MAC), fleet.get_host(OTHER)
    assert upgraded is not None
    assert restored is not None
    assert (upgraded.work, upgraded.assigned_version) == (Work.UPGRADE, "0.2.0")
    assert upgraded.reboot_policy is RebootPolicy.MANUAL
    assert restored.work is Work.RESTORE
    assert not upgraded.netboot_armed  # agent work never arms netboot


def test_without_origin_the_referer_must_be_ours(fleet: Registry) -> None:
    path = f"/ui/hosts/{MAC}/rearm"

    async def script(browser: Browser) -> list[Reply]:
        await browser.login(api_token(fleet))
        csrf = await browser.csrf()
        ours = f"{browser.origin}/ui/hosts/{MAC}/rearm"
        return [
            await browser.send("POST", path, {"csrf": csrf}, Origin="", Referer="http://x/ui/"),
            await browser.send("POST", path, {"csrf": csrf}, Origin="", Referer=ours),
        ]

    replies = browse(context(fleet), script)
    assert [r.status for r in replies] == [403, 303]


def test_the_fleet_filters_show_only_their_hosts(fleet: Registry) -> None:
    fleet.create_pool("rack-1", MAC, [])
    fleet.record_event(OTHER, State.SIGNALLED)

    async def script(browser: Browser) -> list[Reply]:
        await browser.login(api_token(fleet))
        return [
            await browser.send("GET", "/ui/?pool=rack-1"),
            await browser.send("GET", "/ui/?state=signalled"),
            await browser.send("GET", "/ui/?profile=nothing-uses-it"),
        ]

    pool, signalled, nothing = browse(context(fleet), script)
    assert f'data-mac="{MAC}"' in pool.text
    assert f'data-mac="{OTHER}"' not in pool.text
    assert 'data-poll="/ui/api/fleet?pool=rack-1"' in pool.text  # the poll keeps to it
    assert f'data-mac="{OTHER}"' in signalled.text
    assert f'data-mac="{MAC}"' not in signalled.text
    assert "<option selected>signalled</option>" in signalled.text
    assert 'data-mac="52' not in nothing.text


def test_the_pools_page_shows_a_rolling_upgrade_host_by_host(fleet: Registry) -> None:
    third = "52:54:00:12:34:58"
    fleet.add_host(third, name="web-3")
    fleet.add_repository("0.2.0", "/srv/repo-0.2.0")
    _running(fleet, MAC, OTHER, third)
    fleet.create_pool("rack-1", MAC, [OTHER, third])
    request = PoolUpgradeRequest(pool="rack-1", version="0.2.0", poll=5.0, timeout=600.0)
    job = start_pool_upgrade(fleet, request, "alice")

    async def script(browser: Browser) -> Reply:
        await browser.login(api_token(fleet))
        return await browser.send("GET", "/ui/pools")

    page = browse(context(fleet), script)
    assert f"Job {job.id}: pool-upgrade" in page.text
    assert "queued" in page.text
    assert "alice" in page.text
    found = re.findall(
        r'<li class="job-([\w-]+)"><a href="/ui/hosts/([0-9a-f:]+)">([^<]+)</a>', page.text
    )
    assert found == [
        ("waiting", MAC, "web-1"),
        ("waiting", OTHER, "web-2"),
        ("waiting", third, "web-3"),
    ]


def test_the_pages_own_polls_are_logged_only_when_they_fail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A console left open polls every two seconds: not a request-log line each time."""
    from types import SimpleNamespace

    from pxe_server.http import _AccessLog

    logger = logging.getLogger("netinstall.test-access")
    access = _AccessLog(logger, "")
    caplog.set_level(logging.INFO, logger="netinstall.test-access")

    def request(path: str) -> SimpleNamespace:
        return SimpleNamespace(remote="192.0.2.7", method="GET", path=path, raw_path=path)

    for path, status in (("/ui/api/fleet", 200), ("/ui/api/fleet", 401), ("/ui/", 200)):
        access.log(request(path), SimpleNamespace(status=status, body_length=10), 0.001)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["192.0.2.7 GET /ui/api/fleet 401 10 1", "192.0.2.7 GET /ui/ 200 10 1"]
