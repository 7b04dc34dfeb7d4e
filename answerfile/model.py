"""The typed answer-file model: frozen values, enums for closed sets, aliases normalised.

What ``parse`` returns and ``render`` writes back; ``parse(render(m)) == m``.
Defaults are those of SPEC §5.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Mode(enum.StrEnum):
    FRESH = "fresh"
    UPGRADE = "upgrade"  # reinstall is read as upgrade
    RESTORE = "restore"


class SrType(enum.StrEnum):
    LVM = "lvm"
    EXT = "ext"


class SourceType(enum.StrEnum):
    URL = "url"
    NFS = "nfs"
    LOCAL = "local"


class ScriptStage(enum.StrEnum):
    INSTALLATION_START = "installation-start"
    FILESYSTEM_POPULATED = "filesystem-populated"
    INSTALLATION_COMPLETE = "installation-complete"


class PasswordType(enum.StrEnum):
    PLAINTEXT = "plaintext"
    HASH = "hash"


class Proto(enum.StrEnum):
    DHCP = "dhcp"
    STATIC = "static"
    NONE = "none"


class ProtoV6(enum.StrEnum):
    DHCP = "dhcp"
    AUTOCONF = "autoconf"
    STATIC = "static"
    NONE = "none"


class NetworkBackend(enum.StrEnum):
    BRIDGE = "bridge"
    OPENVSWITCH = "openvswitch"  # vswitch is read as openvswitch


class PreserveFirstPartition(enum.StrEnum):
    TRUE = "true"
    FALSE = "false"
    IF_UTILITY = "if-utility"


class BootloaderLocation(enum.StrEnum):
    MBR = "mbr"
    PARTITION = "partition"


class DiskKind(enum.StrEnum):
    LOCAL = "local"  # sda, nvme0n1, /dev/...
    IBFT = "ibft"  # iscsi:ibft: the LUN the firmware's iBFT names
    ISCSI = "iscsi"  # iscsi:<RFC 4173 spec>


@dataclass(frozen=True)
class IscsiTarget:
    """An RFC 4173 root path: ``iscsi:<server>:<protocol>:<port>:<lun>:<target>``."""

    server: str
    target: str
    port: int = 3260
    lun: int = 0
    protocol: int = 6  # TCP


@dataclass(frozen=True)
class Disk:
    """A disk as the answer file names it; ``spec`` is the text, stripped."""

    spec: str
    kind: DiskKind = DiskKind.LOCAL
    iscsi: IscsiTarget | None = None

    @property
    def path(self) -> str | None:
        """The device path for a local disk (``sda`` -> ``/dev/sda``)."""
        if self.kind is not DiskKind.LOCAL:
            return None
        return self.spec if self.spec.startswith("/") else f"/dev/{self.spec}"


@dataclass(frozen=True)
class PrimaryDisk:
    disk: Disk
    guest_storage: bool = True
    preserve_first_partition: PreserveFirstPartition = PreserveFirstPartition.IF_UTILITY


@dataclass(frozen=True)
class Source:
    """A repository, supplemental pack or script location.

    ``location``: a URL for url, ``server:/path`` for nfs, None for a local source
    (a local script keeps its ``file://`` path).
    """

    type: SourceType
    location: str | None = None


@dataclass(frozen=True)
class Script:
    stage: ScriptStage
    source: Source


@dataclass(frozen=True)
class RootPassword:
    type: PasswordType
    value: str = field(repr=False)

    def __repr__(self) -> str:
        return f"RootPassword(type={self.type.value!r}, value=<redacted>)"


@dataclass(frozen=True)
class AdminInterface:
    proto: Proto
    name: str | None = None
    hwaddr: str | None = None  # lowercase, colon-separated
    ipaddr: str | None = None
    subnet: str | None = None
    gateway: str | None = None
    vlan: int | None = None
    protov6: ProtoV6 | None = None
    ipv6: str | None = None  # address/prefix
    gatewayv6: str | None = None


@dataclass(frozen=True)
class Bootloader:
    location: BootloaderLocation = BootloaderLocation.MBR
    write_boot_entry: bool = True


@dataclass(frozen=True)
class AnswerFile:
    mode: Mode = Mode.FRESH
    sr_type: SrType = SrType.LVM
    primary_disk: PrimaryDisk | None = None
    guest_disks: tuple[Disk, ...] = ()
    zap_utility_partitions: bool = False
    keymap: str = "us"
    root_password: RootPassword | None = None
    sources: tuple[Source, ...] = ()
    driver_sources: tuple[Source, ...] = ()
    scripts: tuple[Script, ...] = ()
    admin_interface: AdminInterface | None = None
    name_servers: tuple[str, ...] = ()
    hostname: str | None = None
    ntp_servers: tuple[str, ...] = ()
    timezone: str | None = None
    network_backend: NetworkBackend = NetworkBackend.BRIDGE
    bootloader: Bootloader = Bootloader()
    existing_installation: Disk | None = None
    backup_disk: Disk | None = None

    def scripts_at(self, stage: ScriptStage) -> tuple[Script, ...]:
        return tuple(s for s in self.scripts if s.stage is stage)
