"""The one validator: parsed JSON <-> the typed messages of ``common.protocol.messages``.

A message is a frozen dataclass. Its fields' types say what the wire may hold (str,
int, float, bool, an enum, a nested message, ``tuple[X, ...]`` for a list,
``dict[str, str]``, ``JsonObject`` for a free object, ``X | None`` when null is
allowed, ``... | Absent`` when leaving the field out means "unchanged"), and
``field(metadata=rule(...))`` adds what the types cannot (a range, a length, printable
text, a subset of an enum, the protocol version a field appeared in, its description).

    decode(Event, parsed_json)   -> Event, or ProtocolError naming the message and field
    encode(event)                -> {"protocol": 2, ...}: what goes on the wire
    json_schema(Event)           -> its JSON Schema (OpenAPI 3.1 components)

Versions: every message carries ``"protocol": N``. A message without it is version 1
(the messages of the agents installed before versions existed). ``decode`` accepts
every version in ``SUPPORTED`` and refuses a field that the message's version does
not know; replies are decoded leniently (unknown fields ignored), so a newer server
may add fields to its replies without breaking an older client.

Why not pydantic or msgspec: the installer initrd and dom0 run Debian bookworm's
python3 with Debian packages only; bookworm has no msgspec and pydantic 1.10 only,
while the server would get pydantic 2 from pip, and the two are not one API. This is
the standard library alone, so the same file runs on both ends.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from common.errors import InputError

VERSION = 2  # what this code sends
SUPPORTED = (1, 2)  # what it accepts; a message without "protocol" is version 1
VERSION_FIELD = "protocol"
MAX_DEPTH = 32  # nesting of arrays and objects in a message

JsonObject = dict[str, object]  # a free JSON object (checked for JSON values only)

M = TypeVar("M")


class ProtocolError(InputError):
    """A message that does not match its declaration: one sentence naming the field."""


class Absent(enum.Enum):
    """The value of a field left out of a message where leaving it out means "unchanged"."""

    ABSENT = "absent"


ABSENT = Absent.ABSENT


@dataclass(frozen=True)
class Rule:
    """What a field's type cannot say; see ``rule``."""

    doc: str = ""
    since: int = 1  # the protocol version the field appeared in
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None  # characters of a string
    max_items: int | None = None  # items of a list
    printable: bool = False  # one line of printable text, not empty
    choices: tuple[enum.Enum, ...] | None = None  # the allowed members of an enum field
    secret: bool = False  # a token or credential handed to its owner (docs/protocol.md)


def rule(doc: str = "", **kwargs: Any) -> dict[str, Rule]:
    """``field(metadata=rule("what it is", maximum=1, ...))``."""
    return {"rule": Rule(doc, **kwargs)}


class Message:
    """Optional class attributes of a message declaration (mixed in, no fields)."""

    NAME: ClassVar[str] = ""  # what an error calls a request: "event: field ..."
    OMIT_NONE: ClassVar[bool] = False  # leave null fields out when encoding
    DOC: ClassVar[str] = ""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: Any  # the resolved type
    rule: Rule
    required: bool
    default: object


@functools.cache
def fields_of(cls: type) -> tuple[FieldSpec, ...]:
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default: object = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        r = f.metadata.get("rule", Rule())
        specs.append(FieldSpec(f.name, hints[f.name], r, default is dataclasses.MISSING, default))
    return tuple(specs)


def message_name(cls: type) -> str:
    name = getattr(cls, "NAME", "")
    return name if isinstance(name, str) and name else cls.__name__


# -- decoding ------------------------------------------------------------------------


class _Fail(Exception):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


