"""What the registry accepts: names, variables, templates, progress (SPEC §9).

Pure checks that raise InputError with one sentence naming the bad value; the
registry calls them before it writes anything. Passwords are hashed here, on the way
in (SHA-512 crypt): a password variable's value (``secrets.is_password_variable``) and
a profile template's literal plaintext ``<root-password>``; a profile's boot arguments
may not carry ``sshpassword=``. Only the hashes are ever stored.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from common.errors import InputError
from pxe_server.boot_words import ipxe_word
from pxe_server.model import BootChain, Profile, SanTarget
from pxe_server.passwords import password_hash
from pxe_server.secrets import SHOWN_REDACTED, is_password_variable

if TYPE_CHECKING:
    from answerfile.model import IscsiTarget

# The renderer (jinja2) and the answer-file package (lxml) are imported by the checks
# that use them, when they run: the registry's readers (``host list``) load neither.

# Template variables the renderer provides itself; a host variable may not shadow them
# (nor end in _hash when it names a password: the renderer gives a password variable
# NAME to templates as NAME_hash).
RESERVED_VARIABLES = frozenset({"mac", "name", "server", "repo_url", "root_password_hash"})

_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IPXE_NIC = re.compile(r"^net[0-9]{1,2}$")
# An IQN (RFC 3720 §3.2.6.3.1), or the EUI-64 form; no spaces or quotes (iPXE's settings).
_IQN = re.compile(r"^(iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9][a-z0-9.-]*(:[!-~]+)?|eui\.[0-9A-F]{16})$")

Variables = Mapping[str, str] | Iterable[tuple[str, str]]


def check_template(template: str) -> None:
    """InputError unless ``template`` parses as jinja2 and fits ``answerfile.limits.MAX_BYTES``
    (a template at the cap renders a file at the cap or past it)."""
    import jinja2  # noqa: PLC0415 - see the imports above

    from answerfile import limits  # noqa: PLC0415

    size = len(template.encode("utf-8", "surrogatepass"))
    if size > limits.MAX_BYTES:
        raise InputError(
            f"the template is {size} bytes; an answer-file template may hold at most"
            f" {limits.MAX_BYTES} bytes (1 MiB)"
        )
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
    if not _IPXE_NIC.match(profile.storage_nic):
        raise InputError(
            f"storage NIC {profile.storage_nic!r} must be iPXE's name of a NIC, e.g. net1"
        )
    for field, text in (("xen_args", profile.xen_args), ("kernel_args", profile.kernel_args)):
        if any(word.startswith("sshpassword=") for word in text.split()):
            raise InputError(
                f"profile {profile.name}: {field} may not carry sshpassword= (boot arguments "
                "are served in clear to any client, and the installer runs no SSH server); "
                "set the root password with the host variable root_password instead, "
                "which is stored only as a SHA-512 crypt hash"
            )
    from pxe_server.render import check_profile_args  # noqa: PLC0415 - see the imports

    check_profile_args(profile)  # what a boot loader would misread, refused now, not at boot
    check_template(profile.template)


# A literal <root-password> element of a template (its attributes, its text).
_ROOT_PASSWORD = re.compile(r"<root-password(\s[^>]*)?>(.*?)</root-password\s*>", re.DOTALL)
_HASH_TYPE = re.compile(r"""\btype\s*=\s*["']hash["']""")
_JINJA = ("{{", "{%", "{#")


def _hashed_element(match: re.Match[str]) -> str:
    attributes, text = match[1] or "", match[2]
    if _HASH_TYPE.search(attributes) or any(mark in text for mark in _JINJA):
        return match[0]  # a hash already, or filled in when rendered (root_password_hash)
    password = _xml_text(text)
    if not password:
        return match[0]  # empty, or not plain XML text: the answer file is refused anyway
    return f'<root-password type="hash">{password_hash(password)}</root-password>'


_ENTITY = re.compile(r"&(?:#x([0-9a-fA-F]{1,6})|#([0-9]{1,7})|(amp|lt|gt|quot|apos));")
_NAMED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


def _entity(match: re.Match[str]) -> str:
    if match[3]:
        return _NAMED[match[3]]
    code = int(match[1], 16) if match[1] else int(match[2])
    return chr(code) if code <= 0x10FFFF else match[0]


def _xml_text(text: str) -> str | None:
    """An element's text with XML's entities replaced, stripped as the answer-file reader
    strips it; None for markup or a stray ``&``."""
    if "<" in text or "&" in _ENTITY.sub("", text):
        return None
    return _ENTITY.sub(_entity, text).strip()


def hashed_template(template: str) -> str:
    """``template`` with each literal plaintext ``<root-password>`` replaced by the
    element with its SHA-512 crypt hash (``type="hash"``); everything else as it was."""
    return _ROOT_PASSWORD.sub(_hashed_element, template)


def profile_input(profile: Profile) -> Profile:
    """``profile`` checked (``check_profile``), its template's literal passwords hashed."""
    check_profile(profile)
    return replace(profile, template=hashed_template(profile.template))


def _with_prefix(text: str) -> bool:
    """``text`` is an IPv4 ADDRESS/PREFIX of a real subnet (not /0, not /32)."""
    try:
        interface = ipaddress.IPv4Interface(text)
    except ValueError:
        return False
    return "/" in text and 0 < interface.network.prefixlen < 32


MAX_SAN_PATHS = 4  # iPXE's iBFT has room for as many targets; every SAN fabric here has 2


def _root_path(text: str, problems: list[str]) -> IscsiTarget | None:
    """``text`` parsed as an RFC 4173 root path with an IPv4 server and an IQN."""
    from answerfile.locations import parse_iscsi  # noqa: PLC0415 - see the imports above

    target = parse_iscsi(text) if text.startswith("iscsi:") else None
    if target is None or isinstance(target, str):
        problems.append(
            target
            or f"SAN target {text!r} is not an RFC 4173 root path; expected "
            "iscsi:<server>:<protocol>:<port>:<lun>:<target IQN>"
        )
        return None
    found = len(problems)
    try:
        ipaddress.IPv4Address(target.server)
    except ValueError:
        problems.append(f"SAN target server {target.server!r} must be an IPv4 address")
    if not _IQN.match(target.target):
        problems.append(f"SAN target name {target.target!r} is not an iqn. or eui. name")
    return target if len(problems) == found else None


def _same_lun(first: IscsiTarget, other: IscsiTarget, text: str, problems: list[str]) -> None:
    """A further path must reach the first one's LUN (through another portal: the
    caller's check of portals)."""
    if (other.target, other.lun) != (first.target, first.lun):
        problems.append(
            f"SAN path {text!r} names LUN {other.lun} of {other.target}; every path must "
            f"reach the root LUN, LUN {first.lun} of {first.target}"
        )


def san_target(san: SanTarget | None) -> SanTarget | None:
    """``san`` checked: RFC 4173 root paths (IPv4 target, an IQN; the further ones to the
    same LUN through other portals), the storage NIC's address as ADDRESS/PREFIX, an IPv4
    gateway, an IQN. InputError naming what is wrong."""
    if san is None:
        return None
    problems: list[str] = []
    first = _root_path(san.root_path, problems)
    if len(san.root_paths) > MAX_SAN_PATHS:
        problems.append(
            f"a root LUN takes at most {MAX_SAN_PATHS} paths, not {len(san.root_paths)}"
        )
    seen = {(first.server, first.port)} if first is not None else set()
    for text in san.paths:
        other = _root_path(text, problems)
        if first is not None and other is not None:
            if (other.server, other.port) in seen:
                problems.append(f"SAN path {text!r} repeats the portal {other.server}:{other.port}")
            seen.add((other.server, other.port))
            _same_lun(first, other, text, problems)
    if san.address is not None and not _with_prefix(san.address):
        problems.append(
            f"storage address {san.address!r} must be IPv4 ADDRESS/PREFIX, e.g. 192.168.78.50/24"
        )
    if san.gateway is not None:
        try:
            ipaddress.IPv4Address(san.gateway)
        except ValueError:
            problems.append(f"storage gateway {san.gateway!r} must be an IPv4 address")
    if san.initiator is not None and not _IQN.match(san.initiator):
        problems.append(f"initiator {san.initiator!r} is not an iqn. or eui. name")
    for value in (*san.root_paths, san.initiator or "iqn."):  # as iPXE scripts carry them
        try:
            ipxe_word(value)
        except InputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputError(problems)
    return san


def variables_of(
    variables: Variables, stored: Iterable[tuple[str, str]] = ()
) -> tuple[tuple[str, str], ...]:
    """``variables`` checked, each password variable's value as its SHA-512 crypt hash
    (a hash given is kept). A password given as ``<redacted>`` (how listings show one)
    keeps the hash in ``stored``, the host's current variables."""
    before = dict(stored)
    result = {key: _stored_value(key, value, before) for key, value in _given(variables)}
    return tuple(sorted(result.items()))


def _given(variables: Variables) -> list[tuple[str, str]]:
    """``variables`` as pairs, each name checked (a name, not the server's, given once)."""
    pairs = list(variables.items()) if isinstance(variables, Mapping) else list(variables)
    seen: set[str] = set()
    for key, _ in pairs:
        if not _VARIABLE.match(key):
            raise InputError(f"variable name {key!r} must be letters, digits and _")
        if key in RESERVED_VARIABLES or (is_password_variable(key) and key.endswith("_hash")):
            raise InputError(f"variable {key!r} is set by the server; choose another name")
        if key in seen:
            raise InputError(f"variable {key!r} is given twice")
        seen.add(key)
    return [(key, str(value)) for key, value in pairs]


def edited_variables(
    stored: Iterable[tuple[str, str]], mac: str, given: Variables, unset: Iterable[str]
) -> tuple[tuple[str, str], ...]:
    """The host ``mac``'s ``stored`` variables with ``given`` added or replaced and
    ``unset`` removed (each must be there: InputError naming the first that is not); the
    others kept as stored, password hashes too. A password given is a new password,
    hashed; ``<redacted>`` is refused: leaving the variable out keeps the stored one."""
    result = dict(stored)
    pairs = _given(given)
    names = {key for key, _ in pairs}
    for key in dict.fromkeys(unset):
        if key in names:
            raise InputError(f"variable {key!r} is both set and unset")
        if key not in result:
            raise InputError(f"cannot unset {key!r}: host {mac} has no such variable")
        del result[key]
    for key, value in pairs:
        if is_password_variable(key) and value == SHOWN_REDACTED:
            raise InputError(
                f"variable {key!r}: {SHOWN_REDACTED} is how a password is shown, not a "
                "password; give the new password, or leave the variable out to keep it"
            )
        result[key] = _stored_value(key, value, {})
    return tuple(sorted(result.items()))


def _stored_value(key: str, value: str, before: Mapping[str, str]) -> str:
    if not is_password_variable(key):
        return value
    if value == SHOWN_REDACTED:
        if key not in before:
            raise InputError(
                f"variable {key!r}: {SHOWN_REDACTED} stands for the stored password, and "
                "there is none; give the password itself"
            )
        return before[key]
    return password_hash(value)


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
