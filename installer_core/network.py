"""Bring up the NIC(s) that fetch the answer file (SPEC §4: answerfile_device, network_config).

``answerfile_device`` picks the NICs: ``ethN`` by name, a MAC by
/sys/class/net/*/address, or every Ethernet NIC (the default without BOOTIF;
with BOOTIF, that NIC). ``network_config`` is ``dhcp`` (``dhclient -1``, one try
per NIC, the first NIC with a lease wins) or static (``ip addr``, a default
route, /etc/resolv.conf). Every command goes through ``common.process.run``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from answerfile.bootargs import AnswerfileDevice, BootArgs, DeviceKind, NetworkConfig, NetworkMode
from common.errors import CommandError, InputError, NetinstallError
from common.process import CommandRunner, run

log = logging.getLogger(__name__)

SYS_NET = Path("/sys/class/net")
ARPHRD_ETHER = "1"
LINK_TIMEOUT = 30.0  # seconds to wait for a carrier
DHCP_TIMEOUT = 90.0  # dhclient -1 gives up by itself after its 60 s timeout
POLL = 0.5


@dataclass(frozen=True)
class Nic:
    name: str
    mac: str  # lowercase, colons


@dataclass
class System:
    """What the network step touches; tests replace each part."""

    runner: CommandRunner = run
    sys_net: Path = SYS_NET
    resolv_conf: Path = Path("/etc/resolv.conf")
    sleep: Callable[[float], None] = time.sleep


def list_nics(sys_net: Path = SYS_NET) -> list[Nic]:
    """The Ethernet interfaces the kernel knows (loopback and tunnels left out), by name."""
    nics = []
    for entry in sorted(sys_net.iterdir()) if sys_net.is_dir() else []:
        try:
            kind = (entry / "type").read_text().strip()
            mac = (entry / "address").read_text().strip().lower()
        except OSError:
            continue
        if entry.name != "lo" and kind == ARPHRD_ETHER:
            nics.append(Nic(entry.name, mac))
    return nics


def select_nics(
    device: AnswerfileDevice, nics: Sequence[Nic], storage: Sequence[str] = ()
) -> list[Nic]:
    """The NICs ``answerfile_device`` names; an ``InputError`` when it names none.

    The iBFT's storage NICs (``storage``, their MACs; ``use_ibft``) are never among
    them: they are for storage only.
    """
    found = ", ".join(f"{n.name} ({n.mac})" for n in nics) or "none"
    if device.kind is DeviceKind.ALL:
        usable = [n for n in nics if n.mac not in storage]
        if not usable:
            but = " but the iBFT's storage NIC" if nics else ""
            raise NetinstallError(f"the installer sees no Ethernet interface{but} (found {found})")
        return usable
    attr = "name" if device.kind is DeviceKind.INTERFACE else "mac"
    chosen = [n for n in nics if getattr(n, attr) == device.name]
    origin = "answerfile_device" if device.explicit else "BOOTIF"
    if not chosen:
        raise InputError(f"{origin}={device.name}: no such interface (found {found})")
    if any(n.mac in storage for n in chosen):
        raise InputError(
            f"{origin}={device.name} is the iSCSI storage NIC named by the iBFT; it is "
            "reserved for storage: fetch the answer file through another NIC"
        )
    return chosen


def has_carrier(nic: Nic, host: System) -> bool:
    try:
        return (host.sys_net / nic.name / "carrier").read_text().strip() == "1"
    except OSError:
        return False


def wait_for_link(nics: Sequence[Nic], host: System, timeout: float = LINK_TIMEOUT) -> list[Nic]:
    """Set the NICs up; wait until one has a carrier. The NICs with a carrier come first."""
    for nic in nics:
        host.runner(["ip", "link", "set", "dev", nic.name, "up"])
    waited = 0.0
    while not any(has_carrier(n, host) for n in nics) and waited < timeout:
        host.sleep(POLL)
        waited += POLL
    up = [n for n in nics if has_carrier(n, host)]
    if not up:
        log.warning("no carrier on %s after %.0f s; trying anyway", _names(nics), timeout)
    return up + [n for n in nics if n not in up]


def dhcp(nic: Nic, host: System) -> bool:
    """One DHCP try on ``nic``: True when it got a lease."""
    argv = ["dhclient", "-1", "-v", "-pf", f"/run/dhclient.{nic.name}.pid"]
    argv += ["-lf", f"/run/dhclient.{nic.name}.leases", nic.name]
    try:
        done = host.runner(argv, timeout=DHCP_TIMEOUT)
    except CommandError as exc:
        log.warning("DHCP on %s failed: %s", nic.name, exc)
        return False
    log.info("DHCP on %s: %s", nic.name, (done.stderr.strip().splitlines() or ["ok"])[-1])
    return True


def static(nic: Nic, config: NetworkConfig, host: System) -> None:
    """Give ``nic`` the address, the default route and the name servers of ``config``."""
    address = f"{config.ip}/{config.prefix_length}"
    host.runner(["ip", "addr", "add", address, "dev", nic.name])
    if config.gateway is not None:
        host.runner(["ip", "route", "add", "default", "via", str(config.gateway), "dev", nic.name])
    if config.dns:
        host.resolv_conf.write_text("".join(f"nameserver {server}\n" for server in config.dns))


def _names(nics: Sequence[Nic]) -> str:
    return ", ".join(n.name for n in nics)


def bring_up(args: BootArgs, storage: Sequence[str] = (), system: System | None = None) -> Nic:
    """Step: configure the answer-file NIC(s); the one that got an address is returned."""
    host = system or System()
    nics = wait_for_link(
        select_nics(args.answerfile_device, list_nics(host.sys_net), storage), host
    )
    config = args.network_config
    if config.mode is NetworkMode.STATIC:
        chosen = nics[0]  # boot arguments allow static only with one NIC
        static(chosen, config, host)
    else:
        leased = next((nic for nic in nics if dhcp(nic, host)), None)
        if leased is None:
            raise NetinstallError(f"no DHCP lease on {_names(nics)}: the network is not up")
        chosen = leased
    log.info("network: %s (%s) is up (%s)", chosen.name, chosen.mac, config)
    return chosen
