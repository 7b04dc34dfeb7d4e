"""Every message between the server, the installer, the dom0 services and operators.

Declared once, used by both ends: the server decodes requests into these types and
encodes its replies from them; the installer (``installer_core.report``) and the dom0
agent (``netinstall_dom0``) build their requests from them and read the replies with
them. ``codec`` turns them into JSON and back; docs/protocol.md and the server's
``/api/v1/openapi.json`` are generated from them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar

from common.protocol.codec import ABSENT, Absent, JsonObject, Message, rule

# -- closed sets ------------------------------------------------------------------------


class State(enum.StrEnum):
    """A host's install state (SPEC §9; seed 002's Pending/Signalled/Installed/Failed)."""

    PENDING = "pending"  # work assigned, nothing fetched yet
    SIGNALLED = "signalled"  # fetched its boot config (or, agent-driven, the installer)
    INSTALLING = "installing"
    INSTALLED = "installed"  # install finished; reboot (required) into the new system
    RUNNING = "running"  # the installed system reported from its first boot
    FAILED = "failed"


# The states an installer or a first boot may report (``pending`` is the server's own).
REPORTABLE = (State.SIGNALLED, State.INSTALLING, State.INSTALLED, State.RUNNING, State.FAILED)

# Milestones carried as the step of an event (docs/protocol.md, "Milestones"). The server
# records ANSWER_FILE_STEP itself when an install fetches its answer file; the first-boot
# service reports the other two as steps of state ``installed``, before ``running``.
ANSWER_FILE_STEP = "answer-file"
FIRST_BOOT_STEP = "first-boot"  # the installed system's first boot began
SR_CREATED_STEP = "sr-created"  # its first boot made (or found) the local SR
FIRST_BOOT_STEPS = (FIRST_BOOT_STEP, SR_CREATED_STEP)


class AgentState(enum.StrEnum):
    """The ``state`` a check-in carries: what the agent did with the work it was given."""

    RUNNING = "running"
    SIGNALLED = "signalled"
    INSTALLED_REBOOT_REQUIRED = "installed-reboot-required"


class Work(enum.StrEnum):
    """What a host was last told to do; None once the installed system reports running."""

    INSTALL = "install"  # a network install (host add, rearm): netboot armed
    UPGRADE = "upgrade"  # agent-driven (SPEC §8): netboot never armed
    RESTORE = "restore"  # agent-driven, from the backup partition


class RebootPolicy(enum.StrEnum):
    """Whether the agent reboots into the installer at once or waits for the operator."""

    AUTO = "auto"
    MANUAL = "manual"


class Action(enum.StrEnum):
    """What a check-in reply tells the agent to do."""

    NONE = "none"
    UPGRADE = "upgrade"
    RESTORE = "restore"


class SrType(enum.StrEnum):
    LVM = "lvm"
    EXT = "ext"


class Presence(enum.StrEnum):
    """Whether a host holds a secret (never the secret itself)."""

    SET = "set"
    NONE = "none"


# -- the installer and first boot: events -----------------------------------------------

# What a host may make the server store, at most (characters): every string a host
# reports is bounded here, so a host cannot grow the registry by what it says (an
# event's free-text message is cut to 4 KiB by the server, not refused: see the README).
MAX_WORD = 128  # a name, a version, a state, a device
MAX_LINE = 4096  # a command line


@dataclass(frozen=True)
class Address(Message):
    interface: str = field(metadata=rule("the interface, e.g. xenbr0", max_length=MAX_WORD))
    address: str = field(
        metadata=rule("its IPv4 address with prefix, e.g. 192.168.77.50/24", max_length=MAX_WORD)
    )


@dataclass(frozen=True)
class RunningFacts(Message):
    """What only the booted system knows, sent with its ``running`` event."""

    OMIT_NONE: ClassVar[bool] = True

    xen_version: str | None = field(
        default=None, metadata=rule("from `xl info`", max_length=MAX_WORD)
    )
    host_memory_mib: int | None = field(
        default=None, metadata=rule("host memory as Xen reports it", minimum=0)
    )
    cmdline: str | None = field(
        default=None, metadata=rule("dom0's own /proc/cmdline", max_length=MAX_LINE)
    )
    payload_version: str | None = field(
        default=None,
        metadata=rule("the payload version of the installed system's files", max_length=MAX_WORD),
    )
    sr_uuid: str | None = field(
        default=None, metadata=rule("the local SR's uuid", max_length=MAX_WORD)
    )
    sr_type: SrType | None = field(default=None, metadata=rule("the local SR's type"))
    hostname: str | None = field(
        default=None, metadata=rule("the kernel's host name", max_length=MAX_WORD * 2)
    )
    addresses: tuple[Address, ...] | None = field(
        default=None, metadata=rule("global IPv4 addresses", max_items=256)
    )


@dataclass(frozen=True)
class Event(Message):
    """An installer, first-boot or agent report: ``POST .../events``."""

    NAME: ClassVar[str] = "event"
    OMIT_NONE: ClassVar[bool] = True

    state: State = field(metadata=rule("the host's new state", choices=REPORTABLE))
    step: str | None = field(
        default=None, metadata=rule("the install step, e.g. partition", max_length=MAX_WORD)
    )
    progress: float | None = field(
        default=None, metadata=rule("how far the install is", minimum=0, maximum=1)
    )
    message: str | None = field(
        default=None,
        metadata=rule("one sentence for the operator; the server keeps its first 4 KiB"),
    )
    facts: RunningFacts | None = field(default=None, metadata=rule("with `running` only"))


@dataclass(frozen=True)
class EventReply(Message):
    """The reply to an event: empty, but for the first ``running`` the agent's credential."""

    NAME: ClassVar[str] = "event reply"
    OMIT_NONE: ClassVar[bool] = True

    agent_credential: str | None = field(
        default=None,
        repr=False,
        metadata=rule("the agent's own credential; replaces the install token", secret=True),
    )
    checkin_interval: int | None = field(
        default=None, metadata=rule("seconds between check-ins", minimum=1)
    )


