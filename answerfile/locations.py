"""Checks for the texts an answer file names things with: URLs, NFS paths,
devices, iSCSI root paths, addresses and names.

Each ``check_*`` returns None when the text is fine, else the sentence that
says what was expected; the caller adds the element and the line.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from answerfile.model import Disk, DiskKind, IscsiTarget

URL_SCHEMES = ("http", "https", "ftp", "file")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^{_LABEL}$")
_FQDN_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
_DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:!+-]*(?:/[A-Za-z0-9_.:!+-]+)*$")
_MAC_RE = re.compile(r"^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2}){4}$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
_KEYMAP_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_PARTITION_RE = re.compile(
    r"(?:^|/)(?:(?:sd|vd|xvd|hd)[a-z]+[0-9]+|(?:nvme[0-9]+n[0-9]+|mmcblk[0-9]+)p[0-9]+)$"
    r"|-part[0-9]+$"
)
_HASH_RE = re.compile(r"^\$(?:1|2[abxy]?|5|6|y|gy|7|sha1|md5)\$[A-Za-z0-9./$=,+-]+$")


def is_host(text: str) -> bool:
    """A DNS name or an IP address (IPv6 in brackets or bare)."""
    candidate = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return bool(_FQDN_RE.match(text)) and len(text) <= 253
    return True


def check_url(text: str) -> str | None:
    """An http, https or ftp URL (optional user:pass@) or a file:// URL."""
    expected = "expected an http://, https://, ftp:// or file:// URL"
    if any(ch.isspace() or ord(ch) < 32 for ch in text):
        return f"{text!r} contains spaces; write a space in a URL as %20"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return f"{text!r} is not a valid URL; {expected}"
    if parts.scheme not in URL_SCHEMES:
        return f"{text!r} is not a usable URL; {expected}"
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            return f"{text!r} is not a file URL of an absolute path; expected file:///path"
        return None
    if not parts.hostname or not is_host(parts.hostname):
        return f"{text!r} has no valid host name; {expected}"
    if port == 0:
        return f"{text!r} has port 0; expected a port from 1 to 65535"
    return None


def check_nfs(text: str) -> str | None:
    """``server:/path``."""
    server, sep, path = text.partition(":/")
    if not sep or not server or not is_host(server):
        return f"{text!r} is not an NFS location; expected server:/path"
    if "\x00" in path or any(ch.isspace() for ch in path):
        return f"{text!r} has spaces in its path; expected server:/path"
    return None


def nfs_from_url(text: str) -> str | None:
    """``nfs://server/path`` or ``nfs://server:/path`` -> ``server:/path``."""
    if not text.startswith("nfs://"):
        return None
    rest = text[len("nfs://") :]
    if ":/" in rest:
        return rest
    server, sep, path = rest.partition("/")
    return f"{server}:/{path}" if sep else rest


def check_file_path_url(text: str) -> str | None:
    """A local script: ``file:///absolute/path``."""
    if not text.startswith("file://"):
        return f"{text!r} is not a local path; a local script is a file:///path URL"
    return check_url(text)


def parse_iscsi(text: str) -> IscsiTarget | str:
    """An RFC 4173 root path, or the sentence saying what is wrong with it."""
    body = text[len("iscsi:") :]
    server = ""
    if body.startswith("["):
        end = body.find("]")
        if end < 0:
            return f"{text!r}: an IPv6 server must be closed with ]"
        server, body = body[1:end], body[end + 1 :]
        if not body.startswith(":"):
            return f"{text!r} is not an RFC 4173 iSCSI root path"
        body = body[1:]
    else:
        server, _, body = body.partition(":")
    fields = body.split(":", 3)
    expected = "expected iscsi:<server>:<protocol>:<port>:<lun>:<target name> (RFC 4173)"
    if len(fields) != 4:
        return f"{text!r} is not an RFC 4173 iSCSI root path; {expected}"
    protocol, port, lun, target = fields
    if not server or not is_host(server):
        return f"{text!r} has no valid server; {expected}"
    if protocol not in ("", "6"):
        return f"{text!r}: protocol must be empty or 6 (TCP)"
    if port and (not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536):
        return f"{text!r}: port must be empty or a number from 1 to 65535"
    lun_hex = lun.replace("-", "")
    if lun_hex and (not re.fullmatch(r"[0-9A-Fa-f]{1,16}", lun_hex)):
        return f"{text!r}: LUN must be empty or hexadecimal"
    if not target or any(ch.isspace() for ch in target):
        return f"{text!r} has no target name; {expected}"
    return IscsiTarget(
        server=server,
        target=target,
        port=int(port) if port else 3260,
        lun=int(lun_hex, 16) if lun_hex else 0,
        protocol=6,
    )


