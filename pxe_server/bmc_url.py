"""A host's BMC as the operator names it: ``--bmc URL`` parsed into a typed value (pure).

    redfish://USER@ADDR[:PORT][/redfish/v1/Systems/ID]   Redfish over HTTPS (port 443)
    redfish+http://USER@ADDR[:PORT][/redfish/v1/Systems/ID]   plain HTTP (port 80): a
                                                         BMC or an emulator without TLS
    ipmi://USER@ADDR[:PORT]                              IPMI over LAN, RMCP+ (UDP 623)

ADDR is a host name, an IPv4 address or a bracketed IPv6 address. Without a system path
a Redfish BMC must manage exactly one system. The password never goes in the URL
(``--bmc-password-file``); ``parse_bmc_url`` refuses one there, and every other bad form,
in one sentence (InputError), naming what is wrong.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

from common.errors import InputError


class BmcError(InputError):
    """A BMC that cannot be reached, refused, or answered wrongly: one sentence naming it
    (its URL, never its password). The API answers it with 502: the BMC, not the request,
    is at fault."""


class BmcKind(enum.StrEnum):
    REDFISH = "redfish"  # HTTPS
    REDFISH_HTTP = "redfish+http"
    IPMI = "ipmi"


DEFAULT_PORTS = {BmcKind.REDFISH: 443, BmcKind.REDFISH_HTTP: 80, BmcKind.IPMI: 623}
SYSTEMS_PREFIX = "/redfish/v1/Systems/"
MAX_URL = 512
MAX_USER = 64  # characters of a BMC user name (IPMI's own limit is 16 bytes)
IPMI_MAX_USER = 16

_USER = re.compile(r"[A-Za-z0-9._~+-]+")
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_SYSTEM_ID = re.compile(r"[A-Za-z0-9._~:-]{1,128}")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class BmcUrl:
    """A parsed BMC URL; ``str()`` gives it back in its canonical form (no password)."""

    kind: BmcKind
    user: str
    address: str  # a host name or an IP address, IPv6 without brackets
    port: int
    system: str | None = None  # Redfish: the ComputerSystem's ID; None: the only one

    def __str__(self) -> str:
        port = "" if self.port == DEFAULT_PORTS[self.kind] else f":{self.port}"
        path = f"{SYSTEMS_PREFIX}{self.system}" if self.system else ""
        return f"{self.kind.value}://{self.user}@{self.host_port}{port}{path}"

    @property
    def host_port(self) -> str:
        """The address as a URL's authority holds it (IPv6 in brackets), without the port."""
        return f"[{self.address}]" if ":" in self.address else self.address

    @property
    def redfish(self) -> bool:
        return self.kind is not BmcKind.IPMI

    @property
    def base_url(self) -> str:
        """Redfish: the service's base URL (scheme, address, port)."""
        scheme = "http" if self.kind is BmcKind.REDFISH_HTTP else "https"
        return f"{scheme}://{self.host_port}:{self.port}"


def _refuse(text: str, why: str) -> InputError:
    return InputError(f"--bmc {text}: {why}")


def _address(text: str, host: str) -> str:
    if host.startswith("["):
        inner = host[1:-1] if host.endswith("]") else ""
        try:
            return str(ipaddress.IPv6Address(inner))
        except ValueError:
            raise _refuse(text, f"{host} is not a bracketed IPv6 address") from None
    if not _HOSTNAME.fullmatch(host):
        raise _refuse(text, f"{host!r} is not a host name or an IP address")
    return host.rstrip(".").lower()


def _split_port(text: str, hostport: str, kind: BmcKind) -> tuple[str, int]:
    host, port = hostport, ""
    if hostport.startswith("["):
        close = hostport.find("]")
        if close != -1 and hostport[close + 1 :].startswith(":"):
            host, port = hostport[: close + 1], hostport[close + 2 :]
    elif ":" in hostport:
        host, _, port = hostport.rpartition(":")
    if not port:
        if hostport.endswith(":"):
            raise _refuse(text, "the port after ':' is missing")
        return host, DEFAULT_PORTS[kind]
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise _refuse(text, f"port {port!r} is not a number from 1 to 65535")
    return host, int(port)


def parse_bmc_url(text: str) -> BmcUrl:
    """``text`` as a BmcUrl; InputError, one sentence, for any other form."""
    text = text.strip()
    if not text:
        raise InputError("--bmc is empty: give redfish://USER@ADDR or ipmi://USER@ADDR")
    if len(text) > MAX_URL:
        raise InputError(f"--bmc has more than {MAX_URL} characters")
    if not text.isprintable() or " " in text:
        raise InputError("--bmc holds a space or a character that is not printable")
    scheme, sep, rest = text.partition("://")
    kinds = {kind.value: kind for kind in BmcKind}
    if not sep or scheme.lower() not in kinds:
        raise _refuse(text, "give redfish://, redfish+http:// or ipmi:// (USER@ADDR[:PORT])")
    kind = kinds[scheme.lower()]
    if "?" in rest or "#" in rest:
        raise _refuse(text, "a BMC URL has no query or fragment")
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if not at or not userinfo:
        raise _refuse(text, "the BMC user is missing (USER@ADDR)")
    if ":" in userinfo:
        raise _refuse(text, "a password does not go in the URL: give it in --bmc-password-file")
    if not _USER.fullmatch(userinfo) or len(userinfo) > MAX_USER:
        raise _refuse(text, f"user {userinfo!r} is not 1 to {MAX_USER} letters, digits or ._~+-")
    if kind is BmcKind.IPMI and len(userinfo) > IPMI_MAX_USER:
        raise _refuse(text, f"an IPMI user name has {IPMI_MAX_USER} characters at most")
    if not hostport:
        raise _refuse(text, "the BMC's address is missing")
    host, port = _split_port(text, hostport, kind)
    address = _address(text, host)
    system = None
    if slash and path:
        if kind is BmcKind.IPMI:
            raise _refuse(text, "an ipmi:// URL has no path")
        full = "/" + path.rstrip("/")
        if not full.startswith(SYSTEMS_PREFIX) or not _SYSTEM_ID.fullmatch(
            full[len(SYSTEMS_PREFIX) :]
        ):
            raise _refuse(text, f"the path is not {SYSTEMS_PREFIX}ID")
        system = full[len(SYSTEMS_PREFIX) :]
    return BmcUrl(kind, userinfo, address, port, system)