@dataclass(frozen=True)
class LogStored(Message):
    """The reply to ``PUT .../logs``."""

    stored: str = field(
        metadata=rule("the bundle's name in the shared directory (else the server directory)")
    )
    bytes: int = field(metadata=rule("its size"))


@dataclass(frozen=True)
class LogBundle(Message):
    """One uploaded log bundle of a host, as ``GET .../logs`` lists it."""

    name: str = field(metadata=rule("<UTC time>.tar.bz2: fetch it at .../logs/<name>"))
    bytes: int = field(metadata=rule("its size"))
    time: float = field(metadata=rule("when it was stored (seconds since the epoch)"))


@dataclass(frozen=True)
class LogList(Message):
    """``GET .../logs``: a host's kept log bundles, whichever server they were uploaded to."""

    bundles: tuple[LogBundle, ...] = field(metadata=rule("oldest first"))


# -- the installer: enrolment ------------------------------------------------------------

MIN_KEY, MAX_KEY = 32, 128  # characters of an install key


@dataclass(frozen=True)
class Enrolment(Message):
    """``POST .../enrol`` with the install token: the installer's own key for this install."""

    NAME: ClassVar[str] = "enrolment"

    key: str = field(
        repr=False,
        metadata=rule(
            f"{MIN_KEY} to {MAX_KEY} URL-safe base64 characters the installer drew at start; "
            "every later call of this install carries it as its bearer",
            max_length=MAX_KEY,
            secret=True,
        ),
    )


@dataclass(frozen=True)
class Enrolled(Message):
    """The reply to an enrolment."""

    OMIT_NONE: ClassVar[bool] = True

    enrolled: str = field(metadata=rule("new, again (the same key) or replaced (a new boot)"))
    update_key: str | None = field(
        default=None,
        metadata=rule("the server's update key (an OpenSSH public key line): the installer "
                      "writes it into dom0, which verifies every update bundle with it"),
    )  # fmt: skip


# -- the dom0 agent: check-ins ----------------------------------------------------------

MAX_MAPS = 64
MAX_PATHS = 64
MAX_UPDATES_KEPT = 1000  # update ids a host reports, at most


class UpdateOutcome(enum.StrEnum):
    """What became of an update on a host (the agent's report)."""

    APPLIED = "applied"
    REBOOT_REQUIRED = "reboot-required"  # applied; waits for the operator's reboot
    FAILED = "failed"


@dataclass(frozen=True)
class UpdateResult(Message):
    OMIT_NONE: ClassVar[bool] = True

    id: str = field(metadata=rule("the update", printable=True, max_length=MAX_WORD))
    outcome: UpdateOutcome = field(metadata=rule("applied, reboot-required or failed"))
    reason: str | None = field(
        default=None, metadata=rule("why it failed, in one sentence", max_length=MAX_LINE)
    )


@dataclass(frozen=True)
class UpdateWork(Message):
    """An update the agent is to apply (README "Updates")."""

    id: str = field(metadata=rule("the update's id"))
    url: str = field(metadata=rule("the bundle: fetch it with the agent credential"))
    size: int = field(metadata=rule("the bundle's size in bytes", minimum=1))
    sha256: str = field(metadata=rule("the bundle file's sha256"))
    reboot: RebootPolicy = field(
        metadata=rule("for an update that reboots: auto, or manual (the operator reboots)")
    )


@dataclass(frozen=True)
class PathState(Message):
    device: str = field(
        metadata=rule("the path's device, e.g. sda", printable=True, max_length=MAX_WORD)
    )
    state: str = field(
        metadata=rule("multipathd's path checker state (chk_st), e.g. ready, faulty; "
                      "failed once the kernel failed the path (dm_st)",
                      printable=True, max_length=MAX_WORD)
    )  # fmt: skip


@dataclass(frozen=True)
class MultipathMap(Message):
    name: str = field(metadata=rule("the map, e.g. mpatha", printable=True, max_length=MAX_WORD))
    wwid: str = field(metadata=rule("the LUN's WWID", printable=True, max_length=MAX_WORD))
    paths: tuple[PathState, ...] = field(metadata=rule("its paths", max_items=MAX_PATHS))


