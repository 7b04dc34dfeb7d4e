"""``netinstall host set --var/--unset`` and ``PATCH /api/v1/hosts/<mac>``'s
``set_variables``/``unset_variables``: the variables named change, merged with the stored
ones by the registry, so a change made meanwhile by another operator is kept; refusals are
one sentence, the same on a server directory and over the API (tests/operator_api.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from common.errors import InputError
from common.protocol.codec import ABSENT
from common.protocol.messages import HostEdit
from netinstall.api_client import ApiClient, Refused, endpoint
from netinstall.fleet import Fleet, LocalFleet, RemoteFleet
from pxe_server.passwords import is_sha512_crypt
from pxe_server.registry import Registry
from tests.operator_api import Operator, operator

__all__ = ["operator"]

MAC = "52:54:00:12:34:56"


@contextmanager
def fleet_of(op: Operator) -> Iterator[Fleet]:
    """The fleet the CLI would use: the directory's registry, or its API."""
    if op.url is None:
        with Registry.open(op.directory) as registry:
            yield LocalFleet(registry)
        return
    token = (op.directory / "api-token").read_text().strip()
    yield RemoteFleet(ApiClient(endpoint(op.url), token, None))


def stored(op: Operator) -> dict[str, str]:
    with Registry.open(op.directory) as registry:
        host = registry.get_host(MAC)
        assert host is not None
        return dict(host.variables)


def test_set_and_unset_change_the_variables_named(operator: Operator) -> None:
    run = operator.run
    assert run("host", "add", MAC, "--var", "disk=vda", "--var", "keymap=us",
               "--var", "root_password=pa55word").code == 0  # fmt: skip
    old_hash = stored(operator)["root_password"]
    changed = run("host", "set", MAC, "--var", "ntp=10.0.0.1", "--var", "disk=sdb",
                  "--unset", "keymap")  # fmt: skip
    assert (changed.code, changed.err) == (0, "")
    assert changed.out == (
        f"changed {MAC}: name -, profile default, variables disk, ntp, root_password; "
        "state pending (rearm to install with the changes)\n"
    )
    assert stored(operator) == {"disk": "sdb", "ntp": "10.0.0.1", "root_password": old_hash}
    assert run("host", "set", MAC, "--var", "root_password=n3w-pa55").code == 0
    new_hash = stored(operator)["root_password"]
    assert is_sha512_crypt(new_hash)
    assert new_hash != old_hash
    assert "root_password=<redacted>" in run("host", "show", MAC).out


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (("--unset", "ntp"), f"cannot unset 'ntp': host {MAC} has no such variable"),
        (("--var", "a=1", "--var", "a=2"), "variable 'a' is given twice"),
        (("--var", "disk=sdb", "--unset", "disk"), "variable 'disk' is both set and unset"),
        (("--var", "root_password=<redacted>"),
         "variable 'root_password': <redacted> is how a password is shown, not a password; "
         "give the new password, or leave the variable out to keep it"),
        (("--var", "repo_url=x"), "variable 'repo_url' is set by the server; choose another name"),
    ],
)  # fmt: skip
def test_a_refused_change_is_one_sentence_and_changes_nothing(
    operator: Operator, args: tuple[str, ...], sentence: str
) -> None:
    operator.run("host", "add", MAC, "--var", "disk=vda", "--var", "root_password=pa55word")
    before = stored(operator)
    refused = operator.run("host", "set", MAC, "--name", "renamed", *args)
    assert (refused.code, refused.out, refused.err) == (2, "", f"netinstall: {sentence}\n")
    assert stored(operator) == before
    unknown = operator.run("host", "set", "52:54:00:99:99:99", "--unset", "disk")
    assert unknown.err == "netinstall: no host 52:54:00:99:99:99 in the registry\n"


def test_a_change_made_meanwhile_is_kept(operator: Operator) -> None:
    """An operator who saw the host before another one added a variable changes another
    one: both changes are kept (the whole variables sent back would drop the other's)."""
    operator.run("host", "add", MAC, "--var", "disk=vda")
    with fleet_of(operator) as fleet:
        seen = fleet.host(MAC)
        assert operator.run("host", "set", MAC, "--var", "keymap=de").code == 0  # meanwhile
        edited = fleet.edit_host(MAC, HostEdit(set_variables={"ntp": "10.0.0.1"},
                                               unset_variables=("disk",)))  # fmt: skip
    assert dict(seen.variables) == {"disk": "vda"}
    assert dict(edited.variables) == {"keymap": "de", "ntp": "10.0.0.1"}
    assert stored(operator) == {"keymap": "de", "ntp": "10.0.0.1"}


@pytest.mark.parametrize(
    "edit",
    [
        HostEdit(variables={"disk": "sdb"}, set_variables={"keymap": "de"}),
        HostEdit(variables=None, unset_variables=("disk",)),
        HostEdit(name="x", variables={}, set_variables={}, unset_variables=()),
    ],
)
def test_all_variables_and_some_at_once_are_refused(operator: Operator, edit: HostEdit) -> None:
    operator.run("host", "add", MAC, "--var", "disk=vda")
    before = stored(operator)
    with fleet_of(operator) as fleet, pytest.raises(InputError) as refused:
        fleet.edit_host(MAC, edit)
    assert refused.value.problems == (
        "host edit: field 'variables' replaces all of a host's variables and cannot be "
        "combined with 'set_variables' or 'unset_variables'",
    )
    if operator.url is not None:
        assert isinstance(refused.value, Refused)
        assert refused.value.status == 400
    assert stored(operator) == before
    with fleet_of(operator) as fleet:  # all of them, alone, as before
        replaced = fleet.edit_host(MAC, HostEdit(variables={"keymap": "de"}))
        assert dict(replaced.variables) == {"keymap": "de"}
        renamed = fleet.edit_host(MAC, HostEdit(name="web1", set_variables=ABSENT))
        assert (renamed.name, dict(renamed.variables)) == ("web1", {"keymap": "de"})
