"""Property tests: for every valid model m, parse(render(m)) == m."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

import answerfile
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

label = st.from_regex(r"\A[a-z]([a-z0-9-]{0,10}[a-z0-9])?\Z")
host = st.one_of(
    st.builds(".".join, st.lists(label, min_size=1, max_size=3)),
    st.ip_addresses(v=4).map(str),
)
path = st.lists(st.from_regex(r"\A[A-Za-z0-9_.-]{1,8}\Z"), max_size=3).map(
    lambda parts: "/" + "/".join(p for p in parts if p not in (".", ".."))
)
ipv4 = st.ip_addresses(v=4).map(str)


def _iscsi(server: str, port: int | None, lun: int | None, target: str) -> Disk:
    port_text = "" if port is None else str(port)
    lun_text = "" if lun is None else format(lun, "x")
    spec = f"iscsi:{server}::{port_text}:{lun_text}:{target}"
    disk = locations.parse_disk(spec)
    assert isinstance(disk, Disk)
    return disk


disk = st.one_of(
    st.from_regex(r"\A(sd[a-z]{1,2}|vd[a-z]|nvme[0-9]n[1-9]|xvd[a-z])\Z").map(Disk),
    st.from_regex(r"\A/dev/disk/by-id/[a-z]{3,6}-[0-9a-f]{4,12}\Z").map(Disk),
    st.just(Disk("iscsi:ibft", locations.parse_disk("iscsi:ibft").kind)),  # type: ignore[union-attr]
    st.builds(
        _iscsi,
        host,
        st.none() | st.integers(1, 65535),
        st.none() | st.integers(0, 255),
        st.from_regex(r"\Aiqn\.20[0-9]{2}-[01][0-9]\.org\.example:[a-z0-9]{1,8}\Z"),
    ),
)

url = st.builds(
    lambda scheme, h, port, p: f"{scheme}://{h}{'' if port is None else f':{port}'}{p}",
    st.sampled_from(["http", "https", "ftp"]),
    host,
    st.none() | st.integers(1, 65535),
    path,
)
nfs = st.builds(lambda h, p: f"{h}:{p if p != '/' else '/export'}", host, path)
source = st.one_of(
    st.builds(Source, st.just(SourceType.URL), url),
    st.builds(Source, st.just(SourceType.NFS), nfs),
    st.just(Source(SourceType.LOCAL)),
)
script_source = st.one_of(
    st.builds(Source, st.just(SourceType.URL), url),
    st.builds(Source, st.just(SourceType.NFS), nfs),
    st.builds(Source, st.just(SourceType.LOCAL), path.map(lambda p: f"file://{p}")),
)
script = st.builds(Script, st.sampled_from(list(ScriptStage)), script_source)

xml_text = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S")), min_size=1, max_size=20
)
password = st.one_of(
    st.builds(RootPassword, st.just(PasswordType.PLAINTEXT), xml_text),
    st.builds(
        RootPassword,
        st.just(PasswordType.HASH),
        st.from_regex(r"\A\$6\$[A-Za-z0-9./]{8}\$[A-Za-z0-9./]{20,86}\Z"),
    ),
)


@st.composite
def admin_interface(draw: st.DrawFn) -> AdminInterface:
    proto = draw(st.sampled_from(list(Proto)))
    named = draw(st.booleans())
    name = draw(st.from_regex(r"\Aeth[0-9]{1,2}\Z")) if named else None
    hwaddr = (
        None if named else ":".join(f"{b:02x}" for b in draw(st.binary(min_size=6, max_size=6)))
    )
    ipaddr = subnet = gateway = None
    if proto is Proto.STATIC:
        network = draw(
            st.builds(
                lambda addr, prefix: ipaddress.IPv4Interface(f"{addr}/{prefix}"),
                ipv4,
                st.integers(8, 30),
            ).filter(lambda i: i.ip not in (i.network.network_address, i.network.broadcast_address))
        )
        ipaddr, subnet = str(network.ip), str(network.netmask)
        gateway = str(next(iter(network.network.hosts())))
    protov6 = draw(st.none() | st.sampled_from(list(ProtoV6)))
    ipv6 = gatewayv6 = None
    if protov6 is ProtoV6.STATIC:
        ipv6 = f"{draw(st.ip_addresses(v=6))}/{draw(st.integers(1, 128))}"
        gatewayv6 = draw(st.none() | st.ip_addresses(v=6).map(str))
    return AdminInterface(
        proto=proto,
        name=name,
        hwaddr=hwaddr,
        ipaddr=ipaddr,
        subnet=subnet,
        gateway=gateway,
        vlan=draw(st.none() | st.integers(1, 4094)),
        protov6=protov6,
        ipv6=ipv6,
        gatewayv6=gatewayv6,
    )


common = {
    "sr_type": st.sampled_from(list(SrType)),
    "keymap": st.sampled_from(["us", "de", "jp106", "fr-latin9"]),
    "root_password": st.none() | password,
    "sources": st.lists(source, min_size=1, max_size=3).map(tuple),
    "driver_sources": st.lists(source, max_size=2).map(tuple),
    "scripts": st.lists(script, max_size=3).map(tuple),
    "admin_interface": st.none() | admin_interface(),
    "name_servers": st.lists(
        st.ip_addresses().filter(lambda a: not (a.is_unspecified or a.is_multicast)).map(str),
        max_size=3,
    ).map(tuple),
    "hostname": st.none() | label,
    "ntp_servers": st.lists(host, max_size=3).map(tuple),
    "network_backend": st.sampled_from(list(NetworkBackend)),
    "bootloader": st.builds(Bootloader, st.sampled_from(list(BootloaderLocation)), st.booleans()),
}


@st.composite
def fresh(draw: st.DrawFn) -> AnswerFile:
    disks = draw(st.lists(disk, min_size=1, max_size=4, unique_by=lambda d: d.path or d.spec))
    primary = PrimaryDisk(
        disks[0], draw(st.booleans()), draw(st.sampled_from(list(PreserveFirstPartition)))
    )
    zap = (
        draw(st.booleans()) and primary.preserve_first_partition is not PreserveFirstPartition.TRUE
    )
    return AnswerFile(
        mode=Mode.FRESH,
        primary_disk=primary,
        guest_disks=tuple(disks[1:]),
        zap_utility_partitions=zap,
        timezone=draw(st.sampled_from(sorted(timezones.names()))),
        **{key: draw(strategy) for key, strategy in common.items()},
    )


@st.composite
def upgrade(draw: st.DrawFn) -> AnswerFile:
    values = {key: draw(strategy) for key, strategy in common.items()}
    return AnswerFile(
        mode=Mode.UPGRADE,
        existing_installation=draw(disk),
        timezone=draw(st.none() | st.sampled_from(sorted(timezones.names()))),
        **values,
    )


restore = st.builds(lambda d: AnswerFile(mode=Mode.RESTORE, backup_disk=d), disk)


@settings(max_examples=300, deadline=None)
@given(st.one_of(fresh(), upgrade(), restore))
def test_parse_render_round_trip(model: AnswerFile) -> None:
    result = answerfile.parse(answerfile.render(model))
    assert result.model == model
    assert result.warnings == ()