@dataclass(frozen=True)
class Checkin(Message):
    """The dom0 agent's check-in: ``POST .../checkin``."""

    NAME: ClassVar[str] = "check-in"
    OMIT_NONE: ClassVar[bool] = True

    running_version: str = field(
        metadata=rule("the payload version the running system reports",
                      printable=True, max_length=128)
    )  # fmt: skip
    state: AgentState = field(
        default=AgentState.RUNNING, metadata=rule("what the agent did with its work")
    )
    multipath: tuple[MultipathMap, ...] | None = field(
        default=None,
        metadata=rule("a SAN host's storage paths as dom0's multipathd sees them",
                      max_items=MAX_MAPS),
    )  # fmt: skip
    updates: tuple[str, ...] | None = field(
        default=None,
        metadata=rule("the ids of the updates the host's own update log holds (an agent "
                      "that knows updates sends this, empty or not)",
                      max_items=MAX_UPDATES_KEPT, max_length=MAX_WORD),
    )  # fmt: skip
    free_mib: int | None = field(
        default=None,
        metadata=rule("MiB free in dom0 where the agent downloads updates", minimum=0),
    )
    boot_id: str | None = field(
        default=None,
        metadata=rule("the kernel's boot id: a new one after each reboot",
                      printable=True, max_length=MAX_WORD),
    )  # fmt: skip
    update_result: UpdateResult | None = field(
        default=None, metadata=rule("what became of the last update the agent was given")
    )


@dataclass(frozen=True)
class InstallerFiles(Message):
    xen: str = field(metadata=rule("absolute URL of the installer's Xen"))
    kernel: str = field(metadata=rule("absolute URL of the installer's kernel"))
    initrd: str = field(metadata=rule("absolute URL of the installer's initrd"))


@dataclass(frozen=True)
class InstallerCmdline(Message):
    xen: str = field(metadata=rule("Xen's arguments (the host's profile's)"))
    kernel: str = field(
        repr=False,
        metadata=rule(
            "the installer's command line, with the answer-file URL and netinstall.token=",
            secret=True,
        ),
    )


@dataclass(frozen=True)
class CheckinReply(Message):
    """The reply to a check-in: nothing to do, or the upgrade or restore to boot into."""

    NAME: ClassVar[str] = "check-in reply"
    OMIT_NONE: ClassVar[bool] = True

    action: Action = field(metadata=rule("none, or the work to do"))
    version: str | None = field(default=None, metadata=rule("with upgrade: the version"))
    reboot: RebootPolicy | None = field(
        default=None, metadata=rule("auto: reboot now; manual: wait for the operator")
    )
    installer: InstallerFiles | None = field(default=None, metadata=rule("what to boot"))
    cmdline: InstallerCmdline | None = field(default=None, metadata=rule("how to boot it"))
    update: UpdateWork | None = field(
        default=None, metadata=rule("an update to apply (with action none only)")
    )
    update_key: str | None = field(
        default=None,
        metadata=rule("the server's update key (an OpenSSH public key line): the agent "
                      "keeps the first it is given and verifies every bundle with it"),
    )  # fmt: skip


# -- operators: hosts and their work ------------------------------------------------------


@dataclass(frozen=True)
class SanRecord(Message):
    root_path: str = field(metadata=rule("the root LUN (RFC 4173)"))
    address: str | None = field(metadata=rule("the storage NIC's address/prefix; null: DHCP"))
    gateway: str | None = field(metadata=rule("the storage network's gateway"))
    initiator: str | None = field(metadata=rule("the host's initiator IQN; null: from its MAC"))
    paths: tuple[str, ...] = field(metadata=rule("further paths to the LUN (multipath)"))


# -- operators: a host's BMC and its power -------------------------------------------------

MAX_BMC_URL = 512  # characters of a BMC's URL
MAX_BMC_PASSWORD = 256  # characters of a BMC's password (IPMI's own limit is 20 bytes)
MAX_BMC_CA = 64 * 1024  # characters of the PEM certificates a Redfish BMC is verified with


class PowerAction(enum.StrEnum):
    """What ``POST /api/v1/hosts/<mac>/power`` asks of the host's BMC."""

    ON = "on"
    OFF = "off"  # at once, not an orderly shutdown
    CYCLE = "cycle"  # off and on again (a host that is off: on)
    STATUS = "status"
    BOOT = "boot"  # on if it is off, cycle if it is on


class PowerState(enum.StrEnum):
    """A host's power as its BMC says it."""

    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class BmcSpec(Message):
    """A host's BMC as the operator gives it (host create and edit). The password is kept
    sealed by the server and never sent back."""

    NAME: ClassVar[str] = "BMC"

    url: str = field(
        metadata=rule(
            "redfish://USER@ADDR[:PORT][/redfish/v1/Systems/ID], redfish+http://... (plain "
            "HTTP) or ipmi://USER@ADDR[:PORT]",
            printable=True,
            max_length=MAX_BMC_URL,
        )
    )
    password: str = field(
        metadata=rule("the BMC user's password", printable=True, max_length=MAX_BMC_PASSWORD)
    )
    ca_pem: str | None = field(
        default=None,
        metadata=rule("PEM certificates to verify a Redfish BMC with", max_length=MAX_BMC_CA),
    )
    insecure: bool = field(
        default=False, metadata=rule("do not verify the Redfish BMC's certificate")
    )


