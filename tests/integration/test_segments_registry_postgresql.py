"""tests/unit/test_segments.py's registry tests on PostgreSQL: the same test functions,
collected here with the fixtures of registry_postgresql.py (a fresh database of the
session's cluster); and on PostgreSQL, where several servers share the registry, a power
call for a host whose segment server is another goes through it."""

from __future__ import annotations

import time

import pytest

from common.errors import InputError
from common.protocol.messages import PowerAction, PowerRequest
from pxe_server import bmc_control
from pxe_server.power_desk import PowerDesk
from pxe_server.registry import Registry
from pxe_server.segments import PowerNotAnswered, name_server
from tests.integration.registry_postgresql import *  # noqa: F403
from tests.unit.test_segments import (
    MAC,
    test_a_hosts_segment_server_goes_with_the_host,
    test_a_hosts_segment_server_is_learnt_and_written_only_when_it_changes,
    test_a_pinned_segment_server_is_not_learnt_over_until_set_to_auto,
    test_a_power_call_for_another_server_is_carried_out_there_and_its_refusal_comes_back,
    test_a_power_call_nobody_takes_is_withdrawn_after_its_wait,
    test_a_registry_at_revision_10_opens_and_gets_servers,
    test_a_renamed_server_keeps_its_hosts,
    test_power_requests_are_claimed_by_their_server_only_and_answered,
    test_servers_register_and_renew_their_heartbeat,
    test_the_learner_notes_a_host_once_and_looks_again_after_its_recheck,
)

pytestmark = pytest.mark.integration

__all__ = [
    "test_a_hosts_segment_server_goes_with_the_host",
    "test_a_hosts_segment_server_is_learnt_and_written_only_when_it_changes",
    "test_a_pinned_segment_server_is_not_learnt_over_until_set_to_auto",
    "test_a_power_call_for_another_server_is_carried_out_there_and_its_refusal_comes_back",
    "test_a_power_call_nobody_takes_is_withdrawn_after_its_wait",
    "test_a_registry_at_revision_10_opens_and_gets_servers",
    "test_a_renamed_server_keeps_its_hosts",
    "test_power_requests_are_claimed_by_their_server_only_and_answered",
    "test_servers_register_and_renew_their_heartbeat",
    "test_the_learner_notes_a_host_once_and_looks_again_after_its_recheck",
]


def test_a_power_call_goes_through_the_segment_server_and_fails_at_once_when_it_is_gone(
    reg: Registry,
) -> None:
    """On PostgreSQL ``bmc_control.power`` itself routes: this directory's server is not
    the host's segment server b, so b's desk carries the call out (its refusal, naming b,
    comes back); once b is not seen for a while, the call fails at once."""
    me = name_server(reg.directory, "a")
    reg.add_host(MAC)
    reg.register_server(me, "http://a:8080", time.time())
    reg.learn_segment(MAC, "b", time.time())
    desk = PowerDesk(reg, "b", "http://b:8080", poll=0.05)
    desk.start()
    try:
        with pytest.raises(InputError) as caught:
            bmc_control.power(reg, MAC, PowerRequest(PowerAction.STATUS))
        assert caught.value.problems[0].startswith(f"server b: host {MAC} has no BMC")
    finally:
        desk.stop()
    reg.register_server("b", "http://b:8080", time.time() - 3600)  # last seen an hour ago
    started = time.monotonic()
    with pytest.raises(PowerNotAnswered) as gone:
        bmc_control.power(reg, MAC, PowerRequest(PowerAction.ON))
    assert time.monotonic() - started < 2
    assert gone.value.problems[0].startswith(
        f"host {MAC}'s segment server b was last seen 3600 s ago"
    )
    reg.learn_segment(MAC, me, time.time())  # this one serves it now: the call runs here
    with pytest.raises(InputError) as here:
        bmc_control.power(reg, MAC, PowerRequest(PowerAction.STATUS))
    assert here.value.problems[0].startswith(f"host {MAC} has no BMC")
