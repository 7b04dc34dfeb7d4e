"""Several servers on one registry (pxe_server.segments): where a power call runs, the
servers' names and rows, each host's segment server learnt and pinned, and a power
request's round trip through the registry (on SQLite here; the registry tests also on
PostgreSQL through tests/integration/test_segments_registry_postgresql.py). Two real
servers and a real BMC are tests/integration/test_segment_power_postgresql.py's."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from common.errors import InputError
from common.protocol.codec import encode
from common.protocol.messages import PowerAction, PowerRequest
from netinstall.cli import main
from pxe_server import http_edge, segments
from pxe_server.power_desk import PowerDesk
from pxe_server.registry import Registry, UnknownHost
from pxe_server.registry_segments import ANSWERED, Segment, Server
from pxe_server.segments import (
    GONE_AFTER,
    PowerNotAnswered,
    Route,
    SegmentLearner,
    ask_segment_server,
    name_server,
    route,
    server_name,
)

MAC = "52:54:00:21:00:01"
OTHER = "52:54:00:21:00:02"
NOW = 1_800_000_000.0


# -- where a power call runs ----------------------------------------------------------------


def _server(name: str, seen_ago: float) -> Server:
    return Server(name, f"http://{name}:8080", NOW - 3600, NOW - seen_ago)


@pytest.mark.parametrize(
    ("shared", "me", "segment", "server", "expected"),
    [
        # One server (SQLite): always here, whatever the registry says.
        (False, "a", Segment("b", False), _server("b", 1), Route()),
        # No segment server known yet: here.
        (True, "a", None, None, Route()),
        # This server is the host's segment server (learnt or pinned): here.
        (True, "a", Segment("a", False), _server("a", 1), Route()),
        (True, "a", Segment("a", True), _server("a", 1), Route()),
        # Another one that runs: through it.
        (True, "a", Segment("b", False), _server("b", 1), Route(server="b")),
        (True, "a", Segment("b", True), _server("b", GONE_AFTER), Route(server="b")),
        # The CLI on a directory that never ran a server: through the segment server.
        (True, None, Segment("b", False), _server("b", 1), Route(server="b")),
    ],
)
def test_a_power_call_runs_on_the_hosts_segment_server(
    shared: bool, me: str | None, segment: Segment | None, server: Server | None, expected: Route
) -> None:
    assert route(MAC, me, segment, server, shared=shared, now=NOW) == expected


def test_a_segment_server_that_does_not_run_is_said_at_once() -> None:
    gone = route(MAC, "a", Segment("b", False), _server("b", GONE_AFTER + 5), shared=True, now=NOW)
    assert gone.server is None
    assert gone.gone == (
        f"host {MAC}'s segment server b was last seen 35 s ago (2027-01-15T07:59:25Z): it "
        "does not run, so its BMC cannot be reached from here; start it, or pin another: "
        f"`netinstall host set {MAC} --server NAME`"
    )
    never = route(MAC, "a", Segment("c", True), None, shared=True, now=NOW)
    assert never.gone == (
        f"host {MAC}'s segment server c never ran on this registry; pin another: "
        f"`netinstall host set {MAC} --server NAME|auto`"
    )


def test_a_power_call_on_sqlite_runs_here_whatever_the_registry_says(reg: Registry) -> None:
    reg.add_host(MAC)
    reg.pin_segment(MAC, "elsewhere", NOW)
    assert segments.power_route(reg, MAC) is None


def test_an_unanswered_power_call_is_a_504_naming_the_server() -> None:
    reply = http_edge.refusal(PowerNotAnswered("host x's segment server b did not answer"))
    assert reply.status == 504
    assert reply.text is not None
    assert json.loads(reply.text)["error"] == "host x's segment server b did not answer"


# -- names ------------------------------------------------------------------------------------


def test_a_servers_default_name_is_stable_and_a_given_one_is_kept(tmp_path: Path) -> None:
    assert server_name(tmp_path) is None  # no server ran from it
    first = name_server(tmp_path, None)
    assert first == server_name(tmp_path)
    assert first.endswith(f"-{(tmp_path / segments.SERVER_ID_FILE).read_text().strip()}")
    assert name_server(tmp_path, None) == first  # a restart keeps it
    assert name_server(tmp_path, "rack-7") == "rack-7"
    assert server_name(tmp_path) == "rack-7"  # what the CLI on the directory uses
    assert name_server(tmp_path, None) == "rack-7"


@pytest.mark.parametrize("bad", ["", "-x", "a b", "x" * 64, "r/1", "é"])
def test_a_bad_server_name_is_one_sentence(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InputError) as caught:
        name_server(tmp_path, bad)
    (said,) = caught.value.problems
    assert said.startswith("server name ")
    assert said.endswith("'.', '_' or '-', starting with a letter or digit")
    assert not (tmp_path / segments.SERVER_NAME_FILE).exists()


# -- the registry's rows ------------------------------------------------------------------------


def test_servers_register_and_renew_their_heartbeat(reg: Registry) -> None:
    reg.register_server("b", "http://10.0.1.1:8080", NOW)
    reg.register_server("a", "https://10.0.0.1:8443", NOW + 1)
    assert reg.server_seen("a", NOW + 5)
    assert not reg.server_seen("c", NOW + 5)  # no row: the desk registers it again
    assert reg.servers() == [
        Server("a", "https://10.0.0.1:8443", NOW + 1, NOW + 5),
        Server("b", "http://10.0.1.1:8080", NOW, NOW),
    ]
    reg.register_server("b", "http://10.0.1.2:8080", NOW + 9)  # restarted elsewhere
    assert reg.server("b") == Server("b", "http://10.0.1.2:8080", NOW + 9, NOW + 9)


def test_a_hosts_segment_server_is_learnt_and_written_only_when_it_changes(
    reg: Registry,
) -> None:
    reg.add_host(MAC)
    assert reg.segment(MAC) is None
    assert reg.learn_segment(MAC, "a", NOW) == Segment("a", False)
    assert reg.learn_segment(MAC, "a", NOW + 10) == Segment("a", False)
    assert _updated(reg, MAC) == NOW  # unchanged: not written
    assert reg.learn_segment(MAC, "b", NOW + 20) == Segment("b", False)
    assert _updated(reg, MAC) == NOW + 20
    assert reg.learn_segment("52:54:00:ff:ff:ff", "a", NOW) is None  # no such host
    assert reg.segments() == {MAC: Segment("b", False)}


def _updated(reg: Registry, mac: str) -> float:
    from sqlalchemy import select

    from pxe_server.store.tables import host_segments
    from tests.registry_engines import execute

    (rows,) = execute(reg.directory, select(host_segments.c.updated).where(
        host_segments.c.mac == mac))  # fmt: skip
    return float(rows[0][0])


def test_a_pinned_segment_server_is_not_learnt_over_until_set_to_auto(reg: Registry) -> None:
    reg.add_host(MAC)
    reg.learn_segment(MAC, "a", NOW)
    assert reg.pin_segment(MAC, "b", NOW)
    assert reg.learn_segment(MAC, "a", NOW + 1) == Segment("b", True)
    assert reg.segment(MAC) == Segment("b", True)
    assert reg.pin_segment(MAC, None, NOW + 2)  # auto: the one it has stays until it is served
    assert reg.segment(MAC) == Segment("b", False)
    assert reg.learn_segment(MAC, "a", NOW + 3) == Segment("a", False)
    assert not reg.pin_segment(OTHER, "a", NOW)  # no such host
    assert reg.pin_segment(OTHER, None, NOW) is False


def test_a_renamed_server_keeps_its_hosts(reg: Registry) -> None:
    reg.add_host(MAC)
    reg.add_host(OTHER)
    reg.register_server("old", "http://a:8080", NOW)
    reg.learn_segment(MAC, "old", NOW)
    reg.pin_segment(OTHER, "old", NOW)
    assert reg.rename_server("old", "new") == 2
    assert reg.segments() == {MAC: Segment("new", False), OTHER: Segment("new", True)}
    assert reg.servers() == []  # the new name registers itself as it starts


def test_a_hosts_segment_server_goes_with_the_host(reg: Registry) -> None:
    reg.add_host(MAC)
    reg.learn_segment(MAC, "a", NOW)
    reg.delete_host(MAC)
    reg.add_host(MAC)
    assert reg.segment(MAC) is None


def test_power_requests_are_claimed_by_their_server_only_and_answered(reg: Registry) -> None:
    asked = encode(PowerRequest(PowerAction.STATUS))
    first = reg.ask_power(MAC, "b", "a", asked, NOW, keep=60)
    second = reg.ask_power(OTHER, "b", "a", asked, NOW + 1, keep=60)
    assert not reg.power_waiting("a")
    assert reg.claim_power("a", NOW + 2, 45) is None
    assert reg.power_waiting("b")
    taken = reg.claim_power("b", NOW + 2, 45)
    assert taken is not None
    assert (taken.id, taken.mac, taken.asked_by, taken.request) == (first, MAC, "a", asked)
    reg.answer_power(first, {"reply": "x"}, NOW + 3)
    done = reg.power_ask(first)
    assert done is not None
    assert (done.state, done.answer) == (ANSWERED, {"reply": "x"})
    # One that waited longer than its asker waits is answered stale, not carried out.
    assert reg.claim_power("b", NOW + 100, 45) is None
    stale = reg.power_ask(second)
    assert stale is not None
    assert (stale.state, stale.answer["error"]) == (ANSWERED, "stale")  # type: ignore[index]
    assert not reg.power_waiting("b")
    # Answered ones older than `keep` go when the next request is made.
    third = reg.ask_power(MAC, "b", "a", asked, NOW + 200, keep=60)
    assert (reg.power_ask(first), reg.power_ask(second)) == (None, None)
    reg.drop_power(third)
    assert reg.power_ask(third) is None


def test_a_registry_at_revision_10_opens_and_gets_servers(registry_dir: Path) -> None:
    """Revision 0011 applies to a registry of the release before (either engine): its
    hosts and BMCs kept, the new tables there and working."""
    from sqlalchemy import text

    from pxe_server.registry import default_profile
    from tests.registry_engines import execute

    with Registry.open(registry_dir) as registry:
        registry.add_profile(default_profile())
        registry.add_host(MAC, name="kept")
    execute(
        registry_dir,
        text("DROP TABLE host_updates"),  # revision 0012's, which follows
        text("DROP TABLE update_facts"),
        text("DROP TABLE updates"),
        text("DROP TABLE power_requests"),
        text("DROP TABLE host_segments"),
        text("DROP TABLE servers"),
        text("UPDATE alembic_version SET version_num = '0010'"),
    )
    with Registry.open(registry_dir) as registry:
        host = registry.get_host(MAC)
        assert host is not None
        assert host.name == "kept"
        assert registry.servers() == []
        registry.register_server("a", "http://a:8080", NOW)
        assert registry.learn_segment(MAC, "a", NOW) == Segment("a", False)
    (version,) = execute(registry_dir, text("SELECT version_num FROM alembic_version"))[0]
    assert tuple(version) == ("0012",)


# -- learning without writing on the hot path ------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_learner_notes_a_host_once_and_looks_again_after_its_recheck(reg: Registry) -> None:
    reg.add_host(MAC)
    clock = _Clock()
    learner = SegmentLearner("a", recheck=60, clock=clock)
    reg.segment_learner = learner
    reg.served(MAC)
    reg.served(MAC)
    assert learner.flush(reg) == 1
    assert reg.segment(MAC) == Segment("a", False)
    reg.served(MAC)  # checked just now: nothing noted, nothing read
    assert learner.flush(reg) == 0
    assert learner._waiting == set()
    reg.learn_segment(MAC, "b", NOW)  # the host booted from server b meanwhile
    clock.now += 61
    reg.served(MAC)  # then from this one again
    assert learner.flush(reg) == 1
    assert reg.segment(MAC) == Segment("a", False)
    clock.now += 61
    reg.served(MAC)
    assert learner.flush(reg) == 0  # read, unchanged: not written
    reg.segment_learner = None
    reg.served(OTHER)  # no learner (the CLI): nothing


# -- a power request's round trip -----------------------------------------------------------


def test_a_power_call_for_another_server_is_carried_out_there_and_its_refusal_comes_back(
    reg: Registry,
) -> None:
    """Server b's desk (on this registry, told to take requests) carries out what is left
    for it: the host has no BMC, and b's refusal, naming b, is what the asker raises."""
    reg.add_host(MAC)
    desk = PowerDesk(reg, "b", "http://b:8080", poll=0.05, requests=True)
    desk.start()
    try:
        started = time.monotonic()
        with pytest.raises(InputError) as caught:
            ask_segment_server(reg, MAC, PowerRequest(PowerAction.STATUS), "b", poll=0.02)
        assert time.monotonic() - started < 5
        assert caught.value.problems == (
            f"server b: host {MAC} has no BMC; give it one with "
            f"`netinstall host set {MAC} --bmc URL --bmc-password-file FILE`",
        )
        with pytest.raises(UnknownHost):
            ask_segment_server(reg, OTHER, PowerRequest(PowerAction.STATUS), "b", poll=0.02)
    finally:
        desk.stop()
    assert reg.server("b") is not None  # it registered itself


