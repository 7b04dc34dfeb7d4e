"""The provisioning server's values and the contracts between its parts (SPEC §3, §9).

Values only (frozen dataclasses and enums) and pure rules; no I/O. Every other
module of pxe_server speaks in these types:

* ``registry.Registry`` (SQLite) stores Hosts, Profiles and Events.
* ``decide`` maps (client facts, host record, profile, server settings) to what
  the client gets: a boot file, a boot config, an answer file.
* ``render`` turns decisions into text with jinja2 (StrictUndefined).
* ``tftp``, ``http`` and ``dnsmasq`` serve them; ``server`` wires them together.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from common.errors import InputError
from common.protocol.messages import (
    REPORTABLE,
    EventRecord,
    HostRecord,
    Presence,
    RebootPolicy,
    SanRecord,
    State,
    Work,
)
from pxe_server.secrets import shown_variables

# The wire's enums (common.protocol) are the registry's too.
__all__ = [
    "AGENT_WORK",
    "DEFAULT_INITIATOR_PREFIX",
    "REBOOT_REQUIRED",
    "REPORTABLE",
    "STATE_ORDER",
    "UNRENDERED",
    "BadMac",
    "BootChain",
    "Event",
    "Host",
    "Profile",
    "RebootPolicy",
    "Repository",
    "SanTarget",
    "ServerSettings",
    "State",
    "UnknownPolicy",
    "Work",
    "awaiting_reboot",
    "check_version",
    "event_record",
    "host_record",
    "mac_dashes",
    "mac_syntax",
    "normalise_mac",
    "rendered_view",
    "reported_from",
    "transition_allowed",
]


# Forward order; a state may be skipped forward, never go back (except by new work).
STATE_ORDER = (State.PENDING, State.SIGNALLED, State.INSTALLING, State.INSTALLED, State.RUNNING)


def transition_allowed(current: State, new: State) -> bool:
    """Whether an event may move a host from ``current`` to ``new``.

    Forward moves (skips included) are allowed, so is repeating the current state
    (progress updates); ``failed`` may follow any state but ``running``. Nothing
    leaves ``failed`` or goes back except new work (``Registry.rearm``,
    ``Registry.assign_work``). See ``reported_from`` for installed (reboot required).
    """
    if new is State.FAILED:
        return current not in (State.RUNNING, State.FAILED)
    if current is State.FAILED or new not in STATE_ORDER:
        return False
    return STATE_ORDER.index(new) >= STATE_ORDER.index(current)


AGENT_WORK = (Work.UPGRADE, Work.RESTORE)


# The step of an ``installed`` host whose agent staged the installer and waits for the
# operator's reboot (seed 002's "Installed (Reboot Required)"): the install is still ahead.
REBOOT_REQUIRED = "reboot-required"


def awaiting_reboot(host: Host) -> bool:
    """Whether ``host`` is installed (reboot required): its installer has not run yet."""
    return host.state is State.INSTALLED and host.step == REBOOT_REQUIRED


def reported_from(host: Host) -> State:
    """The state an event moves ``host`` from: one that awaits its reboot counts as
    ``signalled`` (the installer it staged reports ``installing`` next)."""
    return State.SIGNALLED if awaiting_reboot(host) else host.state


class BootChain(enum.StrEnum):
    SEED = "seed"  # pxelinux + mboot.c32 (BIOS), GRUB (UEFI): SPEC §3's default
    IPXE = "ipxe"  # an iPXE script over HTTP, for clients that are iPXE


class UnknownPolicy(enum.StrEnum):
    """What an unregistered MAC gets (SPEC §3): never wiped unless the operator says so."""

    LOCAL = "local"
    INSTALL = "install"  # install with the default profile (registers the host)


_MAC = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}$")


class BadMac(InputError):
    """Not the MAC address of one machine's NIC (a 400 over HTTP, exit 2 in the CLI)."""


def mac_syntax(text: str) -> str:
    """``AA-BB-...``/``aabb...``/``aa:bb:...`` -> ``aa:bb:cc:dd:ee:ff``; BadMac otherwise.

    Any address of the right shape, group addresses included: for finding a record made
    before ``normalise_mac`` refused those (``host remove`` can still remove it)."""
    lowered = text.strip().lower()
    if not _MAC.match(lowered):
        raise BadMac(f"{text!r} is not a MAC address; expected e.g. 52:54:00:12:34:56")
    digits = re.sub(r"[:-]", "", lowered)
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def normalise_mac(text: str) -> str:
    """A machine's MAC, normalised (``mac_syntax``); BadMac for anything else, and for
    the addresses no NIC has: all zeros, broadcast and every multicast address (the low
    bit of the first octet set), which would otherwise name many machines or none."""
    mac = mac_syntax(text)
    if mac == "00:00:00:00:00:00":
        raise BadMac(f"{text.strip()!r} is the all-zero MAC, not a machine's MAC address")
    if mac == "ff:ff:ff:ff:ff:ff":
        raise BadMac(f"{text.strip()!r} is the broadcast address, not a machine's MAC address")
    if int(mac[:2], 16) & 1:
        raise BadMac(
            f"{text.strip()!r} is a multicast address (the low bit of its first octet is set), "
            "not a machine's MAC address"
        )
    return mac