def depth(value: object) -> int:
    """How deeply arrays and objects nest in ``value`` (iteratively: any depth is safe).
    Only arrays and objects are stacked: a message's scalars, nearly all its values,
    are looked at once."""
    if not isinstance(value, dict | list):
        return 0
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def version_of(data: Mapping[str, object], what: str = "the message") -> int:
    """The protocol version a parsed message says it is (absent: 1)."""
    version = data.get(VERSION_FIELD, 1)
    if isinstance(version, bool) or version not in SUPPORTED:
        names = " or ".join(str(v) for v in SUPPORTED)
        raise ProtocolError(f"{what}: field '{VERSION_FIELD}' must be {names}")
    return version


def decode(cls: type[M], data: object, *, strict: bool = True) -> M:
    """``data`` (parsed JSON) as the message ``cls``; ProtocolError naming the field.

    ``strict`` (requests, checked by the server): a field the message's version does
    not know is refused. Not strict (replies, read by clients): such fields are
    ignored, and so is the version.
    """
    what = message_name(cls)
    if not isinstance(data, dict):
        raise ProtocolError(f"{what}: the body must be a JSON object")
    if _declared_depth(typing.cast(Any, cls)) <= MAX_DEPTH:
        # The plain path first: what it accepts nests no deeper than the message's
        # declaration allows (``_declared_depth``), so it needs no walk of the body for
        # its depth; anything else goes the general way below, depth check first.
        version = data.get(VERSION_FIELD, 1) if strict else VERSION
        if type(version) is int and version in SUPPORTED:
            body = {k: v for k, v in data.items() if k != VERSION_FIELD}
            found = _plain_object(cls, body, version, strict)
            if found is not _SLOW:
                return typing.cast(M, found)
    if depth(data) > MAX_DEPTH:
        raise ProtocolError(f"{what}: the body nests deeper than {MAX_DEPTH} levels")
    version = version_of(data, what) if strict else VERSION
    body = {k: v for k, v in data.items() if k != VERSION_FIELD}
    try:
        return typing.cast(M, _object(cls, body, "", version=version, strict=strict))
    except _Fail as fail:
        where = f"field '{fail.path}'" if fail.path else "the body"
        raise ProtocolError(f"{what}: {where} {fail.problem}") from None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _object(cls: type, data: object, path: str, *, version: int, strict: bool) -> object:
    if type(data) is dict:
        found = _plain_object(cls, data, version, strict)
        if found is not _SLOW:
            return found
    if not isinstance(data, dict):
        raise _Fail(path, "must be an object")
    specs, known = _specs(cls, version)
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown and strict:
        names = ", ".join(sorted(known)) or "none"
        raise _Fail(
            _join(path, unknown[0]),
            f"is not part of protocol version {version} (its fields: {names})",
        )
    values: dict[str, object] = {}
    for spec in specs:
        where = _join(path, spec.name)
        if spec.name not in data:
            if spec.required:
                raise _Fail(where, "is missing")
            continue  # the default
        if data[spec.name] is None and not _shape(spec.kind)[0] and not spec.required:
            continue  # null stands for the default, as absent does
        values[spec.name] = _value(
            spec.kind, spec.rule, data[spec.name], where, version=version, strict=strict
        )
    return cls(**values)


# -- the plain path: what nearly every message is, decoded without a path or a message --
#
# Each field gets a reader made once (``_reader``) that returns the decoded value of a
# plainly valid JSON value (ASCII text within its rule, a number within its bounds, a
# member of its enum, ...) and ``_SLOW`` for anything else. A message whose every field
# reads plainly is made at once; otherwise the whole message goes the general way above
# (``_value``), which decodes it the same or says what is wrong, naming the field. So
# the plain path changes no result and no message, only the time: decoding 10,000 hosts
# (``host list`` over the API) took 0.74 s the general way alone.

_SLOW: Any = object()  # a reader's "not plainly valid: ask the general way"
Reader = typing.Callable[[object], object]


