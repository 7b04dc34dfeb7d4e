"""dom0 first boot: config validation, the local SR, facts, the running report, secrets.

The package runs in dom0 as a top-level ``netinstall_dom0``, so it is imported
that way here. Commands go to a fake runner, HTTP to a fake session.
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

from netinstall_dom0 import firstboot as firstboot_module  # noqa: E402
from netinstall_dom0.config import SrConfig, SrType, load_firstboot  # noqa: E402
from netinstall_dom0.errors import (  # noqa: E402
    ConfigError,
    NetworkError,
    SrRefused,
    Unauthorized,
)
from netinstall_dom0.facts import (  # noqa: E402
    ADDRESSES,
    parse_addresses,
    parse_release,
    parse_xl_info,
)
from netinstall_dom0.firstboot import NETWORK_ONLINE, NETWORK_WAIT, firstboot  # noqa: E402
from netinstall_dom0.layout import Layout  # noqa: E402
from netinstall_dom0.sr import SrFacts, plan  # noqa: E402

from common.errors import CommandError  # noqa: E402
from common.process import Completed, run  # noqa: E402
from common.protocol.messages import FIRST_BOOT_STEPS  # noqa: E402

SERVER = "http://192.168.77.1:8080"
MAC = "52:54:00:12:34:56"
TOKEN = "install-token-Zq8xW3"
CREDENTIAL = "agent-credential-Kp4vN7"
SR_UUID = "3f1c2a9e-7b44-4c1e-9d0a-5e6f7a8b9c0d"
VG = f"VG_XenStorage-{SR_UUID}"
LV = f"/dev/{VG}/{SR_UUID}"
PART3 = "/dev/disk/by-id/virtio-disk0-part3"
GUEST = "/dev/disk/by-id/virtio-disk1"
# What the by-id links point at on the test's imaginary host.
DEVICES = {PART3: "/dev/vda3", GUEST: "/dev/vdb"}
CMDLINE = "root=UUID=0b6e9d7c-1f2a-4c3b-8d4e-5f6a7b8c9d0e ro console=hvc0"

XL_INFO = """\
host                   : xenhost01
release                : 6.12.38+deb12-amd64
machine                : x86_64
nr_cpus                : 1
hw_caps                : 0f8bfbff:f6f8320b:2c100800:00000121:0000000f:009c27ab:00000000:00000100
virt_caps              : pv hvm hap shadow
total_memory           : 3071
free_memory            : 987
xen_major              : 4
xen_minor              : 17
xen_extra              : .5
xen_version            : 4.17.5
xen_caps               : xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64
xen_scheduler          : credit2
xen_changeset          :
xen_commandline        : placeholder console=com1 com1=115200,8n1 dom0_mem=2048M,max:2048M
cc_compile_date        : Tue Jul  1 10:00:00 UTC 2025
xend_config_format     : 4
"""

IP_ADDR = """\
3: xenbr0    inet 192.168.77.50/24 brd 192.168.77.255 scope global xenbr0\\       valid_lft forever
"""


class FakeRunner:
    """Records every argv; answers from ``outputs`` (longest matching argv prefix)."""

    def __init__(self, outputs: Mapping[tuple[str, ...], tuple[int, str]] | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.outputs = {("xl", "info"): (0, XL_INFO), ADDRESSES: (0, IP_ADDR), **(outputs or {})}
        self.fail: tuple[str, ...] | None = None

    def __call__(self, argv: Sequence[str], *, ok_codes: Container[int] = (0,)) -> Completed:
        args = tuple(argv)
        self.calls.append(args)
        if self.fail is not None and args[: len(self.fail)] == self.fail:
            raise CommandError(args, 5, "", "simulated failure")
        prefixes = [p for p in self.outputs if args[: len(p)] == p]
        rc, out = self.outputs[max(prefixes, key=len)] if prefixes else (0, "")
        if rc not in ok_codes:
            raise CommandError(args, rc, out, "")
        return Completed(args, rc, out, "")

    def changes(self) -> list[tuple[str, ...]]:
        """The calls that change something (everything but probes, waits and xl info)."""
        probes = {"pvs", "vgs", "lvs", "blkid", "findmnt", "xl", "ip", "udevadm", "timeout"}
        return [c for c in self.calls if c[0] not in probes]


@dataclass
class FakeResponse:
    status_code: int
    body: Any = None

    def json(self) -> Any:
        if self.body is None:
            raise ValueError("no JSON")
        return self.body

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        yield from ()

    def close(self) -> None:
        pass


def is_milestone(body: Any) -> bool:
    return body.get("state") == "installed" and body.get("step") in FIRST_BOOT_STEPS


@dataclass
class FakeSession:
    """Plays ``replies`` in order: a response, or an exception to raise.

    The milestones (``installed`` with a first-boot step) are kept apart, in
    ``milestones``, and answered from ``milestone_replies`` (200 once it is empty), so
    that ``posts`` and ``replies`` are the ``running`` report's; ``sent`` is every post's
    state and step, in order."""

    replies: list[FakeResponse | Exception] = field(default_factory=list)
    posts: list[tuple[str, Any, dict[str, str]]] = field(default_factory=list)
    milestones: list[tuple[str, Any, dict[str, str]]] = field(default_factory=list)
    milestone_replies: list[FakeResponse | Exception] = field(default_factory=list)
    sent: list[tuple[str, str | None]] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)

    def post(
        self, url: str, *, json: Any, headers: Mapping[str, str], timeout: float
    ) -> FakeResponse:
        self.sent.append((json["state"], json.get("step")))
        self.timeouts.append(timeout)
        if is_milestone(json):
            self.milestones.append((url, json, dict(headers)))
            reply = (
                self.milestone_replies.pop(0) if self.milestone_replies else FakeResponse(200, {})
            )
        else:
            self.posts.append((url, json, dict(headers)))
            reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def get(
        self, url: str, *, headers: Mapping[str, str], timeout: float, stream: bool
    ) -> FakeResponse:
        raise AssertionError("first boot downloads nothing")

    def put(
        self, url: str, *, data: bytes, headers: Mapping[str, str], timeout: float
    ) -> FakeResponse:
        raise AssertionError("first boot uploads nothing")


def accepted() -> FakeResponse:
    return FakeResponse(200, {"agent_credential": CREDENTIAL, "checkin_interval": 120})


def base_config(sr: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "server": SERVER,
        "mac": MAC,
        "token": TOKEN,
        "payload_version": "0.1.0",
        "sr": sr,
        "admin_interface": {"name": "eth0", "proto": "dhcp"},
        "hostname": "xenhost01",
    }


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    root = tmp_path / "root"
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/cmdline").write_text(CMDLINE + "\n")
    (root / "proc/sys/kernel/hostname").write_text("xenhost01\n")
    (root / "etc").mkdir()
    (root / "etc/netinstall-release").write_text('NAME="netinstall"\nVERSION="0.1.0"\n')
    (root / "etc/fstab").write_text("UUID=0b6e9d7c / ext4 errors=remount-ro 0 1\n")
    return Layout(root)


def write_config(layout: Layout, data: dict[str, Any]) -> None:
    layout.firstboot_config.parent.mkdir(parents=True, exist_ok=True)
    layout.firstboot_config.write_text(json.dumps(data))
    layout.firstboot_config.chmod(0o600)


def seed_state(layout: Layout, sr_uuid: str = SR_UUID) -> None:
    layout.state_file.parent.mkdir(parents=True, exist_ok=True)
    layout.state_file.write_text(json.dumps({"sr_uuid": sr_uuid, "done": False}))


def go(layout: Layout, runner: FakeRunner, session: FakeSession) -> list[float]:
    sleeps: list[float] = []
    firstboot(
        layout,
        runner,
        session,
        sleep=sleeps.append,
        new_uuid=lambda: SR_UUID,
        resolve=lambda dev: DEVICES.get(dev, dev),
    )
    return sleeps


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- configuration --------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mac": None}, "key 'mac': missing"),  # a server needs the MAC
        ({"server": "ftp://x/"}, "key 'server': expected an http:// or https:// URL"),
        ({"mac": "52:54:00:12:34"}, "key 'mac': expected a lowercase MAC"),
        ({"mac": "52:54:00:12:34:5A"}, "key 'mac': expected a lowercase MAC"),
        ({"token": ""}, "key 'token': expected a non-empty string"),
        ({"token": 42}, "key 'token': expected a non-empty string"),
        ({"payload_version": None}, "key 'payload_version': missing"),
        ({"sr": "lvm"}, "key 'sr': expected an object or null"),
        ({"sr": {"type": "nfs", "devices": [PART3]}}, "key 'sr.type': expected 'lvm' or 'ext'"),
        ({"sr": {"type": "lvm", "devices": []}}, "key 'sr.devices': expected a non-empty list"),
        ({"sr": {"type": "lvm", "devices": ["sdb"]}}, "key 'sr.devices': expected device paths"),
        ({"sr": {"type": "lvm", "devices": [GUEST, GUEST]}}, "key 'sr.devices': a device is"),
        ({"admin_interface": "eth0"}, "key 'admin_interface': expected an object or null"),
        ({"hostname": 7}, "key 'hostname': expected a non-empty string"),
    ],
)
def test_config_errors_name_the_key(layout: Layout, change: dict[str, Any], message: str) -> None:
    data = base_config({"type": "lvm", "devices": [PART3]})
    for key, value in change.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    write_config(layout, data)
    with pytest.raises(ConfigError) as err:
        load_firstboot(layout.firstboot_config)
    assert str(err.value).startswith(f"{layout.firstboot_config}: ")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"), [("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object")]
)
def test_config_that_is_not_an_object(layout: Layout, text: str, message: str) -> None:
    layout.firstboot_config.parent.mkdir(parents=True)
    layout.firstboot_config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_firstboot(layout.firstboot_config)


def test_config_is_read_into_types(layout: Layout) -> None:
    write_config(layout, base_config({"type": "ext", "devices": [PART3, GUEST]}))
    config = load_firstboot(layout.firstboot_config)
    assert config.sr == SrConfig(SrType.EXT, (PART3, GUEST))
    assert config.token == TOKEN
    assert TOKEN not in repr(config)


def test_missing_config_exits_2_with_one_line(
    layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    code = firstboot_module.main(["--root", str(layout.root)])
    assert code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"first boot failed: {layout.firstboot_config}: cannot read the file: "
        "No such file or directory"
    ]


# --- the local SR -------------------------------------------------------------------


def test_lvm_sr_on_a_fresh_system(layout: Layout) -> None:
    write_config(layout, base_config({"type": "lvm", "devices": [PART3, GUEST]}))
    runner = FakeRunner()
    go(layout, runner, FakeSession([accepted()]))
    assert runner.calls == [
        ("udevadm", "wait", "--timeout=300", PART3, GUEST),  # the links, before any probe
        ("pvs", "--noheadings", "--separator", "|", "-o", "pv_name,vg_name"),
        ("vgs", "--noheadings", "-o", "vg_name"),
        ("pvcreate", "--yes", PART3),
        ("pvcreate", "--yes", GUEST),
        ("vgcreate", VG, PART3, GUEST),
        NETWORK_ONLINE,  # the SR is made while the network and Xen come up; facts wait
        ("xl", "info"),
        ADDRESSES,
    ]
    assert json.loads(layout.state_file.read_text())["sr_uuid"] == SR_UUID


def test_ext_sr_on_a_fresh_system(layout: Layout) -> None:
    write_config(layout, base_config({"type": "ext", "devices": [PART3]}))
    runner = FakeRunner()
    go(layout, runner, FakeSession([accepted()]))
    assert runner.changes() == [
        ("pvcreate", "--yes", PART3),
        ("vgcreate", VG, PART3),
        ("lvcreate", "--yes", "-l", "100%FREE", "-n", SR_UUID, VG),
        ("mkfs.ext4", "-q", LV),
        ("mount", "-t", "ext4", LV, f"/var/run/sr-mount/{SR_UUID}"),
    ]
    assert layout.sr_mount_dir(SR_UUID).is_dir()
    fstab = layout.fstab.read_text().splitlines()
    assert fstab[0] == "UUID=0b6e9d7c / ext4 errors=remount-ro 0 1"
    assert fstab[-1] == f"{LV} /var/run/sr-mount/{SR_UUID} ext4 defaults,nofail 0 2"


def test_rerun_reuses_the_sr_uuid_and_skips_what_exists(layout: Layout) -> None:
    write_config(layout, base_config({"type": "lvm", "devices": [PART3, GUEST]}))
    seed_state(layout)
    runner = FakeRunner(
        {
            ("pvs",): (0, f"  /dev/vda3|{VG}\n  /dev/vdb|{VG}\n"),
            ("vgs",): (0, f"  {VG}\n"),
        }
    )
    session = FakeSession([accepted()])
    go(layout, runner, session)
    assert runner.changes() == []
    assert session.posts[0][1]["facts"]["sr_uuid"] == SR_UUID


def test_power_loss_between_pvcreate_and_vgcreate(layout: Layout) -> None:
    write_config(layout, base_config({"type": "lvm", "devices": [PART3, GUEST]}))
    seed_state(layout)
    runner = FakeRunner({("pvs",): (0, "  /dev/vda3|\n")})
    go(layout, runner, FakeSession([accepted()]))
    assert runner.changes() == [("pvcreate", "--yes", GUEST), ("vgcreate", VG, PART3, GUEST)]


def test_the_sr_uuid_is_saved_before_the_first_command(layout: Layout) -> None:
    write_config(layout, base_config({"type": "lvm", "devices": [PART3]}))
    runner = FakeRunner()
    runner.fail = ("vgcreate",)
    with pytest.raises(CommandError, match="vgcreate"):
        go(layout, runner, FakeSession())
    assert json.loads(layout.state_file.read_text()) == {"sr_uuid": SR_UUID, "done": False}
    # The next boot: the PV is there, the VG is not; a fresh uuid would be wrong.
    again = FakeRunner({("pvs",): (0, "  /dev/vda3|\n")})
    firstboot(
        layout,
        again,
        FakeSession([accepted()]),
        sleep=lambda _: None,
        new_uuid=lambda: "must-not-be-used",
        resolve=lambda dev: DEVICES.get(dev, dev),
    )
    assert again.changes() == [("vgcreate", VG, PART3)]


def test_ext_rerun_when_everything_is_there(layout: Layout) -> None:
    write_config(layout, base_config({"type": "ext", "devices": [PART3]}))
    seed_state(layout)
    line = f"{LV} /var/run/sr-mount/{SR_UUID} ext4 defaults,nofail 0 2"
    layout.fstab.write_text(f"UUID=0b6e9d7c / ext4 errors=remount-ro 0 1\n{line}\n")
    runner = FakeRunner(
        {
            ("pvs",): (0, f"  /dev/vda3|{VG}\n"),
            ("vgs",): (0, f"  VG_other\n  {VG}\n"),
            ("lvs",): (0, f"  {SR_UUID}\n"),
            ("blkid",): (0, "ext4\n"),
            ("findmnt",): (0, f"{LV}\n"),
        }
    )
    go(layout, runner, FakeSession([accepted()]))
    assert runner.changes() == []
    assert ("blkid", "-p", "-o", "value", "-s", "TYPE", LV) in runner.calls
    assert layout.fstab.read_text().count(line) == 1


def test_ext_rerun_after_lvcreate(layout: Layout) -> None:
    write_config(layout, base_config({"type": "ext", "devices": [PART3]}))
    seed_state(layout)
    runner = FakeRunner(
        {
            ("pvs",): (0, f"  /dev/vda3|{VG}\n"),
            ("vgs",): (0, f"  {VG}\n"),
            ("lvs",): (0, f"  {SR_UUID}\n"),
            ("blkid",): (2, ""),
            ("findmnt",): (1, ""),
        }
    )
    go(layout, runner, FakeSession([accepted()]))
    assert runner.changes() == [
        ("mkfs.ext4", "-q", LV),
        ("mount", "-t", "ext4", LV, f"/var/run/sr-mount/{SR_UUID}"),
    ]


def test_a_pv_of_another_volume_group_is_refused(layout: Layout) -> None:
    write_config(layout, base_config({"type": "lvm", "devices": [PART3, GUEST]}))
    runner = FakeRunner({("pvs",): (0, "  /dev/vdb|VG_XenStorage-0000-other\n")})
    session = FakeSession([accepted()])
    with pytest.raises(SrRefused) as err:
        go(layout, runner, session)
    assert str(err.value).startswith(
        f"{GUEST} is a physical volume of the volume group VG_XenStorage-0000-other"
    )
    assert runner.changes() == []
    assert session.posts == []
    assert not layout.done_marker.exists()


def test_an_sr_device_that_never_appears_stops_before_lvm(layout: Layout) -> None:
    write_config(layout, base_config({"type": "lvm", "devices": [PART3]}))
    runner = FakeRunner()
    runner.fail = ("udevadm", "wait")  # udevadm wait gave up after DEVICE_WAIT seconds
    session = FakeSession([accepted()])
    with pytest.raises(CommandError, match="udevadm exited"):
        go(layout, runner, session)
    assert runner.calls == [("udevadm", "wait", "--timeout=300", PART3)]
    assert session.posts == []
    assert not layout.done_marker.exists()


def test_a_network_that_is_not_online_in_time_still_reports(
    layout: Layout, caplog: pytest.LogCaptureFixture
) -> None:
    write_config(layout, base_config(None))
    runner = FakeRunner({NETWORK_ONLINE: (124, "")})  # timeout(1) ran out
    session = FakeSession([accepted()])
    go(layout, runner, session)
    assert NETWORK_ONLINE[:2] == ("timeout", str(NETWORK_WAIT))
    assert len(session.posts) == 1
    assert "network-online.target and xen.service not reached (status 124)" in caplog.text
    assert layout.done_marker.exists()


def test_a_foreign_file_system_on_our_lv_is_not_formatted() -> None:
    facts = SrFacts({"/dev/vda3": VG}, frozenset({VG}), lv_exists=True, fs_type="xfs")
    with pytest.raises(SrRefused, match="holds a xfs file system"):
        plan(SrConfig(SrType.EXT, (PART3,)), SR_UUID, facts, lambda d: DEVICES.get(d, d))


def test_a_new_device_joins_the_existing_group() -> None:
    facts = SrFacts({"/dev/vda3": VG}, frozenset({VG}))
    sr_plan = plan(SrConfig(SrType.LVM, (PART3, GUEST)), SR_UUID, facts, DEVICES.__getitem__)
    assert sr_plan.commands == (("pvcreate", "--yes", GUEST), ("vgextend", VG, GUEST))


# --- facts -------------------------------------------------------------------------


def test_xl_info_parsing() -> None:
    info = parse_xl_info(XL_INFO)
    assert info.xen_version == "4.17.5"
    assert info.host_memory_mib == 3071


def test_xl_info_without_memory() -> None:
    with pytest.raises(Exception, match="no total_memory"):
        parse_xl_info("xen_major : 4\nxen_minor : 17\n")


def test_release_file_parsing() -> None:
    assert parse_release("# c\nNAME=\"netinstall\"\nVERSION='0.2.0'\nBUILD=17\n") == {
        "NAME": "netinstall",
        "VERSION": "0.2.0",
        "BUILD": "17",
    }


# --- the running report ----------------------------------------------------------------


def test_running_report_stores_the_credential_and_drops_the_token(layout: Layout) -> None:
    write_config(layout, base_config({"type": "lvm", "devices": [PART3]}))
    session = FakeSession([accepted()])
    runner = FakeRunner()
    go(layout, runner, session)

    [(url, body, headers)] = session.posts
    assert url == f"{SERVER}/api/v1/hosts/52%3A54%3A00%3A12%3A34%3A56/events"
    assert headers == {"Authorization": f"Bearer {TOKEN}"}
    assert body == {
        "protocol": 2,
        "state": "running",
        "facts": {
            "xen_version": "4.17.5",
            "host_memory_mib": 3071,
            "cmdline": CMDLINE,
            "payload_version": "0.1.0",
            "sr_uuid": SR_UUID,
            "sr_type": "lvm",
            "hostname": "xenhost01",
            "addresses": [{"interface": "xenbr0", "address": "192.168.77.50/24"}],
        },
    }

    assert json.loads(layout.agent_config.read_text()) == {
        "server": SERVER,
        "mac": MAC,
        "credential": CREDENTIAL,
        "checkin_interval": 120,
    }
    assert mode(layout.agent_config) == 0o600
    remaining = json.loads(layout.firstboot_config.read_text())
    assert "token" not in remaining
    assert remaining == {
        k: v for k, v in base_config({"type": "lvm", "devices": [PART3]}).items() if k != "token"
    }
    assert mode(layout.firstboot_config) == 0o600
    assert layout.done_marker.exists()
    assert json.loads(layout.state_file.read_text())["done"] is True

    # The unit's condition keeps it from running again; if it did, nothing happens.
    again, quiet = FakeRunner(), FakeSession()
    go(layout, again, quiet)
    assert again.calls == []
    assert quiet.posts == []


def test_no_sr_and_no_release_file(layout: Layout) -> None:
    write_config(layout, base_config(None) | {"payload_version": "0.1.9"})
    layout.release_file.unlink()
    session = FakeSession([accepted()])
    runner = FakeRunner()
    go(layout, runner, session)
    assert runner.calls == [NETWORK_ONLINE, ("xl", "info"), ADDRESSES]
    facts = session.posts[0][1]["facts"]
    assert (facts.get("sr_uuid"), facts.get("sr_type"), facts["payload_version"]) == (
        None,
        None,
        "0.1.9",
    )
    assert facts["addresses"] == [{"interface": "xenbr0", "address": "192.168.77.50/24"}]
    assert not layout.state_file.read_text().count(SR_UUID)


def test_retries_with_backoff_until_the_network_is_up(layout: Layout) -> None:
    write_config(layout, base_config(None))
    down = requests.ConnectionError("Network is unreachable")
    session = FakeSession([down, requests.Timeout("timed out"), FakeResponse(503), accepted()])
    sleeps = go(layout, FakeRunner(), session)
    assert sleeps == [2, 4, 8]
    assert len(session.posts) == 4
    assert layout.agent_config.exists()


def test_gives_up_after_ten_tries_and_keeps_the_token(layout: Layout) -> None:
    write_config(layout, base_config(None))
    session = FakeSession([requests.ConnectionError("down") for _ in range(10)])
    with pytest.raises(NetworkError):
        go(layout, FakeRunner(), session)
    assert len(session.posts) == 10
    assert json.loads(layout.firstboot_config.read_text())["token"] == TOKEN
    assert not layout.agent_config.exists()
    assert not layout.done_marker.exists()


def test_a_refused_token_is_not_retried(layout: Layout) -> None:
    write_config(layout, base_config(None))
    session = FakeSession([FakeResponse(401, {"error": "bad token"})])
    with pytest.raises(Unauthorized, match="refused the install key"):
        go(layout, FakeRunner(), session)
    assert len(session.posts) == 1


def test_a_reply_without_a_credential_is_an_error(layout: Layout) -> None:
    write_config(layout, base_config(None))
    session = FakeSession([FakeResponse(200, {"checkin_interval": 300})])
    with pytest.raises(Exception, match="no agent_credential"):
        go(layout, FakeRunner(), session)
    assert not layout.done_marker.exists()


def test_rerun_after_the_credential_was_stored(layout: Layout) -> None:
    write_config(layout, base_config(None))
    layout.agent_config.write_text(json.dumps({"server": SERVER, "mac": MAC, "credential": "c"}))
    session = FakeSession()
    go(layout, FakeRunner(), session)
    assert session.posts == []
    assert "token" not in json.loads(layout.firstboot_config.read_text())
    assert layout.done_marker.exists()


def test_secrets_never_reach_the_log(layout: Layout, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    write_config(layout, base_config({"type": "ext", "devices": [PART3]}))
    session = FakeSession([requests.ConnectionError("down"), FakeResponse(500), accepted()])
    go(layout, FakeRunner(), session)
    write_config(layout, base_config(None))
    layout.done_marker.unlink()
    layout.state_file.unlink()
    layout.agent_config.unlink()
    with pytest.raises(Unauthorized) as err:
        go(layout, FakeRunner(), FakeSession([FakeResponse(401)]))
    assert caplog.records
    logged = caplog.text + str(err.value)
    assert "reported running" in logged
    assert TOKEN not in logged
    assert CREDENTIAL not in logged


# --- the command choke point (common.process, which dom0 carries) --------------------------


def test_run_raises_with_everything_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    def fake_run(args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert "shell" not in kwargs
        return subprocess.CompletedProcess(args, 5, "out\n", "  Volume group not found\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(CommandError) as err:
        run(["vgs", "VG_x"])
    assert (err.value.argv, err.value.returncode) == (("vgs", "VG_x"), 5)
    assert (err.value.stdout, err.value.stderr) == ("out\n", "  Volume group not found\n")
    assert str(err.value) == "vgs exited with status 5: Volume group not found"
    assert run(["vgs", "VG_x"], ok_codes=(0, 5)).stdout == "out\n"


def test_parse_addresses_skips_other_lines() -> None:
    text = IP_ADDR + "garbage\n4: eth1    inet6 fd77::5/64 scope global\n"
    assert parse_addresses(text) == (("xenbr0", "192.168.77.50/24"),)
    assert parse_addresses("") == ()


def test_without_a_server_the_sr_is_made_and_nothing_reported(layout: Layout) -> None:
    write_config(
        layout, base_config({"type": "lvm", "devices": [PART3]}) | {"server": None, "token": None}
    )
    session = FakeSession([])
    runner = FakeRunner()
    go(layout, runner, session)
    assert ("vgcreate", VG, PART3) in runner.calls
    assert session.posts == []
    assert not layout.agent_config.exists()
    assert json.loads(layout.state_file.read_text())["done"] is True


def test_a_server_needs_a_mac(layout: Layout) -> None:
    write_config(layout, base_config(None) | {"mac": None})
    with pytest.raises(ConfigError, match="key 'mac': missing"):
        go(layout, FakeRunner(), FakeSession([]))


# --- the milestones before running ------------------------------------------------------


def test_milestones_come_before_running_in_order(layout: Layout) -> None:
    write_config(layout, base_config({"type": "lvm", "devices": [PART3]}))
    session = FakeSession([accepted()])
    go(layout, FakeRunner(), session)
    assert session.sent == [
        ("installed", "first-boot"),
        ("installed", "sr-created"),
        ("running", None),
    ]
    (url, started, headers), (_, sr, _) = session.milestones
    assert url == f"{SERVER}/api/v1/hosts/52%3A54%3A00%3A12%3A34%3A56/events"
    assert headers == {"Authorization": f"Bearer {TOKEN}"}  # the install key, as running
    assert started == {
        "protocol": 2,
        "state": "installed",
        "step": "first-boot",
        "message": "first boot started",
    }
    assert sr["message"] == f"local SR lvm {SR_UUID} is ready"
    # A milestone's try is short: the SR does not wait for the network.
    assert session.timeouts[:2] == [firstboot_module.MILESTONE_TIMEOUT] * 2
    assert session.timeouts[2] > firstboot_module.MILESTONE_TIMEOUT
    assert layout.agent_config.exists()


def test_milestones_wait_for_the_network_and_keep_their_order(layout: Layout) -> None:
    write_config(layout, base_config({"type": "lvm", "devices": [PART3]}))
    down = requests.ConnectionError("Network is unreachable")
    session = FakeSession([accepted()], milestone_replies=[down, requests.Timeout("slow")])
    runner = FakeRunner()
    go(layout, runner, session)
    # Tried as it started (down), again when the SR was made (still down; sr-created is
    # not sent before it), then both once the network is online, before running.
    assert session.sent == [
        ("installed", "first-boot"),
        ("installed", "first-boot"),
        ("installed", "first-boot"),
        ("installed", "sr-created"),
        ("running", None),
    ]
    assert layout.agent_config.exists()


def test_a_milestone_the_server_refuses_is_dropped_not_fatal(layout: Layout) -> None:
    write_config(layout, base_config({"type": "lvm", "devices": [PART3]}))
    refused = FakeResponse(409, {"protocol": 2, "error": "host is running"})
    session = FakeSession([accepted()], milestone_replies=[refused, FakeResponse(500)])
    go(layout, FakeRunner(), session)
    # first-boot refused (dropped), sr-created a 500 (tried again before running).
    assert session.sent == [
        ("installed", "first-boot"),
        ("installed", "sr-created"),
        ("installed", "sr-created"),
        ("running", None),
    ]
    assert layout.agent_config.exists()
    assert layout.done_marker.exists()


def test_no_sr_means_no_sr_milestone(layout: Layout) -> None:
    write_config(layout, base_config(None))
    session = FakeSession([accepted()])
    go(layout, FakeRunner(), session)
    assert session.sent == [("installed", "first-boot"), ("running", None)]


def test_no_milestones_without_a_server_or_after_running(layout: Layout) -> None:
    write_config(layout, {**base_config({"type": "lvm", "devices": [PART3]}), "server": None})
    session = FakeSession()
    go(layout, FakeRunner(), session)
    assert session.sent == []

    again = Layout(layout.root)
    write_config(again, base_config(None))
    again.state_file.unlink()
    again.done_marker.unlink(missing_ok=True)
    again.agent_config.write_text(json.dumps({"server": SERVER, "mac": MAC, "credential": "c"}))
    quiet = FakeSession()
    go(again, FakeRunner(), quiet)
    assert quiet.sent == []
