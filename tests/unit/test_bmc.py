"""A host's BMC without a BMC: its URL parsed (every bad form one sentence), its password
sealed with the server directory's key (a copy of the database alone does not open it),
its rows in the registry (on SQLite here, on PostgreSQL through
tests/integration/test_bmc_registry_postgresql.py), the CLI's refusals, and what is shown.
What a real BMC says is tests/integration/test_bmc_emulators.py's."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from common.errors import InputError
from common.protocol.messages import BmcSpec, PowerAction, PowerRequest, Presence
from netinstall.cli import main
from pxe_server import bmc_control
from pxe_server.bmc_url import BmcKind, parse_bmc_url
from pxe_server.registry import Registry, UnknownHost
from pxe_server.secrets import BMC_KEY_FILE, BmcKey, BmcKeyError
from pxe_server.store.tables import bmcs
from tests.registry_engines import execute

MAC = "52:54:00:12:34:56"
PASSWORD = "bmc-Secret-0451"


# -- the URL ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kind", "canonical"),
    [
        ("redfish://admin@10.0.0.5", BmcKind.REDFISH, "redfish://admin@10.0.0.5"),
        ("redfish://admin@10.0.0.5:443", BmcKind.REDFISH, "redfish://admin@10.0.0.5"),
        (
            "Redfish://root@BMC-7.Example.org:8443/redfish/v1/Systems/System.Embedded.1/",
            BmcKind.REDFISH,
            "redfish://root@bmc-7.example.org:8443/redfish/v1/Systems/System.Embedded.1",
        ),
        ("redfish+http://admin@127.0.0.1:8000", BmcKind.REDFISH_HTTP, None),
        ("redfish://admin@[fd00::5]:8443", BmcKind.REDFISH, None),
        ("ipmi://ADMIN@10.0.0.6", BmcKind.IPMI, None),
        ("ipmi://admin@10.0.0.6:6230", BmcKind.IPMI, None),
    ],
)
def test_good_bmc_urls_parse_and_print_back(
    given: str, kind: BmcKind, canonical: str | None
) -> None:
    url = parse_bmc_url(given)
    assert url.kind is kind
    assert str(url) == (canonical or given)
    assert parse_bmc_url(str(url)) == url


def test_a_redfish_url_gives_its_base_and_system() -> None:
    url = parse_bmc_url("redfish://admin@[fd00::5]:8443/redfish/v1/Systems/1")
    assert (url.base_url, url.system, url.address) == ("https://[fd00::5]:8443", "1", "fd00::5")
    assert parse_bmc_url("redfish+http://a@h").base_url == "http://h:80"
    assert parse_bmc_url("ipmi://a@h").port == 623


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("", "--bmc is empty: give redfish://USER@ADDR or ipmi://USER@ADDR"),
        ("http://admin@h", "--bmc http://admin@h: give redfish://, redfish+http:// or ipmi:// "
         "(USER@ADDR[:PORT])"),
        ("10.0.0.5", "--bmc 10.0.0.5: give redfish://, redfish+http:// or ipmi:// "
         "(USER@ADDR[:PORT])"),
        ("redfish://10.0.0.5", "--bmc redfish://10.0.0.5: the BMC user is missing (USER@ADDR)"),
        ("redfish://admin:pw@10.0.0.5", "--bmc redfish://admin:pw@10.0.0.5: a password does "
         "not go in the URL: give it in --bmc-password-file"),
        ("redfish://admin@", "--bmc redfish://admin@: the BMC's address is missing"),
        ("redfish://admin@h:", "--bmc redfish://admin@h:: the port after ':' is missing"),
        ("redfish://admin@h:0", "--bmc redfish://admin@h:0: port '0' is not a number from 1 to "
         "65535"),
        ("redfish://admin@h:99999", "--bmc redfish://admin@h:99999: port '99999' is not a "
         "number from 1 to 65535"),
        ("redfish://admin@h_x", "--bmc redfish://admin@h_x: 'h_x' is not a host name or an IP "
         "address"),
        ("redfish://admin@[zz::1]", "--bmc redfish://admin@[zz::1]: [zz::1] is not a bracketed "
         "IPv6 address"),
        ("redfish://admin@h/redfish/v1/Managers/1", "--bmc redfish://admin@h/redfish/v1/"
         "Managers/1: the path is not /redfish/v1/Systems/ID"),
        ("redfish://admin@h?x=1", "--bmc redfish://admin@h?x=1: a BMC URL has no query or "
         "fragment"),
        ("ipmi://admin@h/x", "--bmc ipmi://admin@h/x: an ipmi:// URL has no path"),
        ("ipmi://a-very-long-user-name@h", "--bmc ipmi://a-very-long-user-name@h: an IPMI user "
         "name has 16 characters at most"),
        ("redfish://ad%20min@h", "--bmc redfish://ad%20min@h: user 'ad%20min' is not 1 to 64 "
         "letters, digits or ._~+-"),
        ("redfish://admin@h x", "--bmc holds a space or a character that is not printable"),
        ("redfish://admin@" + "h" * 600, "--bmc has more than 512 characters"),
    ],
)  # fmt: skip
def test_every_bad_bmc_url_is_one_sentence(given: str, said: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_bmc_url(given)
    assert caught.value.problems == (said,)


# -- the sealed password --------------------------------------------------------------


def test_the_key_is_made_0600_and_opens_what_it_sealed(tmp_path: Path) -> None:
    key = BmcKey.load(tmp_path, create=True)
    assert stat.S_IMODE((tmp_path / BMC_KEY_FILE).stat().st_mode) == 0o600
    sealed = key.seal(MAC, PASSWORD)
    assert PASSWORD not in sealed
    again = BmcKey.load(tmp_path)
    assert again.key_id == key.key_id
    assert again.unseal(MAC, sealed, key.key_id) == PASSWORD
    assert PASSWORD not in repr(again)


def test_a_password_sealed_for_one_host_does_not_open_for_another(tmp_path: Path) -> None:
    key = BmcKey.load(tmp_path, create=True)
    sealed = key.seal(MAC, PASSWORD)
    with pytest.raises(BmcKeyError, match="the stored BMC password of 52:54:00:12:34:57 does"):
        key.unseal("52:54:00:12:34:57", sealed, key.key_id)


def test_another_servers_key_says_it_differs(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sealed_by = BmcKey.load(tmp_path / "a", create=True)
    other = BmcKey.load(tmp_path / "b", create=True)
    with pytest.raises(BmcKeyError) as caught:
        other.unseal(MAC, sealed_by.seal(MAC, PASSWORD), sealed_by.key_id)
    assert caught.value.problems == (
        f"this server cannot open the BMC password of {MAC}: {tmp_path / 'b' / BMC_KEY_FILE} "
        "differs from the server that stored it",
    )


def test_a_missing_or_malformed_key_file_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(BmcKeyError, match=r"bmc-key is missing: this server cannot open"):
        BmcKey.load(tmp_path)
    (tmp_path / BMC_KEY_FILE).write_text("not a key\n")
    with pytest.raises(BmcKeyError, match=r"bmc-key does not hold a BMC key \(64 hex digits\)"):
        BmcKey.load(tmp_path, create=True)


# -- the registry ----------------------------------------------------------------------------


def _spec(url: str = "redfish://admin@10.0.0.5", **kwargs: object) -> BmcSpec:
    return BmcSpec(url, PASSWORD, **kwargs)  # type: ignore[arg-type]


def test_a_stored_bmc_is_sealed_in_the_database_and_opens_with_the_directory_key(
    reg: Registry, registry_dir: Path
) -> None:
    reg.add_host(MAC)
    bmc_control.set_host_bmc(reg, MAC, _spec(insecure=True))
    (row,) = execute(registry_dir, select(bmcs))[0]
    assert PASSWORD not in json.dumps([str(value) for value in row])
    assert reg.bmc_records()[MAC].password is Presence.SET
    assert reg.bmc_records()[MAC].insecure
    assert bmc_control.access(reg, MAC).password == PASSWORD
    # The database alone: without DIR/bmc-key nothing opens it.
    (registry_dir / BMC_KEY_FILE).rename(registry_dir / "elsewhere")
    with pytest.raises(BmcKeyError, match="bmc-key is missing"):
        bmc_control.access(reg, MAC)


def test_a_new_key_is_not_made_beside_passwords_another_key_sealed(
    reg: Registry, registry_dir: Path
) -> None:
    reg.add_host(MAC)
    bmc_control.set_host_bmc(reg, MAC, _spec())
    (registry_dir / BMC_KEY_FILE).unlink()
    reg.add_host("52:54:00:12:34:57")
    with pytest.raises(BmcKeyError, match="bmc-key is missing"):
        bmc_control.set_host_bmc(reg, "52:54:00:12:34:57", _spec())
    assert not (registry_dir / BMC_KEY_FILE).exists()


def test_a_hosts_bmc_goes_with_the_host_and_can_be_removed(reg: Registry) -> None:
    reg.add_host(MAC)
    bmc_control.set_host_bmc(reg, MAC, _spec("ipmi://admin@10.0.0.6"))
    assert reg.bmc(MAC) is not None
    bmc_control.set_host_bmc(reg, MAC, None)
    assert reg.bmc(MAC) is None
    bmc_control.set_host_bmc(reg, MAC, _spec())
    reg.delete_host(MAC)
    assert reg.bmc_records() == {}
    with pytest.raises(UnknownHost):
        bmc_control.set_host_bmc(reg, MAC, _spec())


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        (_spec("ipmi://admin@h", insecure=True),
         "--bmc-insecure is for a redfish:// BMC (HTTPS), not ipmi://"),
        (_spec("redfish+http://admin@h", ca_pem="x"),
         "--bmc-ca-file is for a redfish:// BMC (HTTPS), not redfish+http://"),
        (_spec(ca_pem="x", insecure=True),
         "--bmc-ca-file and --bmc-insecure exclude each other: give one"),
        (_spec(ca_pem="not a certificate"), "--bmc-ca-file holds no PEM certificate"),
    ],
)  # fmt: skip
def test_a_bad_bmc_spec_is_refused_before_anything_is_stored(
    reg: Registry, spec: BmcSpec, said: str
) -> None:
    reg.add_host(MAC)
    with pytest.raises(InputError) as caught:
        bmc_control.set_host_bmc(reg, MAC, spec)
    assert caught.value.problems == (said,)
    assert reg.bmc(MAC) is None


def test_power_without_a_bmc_says_how_to_give_one(reg: Registry) -> None:
    reg.add_host(MAC)
    with pytest.raises(InputError) as caught:
        bmc_control.power(reg, MAC, PowerRequest(PowerAction.STATUS))
    assert caught.value.problems == (
        f"host {MAC} has no BMC; give it one with "
        f"`netinstall host set {MAC} --bmc URL --bmc-password-file FILE`",
    )


# -- the CLI ------------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def server(tmp_path: Path) -> Path:
    where = tmp_path / "srv"
    code, out, err = run("server", "init", str(where))
    assert code == 0, err
    assert f"BMC key: {where / BMC_KEY_FILE} (written, mode 0600)" in out
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    return where


def test_host_add_stores_the_bmc_and_nothing_shows_its_password(
    server: Path, tmp_path: Path
) -> None:
    code, out, err = run("host", "add", MAC, "--dir", str(server), "--bmc",
                         "redfish://admin@10.0.0.5", "--bmc-password-file", str(tmp_path / "pw"),
                         "--bmc-insecure")  # fmt: skip
    assert code == 0, err
    assert "BMC redfish://admin@10.0.0.5" in out
    code, shown, _ = run("host", "show", MAC, "--dir", str(server))
    assert "bmc:              redfish://admin@10.0.0.5, password set, insecure: yes" in shown
    code, listed, _ = run("host", "list", "--json", "--dir", str(server))
    (item,) = json.loads(listed)
    assert item["bmc"] == {"url": "redfish://admin@10.0.0.5", "password": "set", "ca": False,
                           "insecure": True}  # fmt: skip
    for text in (
        out,
        shown,
        listed,
        *(
            p.read_bytes().decode("latin-1")
            for p in server.rglob("*")
            if p.is_file() and p.name != BMC_KEY_FILE
        ),
    ):
        assert PASSWORD not in text
    code, out, err = run("host", "set", MAC, "--dir", str(server), "--no-bmc")
    assert code == 0, err
    assert "BMC none" in out


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--bmc", "ipmi://admin@h", "--bmc-password-file", "{pw}", "--bmc-insecure"),
         "--bmc-insecure is for a redfish:// BMC (HTTPS), not ipmi://"),
        (("--bmc", "ipmi://admin@h"),
         "--bmc needs the BMC password: give --bmc-password-file FILE (there is no terminal "
         "to ask it on)"),
        (("--bmc", "ipmi://admin@h", "--bmc-password-file", "{missing}"),
         "--bmc-password-file {missing}: No such file or directory"),
        (("--bmc-password-file", "{pw}"),
         "--bmc-password-file, --bmc-ca-file and --bmc-insecure need --bmc URL"),
        (("--bmc", "redfish://admin:secret@h", "--bmc-password-file", "{pw}"),
         "--bmc redfish://admin:secret@h: a password does not go in the URL: give it in "
         "--bmc-password-file"),
    ],
)  # fmt: skip
def test_host_add_refuses_bad_bmc_options_in_one_sentence(
    server: Path, tmp_path: Path, args: tuple[str, ...], said: str
) -> None:
    names = {"pw": str(tmp_path / "pw"), "missing": str(tmp_path / "missing")}
    given = [arg.format(**names) for arg in args]
    code, _, err = run("host", "add", MAC, "--dir", str(server), *given)
    assert code == 2
    assert err.splitlines()[-1] == f"netinstall: {said.format(**names)}"
    assert run("host", "show", MAC, "--dir", str(server))[0] != 0  # nothing was added


def test_host_set_no_bmc_refuses_other_bmc_options(server: Path, tmp_path: Path) -> None:
    assert run("host", "add", MAC, "--dir", str(server))[0] == 0
    code, _, err = run("host", "set", MAC, "--dir", str(server), "--no-bmc", "--bmc",
                       "ipmi://a@h", "--bmc-password-file", str(tmp_path / "pw"))  # fmt: skip
    assert code == 2
    assert err.splitlines()[-1] == (
        "netinstall: --no-bmc removes the BMC: give it without the other --bmc options"
    )


def test_rearm_power_without_a_bmc_is_refused_before_the_rearm(server: Path) -> None:
    assert run("host", "add", MAC, "--dir", str(server))[0] == 0
    code, _, err = run("host", "rearm", MAC, "--power", "--dir", str(server))
    assert code == 2
    assert err.splitlines()[-1] == (
        f"netinstall: host {MAC} has no BMC for --power; give it one with "
        f"`netinstall host set {MAC} --bmc URL --bmc-password-file FILE`"
    )


def test_a_backup_carries_the_bmc_and_its_key_and_the_restored_server_opens_it(
    server: Path, tmp_path: Path
) -> None:
    assert run("host", "add", MAC, "--dir", str(server), "--bmc", "ipmi://admin@10.0.0.6",
               "--bmc-password-file", str(tmp_path / "pw"))[0] == 0  # fmt: skip
    backup = tmp_path / "b.zip"
    code, out, err = run("server", "backup", str(server), "--to", str(backup))
    assert code == 0, err
    assert "files: api-token, bmc-key" in out
    target = tmp_path / "restored"
    code, _, err = run("server", "restore", str(target), "--from", str(backup))
    assert code == 0, err
    assert (target / BMC_KEY_FILE).read_bytes() == (server / BMC_KEY_FILE).read_bytes()
    with Registry.open(target) as registry:
        assert bmc_control.access(registry, MAC).password == PASSWORD
        assert str(registry.bmc_records()[MAC].url) == "ipmi://admin@10.0.0.6"


def test_on_a_terminal_the_password_is_asked_for_and_not_echoed(
    server: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import netinstall.cli_bmc

    monkeypatch.setattr(netinstall.cli_bmc, "on_terminal", lambda: True)
    done = CliRunner().invoke(
        main, ["host", "add", MAC, "--dir", str(server), "--bmc", "ipmi://admin@10.0.0.6"],
        input=PASSWORD + "\n",
    )  # fmt: skip
    assert done.exit_code == 0, done.stderr
    assert "password of ipmi://admin@10.0.0.6: " in done.stdout
    assert PASSWORD not in done.stdout
    with Registry.open(server) as registry:
        assert bmc_control.access(registry, MAC).password == PASSWORD