def _plain_object(cls: type, data: dict[str, object], version: int, strict: bool) -> object:
    """``data`` as ``cls`` if every field of it reads plainly, else ``_SLOW``."""
    plan, known = _plan(cls, version, strict)
    if strict and not known.issuperset(data):
        return _SLOW
    values: dict[str, object] = {}
    for name, required, null_is_default, read in plan:
        item = data.get(name, _SLOW)
        if item is _SLOW:
            if required:
                return _SLOW
            continue
        if item is None and null_is_default:
            continue
        value = read(item)
        if value is _SLOW:
            return _SLOW
        values[name] = value
    return cls(**values)


@functools.cache
def _plan(
    cls: type, version: int, strict: bool
) -> tuple[tuple[tuple[str, bool, bool, Reader], ...], frozenset[str]]:
    """Each field's name, whether it is required, whether null stands for its default,
    and its reader; and every field name (made once a message class and version)."""
    specs, known = _specs(cls, version)
    plan = tuple(
        (
            spec.name,
            spec.required,
            not _shape(spec.kind)[0] and not spec.required,
            _reader(spec.kind, spec.rule, version, strict),
        )
        for spec in specs
    )
    return plan, known


def _slow(data: object) -> object:
    return _SLOW


@functools.cache
def _reader(kind: Any, r: Rule, version: int, strict: bool) -> Reader:
    """The plain reader of a field of ``kind`` and ``r`` (see above)."""
    nullable, inner, more = _shape(kind)
    if more:
        return _slow
    read = _one_reader(inner, r, version, strict)
    if not nullable:
        return read
    return lambda data: None if data is None else read(data)


def _one_reader(kind: Any, r: Rule, version: int, strict: bool) -> Reader:
    if kind is str:
        return _text_reader(r)
    if kind is bool:
        return lambda data: data if type(data) is bool else _SLOW
    if kind is int or kind is float:
        low = r.minimum if r.minimum is not None else -math.inf
        high = r.maximum if r.maximum is not None else math.inf
        if kind is int:
            return lambda data: data if type(data) is int and low <= data <= high else _SLOW
        isfinite = math.isfinite  # a float field's integers go the general way
        return lambda data: (
            data if type(data) is float and isfinite(data) and low <= data <= high else _SLOW
        )
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        members = {m.value: m for m in (r.choices or _members_of(kind)) if type(m.value) is str}
        return lambda data: members.get(data, _SLOW) if type(data) is str else _SLOW
    if dataclasses.is_dataclass(kind):
        cls = typing.cast(type, kind)
        return lambda data: (
            _plain_object(cls, data, version, strict) if type(data) is dict else _SLOW
        )
    origin = _origin(kind)
    if origin is tuple:
        read = _one_reader(typing.get_args(kind)[0], dataclasses.replace(r, max_items=None),
                           version, strict)  # fmt: skip
        most = r.max_items if r.max_items is not None else math.inf

        def items(data: object) -> object:
            if type(data) is not list or len(data) > most:
                return _SLOW
            values = [read(item) for item in data]
            return _SLOW if _SLOW in values else tuple(values)

        return items
    if origin is dict:
        if typing.get_args(kind)[1] is object:  # a free object: its values any JSON
            levels = 1 + PLAIN_JSON_DEPTH
            return lambda data: _plain_json(data, levels) if type(data) is dict else _SLOW
        text = _text_reader(Rule())
        value_kind = typing.get_args(kind)[1]
        read = text if value_kind is str else _one_reader(value_kind, Rule(), version, strict)

        def entries(data: object) -> object:
            if type(data) is not dict:
                return _SLOW
            result = {}
            for key, item in data.items():
                value = read(item)
                if text(key) is _SLOW or value is _SLOW:
                    return _SLOW
                result[key] = value
            return result

        return entries
    return _slow


def _text_reader(r: Rule) -> Reader:
    """ASCII text (which needs no check for lone surrogates) within ``r``'s length and,
    if it says so, printable on one line."""
    most = r.max_length if r.max_length is not None else math.inf
    if r.printable:
        return lambda data: (
            data
            if type(data) is str
            and data.isascii()
            and len(data) <= most
            and data.isprintable()
            and data.strip()
            else _SLOW
        )
    return lambda data: (
        data if type(data) is str and data.isascii() and len(data) <= most else _SLOW
    )


