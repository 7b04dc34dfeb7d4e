"""tests/unit/test_bmc.py's registry tests on PostgreSQL: the same test functions, collected
here with the fixtures of registry_postgresql.py (a fresh database of the session's
cluster)."""

from pathlib import Path

from click.testing import CliRunner

from netinstall.cli import main
from pxe_server import bmc_control
from pxe_server.registry import Registry
from pxe_server.secrets import BMC_KEY_FILE, BmcKey
from tests.integration.registry_postgresql import *  # noqa: F403
from tests.unit.test_bmc import (
    MAC,
    PASSWORD,
    test_a_bad_bmc_spec_is_refused_before_anything_is_stored,
    test_a_hosts_bmc_goes_with_the_host_and_can_be_removed,
    test_a_new_key_is_not_made_beside_passwords_another_key_sealed,
    test_a_stored_bmc_is_sealed_in_the_database_and_opens_with_the_directory_key,
    test_power_without_a_bmc_says_how_to_give_one,
)

__all__ = [
    "test_a_bad_bmc_spec_is_refused_before_anything_is_stored",
    "test_a_hosts_bmc_goes_with_the_host_and_can_be_removed",
    "test_a_new_key_is_not_made_beside_passwords_another_key_sealed",
    "test_a_stored_bmc_is_sealed_in_the_database_and_opens_with_the_directory_key",
    "test_power_without_a_bmc_says_how_to_give_one",
]


def test_every_server_directory_on_one_database_needs_the_first_ones_bmc_key(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two server directories on one PostgreSQL registry: the first writes DIR/bmc-key,
    the second says to copy it; without it, or with another key, a BMC password of the
    first is one sentence there, and with the copy it opens."""
    first, second = tmp_path / "a", tmp_path / "b"
    said = []
    for where in (first, second):
        done = CliRunner().invoke(main, ["server", "init", str(where), "--db", postgres_url])
        assert done.exit_code == 0, done.stderr
        said.append(done.stdout)
    assert f"BMC key: {first / BMC_KEY_FILE} (written, mode 0600)" in said[0]
    assert f"BMC key: {second / BMC_KEY_FILE} not written: copy bmc-key from the server" in said[1]
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    done = CliRunner().invoke(main, ["host", "add", MAC, "--dir", str(first), "--bmc",
                                     "ipmi://admin@127.0.0.1:9", "--bmc-password-file",
                                     str(tmp_path / "pw")])  # fmt: skip
    assert done.exit_code == 0, done.stderr

    def power_there() -> str:
        done = CliRunner().invoke(main, ["host", "power", MAC, "status", "--dir", str(second)])
        assert done.exit_code == 2
        return str(done.stderr.splitlines()[-1])

    assert power_there().startswith(f"netinstall: {second / BMC_KEY_FILE} is missing: this server")
    BmcKey.load(second, create=True)
    assert power_there() == (
        f"netinstall: this server cannot open the BMC password of {MAC}: "
        f"{second / BMC_KEY_FILE} differs from the server that stored it"
    )
    (second / BMC_KEY_FILE).write_bytes((first / BMC_KEY_FILE).read_bytes())
    with Registry.open(second) as registry:
        assert bmc_control.access(registry, MAC).password == PASSWORD
