"""The dom0 agent's check-in loop: nothing to do, upgrade (auto, manual), 401, network errors.

Imported as dom0 imports it (top-level ``netinstall_dom0``); commands go to a
fake runner, HTTP to a fake session.
"""

from __future__ import annotations

import json
import logging
import stat
import sys
from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

DOM0 = Path(__file__).resolve().parents[2] / "hypervisor_payload" / "dom0"
if str(DOM0) not in sys.path:
    sys.path.insert(0, str(DOM0))

from netinstall_dom0 import agent as agent_module  # noqa: E402
from netinstall_dom0.agent import EXIT_REVOKED, RETRY_DELAYS, Agent, Outcome, serve  # noqa: E402
from netinstall_dom0.config import AgentConfig  # noqa: E402
from netinstall_dom0.errors import ConfigError, ServerError, Unauthorized  # noqa: E402
from netinstall_dom0.facts import MULTIPATH_MAPS  # noqa: E402
from netinstall_dom0.installer import grub_entry, parse_checkin_reply  # noqa: E402
from netinstall_dom0.layout import Layout  # noqa: E402
from netinstall_dom0.server import ServerClient  # noqa: E402

from common.process import Completed  # noqa: E402
from common.protocol.messages import Checkin  # noqa: E402

SERVER = "http://192.168.77.1:8080"
MAC = "52:54:00:12:34:56"
CREDENTIAL = "agent-credential-Kp4vN7"
INSTALL_TOKEN = "install-token-Zq8xW3"
CHECKIN = f"{SERVER}/api/v1/hosts/52%3A54%3A00%3A12%3A34%3A56/checkin"
BOOT_UUID = "0b6e9d7c-1f2a-4c3b-8d4e-5f6a7b8c9d0e"
FILES = {
    f"{SERVER}/repo/0.2.0/boot/xen.gz": b"xen image",
    f"{SERVER}/repo/0.2.0/boot/vmlinuz": b"kernel image",
    f"{SERVER}/repo/0.2.0/install.img": b"initrd image",
}
KERNEL_CMDLINE = (
    f"console=hvc0 answerfile={SERVER}/answerfile/{MAC}?token={INSTALL_TOKEN} install "
    f"netinstall.server={SERVER} netinstall.token={INSTALL_TOKEN}"
)
FINDMNT = ("findmnt", "-n", "-o", "UUID,TARGET", "-T", "/boot")


def upgrade(reboot: str = "auto", version: str = "0.2.0") -> dict[str, Any]:
    return {
        "action": "upgrade",
        "version": version,
        "reboot": reboot,
        "installer": {
            "xen": f"{SERVER}/repo/0.2.0/boot/xen.gz",
            "kernel": f"{SERVER}/repo/0.2.0/boot/vmlinuz",
            "initrd": f"{SERVER}/repo/0.2.0/install.img",
        },
        "cmdline": {"xen": "dom0_mem=2048M,max:2048M console=com1", "kernel": KERNEL_CMDLINE},
    }


NONE = {"action": "none"}


NO_MAPS = '{"major_version": 0, "minor_version": 1, "map_count": 0, "maps": []}'


class FakeRunner:
    """Records commands; the storage query of each check-in (``multipathd show maps json``)
    is answered with ``maps`` and kept apart, in ``queries``."""

    def __init__(self, boot: str = f"{BOOT_UUID} /", maps: str = NO_MAPS) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.queries: list[tuple[str, ...]] = []
        self.boot = boot
        self.maps = maps

    def __call__(self, argv: Sequence[str], *, ok_codes: Container[int] = (0,)) -> Completed:
        args = tuple(argv)
        if args == MULTIPATH_MAPS:
            self.queries.append(args)
            return Completed(args, 0, self.maps, "")
        self.calls.append(args)
        return Completed(args, 0, self.boot + "\n" if args == FINDMNT else "", "")


@dataclass
class FakeResponse:
    status_code: int
    body: Any = None
    content: bytes = b""

    def json(self) -> Any:
        return self.body

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        yield self.content[:4]
        yield self.content[4:]

    def close(self) -> None:
        pass