# Levels of arrays and objects the plain path takes inside a free object's values.
PLAIN_JSON_DEPTH = 8


def _plain_json(data: object, levels: int) -> object:
    """A free JSON value as ``_json`` gives it, if it is plainly one: ASCII strings,
    finite numbers, and arrays and objects of them, nesting ``levels`` deep at most."""
    kind = type(data)
    if kind is str:
        return data if data.isascii() else _SLOW  # type: ignore[attr-defined]
    if kind is dict:
        if levels < 1:
            return _SLOW
        result = {}
        for key, item in data.items():  # type: ignore[attr-defined]
            value = _plain_json(item, levels - 1)
            if type(key) is not str or not key.isascii() or value is _SLOW:
                return _SLOW
            result[key] = value
        return result
    if kind is list:
        if levels < 1:
            return _SLOW
        values = [_plain_json(item, levels - 1) for item in data]  # type: ignore[attr-defined]
        return _SLOW if _SLOW in values else values
    if kind is float:
        return data if math.isfinite(data) else _SLOW  # type: ignore[arg-type]
    if kind is int or kind is bool or data is None:
        return data
    return _SLOW


@functools.cache
def _declared_depth(kind: Any, within: frozenset[Any] = frozenset()) -> int:
    """How deeply arrays and objects can nest in what the plain path accepts for
    ``kind`` (as ``depth`` counts them); past ``MAX_DEPTH`` for a message that holds
    itself (the plain path then waits for the depth check)."""
    if kind in within:
        return MAX_DEPTH + 1
    found = 0
    for member in members(kind):
        origin = _origin(member)
        if dataclasses.is_dataclass(member):
            specs = fields_of(typing.cast(type, member))
            fields = [_declared_depth(s.kind, within | {kind}) for s in specs]
            found = max(found, 1 + max(fields, default=0))
        elif origin is tuple:
            found = max(found, 1 + _declared_depth(typing.get_args(member)[0], within | {kind}))
        elif origin is dict:
            value = typing.get_args(member)[1]
            inner = PLAIN_JSON_DEPTH if value is object else _declared_depth(value, within)
            found = max(found, 1 + inner)
    return found


@functools.cache
def _specs(cls: type, version: int) -> tuple[tuple[FieldSpec, ...], frozenset[str]]:
    """The fields of ``cls`` that protocol ``version`` knows, and their names (made once)."""
    specs = tuple(s for s in fields_of(cls) if s.rule.since <= version)
    return specs, frozenset(s.name for s in specs)


@functools.cache
def _shape(kind: Any) -> tuple[bool, Any, bool]:
    """Whether ``kind`` allows null, its one other type, and whether it has more (a
    declaration bug): worked out once a type, not once a value."""
    union = [m for m in members(kind) if m is not Absent]
    rest = [m for m in union if m is not type(None)]
    return type(None) in union, rest[0], len(rest) > 1


def _nullable(kind: Any) -> bool:
    return type(None) in members(kind)


