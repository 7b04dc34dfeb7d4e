"""netinstall-firstboot: create the local SR, report ``running``, hand over to the agent.

Runs once, from netinstall-firstboot.service, on the installed system's first
boot (SPEC §8). Every step is safe to repeat: a power loss at any point and a
re-run on the next boot finish the job without destroying anything. The
install key (firstboot.json's ``token``: the key its installer enrolled with the
install token, docs/protocol.md) is used once and removed; neither it nor the agent
credential reaches a log.

The unit is not ordered after ``network-online.target`` nor after ``xen.service``: the
SR is made while the network and the Xen daemons come up, then ``wait_until_ready``
waits for both (at most ``NETWORK_WAIT`` seconds) before the facts, which name the
host's addresses and come from ``xl info``, are gathered and reported. On the way it
tells the server its milestones (``report.Milestones``): ``first-boot`` as it starts and
``sr-created`` once the SR is there, each at once if the network is up already, else
before ``running``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import requests

from common.errors import NetinstallError
from common.process import CommandRunner, run
from common.protocol.messages import FIRST_BOOT_STEP, SR_CREATED_STEP

from .config import AgentConfig, load_firstboot, remove_token, save_agent
from .errors import ConfigError, Unauthorized
from .facts import gather
from .layout import Layout
from .logs import setup_logging
from .report import DEFAULT_DELAYS, MILESTONE_TIMEOUT, Milestones, report_running
from .server import HttpSession, ServerClient
from .sr import Resolve, ensure_sr
from .state import load_state, mark_done, save_state

log = logging.getLogger(__name__)

# The longest first boot waits for network-online.target (and xenstored) before it
# reports anyway (the report then retries on its own): networking.service's own start
# limit, 5 min, and a little more.
NETWORK_WAIT = 330
READY = ("network-online.target", "xen.service")  # their boot jobs merge with this start
NETWORK_ONLINE = ("timeout", str(NETWORK_WAIT), "systemctl", "start", *READY)


def _new_uuid() -> str:
    return str(uuid.uuid4())


def wait_until_ready(runner: CommandRunner) -> None:
    """Block until network-online.target and xen.service are up (their boot jobs merge with
    this start); a failure or ``NETWORK_WAIT`` passing is logged, and the report's retries
    go on."""
    done = runner(NETWORK_ONLINE, ok_codes=range(256))
    if done.returncode != 0:
        log.warning(
            "%s not reached (status %d): reporting anyway",
            " and ".join(READY),
            done.returncode,
        )


def firstboot(
    layout: Layout,
    runner: CommandRunner,
    session: HttpSession,
    *,
    sleep: Callable[[float], None] = time.sleep,
    delays: Sequence[float] = DEFAULT_DELAYS,
    new_uuid: Callable[[], str] = _new_uuid,
    resolve: Resolve = os.path.realpath,
) -> None:
    state = load_state(layout.state_file)
    if state.done:
        log.info("first boot is already done (%s)", layout.state_file)
        mark_done(layout, state)
        return
    config = load_firstboot(layout.firstboot_config)
    milestones = None
    if (
        config.server is not None
        and config.mac is not None
        and config.token is not None
        and not layout.agent_config.exists()
    ):
        quick = ServerClient(config.server, config.mac, session, timeout=MILESTONE_TIMEOUT)
        milestones = Milestones(quick, config.token)
        milestones.reached(FIRST_BOOT_STEP, "first boot started")

    sr_uuid = None
    if config.sr is not None:
        sr_uuid = state.sr_uuid
        if sr_uuid is None:
            # Persisted before the first command, so a re-run finds the same SR.
            sr_uuid = new_uuid()
            state = state.with_sr_uuid(sr_uuid)
            save_state(layout.state_file, state)
        log.info("local SR: %s on %s, uuid %s", config.sr.type.value, config.sr.devices, sr_uuid)
        ensure_sr(config.sr, sr_uuid, runner, layout, resolve)
        if milestones is not None:
            milestones.reached(
                SR_CREATED_STEP, f"local SR {config.sr.type.value} {sr_uuid} is ready"
            )
    else:
        log.info("no local SR configured")

    if layout.agent_config.exists():
        log.info("%s exists: the running report was accepted before", layout.agent_config)
    elif config.server is None or config.mac is None:
        log.info("installed without a netinstall server: no running report, no agent")
    else:
        if config.token is None:
            raise ConfigError(
                f"{layout.firstboot_config}: key 'token': missing, and there is no agent "
                "credential yet; re-arm the host on the server and reinstall"
            )
        wait_until_ready(runner)
        if milestones is not None:
            milestones.flush()
        facts = gather(
            runner,
            layout,
            sr_uuid=sr_uuid,
            sr_type=None if config.sr is None else config.sr.type,
            fallback_version=config.payload_version,
        )
        client = ServerClient(config.server, config.mac, session)
        try:
            reply = report_running(client, config.token, facts, sleep=sleep, delays=delays)
        except Unauthorized as exc:
            raise Unauthorized(
                "the server refused the install key (401): it was already used, or another "
                "boot of this host enrolled since (see `netinstall host show` on the "
                "server); the host needs new work assigned on the server",
                401,
            ) from exc
        agent = AgentConfig(
            config.server, config.mac, reply.agent_credential, reply.checkin_interval
        )
        save_agent(layout.agent_config, agent)
        log.info("stored the agent credential in %s", layout.agent_config)

    remove_token(layout.firstboot_config)
    mark_done(layout, state)
    log.info("first boot done")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="netinstall-firstboot",
        description="Create the local SR and report this host as running (once).",
    )
    parser.add_argument(
        "--root", type=Path, default=Path("/"), help="look for our files under ROOT (testing)"
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log every command")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        with requests.Session() as session:
            firstboot(Layout(args.root), run, session)
    except NetinstallError as exc:
        log.error("first boot failed: %s", exc)  # noqa: TRY400 - one sentence, no traceback
        return exc.exit_code
    return 0