@dataclass
class FakeSession:
    """Check-in replies in order (a JSON body, a response or an exception); files by URL."""

    replies: list[dict[str, Any] | FakeResponse | Exception] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=lambda: dict(FILES))
    posts: list[tuple[str, Any, dict[str, str]]] = field(default_factory=list)
    gets: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    puts: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)

    def post(
        self, url: str, *, json: Any, headers: Mapping[str, str], timeout: float
    ) -> FakeResponse:
        self.posts.append((url, json, dict(headers)))
        reply = self.replies.pop(0) if self.replies else NONE
        if isinstance(reply, Exception):
            raise reply
        return reply if isinstance(reply, FakeResponse) else FakeResponse(200, reply)

    def get(
        self, url: str, *, headers: Mapping[str, str], timeout: float, stream: bool
    ) -> FakeResponse:
        self.gets.append((url, dict(headers)))
        if url not in self.files:
            return FakeResponse(404)
        return FakeResponse(200, content=self.files[url])

    def put(
        self, url: str, *, data: bytes, headers: Mapping[str, str], timeout: float
    ) -> FakeResponse:
        self.puts.append((url, data, dict(headers)))
        return FakeResponse(201)

    def states(self) -> list[str]:
        return [body["state"] for _, body, _ in self.posts]


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/netinstall-release").write_text("VERSION=0.1.0\n")
    return Layout(root)


def make_agent(layout: Layout, session: FakeSession, runner: FakeRunner) -> Agent:
    config = AgentConfig(SERVER, MAC, CREDENTIAL, checkin_interval=300)
    return Agent(config, ServerClient(SERVER, MAC, session), runner, layout)


class Stop(Exception):
    """Raised by the fake sleep to end an endless loop."""


def sleeper(limit: int) -> tuple[list[float], Any]:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) >= limit:
            raise Stop

    return sleeps, sleep


def no_sleep(seconds: float) -> None:
    raise AssertionError(f"the agent should have stopped instead of sleeping {seconds} s")


def test_none_does_nothing(layout: Layout) -> None:
    session, runner = FakeSession([NONE]), FakeRunner()
    assert make_agent(layout, session, runner).checkin_once() is Outcome.IDLE
    ((url, body, headers),) = session.posts
    assert isinstance(body.pop("free_mib"), int)  # the temporary directory's file system
    assert (url, body, headers) == (
        CHECKIN,
        {"protocol": 2, "running_version": "0.1.0", "state": "running", "updates": []},
        {"Authorization": f"Bearer {CREDENTIAL}"},
    )
    assert runner.calls == []
    assert session.gets == []
    assert not layout.installer_dir.exists()
    assert not layout.grub_entry.exists()


MAPS = json.dumps({
    "maps": [{
        "name": "mpatha", "uuid": "3500c50015ea71ac0", "paths": 2,
        "path_groups": [{"paths": [
            {"dev": "sda", "dm_st": "active", "chk_st": "ready"},
            {"dev": "sdb", "dm_st": "failed", "chk_st": "faulty"},
            {"dev": "sdc", "dm_st": "failed", "chk_st": "ready"},  # checker not yet run
            {"dev": "sdd", "dm_st": "active", "chk_st": "ghost"},
        ]}],
    }],
})  # fmt: skip


def test_a_san_host_reports_its_paths(layout: Layout) -> None:
    session, runner = FakeSession([NONE]), FakeRunner(maps=MAPS)
    make_agent(layout, session, runner).checkin_once()
    body = session.posts[0][1]
    assert body["multipath"] == [
        {
            "name": "mpatha",
            "wwid": "3500c50015ea71ac0",
            "paths": [
                {"device": "sda", "state": "ready"},
                {"device": "sdb", "state": "failed"},
                {"device": "sdc", "state": "failed"},
                {"device": "sdd", "state": "ghost"},
            ],
        }
    ]
    assert runner.queries == [MULTIPATH_MAPS]


def test_a_broken_storage_query_does_not_stop_the_checkin(layout: Layout) -> None:
    session = FakeSession([NONE])
    assert make_agent(layout, session, FakeRunner(maps="not json")).checkin_once() is Outcome.IDLE
    assert "multipath" not in session.posts[0][1]


