"""Plain-data copies of our frozen values, for ``--json`` output. A leaf module.

Enums become their values, tuples lists, dataclasses dicts; a dataclass field
declared ``repr=False`` (a secret) becomes ``"<redacted>"``.
"""

from __future__ import annotations

import dataclasses
import enum

REDACTED = "<redacted>"


def to_jsonable(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_jsonable(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name)) if f.repr else REDACTED
            for f in dataclasses.fields(value)
        }
    return value
