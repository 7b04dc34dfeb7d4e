"""Two servers on one PostgreSQL registry (two ``Registry`` objects, each with its own
connections and render cache) racing for one host: boot once holds (once an
``installed`` report returned, no boot config fetched after it is the install config),
concurrent reports never lose a state or an event, and a host's events keep the order
its reports were applied in."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxe_server.admission import UnknownGate, UnknownLimits
from pxe_server.http import boot_config
from pxe_server.model import ServerSettings, State
from pxe_server.registry import Registry, TransitionRefused, default_profile
from pxe_server.store.engine import database_url, record_url

MAC = "52:54:00:12:34:56"
PATH = "pxelinux.cfg/01-52-54-00-12-34-56"
SETTINGS = ServerSettings(http_base="http://192.168.77.1:8080", tftp_address="192.168.77.1")
FETCHERS = 6  # threads per server fetching the boot config
ROUNDS = 5  # times the host is rearmed and installed again
REPORTS = 40  # reports per reporting thread


@pytest.fixture
def servers(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Registry, Registry]]:
    record_url(tmp_path, database_url(postgres_url))
    with Registry.open(tmp_path) as first, Registry.open(tmp_path) as second:
        first.add_profile(default_profile())
        yield first, second


def test_no_fetch_after_the_installed_report_gets_the_install_config(
    servers: tuple[Registry, Registry],
) -> None:
    first, second = servers
    first.add_host(MAC)
    gate = UnknownGate(UnknownLimits())
    for round_ in range(ROUNDS):
        stop = threading.Event()
        fetched: list[tuple[float, float, bool]] = []  # start, end, install config?
        errors: list[BaseException] = []

        def fetch(
            registry: Registry,
            stop: threading.Event = stop,
            fetched: list[tuple[float, float, bool]] = fetched,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                while not stop.is_set():
                    began = time.monotonic()
                    text = boot_config(registry, PATH, SETTINGS, gate)
                    assert text is not None
                    fetched.append((began, time.monotonic(), "netinstall.token=" in text))
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                errors.append(exc)

        threads = [
            threading.Thread(target=fetch, args=(registry,))
            for registry in (first, second)
            for _ in range(FETCHERS)
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.3)  # fetches of the armed host going on through both servers
        reporter = (first, second)[round_ % 2]
        reporter.record_event(MAC, State.INSTALLING)
        reporter.record_event(MAC, State.INSTALLED)
        done = time.monotonic()  # the installed report has returned: committed
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        before = [f for f in fetched if f[1] < done]
        after = [f for f in fetched if f[0] > done]
        assert any(install for _, _, install in before), "no install config before"
        assert after, "no fetch after the report"
        assert not any(install for _, _, install in after), f"round {round_}: boot twice"
        host = second.get_host(MAC)
        assert host is not None
        assert (host.state, host.netboot_armed) == (State.INSTALLED, False)
        (second, first)[round_ % 2].rearm(MAC)


def test_concurrent_reports_through_two_servers_lose_nothing_and_keep_their_order(
    servers: tuple[Registry, Registry],
) -> None:
    first, second = servers
    first.add_host(MAC)
    first.record_event(MAC, State.INSTALLING)
    errors: list[BaseException] = []
    applied: dict[str, list[str]] = {"a": [], "b": []}

    def report(registry: Registry, who: str) -> None:
        try:
            for index in range(REPORTS):
                step = f"{who}-{index}"
                host, _ = registry.record_event(MAC, State.INSTALLING, step=step)
                applied[who].append(step)
                assert host.step == step
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    threads = [
        threading.Thread(target=report, args=(first, "a")),
        threading.Thread(target=report, args=(second, "b")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    events = first.events(MAC)
    steps = [e.step for e in events if e.step is not None]
    assert len(steps) == 2 * REPORTS  # not one lost
    for who in ("a", "b"):  # each server's reports in the order they were made
        assert [s for s in steps if s.startswith(f"{who}-")] == applied[who]
    times = [e.time for e in events]
    assert times == sorted(times)  # stored in the order they were applied
    host = second.get_host(MAC)
    assert host is not None
    assert host.step == steps[-1]  # the row and the last event agree

    # A state reported on one server while the other reports progress: never lost,
    # never undone (progress after installed is refused, not applied).
    refused: list[str] = []
    going = threading.Event()

    def progress() -> None:
        for index in range(REPORTS * 5):
            try:
                second.record_event(MAC, State.INSTALLING, step=f"late-{index}")
            except TransitionRefused:
                refused.append(str(index))
            if index == 3:
                going.set()

    late = threading.Thread(target=progress)
    late.start()
    assert going.wait(30)
    installed, _ = first.record_event(MAC, State.INSTALLED)
    late.join(timeout=60)
    assert installed.state is State.INSTALLED
    host = first.get_host(MAC)
    assert host is not None
    assert host.state is State.INSTALLED
    tail = [e.state for e in first.events(MAC)]
    assert tail.count(State.INSTALLED) == 1
    assert tail[-1] is State.INSTALLED  # nothing applied after it
    assert refused  # the progress after it was refused, not applied
    # added, installing, both servers' reports, the late ones applied, installed
    assert len(tail) == 3 + 2 * REPORTS + REPORTS * 5 - len(refused)