def test_upgrade_with_automatic_reboot(layout: Layout) -> None:
    session, runner = FakeSession([upgrade("auto")]), FakeRunner()
    assert serve(make_agent(layout, session, runner), sleep=no_sleep) == 0

    installed = {p.name: p.read_bytes() for p in layout.installer_dir.iterdir()}
    assert installed == {
        "xen.gz": b"xen image",
        "vmlinuz": b"kernel image",
        "initrd.img": b"initrd image",
    }
    assert [url for url, _ in session.gets] == list(FILES)
    assert all(h == {"Authorization": f"Bearer {CREDENTIAL}"} for _, h in session.gets)
    assert layout.grub_entry.read_text() == (
        "# Written by netinstall-agent: boots the staged installer once (grub-reboot).\n"
        "menuentry 'netinstall-installer' {\n"
        "\tinsmod part_gpt\n"
        "\tinsmod part_msdos\n"
        "\tinsmod ext2\n"
        "\tinsmod gzio\n"
        f"\tsearch --no-floppy --fs-uuid --set=root {BOOT_UUID}\n"
        "\tmultiboot2 /boot/netinstall-installer/xen.gz placeholder"
        " dom0_mem=2048M,max:2048M console=com1\n"
        "\tmodule2 /boot/netinstall-installer/vmlinuz placeholder console=hvc0"
        f" 'answerfile={SERVER}/answerfile/{MAC}?token={INSTALL_TOKEN}' install"
        f" netinstall.server={SERVER} netinstall.token={INSTALL_TOKEN}\n"
        "\tmodule2 --nounzip /boot/netinstall-installer/initrd.img\n"
        "}\n"
    )
    assert stat.S_IMODE(layout.grub_entry.stat().st_mode) == 0o600
    assert runner.calls == [
        FINDMNT,
        ("grub-reboot", "netinstall-installer"),
        ("systemctl", "reboot"),
    ]
    assert session.states() == ["running", "signalled"]
    assert not layout.staged_marker.exists()


def test_restore_with_boot_on_its_own_file_system(layout: Layout) -> None:
    reply = upgrade("auto") | {"action": "restore"}
    del reply["version"]
    session, runner = FakeSession([reply]), FakeRunner(boot="4c2d-9a1e /boot")
    assert make_agent(layout, session, runner).checkin_once() is Outcome.REBOOTING
    entry = layout.grub_entry.read_text()
    assert "search --no-floppy --fs-uuid --set=root 4c2d-9a1e\n" in entry
    assert "\tmultiboot2 /netinstall-installer/xen.gz placeholder" in entry
    assert "\tmodule2 --nounzip /netinstall-installer/initrd.img\n" in entry


def test_manual_reboot_waits_and_reports_reboot_required(layout: Layout) -> None:
    # Replies to: the check-in, the signalled report, then three more check-ins.
    session = FakeSession([upgrade("manual"), NONE, NONE, upgrade("manual"), NONE])
    runner = FakeRunner()
    sleeps, sleep = sleeper(4)
    with pytest.raises(Stop):
        serve(make_agent(layout, session, runner), sleep=sleep)
    assert ("systemctl", "reboot") not in runner.calls
    assert runner.calls == [FINDMNT, ("grub-reboot", "netinstall-installer")]
    assert session.states() == [
        "running",
        "signalled",
        "installed-reboot-required",
        "installed-reboot-required",
        "installed-reboot-required",
    ]
    assert len(session.gets) == 3  # the same upgrade again is not fetched twice
    assert session.replies == []
    assert sleeps == [300, 300, 300, 300]


def test_a_new_assignment_while_waiting_is_staged(layout: Layout) -> None:
    session = FakeSession([upgrade("manual"), NONE, upgrade("auto", version="0.2.1")])
    runner = FakeRunner()
    agent = make_agent(layout, session, runner)
    assert agent.checkin_once() is Outcome.WAITING
    assert agent.checkin_once() is Outcome.REBOOTING
    assert runner.calls[-1] == ("systemctl", "reboot")
    assert len(session.gets) == 6