def members(kind: Any) -> tuple[Any, ...]:
    """The types a union holds (``kind`` alone when it is none)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return (kind,)


def _value(kind: Any, r: Rule, data: object, path: str, *, version: int, strict: bool) -> object:
    nullable, inner, more = _shape(kind)
    if data is None:
        if nullable:
            return None
        raise _Fail(path, f"must be {describe(kind, r)}")
    if more:
        raise TypeError(f"{path}: one type besides None, please")  # a declaration bug
    return _one(inner, r, data, path, version=version, strict=strict)


@functools.cache
def _members_of(kind: type[enum.Enum]) -> tuple[enum.Enum, ...]:
    return tuple(kind)


@functools.cache
def _origin(kind: Any) -> Any:
    return typing.get_origin(kind)


def _one(kind: Any, r: Rule, data: object, path: str, *, version: int, strict: bool) -> object:
    if kind is str:
        return _text(r, data, path)
    if kind is bool:
        if not isinstance(data, bool):
            raise _Fail(path, "must be true or false")
        return data
    if kind in (int, float):
        return _number(kind, r, data, path)
    origin = _origin(kind)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        for member in r.choices or _members_of(kind):
            if data == member.value:
                return member
        raise _Fail(path, f"must be {describe(kind, r)}, not {_shown(data)}")
    if dataclasses.is_dataclass(kind):
        return _object(typing.cast(type, kind), data, path, version=version, strict=strict)
    if origin is tuple:
        item_kind = typing.get_args(kind)[0]
        if not isinstance(data, list):
            raise _Fail(path, f"must be {describe(kind, r)}")
        if r.max_items is not None and len(data) > r.max_items:
            raise _Fail(path, f"may hold {r.max_items} items at most")
        item_rule = dataclasses.replace(r, max_items=None)
        return tuple(
            _one(item_kind, item_rule, item, f"{path}[{i}]", version=version, strict=strict)
            for i, item in enumerate(data)
        )
    if origin is dict:
        value_kind = typing.get_args(kind)[1]
        if not isinstance(data, dict):
            raise _Fail(path, f"must be {describe(kind, r)}")
        result: dict[str, object] = {}
        for key, item in data.items():
            _text(Rule(), key, path)
            if value_kind is object:
                result[key] = _json(item, f"{path}.{key}")
            else:
                result[key] = _one(
                    value_kind, Rule(), item, f"{path}.{key}", version=version, strict=strict
                )
        return result
    raise TypeError(f"{path}: the codec has no rule for {kind!r}")  # a declaration bug


def _text(r: Rule, data: object, path: str) -> str:
    if not isinstance(data, str):
        raise _Fail(path, f"must be {describe(str, r)}")
    try:
        data.encode("utf-8")
    except UnicodeEncodeError:
        raise _Fail(path, "must be valid Unicode text (it holds a lone surrogate)") from None
    if r.printable and (not data.strip() or not data.isprintable()):
        raise _Fail(path, f"must be {describe(str, r)}")
    if r.max_length is not None and len(data) > r.max_length:
        raise _Fail(path, f"must be {describe(str, r)}")
    return data


def _number(kind: type, r: Rule, data: object, path: str) -> object:
    ok = isinstance(data, int) if kind is int else isinstance(data, int | float)
    if isinstance(data, bool) or not ok:
        raise _Fail(path, f"must be {describe(kind, r)}")
    value = typing.cast(float, data)
    low = r.minimum if r.minimum is not None else -math.inf
    high = r.maximum if r.maximum is not None else math.inf
    # Python compares an int of any size with a float exactly; only floats can be NaN.
    finite = not isinstance(value, float) or math.isfinite(value)
    if not (finite and low <= value <= high):
        raise _Fail(path, f"must be {describe(kind, r)}")
    if kind is int:
        return data
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float
        raise _Fail(path, f"must be {describe(kind, r)}") from None


def _json(data: object, path: str) -> object:
    """A free JSON value: strings must be encodable, keys strings."""
    if isinstance(data, str):
        return _text(Rule(), data, path)
    if isinstance(data, list):
        return [_json(item, f"{path}[{i}]") for i, item in enumerate(data)]
    if isinstance(data, dict):
        return {_text(Rule(), k, path): _json(v, f"{path}.{k}") for k, v in data.items()}
    if isinstance(data, float) and not math.isfinite(data):
        raise _Fail(path, "must be a finite number")
    return data


def _shown(data: object) -> str:
    text = repr(data)
    return text if len(text) <= 40 else text[:37] + "..."


def describe(kind: Any, r: Rule = Rule()) -> str:
    """What a field of this type and rule must be, in words ("a number between 0 and 1")."""
    union = [m for m in members(kind) if m not in (type(None), Absent)]
    nullable = _nullable(kind)
    kind = union[0]
    origin = typing.get_origin(kind)
    if kind is str:
        if r.printable:
            most = f" of {r.max_length} characters at most" if r.max_length else ""
            text = f"one line of printable text{most}"
        else:
            text = "a string" + (f" of {r.max_length} characters at most" if r.max_length else "")
    elif kind is bool:
        text = "true or false"
    elif kind in (int, float):
        noun = "an integer" if kind is int else "a number"
        if r.minimum is not None and r.maximum is not None:
            text = f"{noun} between {r.minimum:g} and {r.maximum:g}"
        elif r.minimum is not None:
            text = f"{noun} of at least {r.minimum:g}"
        else:
            text = noun
    elif isinstance(kind, type) and issubclass(kind, enum.Enum):
        text = "one of " + ", ".join(str(m.value) for m in (r.choices or tuple(kind)))
    elif dataclasses.is_dataclass(kind):
        text = "an object"
    elif origin is tuple:
        text = "a list" + (f" of at most {r.max_items} items" if r.max_items else "")
    elif origin is dict:
        value_kind = typing.get_args(kind)[1]
        text = "an object" if value_kind is object else "an object of strings"
    else:
        text = repr(kind)
    return f"{text} or null" if nullable else text


# -- encoding ------------------------------------------------------------------------


def encode(value: object, *, envelope: bool = True) -> dict[str, object]:
    """The message ``value`` as JSON-ready data: ``{"protocol": VERSION, ...}``.

    ``envelope=False``: the fields alone (a record shown inside another message or
    printed by the CLI).
    """
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        raise TypeError(f"not a message: {value!r}")
    fields = typing.cast(dict[str, object], plain(value))
    return {VERSION_FIELD: VERSION, **fields} if envelope else fields


_SCALARS = frozenset({str, int, float, bool, type(None)})


@functools.cache
def _names(cls: type) -> tuple[tuple[str, ...], bool]:
    """A message class's field names, in order, and its ``OMIT_NONE`` (made once)."""
    return tuple(s.name for s in fields_of(cls)), bool(getattr(cls, "OMIT_NONE", False))