_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$")


def check_version(text: str) -> str:
    """A payload version as it may appear in a URL path (``/repo/<version>/``)."""
    if not _VERSION.match(text):
        raise InputError(
            f"version {text!r} must be letters, digits, '.', '_', '+', '~', '-' (64 at most)"
        )
    return text


def mac_dashes(mac: str) -> str:
    """``aa:bb:...`` -> ``aa-bb-...`` (pxelinux and GRUB config names: ``01-aa-bb-...``)."""
    return mac.replace(":", "-")


@dataclass(frozen=True)
class Profile:
    name: str
    template: str  # jinja2 text of the answer file
    boot_chain: BootChain = BootChain.SEED
    xen_args: str = "dom0_max_vcpus=1-2 dom0_mem=2048M,max:2048M com1=115200,8n1 console=com1,vga"
    kernel_args: str = "xencons=hvc console=tty0 console=hvc0 net.ifnames=0"
    payload_version: str | None = None  # None: the server's default repository
    # SAN boot (seed 000 "SAN環境からの起動"): the hosts' root LUN is on iSCSI, named by
    # the iBFT that their iPXE script publishes (sanhook), booted with sanboot after the
    # install; the installer gets use_ibft. Such a profile always uses the iPXE chain.
    san_boot: bool = False
    multipath: bool = False  # the installer gets device_mapper_multipath=yes
    storage_nic: str = "net1"  # iPXE's name of the hosts' storage NIC (san_boot)

    @property
    def uses_ipxe(self) -> bool:
        """Whether iPXE clients of this profile's hosts get its iPXE script."""
        return self.boot_chain is BootChain.IPXE or self.san_boot


# An IQN for hosts without one of their own: netinstall's, then the host's MAC.
DEFAULT_INITIATOR_PREFIX = "iqn.2026-12.invalid.netinstall:"


@dataclass(frozen=True)
class SanTarget:
    """A host's root LUN on an iSCSI SAN (its profile's ``san_boot``)."""

    root_path: str  # RFC 4173, as iPXE takes it: iscsi:<server>:<proto>:<port>:<lun>:<IQN>
    address: str | None = None  # the storage NIC's IPv4 address/prefix; None: DHCP on it
    gateway: str | None = None  # the storage network's gateway (targets beyond it)
    initiator: str | None = None  # the host's initiator IQN; None: DEFAULT_INITIATOR_PREFIX+MAC
    # More paths to the same LUN (the target's other portals): iSCSI multipath. iPXE hooks
    # them all, so the iBFT names every one and the installer and dom0 log in to each.
    paths: tuple[str, ...] = ()

    @property
    def root_paths(self) -> tuple[str, ...]:
        return (self.root_path, *self.paths)


@dataclass(frozen=True)
class Host:
    mac: str  # normalised
    name: str | None = None
    profile: str = "default"
    # Template variables, sorted by key; a password variable's value is its SHA-512 crypt
    # hash (registry_input.variables_of).
    variables: tuple[tuple[str, str], ...] = ()
    netboot_armed: bool = True
    state: State = State.PENDING
    step: str | None = None
    progress: float | None = None
    assigned_version: str | None = None
    running_version: str | None = None
    # The install token (None once running). In clear only in memory: the registry
    # stores it sealed, with its keyed hash for lookups (secrets.Keyring).
    token: str | None = field(default=None, repr=False)
    # The keyed hash of the agent credential (None: none handed out yet). The credential
    # itself is handed out once, in the reply to ``running``, and kept nowhere.
    agent_credential_hash: str | None = field(default=None, repr=False)
    # What the installed system reported with its last ``running`` (docs/protocol.md).
    facts: Mapping[str, object] = field(default_factory=dict, compare=False, hash=False)
    work: Work | None = None
    reboot_policy: RebootPolicy = RebootPolicy.AUTO
    last_checkin: float | None = None  # seconds since the epoch: the agent's last check-in
    san: SanTarget | None = None  # its root LUN, for a profile with san_boot
    # Enrolment (docs/protocol.md, "Install tokens"): the install token is a ticket that
    # lets one installer enrol a key of its own; later calls of that install prove the key.
    install_key_hash: str | None = field(default=None, repr=False)  # its keyed hash
    enrolled_from: str | None = None  # the address the key was enrolled from
    enrolled_at: float | None = None  # when (seconds since the epoch)
    # When the token was last handed to a boot of this host (a boot config of an armed
    # host fetched, agent work handed out in a check-in reply): a later enrolment
    # replaces the key (a power cut, a retry); without one it is a conflict.
    ticket_issued_at: float | None = None
    token_expires: float | None = None  # set at the first hand-out: TTL from then
    conflict: str | None = None  # a second installer presented the token; shown to operators
    # The registry's revision of what renderers read of this host (``UNRENDERED``: what
    # they do not): a new one, unique in the registry, with each write that changes it.
    revision: int = field(default=0, compare=False)

    def initiator(self) -> str:
        """The IQN the host logs in to its SAN with."""
        if self.san is not None and self.san.initiator:
            return self.san.initiator
        return DEFAULT_INITIATOR_PREFIX + self.mac.replace(":", "")