def test_nothing_assigned_removes_a_stale_installer(layout: Layout) -> None:
    layout.installer_dir.mkdir(parents=True)
    (layout.installer_dir / "xen.gz").write_bytes(b"old")
    layout.grub_entry.parent.mkdir(parents=True)
    layout.grub_entry.write_text("menuentry 'netinstall-installer' {}\n")
    (layout.grub_entry.parent / "grub.cfg").write_text("kept\n")
    assert make_agent(layout, FakeSession([NONE]), FakeRunner()).checkin_once() is Outcome.IDLE
    assert not layout.installer_dir.exists()
    assert not layout.grub_entry.exists()
    assert (layout.grub_entry.parent / "grub.cfg").exists()


def test_a_401_stops_the_agent(layout: Layout, caplog: pytest.LogCaptureFixture) -> None:
    session = FakeSession([FakeResponse(401)])
    code = serve(make_agent(layout, session, FakeRunner()), sleep=no_sleep)
    assert code == EXIT_REVOKED
    assert "refused the agent credential (401): it was revoked; stopping" in caplog.text


def test_network_errors_are_retried_sooner_than_the_interval(
    layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    session = FakeSession(
        [requests.ConnectionError("Network is unreachable"), FakeResponse(502), NONE]
    )
    sleeps, sleep = sleeper(3)
    with pytest.raises(Stop):
        serve(make_agent(layout, session, FakeRunner()), sleep=sleep)
    assert len(session.posts) == 3
    assert sleeps == [2, 5, 300]  # RETRY_DELAYS, then the interval once it went through
    assert "check-in failed: POST" in caplog.text
    assert "next try in 2 s" in caplog.text
    assert "HTTP 502" in caplog.text


def test_retries_end_at_the_interval_and_start_again_after_a_success(layout: Layout) -> None:
    down = requests.ConnectionError("Network is unreachable")
    session = FakeSession([*[down] * 9, NONE, down])
    sleeps, sleep = sleeper(11)
    with pytest.raises(Stop):
        serve(make_agent(layout, session, FakeRunner()), sleep=sleep)
    assert sleeps == [*RETRY_DELAYS, 300, 300, 300, 2]


def test_once_returns_the_failure(layout: Layout) -> None:
    session = FakeSession([requests.ConnectionError("down")])
    assert serve(make_agent(layout, session, FakeRunner()), once=True, sleep=no_sleep) == 1


def test_an_empty_download_stages_nothing(layout: Layout) -> None:
    session = FakeSession([upgrade("auto")])
    session.files[f"{SERVER}/repo/0.2.0/boot/vmlinuz"] = b""
    runner = FakeRunner()
    with pytest.raises(ServerError, match="the file is empty"):
        make_agent(layout, session, runner).checkin_once()
    assert sorted(p.name for p in layout.installer_dir.iterdir()) == ["xen.gz"]
    assert runner.calls == []
    assert not layout.grub_entry.exists()


def test_the_credential_goes_only_to_the_server(layout: Layout) -> None:
    reply = upgrade("auto")
    reply["installer"]["initrd"] = "https://mirror.example.net/install.img"
    session = FakeSession([reply])
    session.files["https://mirror.example.net/install.img"] = b"initrd"
    make_agent(layout, session, FakeRunner()).checkin_once()
    assert session.gets[-1] == ("https://mirror.example.net/install.img", {})


def test_secrets_never_reach_the_log(layout: Layout, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    session = FakeSession([upgrade("manual"), requests.ConnectionError("down"), FakeResponse(401)])
    _, sleep = sleeper(5)
    assert serve(make_agent(layout, session, FakeRunner()), sleep=sleep) == EXIT_REVOKED
    assert "grub-reboot" in caplog.text or "GRUB entry" in caplog.text
    assert CREDENTIAL not in caplog.text
    assert INSTALL_TOKEN not in caplog.text


def read_reply(reply: dict[str, Any]) -> object:
    """A check-in reply as the agent reads it: the protocol's declaration, then its rules."""
    client = ServerClient(SERVER, MAC, FakeSession([reply]))
    return parse_checkin_reply(client.checkin(CREDENTIAL, Checkin("0.1.0")))


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ({"action": "reinstall"}, "field 'action' must be one of none, upgrade, restore"),
        (upgrade() | {"reboot": "later"}, "field 'reboot' must be one of auto, manual"),
        (upgrade() | {"reboot": None}, "reboot must be auto or manual"),
        (upgrade() | {"installer": None}, "needs installer and cmdline"),
        (upgrade() | {"installer": {"xen": "tftp://x/xen.gz"}}, "'installer.kernel' is missing"),
        (
            upgrade() | {"installer": {**upgrade()["installer"], "xen": "tftp://x/xen.gz"}},
            "installer.xen must be an http",
        ),
        (upgrade() | {"cmdline": {"xen": "a\nmenuentry x", "kernel": ""}}, "cmdline.xen must be"),
        (upgrade() | {"cmdline": {"xen": 1, "kernel": ""}}, "'cmdline.xen' must be a string"),
    ],
)
def test_malformed_replies(reply: dict[str, Any], message: str) -> None:
    with pytest.raises(ServerError, match=message):
        read_reply(reply)


