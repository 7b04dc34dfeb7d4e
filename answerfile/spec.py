"""Every element and attribute an answer file may hold (SPEC §5), as data.

This table is the single source of truth: the RELAX NG schema is generated
from it (``schema.py``), the reader walks documents with it (``reader.py``), and
the reference documentation is printed from it. Names are the canonical
spellings; ``aliases`` are the other spellings the XenServer 7 installer
accepted, normalised to the canonical name when read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from answerfile import limits


class Text(enum.Enum):
    """What an element's text may be."""

    EMPTY = "empty"  # whitespace only
    OPTIONAL = "optional"
    REQUIRED = "required"


@dataclass(frozen=True)
class Attr:
    name: str
    values: tuple[str, ...] = ()  # a closed set; empty means free text
    aliases: tuple[str, ...] = ()
    required: bool = False
    int_range: tuple[int, int] | None = None
    doc: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass(frozen=True)
class Element:
    name: str
    doc: str
    aliases: tuple[str, ...] = ()
    attrs: tuple[Attr, ...] = ()
    text: Text = Text.REQUIRED
    text_values: tuple[str, ...] = ()  # a closed set for the text; empty means free text
    repeatable: bool = False
    at_most: int = 1  # how often it may appear (limits.py); counted under ``tally``
    tally: str = ""  # the element whose count it adds to (default: its own name)
    children: tuple[Element, ...] = ()
    legacy: str | None = None  # accepted with this warning, content ignored
    refused: str | None = None  # never accepted; the reason

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def counted_as(self) -> str:
        return self.tally or self.name

    def attr(self, name: str) -> Attr | None:
        for attr in self.attrs:
            if name in attr.names:
                return attr
        return None

    def child(self, name: str) -> Element | None:
        for child in self.children:
            if name in child.names:
                return child
        return None


YES_NO = ("yes", "no", "true", "false")
SOURCE_TYPES = ("url", "nfs", "local")
STAGES = ("installation-start", "filesystem-populated", "installation-complete")


def _source(name: str, doc: str, at_most: int) -> Element:
    return Element(
        name,
        doc,
        attrs=(Attr("type", SOURCE_TYPES, required=True, doc="where the location points"),),
        text=Text.OPTIONAL,
        repeatable=True,
        at_most=at_most,
    )


def _legacy_script(name: str, stage: str) -> Element:
    return Element(
        name,
        f"the script's location (legacy spelling of a {stage} `<script>`)",
        attrs=(Attr("type", SOURCE_TYPES, doc="default: url (nfs for an nfs:// URL)"),),
        repeatable=True,
        at_most=limits.MAX_SCRIPTS,
        tally="script",
    )


ADMIN_INTERFACE = Element(
    "admin-interface",
    "the management interface of the installed host; absent: DHCP on the NIC "
    "that fetched the answer file",
    attrs=(
        Attr("name", doc="interface name, e.g. eth0 (or give hwaddr)"),
        Attr("hwaddr", doc="MAC address of the interface (or give name)"),
        Attr("proto", ("dhcp", "static", "none"), required=True),
        Attr("vlan", int_range=(1, 4094), doc="802.1Q VLAN id"),
        Attr("protov6", ("dhcp", "autoconf", "static", "none")),
    ),
    text=Text.EMPTY,
    children=(
        Element("ipaddr", "an IPv4 address (proto=static)", aliases=("ip",)),
        Element("subnet", "a dotted IPv4 netmask (proto=static)", aliases=("subnet-mask",)),
        Element("gateway", "the IPv4 gateway (proto=static)"),
        Element("ipv6", "an IPv6 address with prefix length (protov6=static)"),
        Element("gatewayv6", "the IPv6 gateway (protov6=static)"),
    ),
)

