"""Sizes as operators write them: 60GiB, 46G, 512MiB, 2.5TiB, 500GB."""

from __future__ import annotations

import re

from common.errors import InputError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tib": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Bytes. K/M/G/T and KiB/MiB/GiB/TiB are binary; KB/MB/GB/TB decimal."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise InputError(
            f"{text!r} is not a size; expected a number with a unit such as 60GiB, 512MiB or 2.5TiB"
        )
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise InputError(f"{text!r} is not a positive size")
    return size