def test_a_reply_may_carry_fields_a_newer_server_added() -> None:
    assert read_reply({"protocol": 3, "action": "none", "advice": "later"}) is None
    assignment = read_reply(upgrade() | {"protocol": 2, "checksum": "abc"})
    assert assignment is not None


def test_grub_quoting_keeps_each_word_one_argument() -> None:
    entry = grub_entry(
        BOOT_UUID,
        "/boot/netinstall-installer",
        "",
        "network_config=static:ip=10.0.0.5;netmask=255.255.255.0 x=$y it's",
    )
    assert (
        "\tmodule2 /boot/netinstall-installer/vmlinuz placeholder"
        " 'network_config=static:ip=10.0.0.5;netmask=255.255.255.0' 'x=$y' 'it'\\''s'\n"
    ) in entry
    assert "\tmultiboot2 /boot/netinstall-installer/xen.gz placeholder\n" in entry


def test_main_without_agent_config_exits_2(layout: Layout) -> None:
    assert agent_module.main(["--once", "--root", str(layout.root)]) == 2


def test_agent_config_round_trip(layout: Layout) -> None:
    layout.agent_config.parent.mkdir(parents=True)
    layout.agent_config.write_text(
        json.dumps({"server": SERVER, "mac": MAC, "credential": CREDENTIAL, "checkin_interval": 0})
    )
    assert agent_module.main(["--once", "--root", str(layout.root)]) == 2


# --- what the builder copies into dom0 (both services) -----------------------------------


def unit_settings(name: str) -> list[tuple[str, str]]:
    text = (DOM0 / "systemd" / name).read_text()
    pairs = [line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#"]
    return [(key, value) for key, value in pairs]


def test_units_name_the_files_the_code_uses() -> None:
    live = Layout()
    firstboot_unit = unit_settings("netinstall-firstboot.service")
    assert ("Type", "oneshot") in firstboot_unit
    # Issue 18: made while the network and Xen come up, ahead of the rest for the CPU.
    assert ("After", "local-fs.target") in firstboot_unit
    assert ("Nice", "-10") in firstboot_unit
    assert ("CPUWeight", "1000") in firstboot_unit
    assert ("ExecStart", "/usr/sbin/netinstall-firstboot") in firstboot_unit
    assert ("ConditionPathExists", str(live.firstboot_config)) in firstboot_unit
    assert ("ConditionPathExists", f"!{live.done_marker}") in firstboot_unit
    assert ("RestartPreventExitStatus", f"{ConfigError.exit_code} {Unauthorized.exit_code}") in (
        firstboot_unit
    )
    agent_unit = unit_settings("netinstall-agent.service")
    assert ("ExecStart", "/usr/sbin/netinstall-agent") in agent_unit
    assert ("ConditionPathExists", str(live.agent_config)) in agent_unit
    assert ("Restart", "on-failure") in agent_unit
    assert ("After", "network-online.target netinstall-firstboot.service") in agent_unit


@pytest.mark.parametrize("name", ["firstboot", "agent"])
def test_launchers_start_main(name: str, layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    import runpy

    launcher = DOM0 / "sbin" / f"netinstall-{name}"
    assert launcher.read_text().startswith("#!/usr/bin/python3\n")
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o755
    monkeypatch.setattr(sys, "argv", [str(launcher), "--root", str(layout.root)])
    monkeypatch.setattr(sys, "path", list(sys.path))  # the launcher prepends its directory
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(launcher), run_name="__main__")
    assert exit_.value.code == 2  # no configuration under the test root
