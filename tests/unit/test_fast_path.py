"""The fast request path (README "Fast request path"): host revisions, the render cache,
queued progress events, routine check-ins, one-query host listings, compiled templates."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

import jinja2
import pytest

from pxe_server import render
from pxe_server.admission import UnknownGate, UnknownLimits
from pxe_server.http import RENDER_ATTEMPTS, boot_config
from pxe_server.model import UNRENDERED, Host, ServerSettings, State, rendered_view
from pxe_server.registry import (
    NOW_CHECKPOINT,
    Registry,
    TransitionRefused,
    WouldWait,
    default_profile,
)
from pxe_server.registry_progress import PROGRESS_BATCH, PROGRESS_DELAY, Progress, ProgressQueue
from pxe_server.render_cache import CACHE_ENTRIES, RenderCache
from tests.registry_engines import sqlite_only, statements

MAC = "52:54:00:12:34:56"
OTHER = "52:54:00:ab:cd:ef"
SETTINGS = ServerSettings(http_base="http://192.168.77.1:8080", tftp_address="192.168.77.1")
PATH = "pxelinux.cfg/01-52-54-00-12-34-56"


def revision(reg: Registry, mac: str = MAC) -> int:
    host = reg.get_host(mac)
    assert host is not None
    return host.revision


def config(reg: Registry) -> str:
    text = boot_config(reg, PATH, SETTINGS, UnknownGate(UnknownLimits()))
    assert text is not None
    return text


# -- revisions ----------------------------------------------------------------------


def test_every_field_but_the_unrendered_ones_renews_the_revision() -> None:
    host = Host(MAC)
    assert rendered_view(replace(host, step="download", progress=0.5)) == rendered_view(host)
    assert rendered_view(replace(host, state=State.INSTALLED)) != rendered_view(host)
    assert rendered_view(replace(host, name="other")) != rendered_view(host)
    assert "state" not in UNRENDERED
    assert "token" not in UNRENDERED


def test_writes_renew_the_revision_only_when_a_render_could_change(reg: Registry) -> None:
    reg.add_host(MAC, variables={"root_password": "secret"})
    first = revision(reg)
    reg.record_event(MAC, State.INSTALLING, step="plan")
    installing = revision(reg)
    assert installing != first  # the state is rendered (the local config's reason)
    reg.record_event(MAC, State.INSTALLING, step="download", progress=0.5)
    assert revision(reg) == installing  # progress is not
    reg.update_host(MAC, name="xenhost01")
    assert revision(reg) != installing


def test_a_profile_setting_or_repository_change_renews_the_hosts_that_read_it(
    reg: Registry, tmp_path: Path
) -> None:
    reg.add_profile(replace(default_profile(), name="other"))
    reg.add_host(MAC)
    reg.add_host(OTHER, profile="other")
    before = revision(reg), revision(reg, OTHER)
    reg.update_profile(replace(default_profile(), xen_args="dom0_mem=1024M"))
    assert revision(reg) != before[0]
    assert revision(reg, OTHER) == before[1]
    for change in (
        lambda: reg.set_setting("payload_version", "2.0"),
        lambda: reg.add_repository("2.0", str(tmp_path)),
    ):
        before = revision(reg), revision(reg, OTHER)
        change()
        assert revision(reg) != before[0]
        assert revision(reg, OTHER) != before[1]


def test_a_host_removed_and_added_again_never_gets_an_old_revision(reg: Registry) -> None:
    seen = {reg.add_host(MAC).revision}
    for _ in range(3):
        reg.delete_host(MAC)
        host = reg.add_host(MAC)
        assert host.revision not in seen
        seen.add(host.revision)


@sqlite_only
def test_a_registry_of_schema_6_opens_and_its_hosts_get_revisions(tmp_path: Path) -> None:
    with Registry.open(tmp_path) as registry:
        registry.add_profile(default_profile())
        registry.add_host(MAC)
    conn = sqlite3.connect(tmp_path / "registry.sqlite")
    with conn:  # back to what migration 6 left
        conn.execute("DROP INDEX hosts_by_profile")
        conn.execute("ALTER TABLE hosts DROP COLUMN revision")
        conn.execute("ALTER TABLE hosts DROP COLUMN event_count")
        conn.execute("DROP TABLE counters")
        conn.execute("UPDATE schema_version SET version = 6")
        conn.execute("DROP TABLE alembic_version")  # as the release before Alembic left it
        # Alembic's revisions 0012, 0011, 0010 and 0009
        for table in ("host_updates", "update_facts", "updates", "power_requests",
                      "host_segments", "servers", "bmcs", "pool_hosts", "pools",
                      "jobs"):  # fmt: skip
            conn.execute(f"DROP TABLE {table}")
    conn.close()
    with Registry.open(tmp_path) as registry:
        assert revision(registry) == 0
        registry.rearm(MAC)
        assert revision(registry) > 0


# -- the render cache ---------------------------------------------------------------


def test_the_cache_serves_only_the_revision_it_was_given() -> None:
    cache = RenderCache()
    cache.put("key", 1, "text")
    assert cache.get("key", 1) == "text"
    assert cache.get("key", 2) is None
    assert cache.get("other", 1) is None


def test_the_cache_keeps_at_most_its_bound_and_drops_the_least_recent() -> None:
    cache = RenderCache()
    for index in range(CACHE_ENTRIES + 10):
        cache.put(index, 0, str(index))
        cache.get(0, 0)  # the first one stays in use
    assert len(cache) == CACHE_ENTRIES
    assert cache.get(0, 0) == "0"
    assert cache.get(1, 0) is None  # the least recently used went
    assert cache.get(CACHE_ENTRIES + 9, 0) == str(CACHE_ENTRIES + 9)


def test_a_boot_config_is_rendered_once_per_host_state(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg.add_host(MAC)
    renders = []
    original = render.config_for_path
    monkeypatch.setattr(render, "config_for_path", lambda *a: renders.append(a[0]) or original(*a))
    first = config(reg)  # pending -> signalled: a new revision
    for _ in range(5):
        assert config(reg) == first
    assert len(renders) == 2
    host = reg.get_host(MAC)
    assert host is not None
    assert host.state is State.SIGNALLED
    assert host.ticket_issued_at is not None  # handed out on every fetch, cached or not
    issued = host.ticket_issued_at
    time.sleep(0.01)
    config(reg)
    again = reg.get_host(MAC)
    assert again is not None
    assert again.ticket_issued_at is not None
    assert again.ticket_issued_at > issued


def test_another_connection_marking_the_host_installed_is_seen_by_the_next_fetch(
    reg: Registry, registry_dir: Path
) -> None:
    """The unwanted reinstall: a cached install config served after boot once."""
    reg.add_host(MAC)
    assert "netinstall.token=" in config(reg)
    assert "netinstall.token=" in config(reg)  # cached
    with Registry.open(registry_dir) as other:  # the CLI, the lab, another server
        other.record_event(MAC, State.INSTALLED)
    local = config(reg)
    assert "netinstall.token=" not in local
    assert "localboot" in local


def test_an_unknown_mac_registered_since_is_not_served_its_cached_catch_all(
    reg: Registry,
) -> None:
    assert "netinstall.token=" not in config(reg)  # no such host: local
    reg.add_host(MAC)
    assert "netinstall.token=" in config(reg)


def test_a_config_rendered_from_a_state_gone_by_its_write_is_rendered_again(
    reg: Registry, tmp_path: Path
) -> None:
    reg.add_host(MAC)
    seen = reg.get_host(MAC)
    assert seen is not None
    with Registry.open(tmp_path) as other:
        other.record_event(MAC, State.FAILED, message="the disk is too small")
    assert reg.mark_signalled(MAC, seen) is None  # nothing written
    host = reg.get_host(MAC)
    assert host is not None
    assert host.state is State.FAILED
    assert host.ticket_issued_at is None


# -- queued progress ----------------------------------------------------------------


def installing(reg: Registry) -> Host:
    reg.add_host(MAC)
    host, _ = reg.record_event(MAC, State.INSTALLING, step="plan")
    return host


def test_progress_is_committed_within_its_delay(reg: Registry, registry_dir: Path) -> None:
    seen = installing(reg)
    assert not reg.queue_progress(seen, step="download", progress=0.1)
    with Registry.open(registry_dir) as other:  # what another process sees
        deadline = time.monotonic() + PROGRESS_DELAY + 5
        while (other.get_host(MAC) or seen).progress is None:
            assert time.monotonic() < deadline, "the queued event was never committed"
            time.sleep(PROGRESS_DELAY / 5)
        assert other.get_host(MAC) == replace(seen, step="download", progress=0.1)


def test_a_full_queue_makes_its_reporter_flush() -> None:
    flushed = threading.Event()
    queue = ProgressQueue(flushed.set, delay=3600)
    full = [queue.put(Progress(MAC, "download", i / PROGRESS_BATCH, None)) for i in range(300)]
    assert full.index(True) == PROGRESS_BATCH - 1
    queue.stop()
    assert not flushed.is_set()


def test_one_flusher_thread_commits_batch_after_batch() -> None:
    """Each batch is committed within the delay by the same thread: none is started per
    batch (a thread start costs the event loop, which queues the events, a wait)."""
    flushes: list[str] = []
    committed = threading.Semaphore(0)

    def flush() -> None:
        flushes.append(threading.current_thread().name)
        queue.take()
        committed.release()

    queue = ProgressQueue(flush, delay=0.01)
    before = threading.active_count()
    for batch in range(5):
        queue.put(Progress(MAC, "download", batch / 10, None))
        assert committed.acquire(timeout=10), f"batch {batch} was never committed"
        assert threading.active_count() == before + 1  # the flusher, and only it
    queue.stop()
    assert flushes == ["registry-progress"] * 5
    assert threading.active_count() == before  # stopped: its thread is gone


def test_the_flusher_is_woken_only_after_an_idle_spell() -> None:
    """While progress comes the flusher looks by itself; the reporter (the event loop)
    wakes it only once it has slept after PROGRESS_IDLE_LOOKS empty looks."""
    committed = threading.Semaphore(0)
    queue = ProgressQueue(lambda: (queue.take(), committed.release()), delay=0.01)
    woken: list[int] = []
    notify = queue._wake.notify
    queue._wake.notify = lambda n=1: (woken.append(n), notify(n))  # type: ignore[method-assign]
    try:
        for batch in range(10):  # a steady stream: one event a batch
            queue.put(Progress(MAC, "download", batch / 10, None))
            assert committed.acquire(timeout=10)
        assert woken == []
        deadline = time.monotonic() + 10
        while not queue._asleep:  # idle: it goes to sleep
            assert time.monotonic() < deadline, "the flusher never slept"
            time.sleep(0.01)
        queue.put(Progress(MAC, "download", 1.0, None))
        assert committed.acquire(timeout=10)
        assert woken == [1]
    finally:
        queue.stop()


def test_progress_is_applied_before_the_state_change_that_follows_it(reg: Registry) -> None:
    seen = installing(reg)
    reg.progress.stop()  # no timer: only the next write commits them
    for step in ("partition", "download"):
        reg.queue_progress(seen, step=step, progress=0.5)
    reg.record_event(MAC, State.INSTALLED)
    states = [(e.state, e.step) for e in reg.events(MAC)][-4:]
    assert states == [
        (State.INSTALLING, "plan"),
        (State.INSTALLING, "partition"),
        (State.INSTALLING, "download"),
        (State.INSTALLED, None),
    ]


def test_progress_queued_at_close_is_committed(registry_dir: Path) -> None:
    with Registry.open(registry_dir) as reg:
        reg.add_profile(default_profile())
        seen = installing(reg)
        reg.progress.stop()
        reg.queue_progress(seen, step="extract-root", progress=0.9)
    with Registry.open(registry_dir) as reg:
        host = reg.get_host(MAC)
        assert host is not None
        assert (host.step, host.progress) == ("extract-root", 0.9)


def test_progress_of_a_host_no_longer_installing_is_dropped(reg: Registry) -> None:
    seen = installing(reg)
    reg.progress.stop()
    reg.queue_progress(seen, step="download", progress=0.3)
    reg.rearm(MAC)  # committed after the queued event: that one applies first
    reg.queue_progress(seen, step="download", progress=0.6)
    reg.flush_progress()
    host = reg.get_host(MAC)
    assert host is not None
    assert host.state is State.PENDING
    assert host.progress is None


def test_only_an_installing_host_may_queue_progress(reg: Registry) -> None:
    host = reg.add_host(MAC)
    with pytest.raises(TransitionRefused):
        reg.queue_progress(replace(host, state=State.FAILED), step="download")


# -- check-ins --------------------------------------------------------------------


def running(reg: Registry) -> Host:
    reg.add_host(MAC)
    _host, _ = reg.record_event(MAC, State.RUNNING, facts={"payload_version": "1.0"})
    return reg.check_in(MAC, "1.0", "running")


def test_a_routine_check_in_writes_only_its_time(reg: Registry) -> None:
    seen = running(reg)
    with statements(reg._conn) as sent:
        after = reg.check_in(MAC, "1.0", "running", seen=seen)
    assert sent
    assert not any(s.startswith("SELECT") for s in sent)  # the host is not read
    assert after.last_checkin is not None
    assert after.last_checkin >= (seen.last_checkin or 0)
    assert reg.get_host(MAC) == after


def test_a_check_in_from_a_stale_read_is_applied_in_full(reg: Registry) -> None:
    seen = running(reg)
    reg.assign_work(MAC, "restore")  # after the request read the host
    after = reg.check_in(MAC, "1.0", "running", seen=seen)
    assert after.work is not None
    assert after.token_expires is not None


# -- listings and templates ---------------------------------------------------------


def test_every_host_s_last_event_is_one_query(reg: Registry) -> None:
    for index in range(20):
        reg.add_host(f"52:54:00:00:00:{index + 2:02x}")
    reg.record_event("52:54:00:00:00:02", State.INSTALLING, step="plan")
    with statements(reg._reader()) as sent:
        latest = reg.last_events()
    assert len(sent) == 1
    assert len(latest) == 20
    assert latest["52:54:00:00:00:02"].step == "plan"


def test_an_answer_file_template_is_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = []
    original = jinja2.sandbox.SandboxedEnvironment.from_string

    def counting(self: jinja2.Environment, source: str, *args: object) -> jinja2.Template:
        compiled.append(source)
        return original(self, source)  # type: ignore[arg-type]

    monkeypatch.setattr(jinja2.sandbox.SandboxedEnvironment, "from_string", counting)
    profile = replace(default_profile(), template=default_profile().template + "\n")
    host = Host(MAC, token="t" * 32)
    for _ in range(3):
        render.answer_file(host, profile, SETTINGS, "http://192.168.77.1:8080/repo/")
    assert compiled.count(profile.template) == 1


def test_compiled_answer_file_templates_are_bounded() -> None:
    render._compiled.cache_clear()
    for index in range(render.COMPILED_TEMPLATES + 5):
        render._compiled(f"<installation>{index}</installation>")
    assert render._compiled.cache_info().currsize == render.COMPILED_TEMPLATES


def test_a_host_changing_under_every_attempt_is_signalled_as_it_is_at_the_last(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg.add_host(MAC)
    calls: list[Host | None] = []
    original = reg.mark_signalled

    def always_stale(mac: str, seen: Host | None = None) -> Host | None:
        calls.append(seen)
        return None if seen is not None else original(mac)

    monkeypatch.setattr(reg, "mark_signalled", always_stale)
    assert "netinstall.token=" in config(reg)
    assert len(calls) == RENDER_ATTEMPTS
    assert calls[-1] is None
    host = reg.get_host(MAC)
    assert host is not None
    assert host.state is State.SIGNALLED


# -- writes done at once on the event loop's thread -----------------------------------


@sqlite_only
def test_a_write_now_is_done_on_the_calling_thread(reg: Registry) -> None:
    reg.add_host(MAC)
    threads: list[str] = []

    def rename() -> Host:
        threads.append(threading.current_thread().name)
        return reg.update_host(MAC, name="now")

    assert reg.write_now(rename).name == "now"
    assert threads == [threading.current_thread().name]
    assert (reg.get_host(MAC) or reg.add_host(MAC)).name == "now"


def test_a_write_now_never_waits_for_another_thread_of_ours(reg: Registry) -> None:
    reg.add_host(MAC)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with reg._write():  # another thread writing (its transaction open)
            holding.set()
            release.wait(10)

    other = threading.Thread(target=hold)
    other.start()
    try:
        assert holding.wait(10)
        began = time.monotonic()
        with pytest.raises(WouldWait):
            reg.write_now(lambda: reg.update_host(MAC, name="waited"))
        assert time.monotonic() - began < 1
    finally:
        release.set()
        other.join()
    assert (reg.get_host(MAC) or reg.add_host(MAC)).name != "waited"  # nothing written


@sqlite_only
def test_a_write_now_never_waits_for_another_process_and_keeps_queued_progress(
    reg: Registry, tmp_path: Path
) -> None:
    """Another process's write transaction: SQLite's lock, which the writer thread would
    wait BUSY_TIMEOUT_MS for; the loop's write gives up at once, and the progress events
    it took to commit first stay queued, in order, for the writer thread."""
    seen = installing(reg)
    reg.progress.stop()
    for step in ("partition", "download"):
        reg.queue_progress(seen, step=step, progress=0.5)
    other = sqlite3.connect(tmp_path / "registry.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        began = time.monotonic()
        with pytest.raises(WouldWait):
            reg.write_now(lambda: reg.record_event(MAC, State.INSTALLED))
        assert time.monotonic() - began < 1
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert len(reg.progress) == 2
    reg.record_event(MAC, State.INSTALLED)  # as the writer thread then does
    steps = [(e.state, e.step) for e in reg.events(MAC)][-3:]
    assert steps == [
        (State.INSTALLING, "partition"),
        (State.INSTALLING, "download"),
        (State.INSTALLED, None),
    ]


@sqlite_only
def test_writes_now_leave_the_checkpoints_to_the_writer_thread(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg.add_host(MAC)
    done: list[str] = []
    monkeypatch.setattr(reg, "_checkpoint", lambda: done.append(threading.current_thread().name))
    for index in range(NOW_CHECKPOINT):
        reg.write_now(lambda i=index: reg.update_host(MAC, name=f"n{i}"))
    reg.writer().submit(lambda: None).result(timeout=10)
    assert done == ["registry-writer_0"]
    assert reg._now_conn is not None
    assert reg._now_conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0


def test_a_threads_first_read_never_waits_for_a_write(reg: Registry) -> None:
    """The read connection a thread opens at its first read is registered under a lock
    of its own, not the writer's: the event loop's first request after a start never
    waits for a write in progress."""
    reg.add_host(MAC)
    holding, release = threading.Event(), threading.Event()
    read: list[float] = []

    def hold() -> None:
        with reg._write():
            holding.set()
            release.wait(10)

    def first_read() -> None:
        began = time.monotonic()
        assert reg.get_host(MAC) is not None
        read.append(time.monotonic() - began)

    writer = threading.Thread(target=hold)
    writer.start()
    try:
        assert holding.wait(10)
        reader = threading.Thread(target=first_read)
        reader.start()
        reader.join(5)
        assert len(read) == 1, "the first read waited for the write"
        assert read[0] < 1
    finally:
        release.set()
        writer.join()