def test_a_power_call_nobody_takes_is_withdrawn_after_its_wait(reg: Registry) -> None:
    reg.add_host(MAC)
    with pytest.raises(PowerNotAnswered) as caught:
        ask_segment_server(reg, MAC, PowerRequest(PowerAction.ON), "b", wait=0.2, poll=0.02)
    assert caught.value.problems == (
        f"host {MAC}'s segment server b did not answer its power request within 0 s; it was "
        "withdrawn",
    )
    assert not reg.power_waiting("b")  # never carried out late


def test_the_desk_renews_its_heartbeat(reg: Registry) -> None:
    seen = threading.Event()
    ticks = iter(range(10_000))

    def clock() -> float:
        tick = next(ticks)
        if tick >= 2:
            seen.set()
        return NOW + tick

    desk = PowerDesk(reg, "a", "http://a:8080", poll=0.01, beat=0.01, clock=clock)
    desk.start()
    try:
        assert seen.wait(5)
        deadline = time.monotonic() + 5
        while (found := reg.server("a")) is not None and found.last_seen == found.started:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        desk.stop()
    assert found is not None
    assert found.last_seen > found.started


# -- the CLI ----------------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str, str]:
    done = CliRunner().invoke(main, list(args), env={"NETINSTALL_SERVER": None})
    return done.exit_code, done.stdout, done.stderr


