"""``netinstall host watch`` (netinstall.watch, netinstall.watch_view): the watch over a
LocalFleet on a real registry in a temporary directory, the installs driven between its
looks as the server would record them; the bars through rich's recording console; the
command through click's runner (not a terminal: plain lines)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from common.errors import InputError
from common.protocol.messages import HostRecord
from netinstall.cli import main
from netinstall.fleet import LocalFleet
from netinstall.watch import REMOVED, HostView, Outcome, select, watch
from netinstall.watch_view import BarsView, JsonView, PlainView
from pxe_server.model import State
from pxe_server.registry import Registry, default_profile

ONE = "52:54:00:00:00:01"
TWO = "52:54:00:00:00:02"
DONE = "52:54:00:00:00:03"
BROKEN = "52:54:00:00:00:04"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry.open(tmp_path) as reg:
        reg.add_profile(default_profile())
        reg.add_host(ONE, name="xenhost01")
        reg.add_host(TWO)
        reg.add_host(DONE)
        reg.record_event(DONE, State.RUNNING)
        reg.add_host(BROKEN)
        reg.record_event(BROKEN, State.FAILED, message="disk too small")
        yield reg


class Script:
    """The install, one step per look: ``sleep`` applies the next change (the watch's
    pause), the clock moves 10 s each time."""

    def __init__(self, changes: list[Callable[[], object]]) -> None:
        self.changes = changes
        self.now = 0.0
        self.pauses: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += 10
        if self.changes:
            self.changes.pop(0)()

    def clock(self) -> float:
        return self.now


def install(registry: Registry, mac: str, end: State = State.RUNNING) -> list[Callable[[], object]]:
    """The registry's writes of one install, in order."""
    last = (
        (lambda: registry.record_event(mac, State.RUNNING))
        if end is State.RUNNING
        else (lambda: registry.record_event(mac, State.FAILED, message="sha256 mismatch"))
    )
    return [
        lambda: registry.mark_signalled(mac),
        lambda: registry.record_event(mac, State.INSTALLING, step="partition", progress=0.1),
        lambda: registry.record_event(mac, State.INSTALLING, progress=0.104),  # no change
        lambda: registry.record_event(mac, State.INSTALLING, step="extract-root", progress=0.5),
        lambda: registry.record_event(mac, State.INSTALLED),
        lambda: registry.record_event(mac, State.INSTALLED, step="first-boot"),
        last,
    ]


def run_watch(
    registry: Registry, macs: tuple[str, ...], changes: list[Callable[[], object]], view: object
) -> tuple[Outcome, Script]:
    script = Script(changes)
    fleet = LocalFleet(registry)
    outcome = watch(
        fleet.hosts,
        macs,
        view,  # type: ignore[arg-type]
        interval=2,
        timeout=600,
        sleep=script.sleep,
        clock=script.clock,
    )
    return outcome, script


def test_each_change_is_one_line_until_running(registry: Registry) -> None:
    lines: list[str] = []
    outcome, script = run_watch(registry, (ONE,), install(registry, ONE), PlainView(lines.append))
    assert outcome.exit_code == 0
    assert outcome.sentence(600) == "every watched host is running"
    assert lines == [
        "[     0 s] 52:54:00:00:00:01 (xenhost01): pending: added to the registry",
        "[    10 s] 52:54:00:00:00:01 (xenhost01): signalled: fetched its boot configuration",
        "[    20 s] 52:54:00:00:00:01 (xenhost01): installing partition 10%",
        # 10.4 % is still 10 %: no line
        "[    40 s] 52:54:00:00:00:01 (xenhost01): installing extract-root 50%",
        "[    50 s] 52:54:00:00:00:01 (xenhost01): installed",
        "[    60 s] 52:54:00:00:00:01 (xenhost01): installed first-boot",
        "[    70 s] 52:54:00:00:00:01 (xenhost01): running",
    ]
    assert set(script.pauses) == {2}


def test_a_failed_host_ends_the_watch_with_1_naming_it(registry: Registry) -> None:
    lines: list[str] = []
    changes = [
        c
        for pair in zip(install(registry, ONE), install(registry, TWO, State.FAILED), strict=True)
        for c in pair
    ]
    outcome, _ = run_watch(registry, (ONE, TWO), changes, PlainView(lines.append))
    assert outcome.exit_code == 1
    assert outcome.sentence(600) == "1 host failed: 52:54:00:00:00:02: sha256 mismatch"
    assert lines[-1].endswith("52:54:00:00:00:02: failed: sha256 mismatch")
    assert any(line.endswith("52:54:00:00:00:01 (xenhost01): running") for line in lines)


def test_the_time_limit_ends_the_watch_with_1_naming_who_waits(registry: Registry) -> None:
    script = Script([])
    outcome = watch(
        LocalFleet(registry).hosts,
        (ONE,),
        PlainView(lambda line: None),
        interval=2,
        timeout=25,
        sleep=script.sleep,
        clock=script.clock,
    )
    assert outcome.exit_code == 1
    assert outcome.sentence(25) == (
        "not every host is running after 25 s: 52:54:00:00:00:01 (xenhost01) (pending)"
    )
    assert script.pauses == [2, 2, 2]  # looks at 0, 10, 20 and 30 s


