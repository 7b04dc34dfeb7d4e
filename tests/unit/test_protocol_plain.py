"""The codec's plain path (``codec._plain_object``) changes no result and no message: for
every message of the protocol and data shaped like it (valid or not, ASCII or not, strict
or lenient), decoding gives what the general path alone gives, value or ProtocolError."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.protocol import codec, messages
from common.protocol.codec import ProtocolError, decode, fields_of

MESSAGES = sorted(
    (
        value
        for value in vars(messages).values()
        if isinstance(value, type)
        and dataclasses.is_dataclass(value)
        and issubclass(value, codec.Message)
    ),
    key=lambda cls: cls.__name__,
)

ODD_NUMBERS = [10**400, 0.5, 2.0, float("inf"), float("-inf"), float("nan"), -1, 10**9]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


def shaped(kind: Any, level: int = 0) -> st.SearchStrategy[object]:
    """JSON data shaped like ``kind``, now and then anything else."""
    members = [m for m in codec.members(kind) if m is not codec.Absent]
    if len(members) > 1:
        return st.one_of(*(shaped(m, level) for m in members))
    (kind,) = members
    origin = typing.get_origin(kind)
    if kind is type(None):
        found: st.SearchStrategy[object] = st.none()
    elif kind is str:
        found = st.text(max_size=12) | st.sampled_from(["", " ", "ok", "a" * 300, "\ud800", "é"])
    elif kind is bool:
        found = st.booleans()
    elif kind in (int, float):
        found = st.integers(-(10**20), 10**20) | st.floats() | st.sampled_from(ODD_NUMBERS)
    elif isinstance(kind, type) and issubclass(kind, enum.Enum):
        found = st.sampled_from([m.value for m in kind]) | st.text(max_size=3)
    elif dataclasses.is_dataclass(kind):
        found = obj(typing.cast(type, kind), level + 1)
    elif origin is tuple:
        found = st.lists(shaped(typing.get_args(kind)[0], level + 1), max_size=3)
    elif origin is dict:
        value = typing.get_args(kind)[1]
        found = st.dictionaries(
            st.text(max_size=4), JSON if value is object else shaped(value, level + 1), max_size=3
        )
    else:
        found = JSON
    # Mostly the right shape, so that whole messages are often valid; else anything.
    return st.one_of(*[found] * 8, JSON) if level < 3 else found


def obj(cls: type, level: int = 0) -> st.SearchStrategy[object]:
    specs = fields_of(cls)
    required = {spec.name: shaped(spec.kind, level) for spec in specs if spec.required}
    optional = {spec.name: shaped(spec.kind, level) for spec in specs if not spec.required}
    complete = st.fixed_dictionaries(required, optional=optional)
    return st.one_of(*[complete] * 6, st.fixed_dictionaries({}, optional=required | optional))


def outcome(cls: type, data: object, strict: bool) -> tuple[str, object]:
    try:
        return "value", decode(cls, data, strict=strict)
    except ProtocolError as exc:
        return "refused", str(exc)


@st.composite
def cases(draw: st.DrawFn, cls: type) -> tuple[type, object, bool]:
    body = draw(obj(cls))
    assert isinstance(body, dict)
    body["protocol"] = draw(st.sampled_from([1, 2]))
    extra = draw(st.one_of(*[st.just({})] * 6, st.dictionaries(st.just("unknown"), JSON)))
    return cls, {**body, **extra}, draw(st.booleans())


@pytest.mark.parametrize("message", MESSAGES, ids=lambda cls: cls.__name__)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_plain_path_decodes_as_the_general_path(message: type, data: st.DataObject) -> None:
    cls, data, strict = data.draw(cases(message))
    plain = outcome(cls, data, strict)
    with mock.patch.object(codec, "_plain_object", return_value=codec._SLOW):
        general = outcome(cls, data, strict)
    assert plain == general


def test_a_plain_host_list_takes_the_plain_path() -> None:
    record = {
        "mac": "52:54:00:00:00:01", "name": None, "profile": "default", "variables": {"a": "b"},
        "netboot_armed": True, "state": "pending", "step": None, "progress": None,
        "assigned_version": None, "running_version": None, "work": "install",
        "reboot_policy": "auto", "last_checkin": None, "facts": {"k": [1, 2.5, "x"]},
        "san": None, "token": "set", "agent_credential": "none",
    }  # fmt: skip
    with mock.patch.object(codec, "_value", side_effect=AssertionError("the general path")):
        decoded = decode(messages.HostList, {"hosts": [record, record]}, strict=False)
    assert decoded.hosts[1].variables == {"a": "b"}
    assert decoded.hosts[0].facts == {"k": [1, 2.5, "x"]}


# -- every field of every message, valid around it, set to each edge value in turn --------

NO_RULE = codec.Rule()


def nested(levels: int, leaf: object = 1) -> object:
    """``levels`` arrays and objects around ``leaf``, taking turns."""
    for level in range(levels):
        leaf = [leaf] if level % 2 else {"k": leaf}
    return leaf


EDGES = [None, True, 0, 1, -1, 10**400, 0.5, 2.0, float("inf"), float("-inf"), float("nan"),
         "", " ", "ok", "é", "\ud800", "line\nbreak", "a" * 300,
         [], ["ok"], {}, {"k": "v"}, {"é": 1}, {"\ud800": 1}, {"k": ["\ud800"]},
         nested(8), nested(9), nested(10), nested(31), nested(40)]  # fmt: skip


def base(kind: Any, r: codec.Rule = NO_RULE) -> object:
    """A valid JSON value of ``kind`` (its first choice, its smallest number, ...)."""
    members = [m for m in codec.members(kind) if m not in (codec.Absent, type(None))]
    kind = members[0]
    origin = typing.get_origin(kind)
    if kind is str:
        return "ok"
    if kind is bool:
        return True
    if kind in (int, float):
        smallest = 1 if kind is int else 0.5
        return smallest if r.minimum is None else max(smallest, r.minimum)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return (r.choices or tuple(kind))[0].value
    if dataclasses.is_dataclass(kind):
        specs = fields_of(typing.cast(type, kind))
        return {spec.name: base(spec.kind, spec.rule) for spec in specs}
    if origin is tuple:
        return [base(typing.get_args(kind)[0])]
    if origin is dict:
        value = typing.get_args(kind)[1]
        return {"k": "v" if value is object else base(value)}
    raise AssertionError(kind)


def mutations(value: object) -> list[object]:
    """``value`` with one field (at any depth) set to each of ``EDGES`` in turn."""
    found: list[object] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found += [{**value, key: edge} for edge in EDGES]
            found += [{**value, key: deeper} for deeper in mutations(item)]
    elif isinstance(value, list) and value:
        found += [[deeper, *value[1:]] for deeper in mutations(value[0])]
        found.append(value[:1] * 300)  # past any list's max_items
    return found


# Fields left out of a message's base body: the message allows one or the other only.
ONE_OF: dict[type, tuple[str, ...]] = {messages.PoolUpgradeRequest: ("master", "members")}


def test_each_field_at_each_edge_decodes_alike_both_ways() -> None:
    compared = 0
    for cls in MESSAGES:
        valid = base(cls)
        assert isinstance(valid, dict)
        for name in ONE_OF.get(cls, ()):
            del valid[name]
        assert outcome(cls, valid, False)[0] == "value", cls
        for body in [valid, *mutations(valid)]:
            for strict in (False, True):
                plain = outcome(cls, body, strict)
                with mock.patch.object(codec, "_plain_object", return_value=codec._SLOW):
                    assert outcome(cls, body, strict) == plain, (cls, body)
                compared += 1
    assert compared > 5000


# -- encoding: plain() by type, as the value-by-value walk it replaced gives it ----------


def walked(value: object) -> object:
    """``codec.plain`` as it was: an isinstance chain for every value (the oracle)."""
    if type(value) in (str, int, float, bool, type(None)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [walked(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): walked(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        omit_none = bool(getattr(type(value), "OMIT_NONE", False))
        result = {}
        for spec in fields_of(type(value)):
            item = getattr(value, spec.name)
            if item is codec.ABSENT or (item is None and omit_none):
                continue
            result[spec.name] = walked(item)
        return result
    return value


class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Pair(typing.NamedTuple):
    left: object
    right: object


def test_plain_gives_what_the_walk_gives_for_every_decoded_message() -> None:
    compared = 0
    for cls in MESSAGES:
        for body in [base(cls), *mutations(base(cls))]:
            kind, value = outcome(cls, body, False)
            if kind == "value":
                assert codec.plain(value) == walked(value), cls
                assert codec.encode(value) == {"protocol": codec.VERSION, **walked(value)}  # type: ignore[dict-item]
                compared += 1
    assert compared > 1000
    proxy = types.MappingProxyType({1: Colour.RED})
    odd = [Colour.RED, Level.HIGH, Pair(Colour.RED, (1, [Level.HIGH])), proxy,
           {"k": (None, 2.5)}, codec.ABSENT, messages.HostList, b"bytes", {3, 4}]  # fmt: skip
    for value in odd:
        assert codec.plain(value) == walked(value), value
