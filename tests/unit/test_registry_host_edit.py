"""A host's variables changed by name (``Registry.update_host(set_variables=...,
unset_variables=...)``, what ``host set --var/--unset`` and ``PATCH .../hosts/<mac>``
send): merged with the stored ones under the host row's lock, so that concurrent edits of
different variables all land. On SQLite here; on PostgreSQL too from
tests/integration/test_registry_host_edit_postgresql.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import InputError
from pxe_server.passwords import is_sha512_crypt, sha512_crypt
from pxe_server.registry import Registry, UnknownHost, default_profile
from tests.registry_engines import together

MAC = "52:54:00:12:34:56"
PASSWORD = "hunter2-secret"


@pytest.fixture
def host(reg: Registry) -> Registry:
    """``reg`` with a host that has a disk, a keymap and a root password."""
    reg.add_host(MAC, variables={"disk": "sda", "keymap": "us", "root_password": PASSWORD})
    return reg


def stored(reg: Registry) -> dict[str, str]:
    found = reg.get_host(MAC)
    assert found is not None
    return dict(found.variables)


def test_set_and_unset_change_only_the_variables_named(host: Registry) -> None:
    before = stored(host)
    changed = host.update_host(MAC, set_variables={"disk": "nvme0n1", "ntp": "10.0.0.1"},
                               unset_variables=("keymap",))  # fmt: skip
    assert dict(changed.variables) == {
        "disk": "nvme0n1",
        "ntp": "10.0.0.1",
        "root_password": before["root_password"],  # the stored hash, untouched
    }
    assert stored(host) == dict(changed.variables)
    assert host.update_host(MAC, unset_variables=["ntp", "ntp"]).variables == (
        ("disk", "nvme0n1"),
        ("root_password", before["root_password"]),
    )


def test_a_password_set_by_name_is_a_new_password_stored_hashed(host: Registry) -> None:
    old = stored(host)["root_password"]
    changed = dict(host.update_host(MAC, set_variables={"root_password": "n3w"}).variables)
    hashed = changed["root_password"]
    assert is_sha512_crypt(hashed)
    assert hashed != old
    assert sha512_crypt("n3w", hashed.split("$")[2]) == hashed
    assert stored(host) == {"disk": "sda", "keymap": "us", "root_password": hashed}
    given = sha512_crypt("other", "saltsalt")  # a hash given is kept, as in add_host
    host.update_host(MAC, set_variables={"root_password": given})
    assert stored(host) == {"disk": "sda", "keymap": "us", "root_password": given}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"unset_variables": ["ntp"]}, f"cannot unset 'ntp': host {MAC} has no such variable"),
        ({"set_variables": {"disk": "sdb"}, "unset_variables": ["keymap", "gone"]},
         f"cannot unset 'gone': host {MAC} has no such variable"),
        ({"set_variables": {"disk": "sdb"}, "unset_variables": ["disk"]},
         "variable 'disk' is both set and unset"),
        ({"set_variables": {"root_password": "<redacted>"}},
         "<redacted> is how a password is shown, not a password"),
        ({"set_variables": {"bad name": "x"}}, "variable name 'bad name' must be letters"),
        ({"set_variables": {"mac": "x"}}, "variable 'mac' is set by the server"),
        ({"variables": {"disk": "sdb"}, "set_variables": {"keymap": "de"}},
         "field 'variables' replaces all of a host's variables and cannot be combined"),
        ({"variables": None, "unset_variables": ["disk"]},
         "cannot be combined with 'set_variables' or 'unset_variables'"),
    ],
)  # fmt: skip
def test_a_refused_edit_is_one_sentence_and_changes_nothing(
    host: Registry, change: dict[str, object], words: str
) -> None:
    before = host.get_host(MAC)
    with pytest.raises(InputError) as refused:
        host.update_host(MAC, name="renamed", **change)  # type: ignore[arg-type]
    assert len(refused.value.problems) == 1
    assert words in refused.value.problems[0]
    assert host.get_host(MAC) == before


def test_an_unknown_host_is_refused_before_its_variables(reg: Registry) -> None:
    with pytest.raises(UnknownHost, match=f"no host {MAC} in the registry"):
        reg.update_host(MAC, unset_variables=["disk"])


def test_concurrent_edits_of_different_variables_all_land(registry_dir: Path) -> None:
    """Two writers, each a Registry of its own on the same registry (as two servers, or a
    server and the CLI), set and unset different variables of one host as fast as they
    can: every change of both is in the end. A merge made outside the transaction (read
    the host, merge, write all of its variables back) loses some of them here."""
    rounds = 40
    with Registry.open(registry_dir) as setup:
        setup.add_profile(default_profile())
        setup.add_host(MAC, variables={f"{w}_gone_{i}": "x" for w in "ab" for i in range(rounds)})

    def writer(who: str) -> None:
        with Registry.open(registry_dir) as own:
            for i in range(rounds):
                own.update_host(MAC, set_variables={f"{who}_{i}": str(i)},
                                unset_variables=[f"{who}_gone_{i}"])  # fmt: skip

    together(writer, "ab", timeout=120)
    with Registry.open(registry_dir) as check:
        found = check.get_host(MAC)
        assert found is not None
        assert dict(found.variables) == {f"{w}_{i}": str(i) for w in "ab" for i in range(rounds)}
