"""What a network-booting client gets: pure decisions, no I/O (SPEC §3, §9).

    facts = ClientFacts(mac, arch, ipxe)        # from the DHCP request
    boot_file(facts, host, profile)             # the DHCP boot file name (dnsmasq)
    decide(host, profile, settings)             # install or boot from the local disk

``render`` turns the decision into a boot config; ``dnsmasq`` turns boot files
into ``dhcp-boot`` lines. Nothing here reads the registry: the caller looks the
host and its profile up and passes them in.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass

from common.errors import InputError
from common.firmware import Firmware
from pxe_server.model import Host, Profile, ServerSettings, UnknownPolicy

# DHCP option 93 (RFC 4578, IANA "Processor Architecture Types").
ARCH_BIOS = 0
ARCH_UEFI = (7, 9)  # x86-64 UEFI (9 is what some firmware sends for the same thing)

PXELINUX = "pxelinux.0"
GRUB_EFI = "grubx64.efi"
IPXE_PREFIX = "ipxe/"  # the HTTP path of a host's iPXE script: ipxe/<mac>


@dataclass(frozen=True)
class ClientFacts:
    """What a DHCP request tells about the client."""

    mac: str | None  # normalised (model.normalise_mac), None if unknown
    arch: int | None  # option 93; None when the client did not send it
    ipxe: bool = False  # user-class "iPXE" (option 77) or option 175 present


class Action(enum.Enum):
    INSTALL = "install"
    LOCAL = "local"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str  # one phrase, written as a comment into the boot config


def firmware_of(arch: int | None) -> Firmware:
    """Client-arch 0 -> BIOS; 7, 9 -> UEFI; anything else is refused.

    ``None`` (no option 93) counts as BIOS: every PXE ROM sends option 93, so a
    client without it is an old or plain BIOS one (dnsmasq reads it the same way).
    """
    if arch is None or arch == ARCH_BIOS:
        return Firmware.BIOS
    if arch in ARCH_UEFI:
        return Firmware.UEFI
    raise InputError(f"client-arch {arch} is not supported (0: BIOS, 7 and 9: x86-64 UEFI)")


def explain(host: Host | None, profile: Profile | None, settings: ServerSettings) -> Decision:
    """The decision with the reason for it (see ``decide``)."""
    if host is None:
        if settings.unknown_policy is UnknownPolicy.INSTALL:
            return Decision(Action.INSTALL, "unknown machine: register it, then install")
        return Decision(Action.LOCAL, "unknown machine: unknown machines are never wiped")
    if not host.netboot_armed:
        return Decision(Action.LOCAL, f"netboot is not armed; state {host.state}")
    if profile is None or profile.name != host.profile:
        return Decision(Action.LOCAL, f"its profile {host.profile!r} does not exist")
    if not host.token:
        return Decision(Action.LOCAL, "it has no install token")
    return Decision(Action.INSTALL, f"install with profile {profile.name!r}")


def decide(host: Host | None, profile: Profile | None, settings: ServerSettings) -> Action:
    """Install or boot from the local disk.

    An unknown machine (``host`` None) follows ``settings.unknown_policy``;
    INSTALL then means "register it with the default profile, and decide again":
    without a host record there is no token, so no answer file to fetch. A known
    host installs iff its netboot is armed (and it has a profile and a token,
    without which the installer could not fetch its answer file).
    """
    return explain(host, profile, settings).action


def payload_version(host: Host, profile: Profile | None, default: str | None) -> str | None:
    """The payload version ``host`` installs: its assigned version, else its profile's,
    else the server's default (None: whatever the default repository holds)."""
    if host.assigned_version:
        return host.assigned_version
    if profile is not None and profile.payload_version:
        return profile.payload_version
    return default


def repository_url(
    version: str | None,
    registered: Collection[str],
    default: str | None,
    http_base: str,
    default_url: str,
) -> str:
    """The ``repo_url`` of an answer file for payload ``version`` (``payload_version``).

    ``<http_base>/repo/<version>/`` when ``version`` is ``registered``; the default
    repository's ``default_url`` for None or the ``default`` version (a repository
    given as a URL, or one registered before versions were). InputError naming the
    version otherwise.
    """
    if version is not None and version in registered:
        return f"{http_base}/repo/{version}/"
    if version is None or version == default:
        return default_url
    raise InputError(
        f"payload version {version} is not registered on this server; "
        "add its repository with `netinstall server repo add DIR`"
    )


def boot_file(facts: ClientFacts, host: Host | None, profile: Profile | None) -> str:
    """The boot file the DHCP offer names.

    ``pxelinux.0`` for BIOS, ``grubx64.efi`` for UEFI (SPEC §3). An iPXE client
    whose host's profile chose the iPXE chain gets ``ipxe/<mac>``: the HTTP path
    of its iPXE script, which dnsmasq prefixes with the server's HTTP base (a SAN-boot
    profile always chooses it: only iPXE hooks the LUN and publishes the iBFT). Other
    iPXE clients (e.g. the BIOS NIC ROM) still get the seed's loader.
    """
    firmware = firmware_of(facts.arch)
    chose_ipxe = profile is not None and profile.uses_ipxe
    if facts.ipxe and host is not None and chose_ipxe:
        return f"{IPXE_PREFIX}{host.mac}"
    return PXELINUX if firmware is Firmware.BIOS else GRUB_EFI