@dataclass(frozen=True)
class BmcRecord(Message):
    """A host's BMC as listings show it: never its password."""

    url: str = field(metadata=rule("its URL (a user, never a password)"))
    password: Presence = field(metadata=rule("whether a password is stored"))
    ca: bool = field(metadata=rule("whether it is verified with its own CA certificates"))
    insecure: bool = field(metadata=rule("whether its certificate goes unverified"))


@dataclass(frozen=True)
class PowerRequest(Message):
    """``POST /api/v1/hosts/<mac>/power``."""

    NAME: ClassVar[str] = "power"

    action: PowerAction = field(metadata=rule("what to do"))
    network_once: bool = field(
        default=False, metadata=rule("first set the next boot to the network, once")
    )


@dataclass(frozen=True)
class PowerReply(Message):
    """What the BMC did and says now."""

    mac: str = field(metadata=rule("the host"))
    state: PowerState = field(
        metadata=rule("its power once the action is done (status: as its BMC says it now)")
    )
    was: PowerState = field(metadata=rule("its power before the action, as its BMC said it"))
    steps: tuple[str, ...] = field(metadata=rule("what was done, one sentence each"))
    via: str | None = field(
        default=None,
        metadata=rule(
            "the server that asked the BMC, the host's segment server, when it is not the "
            "server called (null: the server called did)"
        ),
    )


@dataclass(frozen=True)
class HostCreate(Message):
    """A new host: ``POST /api/v1/hosts``."""

    NAME: ClassVar[str] = "new host"

    mac: str = field(metadata=rule("its MAC, colons, dashes or none"))
    profile: str = field(default="default", metadata=rule("its profile"))
    name: str | None = field(default=None, metadata=rule("its host name (not an FQDN)"))
    variables: dict[str, str] = field(
        default_factory=dict, metadata=rule("template variables of its answer file")
    )
    san: SanRecord | None = field(
        default=None, metadata=rule("its root LUN, for a profile that boots from a SAN")
    )
    bmc: BmcSpec | None = field(default=None, metadata=rule("its BMC, for power control"))


@dataclass(frozen=True)
class HostEdit(Message):
    """Changes to a host: ``PATCH /api/v1/hosts/<mac>``; a field left out stays as it is.

    Its variables change either whole (``variables``) or by name (``set_variables``,
    ``unset_variables``), merged with the stored ones in the transaction that writes the
    host, so that edits of other variables made meanwhile are kept; not both ways at once."""

    NAME: ClassVar[str] = "host edit"

    name: str | Absent | None = field(default=ABSENT, metadata=rule("null: no name"))
    profile: str | Absent = field(default=ABSENT, metadata=rule("its profile"))
    variables: dict[str, str] | Absent | None = field(
        default=ABSENT,
        metadata=rule(
            "all its template variables (a password as `<redacted>`: the stored one kept); "
            "null: none; not with set_variables or unset_variables"
        ),
    )
    set_variables: dict[str, str] | Absent = field(
        default=ABSENT,
        metadata=rule(
            "template variables to add or replace, the others kept (a password's value is "
            "the new password); not with variables"
        ),
    )
    unset_variables: tuple[str, ...] | Absent = field(
        default=ABSENT,
        metadata=rule(
            "names of template variables to remove, each one the host has; not with variables"
        ),
    )
    bmc: BmcSpec | Absent | None = field(default=ABSENT, metadata=rule("its BMC; null: none"))
    segment_server: str | Absent | None = field(
        default=ABSENT,
        metadata=rule(
            "pin its segment server (a server's name; see GET /api/v1/servers); null: learn "
            "it again from the server that serves it"
        ),
    )


@dataclass(frozen=True)
class UpgradeRequest(Message):
    """``POST .../upgrade``: the agent upgrades the host to ``version``."""

    NAME: ClassVar[str] = "upgrade"

    version: str = field(metadata=rule("a registered repository's version"))
    reboot: RebootPolicy = field(default=RebootPolicy.AUTO, metadata=rule("when to reboot"))


@dataclass(frozen=True)
class RestoreRequest(Message):
    """``POST .../restore``: the agent restores the host's backup partition."""

    NAME: ClassVar[str] = "restore"

    reboot: RebootPolicy = field(default=RebootPolicy.AUTO, metadata=rule("when to reboot"))


@dataclass(frozen=True)
class EventRecord(Message):
    """One logged event of a host."""

    time: float = field(metadata=rule("seconds since the epoch"))
    state: State = field(metadata=rule("the host's state after it"))
    step: str | None = field(metadata=rule("the install step"))
    progress: float | None = field(metadata=rule("0 to 1"))
    message: str | None = field(metadata=rule("what happened (secrets redacted)"))


