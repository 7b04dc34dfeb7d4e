"""The dom0 agent's check-in (docs/protocol.md "Agent check-in", SPEC §8, §9): pure rules.

    apply_checkin(host, running_version, reported, now) -> (host after it, event message)
    checkin_reply(host, profile, settings) -> the reply for the agent (CheckinReply)

The check-in and its reply are declared in ``common.protocol.messages``; the server
decodes the check-in before anything here sees it.

Seed 002's states for agent-driven work (upgrade, restore): ``pending`` until the
agent checks in and hears of it, ``signalled`` once it fetched the installer,
``installed`` with step ``reboot-required`` while it waits for the operator's reboot
(policy manual). The installer it boots then reports through the events route with
the install token, like a network install. The work ends when the installed
system reports ``running``: through the events route (its first-boot service), or
through a check-in with state ``running`` once the installer reported ``installed``
(a system whose first boot was carried over by the upgrade or the restore).

A check-in never fails on a state it cannot apply (the agent would stop short of
its reboot): such a state is ignored, and the reply says what is assigned.
"""

from __future__ import annotations

from dataclasses import replace

from common.errors import InputError
from common.protocol.messages import (
    Action,
    AgentState,
    CheckinReply,
    InstallerCmdline,
    InstallerFiles,
)
from pxe_server.model import (
    AGENT_WORK,
    REBOOT_REQUIRED,
    Host,
    Profile,
    ServerSettings,
    State,
    Work,
    awaiting_reboot,
    install_done,
    mac_dashes,
)

# What the agent boots: the netboot tree's installer, as the install configs name it.
INSTALLER_FILES = {"xen": "xen.gz", "kernel": "vmlinuz", "initrd": "install.img"}
# States in which the reply hands out the work (the installer has not reported yet).
OFFERED = (State.PENDING, State.SIGNALLED, State.INSTALLED)


# The ``state`` a check-in may carry (declared with the check-in, common.protocol).
Reported = AgentState


def reported_state(value: object) -> Reported:
    """A check-in's ``state`` (None: ``running``); InputError otherwise."""
    if value is None:
        return Reported.RUNNING
    if value not in tuple(Reported):
        names = ", ".join(r.value for r in Reported)
        raise InputError(f"state {value!r} cannot be checked in; expected one of {names}")
    return Reported(str(value))


# Path checker states (multipathd's chk_st) of a path that carries I/O; "faulty",
# "shaky", "i/o pending" and the like do not.
WORKING_PATH_STATES = frozenset({"ready", "ghost"})


def _path_counts(maps: object) -> dict[str, int]:
    """map -> its working paths (a failed path a map still lists does not count)."""
    if not isinstance(maps, list):
        return {}
    return {
        str(m.get("name")): sum(
            1 for p in m["paths"] if isinstance(p, dict) and p.get("state") in WORKING_PATH_STATES
        )
        for m in maps
        if isinstance(m, dict) and isinstance(m.get("paths"), list)
    }


def path_message(before: object, after: list[dict[str, object]]) -> str | None:
    """An event when a map gained or lost working paths since the last report (None: no
    change)."""
    old, new = _path_counts(before), _path_counts(after)
    changed = [
        f"{name} {old[name]} -> {count} working paths"
        for name, count in sorted(new.items())
        if name in old and old[name] != count
    ]
    return f"multipath: {', '.join(changed)}" if changed else None


def apply_checkin(
    host: Host,
    version: str,
    reported: Reported,
    now: float,
    multipath: list[dict[str, object]] | None = None,
) -> tuple[Host, str | None]:
    """``host`` after a check-in, and the message of the event to log (None: log nothing).

    Records the running version and the time. For agent work: ``signalled`` moves
    pending -> signalled; ``installed-reboot-required`` moves pending/signalled ->
    installed (reboot required); ``running`` after the installer's ``installed``
    ends the work (state running, work cleared, install token dead). Nothing is
    armed or disarmed here.
    """
    after = replace(host, running_version=version, last_checkin=now)
    paths = None
    if multipath is not None:  # the host's storage paths, kept with its facts
        paths = path_message(host.facts.get("multipath"), multipath)
        after = replace(after, facts={**host.facts, "multipath": multipath})
    after, message = _apply_work(host, after, version, reported)
    if paths is not None:
        message = f"{message}; {paths}" if message else paths
    return after, message


def _apply_work(
    host: Host, after: Host, version: str, reported: Reported
) -> tuple[Host, str | None]:
    work = host.work
    if work in AGENT_WORK:
        if reported is Reported.SIGNALLED and host.state is State.PENDING:
            after = replace(after, state=State.SIGNALLED, step=None, progress=None)
            return after, "signalled: the agent fetched the installer"
        if reported is Reported.INSTALLED_REBOOT_REQUIRED and host.state in OFFERED[:2]:
            after = replace(after, state=State.INSTALLED, step=REBOOT_REQUIRED, progress=None)
            return after, "installed (reboot required)"
        if (
            reported is Reported.RUNNING
            and host.state is State.INSTALLED
            and not awaiting_reboot(host)
        ):
            after = replace(
                install_done(after), state=State.RUNNING, step=None, progress=None, work=None
            )
            return after, f"running {version}: the {work} is done (reported by the agent)"
    if host.last_checkin is None:
        return after, f"first check-in: running {version}"
    if version != host.running_version:
        return after, f"checked in: running {version}"
    return after, None


def installer_urls(settings: ServerSettings) -> InstallerFiles:
    """Absolute URLs of the installer's Xen, kernel and initrd on this server's ``/boot/``."""
    return InstallerFiles(
        **{role: f"{settings.http_base}/boot/{name}" for role, name in INSTALLER_FILES.items()}
    )


def checkin_reply(host: Host, profile: Profile | None, settings: ServerSettings) -> CheckinReply:
    """``action: none``, or the upgrade/restore the agent is to boot the installer for.

    The kernel command line is the one the host's network-boot install config would
    carry (``render.installer_args``: the answer file with the install token).
    InputError (the server's configuration is at fault, not the agent) when the
    host's profile is missing or its arguments cannot be carried.
    """
    work = host.work
    if work not in AGENT_WORK or host.state not in OFFERED or not host.token:
        return CheckinReply(Action.NONE)
    if profile is None:
        raise InputError(f"host {host.mac} has profile {host.profile!r}, which does not exist")
    # Imported here: the registry imports this module, and its readers need no jinja2.
    from pxe_server import render  # noqa: PLC0415

    bootif = f"01-{mac_dashes(host.mac)}"
    return CheckinReply(
        action=Action(work.value),
        version=host.assigned_version if work is Work.UPGRADE else None,
        reboot=host.reboot_policy,
        installer=installer_urls(settings),
        cmdline=InstallerCmdline(
            xen=" ".join(profile.xen_args.split()),
            kernel=" ".join(render.installer_args(host, profile, settings, bootif)),
        ),
    )
