"""common.protocol: the one validator (decode, encode, JSON Schema) and its versions."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from common.protocol import codec
from common.protocol.codec import (
    ABSENT,
    ProtocolError,
    decode,
    describe,
    encode,
    json_schema,
    nested,
    rule,
    version_of,
)
from common.protocol.messages import (
    REPORTABLE,
    Action,
    Checkin,
    CheckinReply,
    Event,
    EventReply,
    HostCreate,
    HostEdit,
    HostRecord,
    InstallerCmdline,
    InstallerFiles,
    RebootPolicy,
    RunningFacts,
    State,
    UpgradeRequest,
)


def test_a_good_event_decodes_to_its_type_and_back() -> None:
    body = {"protocol": 2, "state": "installing", "step": "partition", "progress": 0.35}
    event = decode(Event, body)
    assert event == Event(State.INSTALLING, step="partition", progress=0.35)
    assert encode(event) == body
    assert decode(Event, {"state": "failed", "progress": 1}).progress == 1.0  # int is a number


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"state": "installing", "progress": "half"},
            "event: field 'progress' must be a number between 0 and 1",
        ),
        (
            {"state": "installing", "progress": 1.5},
            "field 'progress' must be a number between 0 and 1",
        ),
        ({"state": "installing", "progress": True}, "field 'progress' must be a number"),
        ({"step": "x"}, "event: field 'state' is missing"),
        (
            {"state": "pending"},
            "must be one of signalled, installing, installed, running, failed, not 'pending'",
        ),
        ({"state": None}, "field 'state' must be one of"),
        (
            {"state": "installing", "colour": "red"},
            "event: field 'colour' is not part of protocol version 1",
        ),
        (
            {"protocol": 2, "state": "installing", "colour": "red"},
            "field 'colour' is not part of protocol version 2",
        ),
        ({"protocol": 3, "state": "installing"}, "event: field 'protocol' must be 1 or 2"),
        ({"protocol": True, "state": "installing"}, "field 'protocol' must be 1 or 2"),
        ({"state": "running", "facts": []}, "field 'facts' must be an object"),
        (
            {"state": "running", "facts": {"host_memory_mib": 1.5}},
            "field 'facts.host_memory_mib' must be an integer",
        ),
        (
            {"state": "running", "facts": {"addresses": [{"interface": "eth0"}]}},
            "field 'facts.addresses[0].address' is missing",
        ),
        (
            {"state": "running", "facts": {"sr_type": "zfs"}},
            "field 'facts.sr_type' must be one of lvm, ext, not 'zfs'",
        ),
        (
            {"state": "running", "facts": {"kernel": "6.1"}},
            "field 'facts.kernel' is not part of protocol version 1",
        ),
        (
            {"state": "installing", "message": "\ud800"},
            "field 'message' must be valid Unicode text",
        ),
        ([], "event: the body must be a JSON object"),
        (None, "event: the body must be a JSON object"),
    ],
)
def test_a_bad_event_names_the_field(body: object, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(Event, body)
    assert message in str(caught.value)


def test_huge_numbers_are_refused_not_crashed_on() -> None:
    huge = 10**400  # json.loads gives such an int; no float holds it
    with pytest.raises(ProtocolError, match="'progress' must be a number between 0 and 1"):
        decode(Event, {"state": "installing", "progress": huge})
    with pytest.raises(ProtocolError, match="'checkin_interval' must be an integer of at least 1"):
        decode(EventReply, {"checkin_interval": -huge})
    with pytest.raises(ProtocolError, match="'progress' must be a number"):
        decode(Event, {"state": "installing", "progress": float("nan")})
    facts = decode(Event, {"state": "running", "facts": {"host_memory_mib": huge}}).facts
    assert facts is not None
    assert facts.host_memory_mib == huge


def test_deep_nesting_is_refused_without_recursing() -> None:
    deep: object = "x"
    for _ in range(100_000):  # far beyond Python's recursion limit
        deep = [deep]
    assert codec.depth(deep) == 100_000
    with pytest.raises(ProtocolError, match="nests deeper than 32 levels"):
        decode(Event, {"state": "running", "facts": {"addresses": deep}})


def test_a_message_without_protocol_is_version_1() -> None:
    assert version_of({"state": "installed"}) == 1
    assert version_of({"protocol": 2}) == 2
    with pytest.raises(ProtocolError, match="'protocol' must be 1 or 2"):
        version_of({"protocol": "2"})


@dataclass(frozen=True)
class Grown(codec.Message):
    """A message that gained a field in version 2."""

    NAME: ClassVar[str] = "grown"

    old: str = field(metadata=rule("since the start"))
    new: int | None = field(default=None, metadata=rule("added later", since=2))


def test_a_field_of_a_later_version_is_unknown_to_an_earlier_one() -> None:
    assert decode(Grown, {"protocol": 2, "old": "a", "new": 3}) == Grown("a", 3)
    assert decode(Grown, {"old": "a"}) == Grown("a")
    with pytest.raises(ProtocolError, match="grown: field 'new' is not part of protocol version 1"):
        decode(Grown, {"old": "a", "new": 3})
    schema = json_schema(Grown)
    assert schema["properties"]["new"]["description"] == "added later (protocol 2 on)"  # type: ignore[index]


def test_null_stands_for_the_default_where_null_is_no_value() -> None:
    assert decode(Checkin, {"running_version": "1", "state": None}).state.value == "running"
    assert decode(HostCreate, {"mac": "m", "profile": None}).profile == "default"
    assert decode(UpgradeRequest, {"version": "0.2.0", "reboot": None}).reboot is RebootPolicy.AUTO
    with pytest.raises(ProtocolError, match="upgrade: field 'version' is missing"):
        decode(UpgradeRequest, {"reboot": "auto"})


def test_an_edit_tells_left_out_from_null() -> None:
    assert decode(HostEdit, {}) == HostEdit()
    edit = decode(HostEdit, {"name": None, "variables": {"disk": "vda"}})
    assert (edit.name, edit.profile, edit.variables) == (None, ABSENT, {"disk": "vda"})
    with pytest.raises(ProtocolError, match=r"host edit: field 'variables\.disk' must be a string"):
        decode(HostEdit, {"variables": {"disk": 1}})
    with pytest.raises(ProtocolError, match="field 'profile' must be a string"):
        decode(HostEdit, {"profile": 3})


def test_replies_are_read_leniently() -> None:
    reply = {"protocol": 3, "action": "none", "added_in_v3": True}
    assert decode(CheckinReply, reply, strict=False) == CheckinReply(Action.NONE)
    with pytest.raises(ProtocolError, match="check-in reply: field 'action' must be one of"):
        decode(CheckinReply, {"action": "reinstall"}, strict=False)


def test_secrets_stay_out_of_repr() -> None:
    reply = EventReply(agent_credential="cr3d", checkin_interval=300)
    cmdline = InstallerCmdline(xen="", kernel="netinstall.token=t0k")
    assert "cr3d" not in repr(reply)
    assert "t0k" not in repr(CheckinReply(Action.UPGRADE, cmdline=cmdline))
    assert encode(reply) == {"protocol": 2, "agent_credential": "cr3d", "checkin_interval": 300}


def test_encode_leaves_out_null_where_the_message_says_so() -> None:
    assert encode(Event(State.INSTALLED)) == {"protocol": 2, "state": "installed"}
    assert encode(RunningFacts(payload_version="0.1.0"), envelope=False) == {
        "payload_version": "0.1.0"
    }
    files = InstallerFiles("http://s/x", "http://s/k", "http://s/i")
    assert encode(files, envelope=False) == {
        "xen": "http://s/x",
        "kernel": "http://s/k",
        "initrd": "http://s/i",
    }


def test_schemas_follow_the_declarations() -> None:
    schema = json_schema(Event, strict=True, envelope=True)
    props = schema["properties"]
    assert isinstance(props, dict)
    assert set(props) == {"protocol"} | {f.name for f in dataclasses.fields(Event)}
    assert schema["required"] == ["state"]
    assert schema["additionalProperties"] is False
    assert props["state"]["enum"] == [s.value for s in REPORTABLE]
    assert props["progress"] == {
        "type": ["number", "null"],
        "minimum": 0,
        "maximum": 1,
        "description": "how far the install is",
    }
    assert props["facts"]["anyOf"][0] == {"$ref": "#/components/schemas/RunningFacts"}
    assert props["protocol"]["enum"] == [1, 2]
    record = json_schema(HostRecord)
    assert "additionalProperties" not in record  # replies may grow
    assert [c.__name__ for c in nested(HostRecord)] == [
        "HostRecord",
        "SanRecord",
        "EventRecord",
        "BmcRecord",
    ]
    json.dumps(record)  # plain JSON


def test_describe_says_what_a_field_must_be() -> None:
    assert describe(float, codec.Rule(minimum=0, maximum=1)) == "a number between 0 and 1"
    assert describe(str | None) == "a string or null"
    assert describe(tuple[str, ...], codec.Rule(max_items=64)) == "a list of at most 64 items"