def test_a_host_removed_while_watched_is_failed(registry: Registry) -> None:
    lines: list[str] = []
    outcome, _ = run_watch(
        registry, (TWO,), [lambda: registry.delete_host(TWO)], PlainView(lines.append)
    )
    assert outcome.exit_code == 1
    assert lines[-1] == f"[    10 s] {TWO}: failed: {REMOVED}"


def test_json_lines_one_object_per_change(registry: Registry) -> None:
    lines: list[str] = []
    outcome, _ = run_watch(
        registry, (ONE,), install(registry, ONE), JsonView(lines.append, clock=lambda: 1.5e9)
    )
    assert outcome.exit_code == 0
    documents = [json.loads(line) for line in lines]
    assert [(d["state"], d["step"]) for d in documents] == [
        ("pending", None),
        ("signalled", None),
        ("installing", "partition"),
        ("installing", "extract-root"),
        ("installed", None),
        ("installed", "first-boot"),
        ("running", None),
    ]
    assert documents[2] == {
        "time": 1.5e9,
        "elapsed": 20.0,
        "mac": ONE,
        "name": "xenhost01",
        "state": "installing",
        "step": "partition",
        "progress": 0.1,
        "message": None,
    }


def test_without_macs_every_host_not_running_nor_failed(registry: Registry) -> None:
    chosen = select(LocalFleet(registry).hosts(), ())
    assert chosen.macs == (ONE, TWO)
    assert chosen.said == (
        "watching 2 hosts not running yet (1 host failed left out: name a MAC to watch it)"
    )
    named = select(LocalFleet(registry).hosts(), ("52-54-00-00-00-04", BROKEN))
    assert named.macs == (BROKEN,)  # one host, however it is written


@pytest.mark.parametrize(
    ("given", "words"),
    [(("52:54:00:00:00:99",), "no host 52:54:00:00:00:99"), (("nonsense",), "not a MAC")],
)
def test_unknown_or_bad_macs_are_named(
    registry: Registry, given: tuple[str, ...], words: str
) -> None:
    with pytest.raises(InputError, match=words):
        select(LocalFleet(registry).hosts(), given)


def test_the_bars_show_each_host_its_state_and_percent(registry: Registry) -> None:
    console = Console(
        file=io.StringIO(), record=True, force_terminal=True, width=110, color_system="standard"
    )
    view = BarsView(console, auto_refresh=False)
    registry.record_event(TWO, State.INSTALLING, step="partition", progress=0.35)
    hosts = {r.mac: r for r in LocalFleet(registry).hosts()}
    view.change(HostView.of(hosts[ONE]), 0)
    view.change(HostView.of(hosts[TWO]), 0)
    view.change(HostView.of(hosts[BROKEN]), 5)
    view.say("[    5 s] job 1: upgrading 52:54:00:00:00:01")
    view.close()
    text = console.export_text(clear=False)
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("52:")}
    assert "pending" in rows[ONE]
    assert "xenhost01" in rows[ONE]
    assert "0%" in rows[ONE]
    assert "installing partition" in rows[TWO]
    assert " 35%" in rows[TWO]
    assert "failed disk too small" in rows[BROKEN]
    assert "job 1: upgrading" in text  # a line above the bars
    assert "\x1b[" in console.export_text(styles=True)  # coloured on a terminal


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_the_command_exits_0_when_running_1_when_failed(registry: Registry) -> None:
    where = str(registry.directory)
    code, out, err = cli("host", "watch", "--dir", where, DONE)
    assert (code, out) == (0, f"[     0 s] {DONE}: running\n")
    assert err == "watching 1 host\nevery watched host is running\n"
    code, out, err = cli("host", "watch", "--dir", where, "--json", DONE, BROKEN)
    assert code == 1
    assert [json.loads(line)["state"] for line in out.splitlines()] == ["running", "failed"]
    assert err.splitlines()[-1] == f"netinstall: 1 host failed: {BROKEN}: disk too small"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--interval", "0"), "--interval '0' must be a number of seconds from 0.2 to 60"),
        (("--timeout", "soon"), "--timeout 'soon' must be a number of seconds"),
        (("52:54:00:00:00:99",), "no host 52:54:00:00:00:99 in the registry"),
    ],
)
def test_bad_input_is_exit_2_with_one_sentence(
    registry: Registry, args: tuple[str, ...], words: str
) -> None:
    code, out, err = cli("host", "watch", "--dir", str(registry.directory), *args)
    assert code == 2
    assert out == ""
    assert words in err
    assert "Traceback" not in err