# The fields of a Host no boot config, answer file or check-in reply is rendered from:
# bookkeeping of the install's progress, the agent and the enrolment. A write that
# changes only these keeps the host's revision, so its cached renders stay valid
# (``render.RenderCache``); a write that changes any other field (a field added later
# included) gives the host a new revision. A field a template reads must not be here.
UNRENDERED = frozenset(
    {
        "step",
        "progress",
        "running_version",
        "facts",
        "last_checkin",
        "agent_credential_hash",
        "install_key_hash",
        "enrolled_from",
        "enrolled_at",
        "ticket_issued_at",
        "token_expires",
        "conflict",
        "revision",
    }
)


_RENDERED = tuple(f.name for f in dataclasses.fields(Host) if f.name not in UNRENDERED)


def rendered_view(host: Host) -> tuple[object, ...]:
    """What renderers may read of ``host``: every field but ``UNRENDERED`` ones."""
    return tuple(getattr(host, name) for name in _RENDERED)


def install_done(host: Host) -> Host:
    """``host`` once its new system runs: the install token is dead; the enrolled key
    lives on until the agent's first check-in (a first boot cut off before it saved its
    credential may report ``running`` again with it); a conflict stays for the operator
    (rearm or new work clears it)."""
    return replace(host, token=None, **_TICKET_CLEARED)


# What a dead or new install token leaves of a host's enrolment: where and when its key
# was enrolled, when the token was handed out and when it expires.
_TICKET_CLEARED: dict[str, Any] = {
    "enrolled_from": None,
    "enrolled_at": None,
    "ticket_issued_at": None,
    "token_expires": None,
}
# A host's enrolment when its install token is new: nothing enrolled, nothing handed out,
# no conflict (``registry._new_work``).
NOT_ENROLLED: dict[str, Any] = {**_TICKET_CLEARED, "install_key_hash": None, "conflict": None}


@dataclass(frozen=True)
class Repository:
    """An install repository the server holds (``/repo/<version>/``)."""

    version: str
    directory: str


@dataclass(frozen=True)
class Event:
    time: float  # seconds since the epoch
    mac: str
    state: State
    step: str | None = None
    progress: float | None = None
    message: str | None = None


BootTransport = Literal["http", "tftp"]
BOOT_TRANSPORTS: tuple[BootTransport, ...] = ("http", "tftp")


@dataclass(frozen=True)
class ServerSettings:
    """What renderers need to know about this server."""

    http_base: str  # e.g. "http://192.168.77.1:8080" (no trailing slash)
    tftp_address: str  # e.g. "192.168.77.1"
    unknown_policy: UnknownPolicy = UnknownPolicy.LOCAL
    # How boot loaders that may choose fetch Xen, the kernel and install.img: "http"
    # (GRUB's http module, pxelinux over iPXE) or "tftp" (server run --boot-transport).
    boot_transport: BootTransport = "http"


# -- as the protocol shows them (common.protocol): one serialiser each ------------------


def host_record(host: Host, last_event: EventRecord | None = None) -> HostRecord:
    """``host`` as the API and the CLI's ``--json`` show it: no secret, only whether it has
    one; with its latest event if given."""
    san = host.san
    return HostRecord(
        mac=host.mac,
        name=host.name,
        profile=host.profile,
        variables=shown_variables(host.variables),
        netboot_armed=host.netboot_armed,
        state=host.state,
        step=host.step,
        progress=host.progress,
        assigned_version=host.assigned_version,
        running_version=host.running_version,
        work=host.work,
        reboot_policy=host.reboot_policy,
        last_checkin=host.last_checkin,
        facts=dict(host.facts),
        san=None
        if san is None
        else SanRecord(san.root_path, san.address, san.gateway, san.initiator, san.paths),
        token=Presence.SET if host.token else Presence.NONE,
        agent_credential=Presence.SET if host.agent_credential_hash else Presence.NONE,
        install_key=Presence.SET if host.install_key_hash else Presence.NONE,
        enrolled_from=host.enrolled_from,
        token_expires=host.token_expires,
        conflict=host.conflict,
        last_event=last_event,
    )


def event_record(event: Event) -> EventRecord:
    return EventRecord(event.time, event.state, event.step, event.progress, event.message)
