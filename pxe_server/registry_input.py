"""What the registry accepts: names, variables, templates, progress (SPEC §9).

Pure checks that raise InputError with one sentence naming the bad value; the
registry calls them before it writes anything.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from typing import TypeVar

import jinja2

from netinstall.errors import InputError
from pxe_server.model import BootChain, Profile

# Template variables the renderer provides itself; a host variable may not shadow them.
RESERVED_VARIABLES = frozenset({"mac", "name", "server", "repo_url", "root_password_hash"})

_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Variables = Mapping[str, str] | Iterable[tuple[str, str]]


def check_template(template: str) -> None:
    """InputError unless ``template`` parses as jinja2."""
    try:
        jinja2.Environment(autoescape=True).parse(template)
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(
            f"the template does not parse as jinja2: line {exc.lineno}: {exc.message}"
        ) from exc


def check_profile(profile: Profile) -> None:
    if not _PROFILE_NAME.match(profile.name):
        raise InputError(f"profile name {profile.name!r} must be letters, digits, '.', '_', '-'")
    if profile.boot_chain not in tuple(BootChain):
        choices = "|".join(c.value for c in BootChain)
        raise InputError(f"boot chain {profile.boot_chain!r} must be one of {choices}")
    check_template(profile.template)


def variables_of(variables: Variables) -> tuple[tuple[str, str], ...]:
    pairs = list(variables.items()) if isinstance(variables, Mapping) else list(variables)
    result: dict[str, str] = {}
    for key, value in pairs:
        if not _VARIABLE.match(key):
            raise InputError(f"variable name {key!r} must be letters, digits and _")
        if key in RESERVED_VARIABLES:
            raise InputError(f"variable {key!r} is set by the server; choose another name")
        if key in result:
            raise InputError(f"variable {key!r} is given twice")
        result[key] = str(value)
    return tuple(sorted(result.items()))


def host_name(name: str | None) -> str | None:
    if name is not None and not _HOST_NAME.match(name):
        raise InputError(f"host name {name!r} must be letters, digits and '-' (not an FQDN)")
    return name


E = TypeVar("E", bound=enum.Enum)


def choice(kind: type[E], value: E | str, what: str, allowed: tuple[E, ...]) -> E:
    try:
        chosen = kind(value)
    except ValueError:
        chosen = None
    if chosen is None or chosen not in allowed:
        names = ", ".join(str(a.value) for a in allowed)
        raise InputError(f"{what} {str(value)!r} must be one of {names}")
    return chosen


def progress_of(progress: float | None) -> float | None:
    if progress is None:
        return None
    if isinstance(progress, bool) or not isinstance(progress, int | float):
        raise InputError(f"progress {progress!r} must be a number from 0 to 1")
    if not (math.isfinite(progress) and 0 <= progress <= 1):
        raise InputError(f"progress {progress!r} must be a number from 0 to 1")
    return float(progress)