def test_host_set_server_pins_and_auto_learns_again(tmp_path: Path) -> None:
    where = ("--dir", str(tmp_path / "srv"))
    assert run("server", "init", str(tmp_path / "srv"))[0] == 0
    assert run("host", "add", MAC, *where)[0] == 0
    code, out, err = run("server", "list", *where)
    assert (code, out) == (0, "no servers yet (a `server run` registers itself)\n"), err
    code, _, err = run("host", "set", MAC, *where, "--server", "rack-2")
    assert code != 0
    assert err.strip().endswith("no server 'rack-2' has run on this registry (servers: none yet)")
    code, _, err = run("host", "set", MAC, *where, "--server", "rack 2")
    assert code != 0
    assert "server name 'rack 2': 1 to 63 letters" in err
    with Registry.open(tmp_path / "srv") as registry:
        registry.register_server("rack-2", "http://10.0.2.1:8080", time.time())
    code, out, err = run("host", "set", MAC, *where, "--server", "rack-2")
    assert code == 0, err
    assert ", segment server rack-2 (pinned);" in out
    code, out, _ = run("host", "show", MAC, *where)
    assert "segment server:   rack-2 (pinned)" in out
    code, out, _ = run("host", "show", MAC, *where, "--json")
    shown = json.loads(out)
    assert (shown["segment_server"], shown["segment_pinned"]) == ("rack-2", True)
    code, out, _ = run("server", "list", *where)
    header, line = out.splitlines()
    assert header.split() == ["NAME", "ADDRESS", "LAST", "SEEN", "STATE", "HOSTS", "STARTED"]
    assert line.split()[:6] == ["rack-2", "http://10.0.2.1:8080", "0", "s", "ago", "running"]
    code, out, _ = run("server", "list", *where, "--json")
    (listed,) = json.loads(out)
    assert (listed["name"], listed["hosts"], listed["running"]) == ("rack-2", 1, True)
    code, out, err = run("host", "set", MAC, *where, "--server", "auto")
    assert code == 0, err
    assert ", segment server rack-2;" in out
