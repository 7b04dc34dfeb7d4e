"""A checked tree -> the typed model, with every rule a schema cannot express:
what each mode requires and forbids, addresses, URLs, devices, time zones.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from answerfile import locations, timezones
from answerfile.model import (
    AdminInterface,
    AnswerFile,
    Bootloader,
    BootloaderLocation,
    Disk,
    Mode,
    NetworkBackend,
    PasswordType,
    PreserveFirstPartition,
    PrimaryDisk,
    Proto,
    ProtoV6,
    RootPassword,
    Script,
    ScriptStage,
    Source,
    SourceType,
    SrType,
)
from answerfile.problems import Problem, Severity
from answerfile.reader import Node

_LEGACY_STAGES = {
    "post-install-script": ScriptStage.FILESYSTEM_POPULATED,
    "install-failed-script": ScriptStage.INSTALLATION_COMPLETE,
}


class _Builder:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, node: Node, message: str, attr: str | None = None) -> None:
        self.problems.append(Problem(node.line, node.where(attr), message))

    def warn(self, node: Node, message: str) -> None:
        self.problems.append(Problem(node.line, node.where(), message, Severity.WARNING))

    def checked(self, node: Node, check: Callable[[str], str | None]) -> str | None:
        if node.text_reported:
            return None  # the reader already said what is wrong with this text
        problem = check(node.text)
        if problem:
            self.error(node, problem)
            return None
        return node.text

    # -- pieces -------------------------------------------------------------

    def disk(self, node: Node | None) -> Disk | None:
        if node is None or node.text_reported:
            return None
        disk = locations.parse_disk(node.text)
        if isinstance(disk, str):
            self.error(node, disk)
            return None
        return disk

    def source(self, node: Node, script: bool = False) -> Source | None:
        if node.text_reported:
            return None
        written_type = node.attrs.get("type")
        if written_type is None and node.spec.name in _LEGACY_STAGES:
            written_type = "nfs" if node.text.startswith("nfs://") else "url"
        if written_type is None:
            return None  # the reader reported the missing attribute
        kind = SourceType(written_type)
        text = node.text
        if kind in (SourceType.URL, SourceType.NFS) and text.startswith("nfs://"):
            converted = locations.nfs_from_url(text)
            if converted is None or locations.check_nfs(converted):
                self.error(node, f"{text!r} is not an NFS URL; expected nfs://server/path", "type")
                return None
            kind, text = SourceType.NFS, converted
        if kind is SourceType.LOCAL:
            if script:
                problem = (
                    locations.check_file_path_url(text)
                    if text
                    else ("a local script needs its file:///path")
                )
                if problem:
                    self.error(node, problem, "type")
                    return None
                return Source(kind, text)
            if text:
                self.warn(node, f"the text {text!r} of a local source is ignored")
            return Source(kind)
        if not text:
            expected = "a URL" if kind is SourceType.URL else "server:/path"
            self.error(node, f"is empty; a {kind.value} location needs {expected}", "type")
            return None
        check = locations.check_url if kind is SourceType.URL else locations.check_nfs
        problem = check(text)
        if problem:
            self.error(node, problem, "type")
            return None
        return Source(kind, text)

    def script(self, node: Node) -> Script | None:
        stage_text = node.attrs.get("stage")
        stage = _LEGACY_STAGES.get(node.spec.name) or (
            ScriptStage(stage_text) if stage_text else None
        )
        source = self.source(node, script=True)
        if stage is None or source is None:
            return None
        return Script(stage, source)

    def root_password(self, node: Node | None) -> RootPassword | None:
        if node is None or node.text_reported:
            return None
        kind = PasswordType(node.attrs.get("type", "plaintext"))
        if kind is PasswordType.HASH:
            problem = locations.check_password_hash(node.text)
            if problem:
                self.error(node, problem, "type")
                return None
        return RootPassword(kind, node.text)

    def admin_interface(self, node: Node | None) -> AdminInterface | None:
        if node is None or "proto" not in node.attrs:
            return None
        proto = Proto(node.attrs["proto"])
        name, hwaddr = node.attrs.get("name"), node.attrs.get("hwaddr")
        ok = True
        if (name is None) == (hwaddr is None) and not node.bad_attrs & {"name", "hwaddr"}:
            self.error(node, "give exactly one of name (e.g. eth0) or hwaddr (a MAC address)")
            ok = False
        if name is not None and (problem := locations.check_ifname(name)):
            self.error(node, problem, "name")
            ok = False
        if hwaddr is not None:
            mac = locations.normalise_mac(hwaddr)
            if mac is None:
                self.error(
                    node, f"{hwaddr!r} is not a MAC address; expected aa:bb:cc:dd:ee:ff", "hwaddr"
                )
                ok = False
            hwaddr = mac
        values = self.ipv4_settings(node, proto)
        v6 = self.ipv6_settings(node)
        if not ok or values is None or v6 is None:
            return None
        vlan = node.attrs.get("vlan")
        ipaddr, subnet, gateway = values
        protov6, ipv6, gatewayv6 = v6
        return AdminInterface(
            proto=proto,
            name=name,
            hwaddr=hwaddr,
            ipaddr=ipaddr,
            subnet=subnet,
            gateway=gateway,
            vlan=int(vlan) if vlan else None,
            protov6=protov6,
            ipv6=ipv6,
            gatewayv6=gatewayv6,
        )

    def ipv4_settings(
        self, node: Node, proto: Proto
    ) -> tuple[str | None, str | None, str | None] | None:
        """(ipaddr, subnet, gateway), all None unless static; None if invalid."""
        fields = {"ipaddr": "the address", "subnet": "the netmask", "gateway": "the gateway"}
        children = {key: node.one(key) for key in fields}
        if proto is not Proto.STATIC:
            for child in children.values():
                if child is not None:
                    self.warn(child, f"is ignored: proto is {proto.value}, not static")
            return None, None, None
        values: dict[str, str | None] = {}
        ok = True
        for key, what in fields.items():
            child = children[key]
            if child is None:
                self.error(node, f"proto=static needs <{key}> with {what}", "proto")
                ok = False
                continue
            check = locations.check_netmask if key == "subnet" else locations.check_ipv4
            values[key] = self.checked(child, check)
            ok = ok and values[key] is not None
        if not ok:
            return None
        address = ipaddress.IPv4Interface(f"{values['ipaddr']}/{values['subnet']}")
        network = address.network
        if network.prefixlen < 31 and address.ip in (
            network.network_address,
            network.broadcast_address,
        ):
            which = "network" if address.ip == network.network_address else "broadcast"
            self.error(
                children["ipaddr"] or node,
                f"{address.ip} is the {which} address of {network}; expected a host address",
            )
            return None
        gateway_node = children["gateway"]
        if gateway_node and ipaddress.IPv4Address(gateway_node.text) not in network:
            self.warn(gateway_node, f"{gateway_node.text} is outside the network {network}")
        return values["ipaddr"], values["subnet"], values["gateway"]

    def ipv6_settings(self, node: Node) -> tuple[ProtoV6 | None, str | None, str | None] | None:
        """(protov6, ipv6, gatewayv6); None if invalid."""
        protov6 = ProtoV6(node.attrs["protov6"]) if "protov6" in node.attrs else None
        ipv6_node, gw_node = node.one("ipv6"), node.one("gatewayv6")
        if protov6 is not ProtoV6.STATIC:
            for child in (ipv6_node, gw_node):
                if child is not None:
                    self.warn(child, "is ignored: protov6 is not static")
            return protov6, None, None
        if ipv6_node is None:
            self.error(node, "protov6=static needs <ipv6> with an address/prefix", "protov6")
            return None
        ipv6 = self.checked(ipv6_node, locations.check_ipv6_interface)
        gatewayv6 = self.checked(gw_node, locations.check_ipv6) if gw_node else None
        if ipv6 is None or (gw_node is not None and gatewayv6 is None):
            return None
        return protov6, ipv6, gatewayv6

    def texts(self, nodes: list[Node], check: Callable[[str], str | None]) -> tuple[str, ...]:
        values = [self.checked(node, check) for node in nodes]
        return tuple(v for v in values if v is not None)

    # -- whole documents ----------------------------------------------------

    def restore(self, root: Node) -> AnswerFile:
        backup = root.one("backup-disk")
        if backup is None:
            self.error(root, "a restore needs <backup-disk>: the disk holding the backup partition")
        return AnswerFile(mode=Mode.RESTORE, backup_disk=self.disk(backup))

    def installation(self, root: Node) -> AnswerFile:
        mode_text = root.attrs.get("mode", "fresh")
        mode = Mode.FRESH if mode_text == "fresh" else Mode.UPGRADE
        self.mode_rules(root, mode, mode_text)
        primary = root.one("primary-disk")
        primary_disk = None
        disk = self.disk(primary)
        if primary is not None and disk is not None:
            guest = primary.attrs.get("guest-storage", "yes") in ("yes", "true")
            preserve = PreserveFirstPartition(
                primary.attrs.get("preserve-first-partition", "if-utility")
            )
            primary_disk = PrimaryDisk(disk, guest, preserve)
            zap = root.one("zap-utility-partitions")
            if zap is not None and preserve is PreserveFirstPartition.TRUE:
                self.error(
                    zap,
                    'contradicts <primary-disk preserve-first-partition="true">; keep one of them',
                )
        guest_disks = self.guest_disks(root, primary_disk)
        scripts = [
            self.script(n) for n in root.children if n.spec.name in ("script", *_LEGACY_STAGES)
        ]
        timezone = self.timezone(root.one("timezone"))
        keymap = root.one("keymap")
        hostname = root.one("hostname")
        backend = root.one("network-backend")
        bootloader = root.one("bootloader")
        return AnswerFile(
            mode=mode,
            sr_type=SrType(root.attrs.get("srtype", "lvm")),
            primary_disk=primary_disk,
            guest_disks=guest_disks,
            zap_utility_partitions=root.one("zap-utility-partitions") is not None,
            keymap=(self.checked(keymap, locations.check_keymap) or "us") if keymap else "us",
            root_password=self.root_password(root.one("root-password")),
            sources=self.sources(root.all("source")),
            driver_sources=self.sources(root.all("driver-source")),
            scripts=tuple(s for s in scripts if s is not None),
            admin_interface=self.admin_interface(root.one("admin-interface")),
            name_servers=self.texts(root.all("name-server"), locations.check_ip),
            hostname=self.checked(hostname, locations.check_hostname) if hostname else None,
            ntp_servers=self.texts(root.all("ntp-server"), locations.check_ntp_server),
            timezone=timezone,
            network_backend=NetworkBackend.OPENVSWITCH
            if backend is not None and backend.text in ("openvswitch", "vswitch")
            else NetworkBackend.BRIDGE,
            bootloader=Bootloader(
                BootloaderLocation(bootloader.attrs.get("location", "mbr")),
                bootloader.attrs.get("write-boot-entry", "true") == "true",
            )
            if bootloader is not None
            else Bootloader(),
            existing_installation=self.disk(root.one("existing-installation")),
        )

    def sources(self, nodes: list[Node]) -> tuple[Source, ...]:
        found = [self.source(node) for node in nodes]
        return tuple(s for s in found if s is not None)

    def timezone(self, node: Node | None) -> str | None:
        if node is None or node.text_reported:
            return None
        if timezones.is_timezone(node.text):
            return node.text
        hint = timezones.suggest(node.text)
        example = f"did you mean {hint}?" if hint else "expected e.g. Europe/London or Asia/Tokyo"
        self.error(node, f"{node.text!r} is not a time zone in the tz database; {example}")
        return None

    def mode_rules(self, root: Node, mode: Mode, written: str) -> None:
        where = "a fresh install" if mode is Mode.FRESH else f'mode="{written}"'
        if mode is Mode.FRESH:
            primaries = root.all("primary-disk")
            if not primaries:
                self.error(root, f"{where} needs <primary-disk>: the disk to install on")
            for node in root.all("existing-installation"):
                self.error(
                    node,
                    'belongs to an upgrade; use <installation mode="upgrade"> '
                    "without <primary-disk>, or remove it",
                )
            if root.one("timezone") is None:
                self.error(root, f"{where} needs <timezone>, e.g. Europe/London")
        else:
            if root.one("existing-installation") is None:
                self.error(
                    root,
                    f"{where} needs <existing-installation>: the disk of the installation "
                    "to upgrade",
                )
            for name in ("primary-disk", "guest-disk"):
                for node in root.all(name):
                    self.error(
                        node,
                        f"is not allowed with {where}: an upgrade keeps the existing disks; "
                        "name the disk in <existing-installation>",
                    )
        if not root.all("source"):
            self.error(
                root, f'{where} needs a <source>, e.g. <source type="url">http://...</source>'
            )

    def guest_disks(self, root: Node, primary: PrimaryDisk | None) -> tuple[Disk, ...]:
        seen = {primary.disk.path or primary.disk.spec} if primary else set()
        disks: list[Disk] = []
        for node in root.all("guest-disk"):
            disk = self.disk(node)
            if disk is None:
                continue
            key = disk.path or disk.spec
            if key in seen:
                self.error(node, f"{disk.spec} is named twice; each disk is used once")
                continue
            seen.add(key)
            disks.append(disk)
        return tuple(disks)


def build(root: Node) -> tuple[AnswerFile, list[Problem]]:
    builder = _Builder()
    model = builder.restore(root) if root.spec.name == "restore" else builder.installation(root)
    return model, builder.problems