def plain(value: object) -> object:
    """``value`` as JSON-ready data: enums as their values, messages as objects."""
    kind: Any = type(value)
    if kind in _SCALARS:  # most values: no isinstance chain
        return value
    return _plainer(kind)(value)


@functools.cache
def _plainer(kind: type) -> typing.Callable[[Any], object]:
    """How ``plain`` turns a value of type ``kind`` into JSON-ready data: worked out once a
    type (an enum, a list, a mapping, a message, anything else as it is), not once a value
    (a 10,000-host list has 120,000 values that are not scalars)."""
    if issubclass(kind, enum.Enum):
        return _enum_value
    if issubclass(kind, tuple | list):
        return _plain_items
    if issubclass(kind, Mapping):
        return _plain_mapping
    if dataclasses.is_dataclass(kind) and not issubclass(kind, type):
        names, omit_none = _names(kind)
        scalars = _SCALARS

        def message(value: object) -> dict[str, object]:
            result = {}
            for name in names:
                item = getattr(value, name)
                if item is ABSENT or (item is None and omit_none):
                    continue
                item_kind: Any = type(item)
                result[name] = item if item_kind in scalars else _plainer(item_kind)(item)
            return result

        return message
    return _as_it_is


def _enum_value(value: enum.Enum) -> object:
    return value._value_


def _plain_items(value: tuple[object, ...] | list[object]) -> list[object]:
    return [plain(item) for item in value]


def _plain_mapping(value: Mapping[object, object]) -> dict[str, object]:
    return {str(k): plain(v) for k, v in value.items()}


def _as_it_is(value: object) -> object:
    return value


# -- JSON Schema ----------------------------------------------------------------------

REF = "#/components/schemas/"