@dataclass(frozen=True)
class HostRecord(Message):
    """A host as the API and ``host list|show --json`` show it: everything but its secrets."""

    mac: str = field(metadata=rule("lowercase, colons"))
    name: str | None = field(metadata=rule("its host name"))
    profile: str = field(metadata=rule("its profile"))
    variables: dict[str, str] = field(
        metadata=rule("its template variables; a password's value shown as `<redacted>`")
    )
    netboot_armed: bool = field(metadata=rule("whether its next network boot installs"))
    state: State = field(metadata=rule("its state"))
    step: str | None = field(metadata=rule("the install step last reported"))
    progress: float | None = field(metadata=rule("the progress last reported, 0 to 1"))
    assigned_version: str | None = field(metadata=rule("the payload version it is to run"))
    running_version: str | None = field(metadata=rule("the payload version it reported"))
    work: Work | None = field(metadata=rule("its work; null once the new system runs"))
    reboot_policy: RebootPolicy = field(metadata=rule("for agent work"))
    last_checkin: float | None = field(metadata=rule("its agent's last check-in (epoch s)"))
    facts: JsonObject = field(metadata=rule("what its last running report and check-in said"))
    san: SanRecord | None = field(metadata=rule("its root LUN (SAN boot)"))
    token: Presence = field(metadata=rule("whether it holds a live install token"))
    agent_credential: Presence = field(metadata=rule("whether its agent has a credential"))
    install_key: Presence = field(
        default=Presence.NONE, metadata=rule("whether an installer enrolled its key")
    )
    enrolled_from: str | None = field(
        default=None, metadata=rule("the address its installer enrolled from")
    )
    token_expires: float | None = field(
        default=None,
        metadata=rule("when its install token stops enrolling (epoch s); null: not yet handed out"),
    )
    conflict: str | None = field(
        default=None,
        metadata=rule("a second installer presented its install token: what and from where"),
    )
    last_event: EventRecord | None = field(
        default=None, metadata=rule("its latest event (null: none, or not asked for)")
    )
    bmc: BmcRecord | None = field(default=None, metadata=rule("its BMC (null: none)"))
    segment_server: str | None = field(
        default=None,
        metadata=rule(
            "the server on its segment, which carries out its power calls: the one that last "
            "served its network boot, enrolment or check-in, or the one pinned (null: not "
            "known yet)"
        ),
    )
    segment_pinned: bool = field(
        default=False, metadata=rule("whether an operator pinned its segment server")
    )
    power_on: str | None = field(
        default=None,
        metadata=rule(
            "in the reply to agent work assigned (upgrade, restore) to a host with a BMC: "
            "whether it was off and powered on, one sentence; null otherwise"
        ),
    )


@dataclass(frozen=True)
class HostList(Message):
    hosts: tuple[HostRecord, ...]


@dataclass(frozen=True)
class EventList(Message):
    events: tuple[EventRecord, ...] = field(metadata=rule("oldest first"))


@dataclass(frozen=True)
class Deleted(Message):
    deleted: str = field(metadata=rule("the MAC of the host removed"))


# -- operators: profiles, repositories, answer files --------------------------------------


@dataclass(frozen=True)
class ProfileSpec(Message):
    """A profile as the operator gives it: ``POST /api/v1/profiles`` (new) and
    ``PUT /api/v1/profiles/<name>`` (replaced)."""

    NAME: ClassVar[str] = "profile"

    name: str = field(metadata=rule("its name", printable=True, max_length=MAX_WORD))
    template: str = field(metadata=rule("the answer file's jinja2 template"))
    boot_chain: str = field(default="seed", metadata=rule("seed or ipxe"))
    xen_args: str | None = field(
        default=None, metadata=rule("Xen's command line for the installer; null: the default")
    )
    kernel_args: str | None = field(
        default=None, metadata=rule("the installer's kernel command line; null: the default")
    )
    payload_version: str | None = field(
        default=None, metadata=rule("the payload version; null: the server's default")
    )
    san_boot: bool = field(default=False, metadata=rule("hosts boot from an iSCSI LUN"))
    multipath: bool = field(default=False, metadata=rule("the installer multipaths its disk"))
    storage_nic: str = field(default="net1", metadata=rule("iPXE's name of the storage NIC"))


@dataclass(frozen=True)
class ProfileRecord(Message):
    """A profile as the API and ``profile list|show --json`` show it."""

    name: str = field(metadata=rule("its name"))
    template: str = field(metadata=rule("the answer file's jinja2 template"))
    boot_chain: str = field(metadata=rule("seed or ipxe"))
    xen_args: str = field(metadata=rule("Xen's command line for the installer"))
    kernel_args: str = field(metadata=rule("the installer's kernel command line"))
    payload_version: str | None = field(metadata=rule("null: the server's default"))
    san_boot: bool = field(metadata=rule("hosts boot from an iSCSI LUN"))
    multipath: bool = field(metadata=rule("the installer multipaths its disk"))
    storage_nic: str = field(metadata=rule("iPXE's name of the storage NIC"))
    hosts: int = field(metadata=rule("how many hosts use it"))


