"""Time zone names, from the IANA database that the ``tzdata`` package ships.

Read from the package, not from the host's /usr/share/zoneinfo, so the verdict
is the same on every machine.
"""

from __future__ import annotations

import difflib
from functools import cache
from importlib import resources


@cache
def names() -> frozenset[str]:
    text = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def is_timezone(name: str) -> bool:
    return name in names()


def suggest(name: str) -> str | None:
    by_lower = {n.lower(): n for n in names()}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(name, sorted(names()), n=1, cutoff=0.8)
    return close[0] if close else None