def test_ctrl_c_stops_watching_not_the_installs(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("time.sleep", interrupted)
    code, out, err = cli("host", "watch", "--dir", str(registry.directory), ONE)
    assert code == 130
    assert out.startswith(f"[     0 s] {ONE} (xenhost01): pending")
    assert err.splitlines()[-1] == "stopped watching; the installs go on"
    host = registry.get_host(ONE)
    assert host is not None
    assert host.state is State.PENDING  # the watch changed nothing


def test_nothing_to_watch_says_so(tmp_path: Path) -> None:
    with Registry.open(tmp_path) as reg:
        reg.add_profile(default_profile())
        reg.add_host(DONE)
        reg.record_event(DONE, State.RUNNING)
    code, out, err = cli("host", "watch", "--dir", str(tmp_path))
    assert (code, out) == (0, "")
    assert err == "nothing to watch: every host is running or failed\n"


# -- pool upgrade: the same bars while it follows its job ---------------------------------

OLD, NEW = "0.1.0", "0.2.0"


@pytest.fixture
def pool_dir(tmp_path: Path) -> Path:
    with Registry.open(tmp_path) as reg:
        reg.add_profile(default_profile())
        reg.add_repository(NEW, str(tmp_path / "repo"))
        for mac in (ONE, TWO):
            reg.add_host(mac)
            reg.record_event(mac, State.INSTALLED)
            reg.record_event(mac, State.RUNNING, facts={"payload_version": OLD})
    return tmp_path


def run_the_job_at_first_pause(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The follower's first pause runs the job, as a server would, with agents that
    upgrade at once (a fake clock: no time passes)."""
    from pxe_server.job_runner import JobRunner

    def agents(registry: Registry) -> None:
        for host in registry.list_hosts():
            if host.work is not None and host.state is State.PENDING:
                registry.record_event(host.mac, State.INSTALLING, step="partition", progress=0.5)
                registry.record_event(host.mac, State.INSTALLED)
                registry.record_event(host.mac, State.RUNNING, facts={"payload_version": NEW})

    ran: list[bool] = []

    def sleep(seconds: float) -> None:
        if ran:
            return
        ran.append(True)
        with Registry.open(directory) as registry:
            now = [1e6]

            def wait(pause: float) -> bool:
                now[0] += pause
                agents(registry)
                return False

            JobRunner(registry, "server-1", clock=lambda: now[0], wait=wait).run_once()

    monkeypatch.setattr("time.sleep", sleep)


def pool_upgrade(directory: Path) -> tuple[int, str, str]:
    return cli(
        "pool", "upgrade", "--dir", str(directory), "--version", NEW, "--master", ONE, TWO
    )  # fmt: skip


def test_pool_upgrade_shows_the_bars_on_a_terminal(
    pool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from netinstall import watch_view

    screen = Console(file=io.StringIO(), record=True, force_terminal=True, width=110)
    made: list[BarsView] = []

    class Bars(BarsView):
        def __init__(self) -> None:
            super().__init__(screen)
            made.append(self)

    monkeypatch.setattr(watch_view, "on_terminal", lambda: True)
    monkeypatch.setattr(watch_view, "BarsView", Bars)
    run_the_job_at_first_pause(pool_dir, monkeypatch)
    code, _, _ = pool_upgrade(pool_dir)
    assert code == 0
    # The bars as they were left, drawn once more on a console of their own.
    [view] = made
    final = Console(file=io.StringIO(), record=True, width=110)
    final.print(view.progress.get_renderable())
    assert final.export_text().splitlines() == [
        f"{ONE} running ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 100% 0:00:00",
        f"{TWO} running ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 100% 0:00:00",
    ]
    text = screen.export_text(clear=False)
    assert f"pool upgraded: 2 host(s) run {NEW}" in text  # the job's log, above the bars


def test_pool_upgrade_elsewhere_prints_the_log_only(
    pool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_the_job_at_first_pause(pool_dir, monkeypatch)
    code, out, _ = pool_upgrade(pool_dir)
    assert code == 0
    assert f"pool upgraded: 2 host(s) run {NEW}" in out
    assert "━" not in out
    assert "\x1b[" not in out


def test_a_look_that_fails_is_tried_again_a_few_times(registry: Registry) -> None:
    from common.errors import NetinstallError
    from netinstall.watch import MAX_MISSES

    fleet = LocalFleet(registry)
    answers: list[object] = [NetinstallError("the server did not answer"), "hosts"]
    answers += [NetinstallError("the server did not answer")] * MAX_MISSES

    def hosts() -> list[HostRecord]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return fleet.hosts()

    warned: list[str] = []
    lines: list[str] = []
    script = Script([])
    with pytest.raises(NetinstallError, match="did not answer"):
        watch(
            hosts,
            (ONE,),
            PlainView(lines.append),
            sleep=script.sleep,
            clock=script.clock,
            warn=warned.append,
        )
    assert lines == ["[    10 s] 52:54:00:00:00:01 (xenhost01): pending: added to the registry"]
    assert len(warned) == 1 + MAX_MISSES - 1  # the last miss ends the watch instead
    assert warned[0] == "no look at the hosts (the server did not answer); trying again in 2 s"
    assert answers == []
