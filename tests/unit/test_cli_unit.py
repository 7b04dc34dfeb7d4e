"""``netinstall server unit``: the systemd unit's text for the options given."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from netinstall import cli_unit
from netinstall.cli import main
from netinstall.cli_unit import (
    ADMIN,
    BIND,
    RAW,
    RESTART_SEC,
    STOP_TIMEOUT,
    exec_word,
    netinstall_program,
)
from pxe_server.registry import Registry


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["server", "unit", *args])


def settings(text: str) -> dict[str, dict[str, list[str]]]:
    """The unit as sections of key -> values (a key may repeat), comments left out."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert sep, line
        current.setdefault(key, []).append(value)
    return sections


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    where = tmp_path / "srv"
    with Registry.open(where):
        pass
    return where


def unit_of(*args: str) -> dict[str, dict[str, list[str]]]:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return settings(result.stdout)


def test_root_unit_runs_the_installed_server_with_what_it_needs(directory: Path) -> None:
    unit = unit_of(str(directory))
    assert unit["Unit"]["After"] == ["network-online.target"]
    assert unit["Unit"]["Wants"] == ["network-online.target"]
    service = unit["Service"]
    program = netinstall_program()
    assert program.is_absolute()
    assert service["ExecStart"] == [f"{program} server run {directory}"]
    assert service["Restart"] == ["on-failure"]
    assert service["RestartSec"] == [str(RESTART_SEC)]
    assert service["TimeoutStopSec"] == [str(STOP_TIMEOUT)]
    assert service["KillMode"] == ["mixed"]  # the server stops its dnsmasq itself
    assert service["StandardOutput"] == service["StandardError"] == ["journal"]
    # TFTP on 69 and GRUB's whole segments; no DHCP, so no raw sockets
    assert service["CapabilityBoundingSet"] == [f"{BIND} {ADMIN}"]
    assert "User" not in service
    assert "AmbientCapabilities" not in service
    assert service["ProtectSystem"] == ["strict"]
    assert service["ReadWritePaths"] == [str(directory)]
    assert service["PrivateTmp"] == ["yes"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert "AF_PACKET" in service["RestrictAddressFamilies"][0].split()
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_a_shared_directory_is_writable_and_mounted_first(directory: Path, tmp_path: Path) -> None:
    from pxe_server import shared_dir

    mount = shared_dir.record(directory, str(tmp_path / "shared"))
    unit = unit_of(str(directory))
    assert unit["Unit"]["RequiresMountsFor"] == [str(mount)]
    assert unit["Service"]["ReadWritePaths"] == [f"{directory} {mount}"]


def test_user_gets_the_same_capabilities_as_ambient_ones(directory: Path) -> None:
    service = unit_of(str(directory), "--user", "netinstall")["Service"]
    assert service["User"] == ["netinstall"]
    assert service["AmbientCapabilities"] == service["CapabilityBoundingSet"] == [f"{BIND} {ADMIN}"]


@pytest.mark.parametrize(
    ("extra", "caps"),
    [
        ("--dhcp full --interface eno1 --range 10.0.0.100,10.0.0.200", [BIND, ADMIN, RAW]),
        ("--dhcp proxy --interface eno1", [BIND, ADMIN, RAW]),
        ("--tftp-port 6969", [ADMIN]),  # nothing below 1024: no CAP_NET_BIND_SERVICE
        ("--tftp-port 6969 --http-port 80", [BIND, ADMIN]),
    ],
)
def test_capabilities_follow_the_options(directory: Path, extra: str, caps: list[str]) -> None:
    result = invoke(str(directory), "--extra-args", extra)
    assert result.exit_code == 0, result.output
    service = settings(result.stdout)["Service"]
    assert service["CapabilityBoundingSet"] == [" ".join(caps)]
    assert service["ExecStart"][0].endswith(f"server run {directory} {extra}")
    for cap in caps:  # each one says why, in a comment above the set
        assert f"# {cap}: " in result.stdout


def test_proxy_mode_says_why_it_needs_raw_sockets(directory: Path) -> None:
    result = invoke(str(directory), "--extra-args", "--dhcp proxy --interface eno1")
    assert "AF_PACKET socket" in result.stdout
    assert "HTTP on port" not in result.stdout


def test_extra_args_repeat_and_keep_their_quoting(directory: Path) -> None:
    result = invoke(
        str(directory), "--extra-args", "--dhcp full --interface eno1", "--extra-args",
        "--range 10.0.0.1,10.0.0.9",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    command = settings(result.stdout)["Service"]["ExecStart"][0]
    assert shlex.split(command)[4:] == [
        "--dhcp", "full", "--interface", "eno1", "--range", "10.0.0.1,10.0.0.9",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("--dhpc full", "No such option '--dhpc'"),
        ("--dhcp full --interface eno1", "--dhcp full needs --range FIRST,LAST"),
        ("--dhcp proxy", "--dhcp proxy needs --interface IF"),
        ("--dhcp maybe --interface eno1", "expected off, full or proxy"),
        ("--tftp-port sixty-nine", "--tftp-port 'sixty-nine' is not a port number"),
        ("--http-port 70000", "--http-port '70000' is not a port number"),
        ("/srv/other", "unexpected extra argument"),
        ("--dir /srv/other", "give the server directory as DIR, not --dir"),
        ("--help", "--help is no server option"),
        ("--interface 'eno1", "No closing quotation"),
    ],
)
def test_bad_extra_args_get_one_sentence(directory: Path, extra: str, message: str) -> None:
    result = invoke(str(directory), "--extra-args", extra)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert "[Service]" not in result.output


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ("root", "leave --user out to run as root"),
        ("bad user", "expected a user name"),
        ("nobody", "give the server a user of its own"),
    ],
)
def test_bad_user_refused(directory: Path, user: str, message: str) -> None:
    result = invoke(str(directory), "--user", user)
    assert result.exit_code != 0
    assert message in result.output


def test_directory_a_unit_cannot_hold_is_refused(tmp_path: Path) -> None:
    result = invoke(str(tmp_path / "my server"))
    assert result.exit_code != 0
    assert "holds a space" in result.output


def test_relative_directory_becomes_absolute(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(directory.parent)
    service = unit_of("srv")["Service"]
    assert service["ReadWritePaths"] == [str(directory)]


def test_notes_on_stderr_for_what_would_keep_it_from_starting(tmp_path: Path) -> None:
    result = invoke(str(tmp_path / "new"), "--user", "no-such-user-here")
    assert result.exit_code == 0
    assert "holds no registry yet: run `netinstall server init" in result.stderr
    assert "there is no user no-such-user-here here yet" in result.stderr
    assert "note:" not in result.stdout  # the unit alone on stdout, ready to redirect


@pytest.mark.parametrize(
    ("word", "written"),
    [
        ("plain-word_1.0/x:y,z", "plain-word_1.0/x:y,z"),
        ("two words", '"two words"'),
        ("50%", '"50%%"'),
        ("$HOME", '"$$HOME"'),
        ('say "hi"\\', '"say \\"hi\\"\\\\"'),
        (";", '";"'),
    ],
)
def test_exec_words_are_read_back_as_given(word: str, written: str) -> None:
    assert exec_word(word) == written


def test_control_characters_refused() -> None:
    with pytest.raises(cli_unit.InputError, match="control character"):
        exec_word("a\nb")
