"""The milestones the server hears (docs/protocol.md, "Milestones"): "answer file
fetched", recorded by the server once per install, and first boot's ``first-boot`` and
``sr-created`` (state ``installed`` with that step), which annotate an installed host and
move no other. Driven through the HTTP app in-process (aiohttp's test client), as an
installer and a first boot send them, over a real registry in a temporary directory
(SQLite here; tests/integration/test_milestones_postgresql.py runs them on PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pxe_server.http import make_app
from pxe_server.http_files import Context
from pxe_server.model import REBOOT_REQUIRED, ServerSettings, State
from pxe_server.registry import ANSWER_FILE_FETCHED, Registry, default_profile

MAC = "52:54:00:12:34:56"
PATH = MAC.replace(":", "%3A")
KEY = "milestone-test-key-0123456789abcdefghij"
OTHER_KEY = "milestone-test-key-9876543210zyxwvutsrq"


@pytest.fixture
def ctx(tmp_path: Path, registry_dir: Path) -> Iterator[Context]:
    (tmp_path / "0.1.0").mkdir()
    with Registry.open(registry_dir) as registry:
        registry.add_profile(default_profile())
        registry.set_setting("payload_version", "0.1.0")
        registry.add_repository("0.1.0", str(tmp_path / "0.1.0"))
        registry.add_host(MAC)
        yield Context(
            registry=registry,
            registry_dir=registry_dir,
            settings=ServerSettings(http_base="http://192.0.2.1:8080", tftp_address="192.0.2.1"),
            netboot=None,
            repo=tmp_path / "0.1.0",
        )


def send(ctx: Context, calls: list[tuple[str, str, object, str]]) -> list[int]:
    """Each (method, path, JSON body or None, bearer secret) in turn; their statuses."""

    async def run() -> list[int]:
        statuses = []
        async with TestClient(TestServer(make_app(ctx))) as client:
            for method, path, body, secret in calls:
                headers = {"Authorization": f"Bearer {secret}"}
                reply = await client.request(method, path, json=body, headers=headers)
                await reply.read()
                statuses.append(reply.status)
        return statuses

    return asyncio.run(run())


def boot(ctx: Context, key: str = KEY) -> None:
    """A boot of the host: its config fetched (the token handed out), its key enrolled."""
    host = ctx.registry.mark_signalled(MAC)
    assert host is not None
    assert host.token is not None
    assert send(ctx, [("POST", f"/api/v1/hosts/{PATH}/enrol", {"key": key}, host.token)]) == [200]


def answer_file(key: str = KEY) -> tuple[str, str, object, str]:
    return ("GET", f"/answerfile/{PATH}", None, key)


def event(key: str = KEY, **body: Any) -> tuple[str, str, object, str]:
    return ("POST", f"/api/v1/hosts/{PATH}/events", body, key)


def timeline(ctx: Context) -> list[tuple[str, str | None]]:
    """The host's events as (state, step), oldest first, enrolments left out."""
    return [
        (e.state.value, e.step)
        for e in ctx.registry.events(MAC)
        if not (e.message or "").startswith("installer enrolled")
    ]


def test_an_install_is_heard_from_boot_config_to_running_in_order(ctx: Context) -> None:
    boot(ctx)
    statuses = send(
        ctx,
        [
            answer_file(),
            answer_file(),  # the installer fetching it again: no second event
            event(state="installing", step="partition", progress=0.1),
            event(state="installed"),
            event(state="installed", step="first-boot", message="first boot started"),
            event(state="installed", step="sr-created", message="local SR lvm u is ready"),
            event(state="running", facts={"payload_version": "0.1.0"}),
        ],
    )
    assert statuses == [200] * 7
    assert timeline(ctx) == [
        ("pending", None),  # added to the registry
        ("signalled", None),
        ("signalled", "answer-file"),
        ("installing", "partition"),
        ("installed", None),
        ("installed", "first-boot"),
        ("installed", "sr-created"),
        ("running", None),
    ]
    fetched = [e for e in ctx.registry.events(MAC) if e.step == "answer-file"]
    assert [e.message for e in fetched] == [ANSWER_FILE_FETCHED]
    host = ctx.registry.get_host(MAC)
    assert host is not None
    assert (host.state, host.netboot_armed) == (State.RUNNING, False)


def test_a_new_boot_of_the_same_work_fetching_again_is_heard_again(ctx: Context) -> None:
    boot(ctx)
    assert send(ctx, [answer_file()]) == [200]
    boot(ctx, OTHER_KEY)  # a power cut: the boot config again, a new key replaces the old
    assert send(ctx, [answer_file(OTHER_KEY), answer_file(OTHER_KEY)]) == [200, 200]
    steps = [step for _, step in timeline(ctx) if step == "answer-file"]
    assert len(steps) == 2
    assert send(ctx, [answer_file(KEY)]) == [401]  # the retired key gets nothing, adds nothing
    assert len([e for e in ctx.registry.events(MAC) if e.step == "answer-file"]) == 2


def test_first_boot_milestones_keep_an_installed_host_installed_and_disarmed(
    ctx: Context,
) -> None:
    boot(ctx)
    send(ctx, [event(state="installed")])
    assert send(ctx, [event(state="installed", step="first-boot")]) == [200]
    host = ctx.registry.get_host(MAC)
    assert host is not None
    assert (host.state, host.step, host.netboot_armed) == (State.INSTALLED, "first-boot", False)
    assert host.token is not None  # the token and key live on until running
    assert host.install_key_hash is not None


@pytest.mark.parametrize("before", ["installing", "running", "failed"])
def test_first_boot_milestones_that_do_not_apply_are_ignored(ctx: Context, before: str) -> None:
    boot(ctx)
    calls = {
        "installing": [event(state="installing", step="partition")],
        "running": [event(state="installed"), event(state="running")],
        "failed": [event(state="failed", message="disk on fire")],
    }[before]
    send(ctx, calls)
    seen = ctx.registry.get_host(MAC)
    count = len(ctx.registry.events(MAC))
    statuses = send(
        ctx,
        [event(state="installed", step="first-boot"), event(state="installed", step="sr-created")],
    )
    assert statuses == [200, 200]
    after = ctx.registry.get_host(MAC)
    assert after is not None
    assert seen is not None
    assert after == seen  # nothing moved, nothing armed or disarmed
    assert len(ctx.registry.events(MAC)) == count


def test_a_host_awaiting_its_reboot_ignores_first_boot_milestones(ctx: Context) -> None:
    boot(ctx)
    registry = ctx.registry
    host = registry.get_host(MAC)
    assert host is not None
    # As a check-in of an agent with manual reboot leaves it (checkin.apply_checkin).
    registry.record_event(MAC, State.INSTALLED, step=REBOOT_REQUIRED)
    assert send(ctx, [event(state="installed", step="first-boot")]) == [200]
    after = registry.get_host(MAC)
    assert after is not None
    assert (after.state, after.step) == (State.INSTALLED, REBOOT_REQUIRED)
