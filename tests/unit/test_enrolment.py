"""The install token as an enrolment ticket (docs/protocol.md, "Install tokens"): the
registry's rules for enrolling, replacing and refusing installer keys, the conflict an
operator sees, the token's lifetime, and what rearm and ``running`` reset."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pxe_server.model import State, host_record
from pxe_server.registry import (
    DEFAULT_TOKEN_TTL,
    TOKEN_TTL_SETTING,
    EnrolRefused,
    Registry,
    default_profile,
)

MAC = "52:54:00:12:34:56"
KEY_1 = "first-installer-key-0123456789abcdefghij"
KEY_2 = "second-installer-key-0123456789abcdefghi"
REAL, THIEF = "192.0.2.10", "192.0.2.66"


@pytest.fixture
def reg(registry_dir: Path) -> Iterator[Registry]:
    with Registry.open(registry_dir) as registry:
        registry.add_profile(default_profile())
        registry.add_host(MAC)
        yield registry


def token(reg: Registry) -> str:
    found = reg.get_host(MAC)
    assert found is not None
    assert found.token is not None
    return found.token


def messages(reg: Registry) -> list[str]:
    return [e.message or "" for e in reg.events(MAC)]


def test_the_first_key_is_enrolled_and_proves_the_install(reg: Registry) -> None:
    ticket = token(reg)
    reg.mark_signalled(MAC)
    host, outcome = reg.enrol(MAC, ticket, KEY_1, REAL)
    assert outcome == "new"
    assert (host.enrolled_from, host.conflict) == (REAL, None)
    assert reg.host_by_install_key(KEY_1) == host
    assert reg.host_by_install_key(KEY_2) is None
    assert reg.host_by_token(ticket) == host  # the ticket lives on: a new boot re-enrols
    assert reg.enrol(MAC, ticket, KEY_1, REAL)[1] == "again"  # a retried call
    assert messages(reg)[-1] == f"installer enrolled from {REAL}"
    record = host_record(host)
    assert (record.install_key.value, record.enrolled_from) == ("set", REAL)


def test_a_second_key_without_a_new_boot_is_refused_and_shown(reg: Registry) -> None:
    ticket = token(reg)
    reg.mark_signalled(MAC)
    reg.enrol(MAC, ticket, KEY_1, REAL)
    with pytest.raises(EnrolRefused) as refused:
        reg.enrol(MAC, ticket, KEY_2, THIEF)
    assert refused.value.status == 409
    host = reg.get_host(MAC)
    assert host is not None
    assert reg.host_by_install_key(KEY_1) == host  # the real installer keeps its key
    assert reg.host_by_install_key(KEY_2) is None
    assert host.conflict is not None
    assert THIEF in host.conflict
    assert REAL in host.conflict
    assert host_record(host).conflict == host.conflict
    assert "enrolment refused" in messages(reg)[-1]


def test_a_new_boot_re_enrols_and_retires_the_old_key(reg: Registry) -> None:
    ticket = token(reg)
    reg.mark_signalled(MAC)
    reg.enrol(MAC, ticket, KEY_1, REAL)
    time.sleep(0.01)
    reg.mark_signalled(MAC)  # the power came back: the host fetched its boot config again
    host, outcome = reg.enrol(MAC, ticket, KEY_2, REAL)
    assert outcome == "replaced"
    assert host.conflict is None  # same address: a retry, not a conflict
    assert reg.host_by_install_key(KEY_1) is None  # retired
    assert reg.host_by_install_key(KEY_2) == host
    assert "is retired" in messages(reg)[-1]


def test_a_new_boot_from_another_address_is_a_conflict_too(reg: Registry) -> None:
    ticket = token(reg)
    reg.mark_signalled(MAC)
    reg.enrol(MAC, ticket, KEY_1, REAL)
    time.sleep(0.01)
    reg.mark_signalled(MAC)
    host, outcome = reg.enrol(MAC, ticket, KEY_2, THIEF)
    assert outcome == "replaced"
    assert host.conflict is not None
    assert "another address" in host.conflict


def test_a_disarmed_host_hands_out_no_new_ticket(reg: Registry) -> None:
    ticket = token(reg)
    reg.mark_signalled(MAC)
    reg.enrol(MAC, ticket, KEY_1, REAL)
    reg.record_event(MAC, State.INSTALLED)  # netboot disarmed: boot configs boot locally
    time.sleep(0.01)
    reg.mark_signalled(MAC)  # anyone may fetch the (local) boot config: no new ticket
    with pytest.raises(EnrolRefused) as refused:
        reg.enrol(MAC, ticket, KEY_2, THIEF)
    assert refused.value.status == 409
    host, reply = reg.record_event(MAC, State.RUNNING, by_install_key=True)
    assert "agent_credential" in reply
    assert host.token is None
    assert host.conflict is not None  # it stays for the operator until rearm or new work
    reg.check_in(MAC, "0.1.0", "running")  # the agent holds its credential
    assert reg.host_by_install_key(KEY_1) is None  # the key is spent


def test_first_boot_that_lost_its_credential_gets_a_new_one_until_the_agent_checks_in(
    reg: Registry,
) -> None:
    ticket = token(reg)
    reg.mark_signalled(MAC)
    reg.enrol(MAC, ticket, KEY_1, REAL)
    reg.record_event(MAC, State.INSTALLED, by_install_key=True)
    host, first = reg.record_event(MAC, State.RUNNING, by_install_key=True)
    assert host.token is None
    assert reg.host_by_agent_credential(str(first["agent_credential"])) is not None
    # The power went before first boot saved the reply: it reports running again.
    _, second = reg.record_event(MAC, State.RUNNING, by_install_key=True)
    assert second["agent_credential"] != first["agent_credential"]
    assert reg.host_by_agent_credential(str(first["agent_credential"])) is None  # replaced
    agent = reg.host_by_agent_credential(str(second["agent_credential"]))
    assert agent is not None
    # A running by the agent's credential hands out nothing new.
    assert reg.record_event(MAC, State.RUNNING)[1] == {}
    reg.check_in(MAC, "0.1.0", "running")  # the agent checked in: the key is spent
    assert reg.host_by_install_key(KEY_1) is None
    assert reg.host_by_agent_credential(str(second["agent_credential"])) is not None


def test_a_wrong_or_dead_token_enrols_nothing(reg: Registry) -> None:
    ticket = token(reg)
    with pytest.raises(EnrolRefused) as wrong:
        reg.enrol(MAC, "x" + ticket, KEY_1, THIEF)
    assert wrong.value.status == 401
    reg.rearm(MAC)  # a new token: the old one is dead
    with pytest.raises(EnrolRefused):
        reg.enrol(MAC, ticket, KEY_1, THIEF)
    assert reg.host_by_install_key(KEY_1) is None


def test_the_token_expires_a_ttl_after_its_first_hand_out(reg: Registry) -> None:
    ticket = token(reg)
    host = reg.get_host(MAC)
    assert host is not None
    assert host.token_expires is None  # registered today, powered on next week: fine
    reg.set_setting(TOKEN_TTL_SETTING, "0")
    reg.mark_signalled(MAC)
    time.sleep(0.01)
    with pytest.raises(EnrolRefused) as expired:
        reg.enrol(MAC, ticket, KEY_1, REAL)
    assert expired.value.status == 401
    assert "expired" in str(expired.value)
    assert f"netinstall host rearm {MAC}" in str(expired.value)
    rearmed = reg.rearm(MAC)
    assert (rearmed.token_expires, rearmed.ticket_issued_at) == (None, None)


def test_the_default_lifetime_is_a_day(reg: Registry) -> None:
    before = time.time()
    host = reg.mark_signalled(MAC)
    assert host.token_expires is not None
    assert before + DEFAULT_TOKEN_TTL <= host.token_expires <= time.time() + DEFAULT_TOKEN_TTL
    again = reg.mark_signalled(MAC)
    assert again.token_expires == host.token_expires  # counted from the first hand-out


def test_rearm_clears_the_enrolment_and_the_conflict(reg: Registry) -> None:
    ticket = token(reg)
    reg.mark_signalled(MAC)
    reg.enrol(MAC, ticket, KEY_1, REAL)
    with pytest.raises(EnrolRefused):
        reg.enrol(MAC, ticket, KEY_2, THIEF)
    host = reg.rearm(MAC)
    assert (host.install_key_hash, host.enrolled_from, host.conflict) == (None, None, None)
    assert reg.host_by_install_key(KEY_1) is None