def parse_disk(text: str) -> Disk | str:
    """A disk name, or the sentence saying what is wrong with it."""
    if text == "iscsi:ibft":
        return Disk(text, DiskKind.IBFT)
    if text.startswith("iscsi:"):
        target = parse_iscsi(text)
        return target if isinstance(target, str) else Disk(text, DiskKind.ISCSI, target)
    expected = (
        "expected a device such as sda, nvme0n1, /dev/disk/by-id/..., "
        "iscsi:ibft or an RFC 4173 iscsi: spec"
    )
    if text.startswith("/"):
        if not text.startswith("/dev/") or not _DEVICE_RE.match(text[len("/dev/") :]):
            return f"{text!r} is not a device path; {expected}"
    elif not _DEVICE_RE.match(text):
        return f"{text!r} is not a device; {expected}"
    if ".." in text.split("/"):
        return f"{text!r} leaves /dev; {expected}"
    if _PARTITION_RE.search(text):
        return f"{text!r} names a partition; expected a whole disk such as sda or nvme0n1"
    return Disk(text)


def check_hostname(text: str) -> str | None:
    if "." in text.rstrip(".") and _FQDN_RE.match(text):
        short = text.split(".", 1)[0]
        return f"{text!r} is a fully qualified domain name; expected a host name such as {short!r}"
    if not _HOSTNAME_RE.match(text):
        return (
            f"{text!r} is not a host name; expected letters, digits and inner hyphens, "
            "at most 63 characters"
        )
    return None


def check_ipv4(text: str) -> str | None:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return f"{text!r} is not an IPv4 address; expected e.g. 192.168.1.10"
    return None


def check_netmask(text: str) -> str | None:
    try:
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{text}").prefixlen
    except ValueError:
        return f"{text!r} is not an IPv4 netmask; expected e.g. 255.255.255.0"
    if prefix == 0:
        return f"{text!r} is not a usable netmask; expected e.g. 255.255.255.0"
    if "." not in text:
        return f"{text!r} is a prefix length; expected a dotted netmask such as 255.255.255.0"
    return None


def check_ip(text: str) -> str | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return f"{text!r} is not an IP address; expected e.g. 192.168.1.1 or 2001:db8::1"
    if address.is_unspecified or address.is_multicast:
        return f"{text!r} cannot be a server address; expected e.g. 192.168.1.1"
    return None


def check_ipv6_interface(text: str) -> str | None:
    try:
        ipaddress.IPv6Interface(text)
    except ValueError:
        return f"{text!r} is not an IPv6 address with prefix; expected e.g. 2001:db8::10/64"
    if "/" not in text:
        return f"{text!r} has no prefix length; expected e.g. 2001:db8::10/64"
    return None


def check_ipv6(text: str) -> str | None:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return f"{text!r} is not an IPv6 address; expected e.g. 2001:db8::1"
    return None


def normalise_mac(text: str) -> str | None:
    if not _MAC_RE.match(text):
        return None
    return text.lower().replace("-", ":")


def check_ifname(text: str) -> str | None:
    if not _IFNAME_RE.match(text):
        return f"{text!r} is not an interface name; expected e.g. eth0"
    return None


def check_ntp_server(text: str) -> str | None:
    if not is_host(text):
        return f"{text!r} is not a host name or IP address"
    return None


def check_keymap(text: str) -> str | None:
    if not _KEYMAP_RE.match(text):
        return f"{text!r} is not a keymap name; expected e.g. us, de, jp106"
    return None


def check_password_hash(text: str) -> str | None:
    if not _HASH_RE.match(text):
        return (
            "the value is not a crypt(3) hash; expected e.g. $6$salt$hash or $y$...; "
            'use type="plaintext" for a clear-text password'
        )
    return None