def json_schema(cls: type, *, strict: bool = False, envelope: bool = False) -> dict[str, object]:
    """The JSON Schema of the message ``cls`` (nested messages by ``$ref``).

    ``strict`` (requests and what they hold): no field but its own; a reply's schema
    leaves room for fields a newer server adds. ``envelope`` (a request's top): with
    ``protocol``, optional, 1 when absent.
    """
    properties: dict[str, object] = {}
    required = []
    if envelope:
        properties[VERSION_FIELD] = {
            "type": "integer",
            "enum": list(SUPPORTED),
            "default": 1,
            "description": "the protocol version of this message; absent: 1",
        }
    for spec in fields_of(cls):
        schema = _schema(spec.kind, spec.rule)
        doc = spec.rule.doc
        if spec.rule.since > 1:
            doc = f"{doc} (protocol {spec.rule.since} on)".strip()
        if spec.rule.secret:
            doc = f"{doc} (a secret, handed to its owner only)".strip()
        if doc:
            schema["description"] = doc
        if not spec.required and spec.default not in (None, ABSENT, (), {}):
            schema["default"] = plain(spec.default)
        properties[spec.name] = schema
        if spec.required:
            required.append(spec.name)
    result: dict[str, object] = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    if strict:
        result["additionalProperties"] = False
    doc = getattr(cls, "DOC", "") or (cls.__doc__ or "").strip().split("\n\n")[0]
    if doc and not doc.startswith(f"{cls.__name__}("):  # not dataclass's own signature
        result["description"] = " ".join(doc.split())
    return result


def _schema(kind: Any, r: Rule) -> dict[str, Any]:
    union = [m for m in members(kind) if m not in (type(None), Absent)]
    inner = _schema_one(union[0], r)
    if not _nullable(kind):
        return inner
    if "$ref" in inner:
        return {"anyOf": [inner, {"type": "null"}]}
    if "enum" in inner:
        inner["enum"] = [*inner["enum"], None]
    inner["type"] = [inner["type"], "null"]
    return inner


def _schema_one(kind: Any, r: Rule) -> dict[str, Any]:
    origin = typing.get_origin(kind)
    if kind is str:
        schema: dict[str, Any] = {"type": "string"}
        if r.max_length is not None:
            schema["maxLength"] = r.max_length
        if r.printable:
            schema["minLength"] = 1
        return schema
    if kind is bool:
        return {"type": "boolean"}
    if kind in (int, float):
        schema = {"type": "integer" if kind is int else "number"}
        if r.minimum is not None:
            schema["minimum"] = r.minimum
        if r.maximum is not None:
            schema["maximum"] = r.maximum
        return schema
    origin = _origin(kind)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return {"type": "string", "enum": [m.value for m in (r.choices or tuple(kind))]}
    if dataclasses.is_dataclass(kind):
        return {"$ref": REF + typing.cast(type, kind).__name__}
    if origin is tuple:
        schema = {"type": "array", "items": _schema_one(typing.get_args(kind)[0], Rule())}
        if r.max_items is not None:
            schema["maxItems"] = r.max_items
        return schema
    if origin is dict:
        value_kind = typing.get_args(kind)[1]
        if value_kind is object:
            return {"type": "object"}
        return {"type": "object", "additionalProperties": _schema_one(value_kind, Rule())}
    raise TypeError(f"no schema for {kind!r}")


def nested(cls: type) -> Iterator[type]:
    """``cls`` and every message its fields hold, each once, depth first."""
    seen: set[type] = set()

    def walk(kind: Any) -> Iterator[type]:
        for member in members(kind):
            origin = typing.get_origin(member)
            if origin in (tuple, dict):
                for arg in typing.get_args(member):
                    yield from walk(arg)
            elif dataclasses.is_dataclass(member) and member not in seen:
                found = typing.cast(type, member)
                seen.add(found)
                yield found
                for spec in fields_of(found):
                    yield from walk(spec.kind)

    yield from walk(cls)