@dataclass(frozen=True)
class ProfileList(Message):
    profiles: tuple[ProfileRecord, ...] = field(metadata=rule("by name"))


@dataclass(frozen=True)
class RepositoryRecord(Message):
    """An install repository the server holds (``/repo/<version>/``)."""

    version: str = field(metadata=rule("its payload version"))
    directory: str = field(metadata=rule("where it lies on the server"))
    files: int | None = field(metadata=rule("how many files it holds; null: it is missing"))
    default: bool = field(metadata=rule("whether it is the server's default (also /repo/)"))


@dataclass(frozen=True)
class RepositoryList(Message):
    repositories: tuple[RepositoryRecord, ...] = field(metadata=rule("by version"))


@dataclass(frozen=True)
class AnswerFileCheck(Message):
    """A host's answer file rendered and validated now, nothing else done (its state, its
    token and its render cache untouched); the file itself is not sent."""

    mac: str = field(metadata=rule("the host"))
    valid: bool = field(metadata=rule("whether it renders and validates"))
    summary: str | None = field(metadata=rule("what it installs, when valid"))
    problems: tuple[str, ...] = field(metadata=rule("why not, one sentence each"))
    warnings: tuple[str, ...] = field(metadata=rule("the validator's warnings"))


# -- the web console's live updates (pxe_server/http_ui.py to its ui_static/ui.js) --------


@dataclass(frozen=True)
class ConsoleRow(Message):
    """One host as the web console's fleet shows it, every value as the page shows it."""

    mac: str = field(metadata=rule("lowercase, colons"))
    label: str = field(metadata=rule("its name, else its MAC"))
    name: str = field(metadata=rule("its host name (empty: none)"))
    state: str = field(metadata=rule("its state"))
    step: str = field(metadata=rule("the install step last reported (empty: none)"))
    progress: float | None = field(metadata=rule("percent, 0 to 100; null: none reported"))
    percent: str = field(metadata=rule("the progress as text, e.g. `40 %`"))
    assigned: str = field(metadata=rule("the payload version it is to run"))
    running: str = field(metadata=rule("the payload version it reported"))
    last_checkin: str = field(metadata=rule("its agent's last check-in, UTC (empty: never)"))
    work: str = field(metadata=rule("its work (empty: none)"))
    profile: str = field(metadata=rule("its profile"))
    pool: str = field(metadata=rule("its pool (empty: none)"))
    conflict: str = field(metadata=rule("an enrolment conflict (empty: none)"))
    key: str = field(metadata=rule("the fleet's order: what needs attention first"))


@dataclass(frozen=True)
class ConsoleChanges(Message):
    """``GET /ui/api/fleet?cursor=N``: the fleet's rows changed since the cursor."""

    cursor: int = field(metadata=rule("the newest event id read: the next poll's cursor"))
    full: bool = field(metadata=rule("rows is every row the filters keep: drop the others"))
    rows: tuple[ConsoleRow, ...] = field(metadata=rule("the rows changed, by the fleet's order"))
    removed: tuple[str, ...] = field(metadata=rule("MACs changed that the filters no longer keep"))
    at: str = field(metadata=rule("when it was read, UTC"))


@dataclass(frozen=True)
class ErrorReply(Message):
    """Every refusal: 4xx or 5xx with one sentence."""

    error: str = field(metadata=rule("what is wrong, in one sentence"))


@dataclass(frozen=True)
class NoBody(Message):
    """A request without a body."""


# -- operators: named pools and server-side jobs ------------------------------------------

MAX_POOL_HOSTS = 64  # hosts of a pool, master included (a XenServer pool's own limit)
MAX_POOL_NAME = 64  # characters of a pool's name
MAX_TIMEOUT = 7 * 24 * 3600.0  # seconds a job waits for one host, at most
MAX_POLL = 600.0  # seconds between a job's looks at a host, at most


