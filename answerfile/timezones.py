"""Time zone names, from the IANA database that the ``tzdata`` package ships.

Read from the Python package, not from the host's /usr/share/zoneinfo, so the
verdict is the same on every machine. The installer image has no PyPI packages:
there it reads Debian's ``tzdata`` (the zones and links of ``tzdata.zi``).
"""

from __future__ import annotations

import difflib
from functools import cache
from importlib import resources
from pathlib import Path

DEBIAN_TZDATA = Path("/usr/share/zoneinfo/tzdata.zi")


@cache
def names() -> frozenset[str]:
    try:
        text = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    except ModuleNotFoundError:
        return _debian_names(DEBIAN_TZDATA)
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def _debian_names(path: Path) -> frozenset[str]:
    """Zone (``Z name ...``) and link (``L target name``) names of a tzdata.zi file."""
    found: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "Z":
            found.add(words[1])
        elif len(words) >= 3 and words[0] == "L":
            found.add(words[2])
    return frozenset(found)


def is_timezone(name: str) -> bool:
    return name in names()


def suggest(name: str) -> str | None:
    by_lower = {n.lower(): n for n in names()}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(name, sorted(names()), n=1, cutoff=0.8)
    return close[0] if close else None
