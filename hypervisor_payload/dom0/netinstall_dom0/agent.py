"""netinstall-agent: the dom0 check-in loop of docs/protocol.md (SPEC §8, seed 002).

On start and every ``checkin_interval`` seconds the agent reports its running
version. When the server assigns an upgrade or a restore it fetches the
installer into /boot, selects it for the next boot only (``grub-reboot``),
reports ``signalled`` and reboots, or, when the policy is ``manual``, reports
``installed-reboot-required`` at each check-in until the operator reboots (a
marker on /run remembers that until then). With nothing assigned and nothing
waiting, an installer left in /boot by an earlier boot is removed. A 401 stops
the agent: its credential was revoked. Other failures are logged and retried
sooner than the interval (``RETRY_DELAYS``: a network that came up late at boot,
dhclient still waiting for its lease, must not hold the first check-in back for a
whole interval), then at the interval.
"""

from __future__ import annotations

import argparse
import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from common.errors import NetinstallError
from common.process import CommandRunner, run
from common.protocol.messages import (
    AgentState,
    Checkin,
    CheckinReply,
    RebootPolicy,
    UpdateOutcome,
    UpdateWork,
)

from .config import AgentConfig, load_agent
from .errors import NetworkError, Unauthorized
from .facts import multipath_maps, read_payload_version
from .installer import parse_checkin_reply, remove_staged, stage
from .jsonfile import read_object, write_json
from .layout import INSTALLER_ENTRY, Layout
from .logs import setup_logging
from .server import ServerClient
from .updates import Host as UpdateHost
from .updates import UpdateLog, apply_update, boot_id, free_mib, keep_key, log_bundle

log = logging.getLogger(__name__)

EXIT_REVOKED = Unauthorized.exit_code  # the unit does not restart on it
# The pauses after 1, 2, ... failed check-ins in a row (each at most the interval); after
# these, the interval. A check-in that succeeds starts the count again.
RETRY_DELAYS: tuple[float, ...] = (2, 5, 10, 20, 40, 80, 160)


class Outcome(enum.Enum):
    IDLE = "idle"  # nothing assigned
    WAITING = "waiting"  # installer staged, waiting for the operator's reboot
    REBOOTING = "rebooting"


@dataclass(frozen=True)
class Agent:
    config: AgentConfig
    client: ServerClient
    runner: CommandRunner
    layout: Layout

    def running_version(self) -> str:
        return read_payload_version(self.layout.release_file) or "unknown"

    def staged_key(self) -> str | None:
        path = self.layout.staged_marker
        if not path.exists():
            return None
        key = read_object(path).get("key")
        return key if isinstance(key, str) else None

    def checkin(self, state: AgentState) -> CheckinReply:
        maps = multipath_maps(self.runner)  # a SAN host: its paths, as dom0 sees them
        record = UpdateLog.read(self.layout)  # the updates it has, from its own disk
        checkin = Checkin(
            self.running_version(),
            state,
            maps or None,
            updates=record.ids(),
            free_mib=free_mib(self.layout),
            boot_id=boot_id(self.layout),
            update_result=record.last,
        )
        reply = self.client.checkin(self.config.credential, checkin)
        if record.last is not None:  # the server has it: a later try starts afresh
            record.last = None
            record.write(self.layout)
        keep_key(self.layout, reply.update_key)
        return reply

    def update_once(self, work: UpdateWork) -> Outcome:
        """Apply the update a check-in reply named, report what became of it, and reboot
        when it says so (policy auto)."""
        log.info("update assigned: %s", work.id)
        host = UpdateHost(
            self.client, self.config.credential, self.runner, self.layout, self.running_version()
        )
        done = apply_update(work, host)
        try:
            self.checkin(AgentState.RUNNING)  # carries the result
        except NetworkError as exc:
            log.warning("could not report update %s (%s); the next check-in will", work.id, exc)
        if done.result.outcome is UpdateOutcome.FAILED:
            try:
                bundle = log_bundle(self.layout, self.runner, done.result.reason or "failed")
                self.client.put_logs(self.config.credential, bundle)
            except NetinstallError as exc:
                log.warning("could not upload the log bundle of update %s: %s", work.id, exc)
        if done.reboot:
            log.info("rebooting: update %s asks for it", work.id)
            self.runner(["systemctl", "reboot"])
            return Outcome.REBOOTING
        return Outcome.IDLE

    def checkin_once(self) -> Outcome:
        """One check-in and whatever its reply asks for."""
        staged = self.staged_key()
        reply = self.checkin(AgentState.INSTALLED_REBOOT_REQUIRED if staged else AgentState.RUNNING)
        assignment = parse_checkin_reply(reply)
        if assignment is None:
            if staged:
                return Outcome.WAITING
            if remove_staged(self.layout):
                log.info("removed an installer staged on an earlier boot: nothing is assigned")
            if reply.update is not None:
                return self.update_once(reply.update)
            return Outcome.IDLE
        if assignment.key == staged:
            log.info("%s is staged; waiting for a reboot", assignment.key)
            return Outcome.WAITING
        log.info("assigned: %s (reboot %s)", assignment.key, assignment.reboot.value)
        stage(assignment, self.client, self.config.credential, self.runner, self.layout)
        self.runner(["grub-reboot", INSTALLER_ENTRY])
        if assignment.reboot is RebootPolicy.MANUAL:
            write_json(self.layout.staged_marker, {"key": assignment.key}, mode=0o644)
        try:
            self.checkin(AgentState.SIGNALLED)
        except NetworkError as exc:
            log.warning("could not report signalled (%s); going on", exc)
        if assignment.reboot is RebootPolicy.AUTO:
            log.info("rebooting into the installer")
            self.runner(["systemctl", "reboot"])
            return Outcome.REBOOTING
        log.info("the installer boots at the next reboot; the operator reboots (policy manual)")
        return Outcome.WAITING


def serve(agent: Agent, *, once: bool = False, sleep: Callable[[float], None] = time.sleep) -> int:
    """Check in until told to stop; the exit code of the service."""
    failures = 0
    while True:
        pause: float = agent.config.checkin_interval
        try:
            outcome = agent.checkin_once()
        except Unauthorized:
            log.error(  # noqa: TRY400 - one clear line, no traceback
                "the server refused the agent credential (401): it was revoked; "
                "stopping. Reinstall or re-register the host to get a new one"
            )
            return EXIT_REVOKED
        except NetinstallError as exc:
            if failures < len(RETRY_DELAYS):
                pause = min(pause, RETRY_DELAYS[failures])
            failures += 1
            log.error("check-in failed: %s; next try in %g s", exc, pause)  # noqa: TRY400
            if once:
                return exc.exit_code
        else:
            failures = 0
            if outcome is Outcome.REBOOTING or once:
                return 0
        sleep(pause)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="netinstall-agent", description="Check in with the netinstall server."
    )
    parser.add_argument("--once", action="store_true", help="check in once and exit")
    parser.add_argument(
        "--root", type=Path, default=Path("/"), help="look for our files under ROOT (testing)"
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log every command")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    layout = Layout(args.root)
    try:
        config = load_agent(layout.agent_config)
    except NetinstallError as exc:
        log.error("%s", exc)  # noqa: TRY400
        return exc.exit_code
    with requests.Session() as session:
        agent = Agent(config, ServerClient(config.server, config.mac, session), run, layout)
        return serve(agent, once=args.once)