class JobState(enum.StrEnum):
    """A server-side job's state: queued until a server takes it, running while one holds
    its lease, then done, failed or cancelled (the reason says why)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobKind(enum.StrEnum):
    POOL_UPGRADE = "pool-upgrade"
    UPDATE_APPLY = "update-apply"


class JobHostState(enum.StrEnum):
    """Where a job stands with one of its hosts."""

    WAITING = "waiting"  # not started yet
    UPGRADING = "upgrading"  # its work assigned, the job follows it
    APPLYING = "applying"  # its update given, the job follows it
    DONE = "done"  # it runs the version now (has the update now)
    SKIPPED = "skipped"  # it ran the version (had the update) already
    FAILED = "failed"  # the job stopped at it
    NOT_STARTED = "not-started"  # the job stopped before it


@dataclass(frozen=True)
class PoolSpec(Message):
    """A new pool: ``POST /api/v1/pools``."""

    NAME: ClassVar[str] = "pool"

    name: str = field(
        metadata=rule("letters, digits, '.', '_' and '-'", printable=True, max_length=MAX_POOL_NAME)
    )
    master: str = field(metadata=rule("the master's MAC: upgraded first", max_length=MAX_WORD))
    members: tuple[str, ...] = field(
        default=(),
        metadata=rule("the other hosts' MACs, in the order they are upgraded",
                      max_items=MAX_POOL_HOSTS - 1),
    )  # fmt: skip


@dataclass(frozen=True)
class PoolMember(Message):
    """``POST /api/v1/pools/<name>/members``: a host joins the pool, last."""

    NAME: ClassVar[str] = "pool member"

    mac: str = field(metadata=rule("the host's MAC", max_length=MAX_WORD))


@dataclass(frozen=True)
class PoolRecord(Message):
    """A named pool: its master and members (in their upgrade order)."""

    name: str = field(metadata=rule("its name"))
    master: str = field(metadata=rule("the master's MAC"))
    members: tuple[str, ...] = field(metadata=rule("the other hosts, in their upgrade order"))
    job: int | None = field(metadata=rule("the pool's queued or running job; null: none"))


@dataclass(frozen=True)
class PoolList(Message):
    pools: tuple[PoolRecord, ...] = field(metadata=rule("by name"))


@dataclass(frozen=True)
class PoolUpgradeRequest(Message):
    """``POST /api/v1/jobs/pool-upgrade``: a rolling upgrade, as a job a server runs. Either
    ``pool`` (a named pool) or ``master`` (and ``members``): the hosts given here."""

    NAME: ClassVar[str] = "pool upgrade"

    version: str = field(metadata=rule("a registered repository's version", max_length=MAX_WORD))
    pool: str | None = field(default=None, metadata=rule("a named pool", max_length=MAX_POOL_NAME))
    master: str | None = field(
        default=None, metadata=rule("the master's MAC (without pool)", max_length=MAX_WORD)
    )
    members: tuple[str, ...] = field(
        default=(), metadata=rule("the other hosts' MACs (without pool)",
                                  max_items=MAX_POOL_HOSTS - 1)
    )  # fmt: skip
    timeout: float = field(
        default=3600.0,
        metadata=rule("seconds to wait for each host", minimum=1, maximum=MAX_TIMEOUT),
    )
    poll: float = field(
        default=5.0,
        metadata=rule("seconds between looks at the host", minimum=0.05, maximum=MAX_POLL),
    )
    by: str | None = field(
        default=None,
        metadata=rule("who starts it, as the client names them (user@machine)",
                      printable=True, max_length=MAX_WORD),
    )  # fmt: skip


@dataclass(frozen=True)
class JobCancel(Message):
    """``POST /api/v1/jobs/<id>/cancel``."""

    NAME: ClassVar[str] = "job cancel"

    by: str | None = field(
        default=None,
        metadata=rule("who cancels it, as the client names them",
                      printable=True, max_length=MAX_WORD),
    )  # fmt: skip


@dataclass(frozen=True)
class JobHostRecord(Message):
    mac: str = field(metadata=rule("the host"))
    state: JobHostState = field(metadata=rule("where the job stands with it"))
    note: str | None = field(metadata=rule("why it failed, or what else there is to say"))


@dataclass(frozen=True)
class JobLine(Message):
    n: int = field(metadata=rule("the line's number in the job's log, from 1"))
    time: float = field(metadata=rule("seconds since the epoch"))
    text: str = field(metadata=rule("what the job did or saw"))


@dataclass(frozen=True)
class JobRecord(Message):
    """A server-side job (docs/protocol.md, "Jobs")."""

    id: int = field(metadata=rule("its number"))
    kind: JobKind = field(metadata=rule("what it does"))
    state: JobState = field(metadata=rule("queued, running, done, failed or cancelled"))
    pool: str | None = field(metadata=rule("the named pool it works on; null: hosts given"))
    parameters: JsonObject = field(metadata=rule("what it was asked (version, timeout, poll)"))
    hosts: tuple[JobHostRecord, ...] = field(metadata=rule("its hosts, in their order"))
    started_by: str = field(metadata=rule("who created it"))
    created: float = field(metadata=rule("when it was created (epoch s)"))
    started: float | None = field(metadata=rule("when a server first took it"))
    ended: float | None = field(metadata=rule("when it ended"))
    reason: str | None = field(metadata=rule("why it stopped (failed or cancelled)"))
    lease_holder: str | None = field(metadata=rule("the server that runs or last ran it"))
    lease_until: float | None = field(
        metadata=rule("until when that server holds it; then any server may take it over")
    )
    cancel_requested: str | None = field(
        metadata=rule("who asked to cancel it: it stops before its next host")
    )
    log: tuple[JobLine, ...] = field(metadata=rule("its log, oldest first (the newest kept)"))


@dataclass(frozen=True)
class JobList(Message):
    jobs: tuple[JobRecord, ...] = field(metadata=rule("newest first"))


@dataclass(frozen=True)
class ServerRecord(Message):
    """A ``server run`` of the registry (``GET /api/v1/servers``)."""

    name: str = field(metadata=rule("its name (`server run --name`)"))
    address: str = field(metadata=rule("the base URL it advertises"))
    started: float = field(metadata=rule("when it started (epoch s)"))
    last_seen: float = field(metadata=rule("its last heartbeat (epoch s)"))
    running: bool = field(metadata=rule("whether it was seen lately (its heartbeat is renewed)"))
    hosts: int = field(metadata=rule("the hosts whose segment server it is"))


@dataclass(frozen=True)
class ServerList(Message):
    servers: tuple[ServerRecord, ...] = field(metadata=rule("by name"))


@dataclass(frozen=True)
class Removed(Message):
    removed: str = field(metadata=rule("the name of what was removed"))


# -- operators: updates (README "Updates") -------------------------------------------------


class HostUpdateState(enum.StrEnum):
    """Where a host stands with an update."""

    PENDING = "pending"  # given to the host; its agent has not applied it yet
    REBOOTING = "rebooting"  # applied; the host reboots (the update needs it)
    REBOOT_REQUIRED = "reboot-required"  # applied; waits for the operator's reboot
    APPLIED = "applied"  # on the host's own disk (and rebooted, if the update needs it)
    FAILED = "failed"


@dataclass(frozen=True)
class UpdateHostRecord(Message):
    mac: str = field(metadata=rule("the host"))
    state: HostUpdateState = field(metadata=rule("where it stands with the update"))
    reason: str | None = field(metadata=rule("why it failed (the agent's words)"))
    updated: float = field(metadata=rule("when that was last said (epoch s)"))


@dataclass(frozen=True)
class UpdateRecord(Message):
    """An update added to the server, and the hosts it is applied to, pending on or
    failed on."""

    id: str = field(metadata=rule("its stable id"))
    name: str = field(metadata=rule("what it is"))
    version: str = field(metadata=rule("the version string it sets"))
    applies_to: tuple[str, ...] = field(metadata=rule("the payload versions it applies to"))
    reboot: bool = field(metadata=rule("whether a host reboots after it"))
    size: int = field(metadata=rule("the signed bundle's size in bytes"))
    sha256: str = field(metadata=rule("the signed bundle's sha256"))
    added: float = field(metadata=rule("when it was added (epoch s)"))
    added_by: str = field(metadata=rule("who added it"))
    cleaned: float | None = field(
        metadata=rule("when its file was removed (`update clean`); null: it is kept")
    )
    hosts: tuple[UpdateHostRecord, ...] = field(metadata=rule("by MAC"))


@dataclass(frozen=True)
class UpdateList(Message):
    updates: tuple[UpdateRecord, ...] = field(metadata=rule("by id"))


@dataclass(frozen=True)
class UpdateTargets(Message):
    """The hosts an update is for: a named pool, or hosts given (the first is the master)."""

    NAME: ClassVar[str] = "update targets"

    pool: str | None = field(default=None, metadata=rule("a named pool", max_length=MAX_POOL_NAME))
    hosts: tuple[str, ...] = field(
        default=(),
        metadata=rule("the hosts' MACs (without pool), the first first",
                      max_items=MAX_POOL_HOSTS, max_length=MAX_WORD),
    )  # fmt: skip


@dataclass(frozen=True)
class PrecheckHost(Message):
    mac: str = field(metadata=rule("the host"))
    ok: bool = field(metadata=rule("whether the update may be applied to it now"))
    running_version: str | None = field(metadata=rule("the payload version it runs"))
    free_mib: int | None = field(metadata=rule("MiB free in dom0 for the download"))
    last_checkin: float | None = field(metadata=rule("its agent's last check-in (epoch s)"))
    problems: tuple[str, ...] = field(metadata=rule("why not, one sentence each"))


@dataclass(frozen=True)
class UpdatePrecheck(Message):
    update: str = field(metadata=rule("the update"))
    ok: bool = field(metadata=rule("whether every host passed"))
    hosts: tuple[PrecheckHost, ...] = field(metadata=rule("in the order they would be updated"))


@dataclass(frozen=True)
class UpdateApplyRequest(Message):
    """``POST /api/v1/jobs/update-apply``: an update applied host by host, master first, as
    a job a server runs, after the precheck passed on every host."""

    NAME: ClassVar[str] = "update apply"

    update: str = field(metadata=rule("the update's id", max_length=MAX_WORD))
    pool: str | None = field(default=None, metadata=rule("a named pool", max_length=MAX_POOL_NAME))
    hosts: tuple[str, ...] = field(
        default=(),
        metadata=rule("the hosts' MACs (without pool), in their order",
                      max_items=MAX_POOL_HOSTS, max_length=MAX_WORD),
    )  # fmt: skip
    reboot: RebootPolicy = field(
        default=RebootPolicy.AUTO,
        metadata=rule("for an update that reboots: auto, or manual (the operator reboots)"),
    )
    timeout: float = field(
        default=3600.0,
        metadata=rule("seconds to wait for each host", minimum=1, maximum=MAX_TIMEOUT),
    )
    poll: float = field(
        default=5.0,
        metadata=rule("seconds between looks at the host", minimum=0.05, maximum=MAX_POLL),
    )
    by: str | None = field(
        default=None,
        metadata=rule("who starts it, as the client names them (user@machine)",
                      printable=True, max_length=MAX_WORD),
    )  # fmt: skip
