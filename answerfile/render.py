"""The typed model -> answer-file XML, canonical spellings, defaults left out."""

from __future__ import annotations

from lxml import etree

from answerfile.model import (
    AdminInterface,
    AnswerFile,
    Bootloader,
    Disk,
    Mode,
    NetworkBackend,
    PasswordType,
    PreserveFirstPartition,
    Source,
    SrType,
)


def _add(
    parent: etree._Element, tag: str, text: str | None = None, attrs: dict[str, str] | None = None
) -> etree._Element:
    element = etree.SubElement(parent, tag, attrs or {})
    if text is not None:
        element.text = text
    return element


def _source(parent: etree._Element, name: str, source: Source, **attrs: str) -> None:
    # attrs are plain identifiers here (stage); XML names with hyphens go through dicts
    _add(parent, name, source.location, {"type": source.type.value, **attrs})


def _disk(parent: etree._Element, name: str, disk: Disk | None, **attrs: str) -> None:
    if disk is not None:
        _add(parent, name, disk.spec, attrs)


def _admin_interface(parent: etree._Element, admin: AdminInterface) -> None:
    attrs = {"proto": admin.proto.value}
    if admin.name is not None:
        attrs["name"] = admin.name
    if admin.hwaddr is not None:
        attrs["hwaddr"] = admin.hwaddr
    if admin.vlan is not None:
        attrs["vlan"] = str(admin.vlan)
    if admin.protov6 is not None:
        attrs["protov6"] = admin.protov6.value
    element = _add(parent, "admin-interface", attrs=attrs)
    for name in ("ipaddr", "subnet", "gateway", "ipv6", "gatewayv6"):
        value = getattr(admin, name)
        if value is not None:
            _add(element, name, value)


def _bootloader(parent: etree._Element, bootloader: Bootloader) -> None:
    if bootloader == Bootloader():
        return
    _add(
        parent,
        "bootloader",
        "grub2",
        {
            "location": bootloader.location.value,
            "write-boot-entry": "true" if bootloader.write_boot_entry else "false",
        },
    )


def _installation(model: AnswerFile) -> etree._Element:
    attrs: dict[str, str] = {}
    if model.mode is not Mode.FRESH:
        attrs["mode"] = model.mode.value
    if model.sr_type is not SrType.LVM:
        attrs["srtype"] = model.sr_type.value
    root = etree.Element("installation", attrs)
    if model.primary_disk is not None:
        disk_attrs: dict[str, str] = {}
        if not model.primary_disk.guest_storage:
            disk_attrs["guest-storage"] = "no"
        if model.primary_disk.preserve_first_partition is not PreserveFirstPartition.IF_UTILITY:
            disk_attrs["preserve-first-partition"] = (
                model.primary_disk.preserve_first_partition.value
            )
        _disk(root, "primary-disk", model.primary_disk.disk, **disk_attrs)
    for disk in model.guest_disks:
        _disk(root, "guest-disk", disk)
    _disk(root, "existing-installation", model.existing_installation)
    if model.zap_utility_partitions:
        _add(root, "zap-utility-partitions")
    if model.keymap != "us":
        _add(root, "keymap", model.keymap)
    if model.root_password is not None:
        password_attrs = {"type": "hash"} if model.root_password.type is PasswordType.HASH else {}
        _add(root, "root-password", model.root_password.value, password_attrs)
    for source in model.sources:
        _source(root, "source", source)
    for source in model.driver_sources:
        _source(root, "driver-source", source)
    for script in model.scripts:
        _source(root, "script", script.source, stage=script.stage.value)
    if model.admin_interface is not None:
        _admin_interface(root, model.admin_interface)
    for server in model.name_servers:
        _add(root, "name-server", server)
    if model.hostname is not None:
        _add(root, "hostname", model.hostname)
    for server in model.ntp_servers:
        _add(root, "ntp-server", server)
    if model.timezone is not None:
        _add(root, "timezone", model.timezone)
    if model.network_backend is not NetworkBackend.BRIDGE:
        _add(root, "network-backend", model.network_backend.value)
    _bootloader(root, model.bootloader)
    return root


def render(model: AnswerFile) -> str:
    """The answer file as XML text."""
    if model.mode is Mode.RESTORE:
        root = etree.Element("restore")
        _disk(root, "backup-disk", model.backup_disk)
    else:
        root = _installation(model)
    body: str = etree.tostring(root, pretty_print=True, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body