INSTALLATION_CHILDREN: tuple[Element, ...] = (
    Element(
        "primary-disk",
        "the disk to install dom0 on: sda, nvme0n1, /dev/..., iscsi:ibft or an "
        "RFC 4173 iscsi: spec",
        attrs=(
            Attr("guest-storage", YES_NO, aliases=("gueststorage",), doc="default yes"),
            Attr(
                "preserve-first-partition",
                ("true", "false", "if-utility"),
                doc="default if-utility",
            ),
        ),
    ),
    Element(
        "guest-disk",
        "a disk that joins the local SR",
        repeatable=True,
        at_most=limits.MAX_GUEST_DISKS,
    ),
    Element("zap-utility-partitions", "do not keep a utility partition", text=Text.EMPTY),
    Element("keymap", "a console keymap name such as us (the default)"),
    Element(
        "root-password",
        "the root password (absent: set at first boot)",
        attrs=(Attr("type", ("plaintext", "hash"), doc="default plaintext"),),
    ),
    _source("source", "the install repository", limits.MAX_SOURCES),
    _source("driver-source", "a supplemental pack with drivers", limits.MAX_DRIVER_SOURCES),
    Element(
        "script",
        "a script run at a stage of the install",
        attrs=(
            Attr("stage", STAGES, required=True),
            Attr("type", SOURCE_TYPES, required=True),
        ),
        repeatable=True,
        at_most=limits.MAX_SCRIPTS,
    ),
    _legacy_script("post-install-script", "filesystem-populated"),
    _legacy_script("install-failed-script", "installation-complete"),
    ADMIN_INTERFACE,
    Element(
        "name-server",
        "a DNS server address",
        aliases=("nameserver",),
        repeatable=True,
        at_most=limits.MAX_NAME_SERVERS,
    ),
    Element("hostname", "a host name (not an FQDN)"),
    Element(
        "ntp-server",
        "an NTP server",
        aliases=("ntp-servers",),
        repeatable=True,
        at_most=limits.MAX_NTP_SERVERS,
    ),
    Element("timezone", "a tz database name, e.g. Europe/London"),
    Element(
        "network-backend",
        "bridge (default) or openvswitch (alias vswitch); only openvswitch starts Open vSwitch",
        text_values=("bridge", "openvswitch", "vswitch"),
    ),
    Element(
        "bootloader",
        "boot loader options",
        attrs=(
            Attr("location", ("mbr", "partition"), doc="default mbr"),
            Attr("write-boot-entry", ("true", "false"), doc="default true"),
        ),
        text=Text.OPTIONAL,
        text_values=("grub2",),
    ),
    Element("existing-installation", "the disk holding the installation to upgrade"),
    Element(
        "time-config-method",
        "legacy",
        text=Text.OPTIONAL,
        repeatable=True,
        at_most=limits.MAX_LEGACY_REPEATS,
        legacy="is no longer used and is ignored: time is set with <ntp-server>",
    ),
    Element(
        "ui-confirmation-prompt",
        "legacy",
        text=Text.OPTIONAL,
        repeatable=True,
        at_most=limits.MAX_LEGACY_REPEATS,
        legacy="is no longer used and is ignored: the install is unattended",
    ),
    Element(
        "fcoe-interface",
        "refused",
        text=Text.OPTIONAL,
        refused="FCoE is not supported; install onto a local, iSCSI or multipath disk",
    ),
)

INSTALLATION = Element(
    "installation",
    "a fresh install or an upgrade",
    attrs=(
        Attr("mode", ("fresh", "upgrade", "reinstall"), doc="default fresh; reinstall = upgrade"),
        Attr("srtype", ("lvm", "ext"), aliases=("sr-type",), doc="default lvm"),
    ),
    text=Text.EMPTY,
    children=INSTALLATION_CHILDREN,
)

RESTORE = Element(
    "restore",
    "restore the previous installation from the backup partition",
    text=Text.EMPTY,
    children=(Element("backup-disk", "the disk holding the backup partition"),),
)

ROOTS: tuple[Element, ...] = (INSTALLATION, RESTORE)


def all_names() -> tuple[str, ...]:
    """Every element name and alias, for "did you mean" hints."""
    names: list[str] = []

    def walk(element: Element) -> None:
        names.extend(element.names)
        for child in element.children:
            walk(child)

    for root in ROOTS:
        walk(root)
    return tuple(names)
