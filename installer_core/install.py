"""The install flow (SPEC §7): the plan first, then one linear flow per mode.

``run_install`` reads top to bottom: the SAN steps when the boot arguments ask
for them (``iscsi`` for ``use_ibft``, ``multipath`` for
``device_mapper_multipath``), the network, the answer file, then ``plan``
(``installer_core.survey``): one immutable ``InstallPlan`` with every refusal
the planner knows raised there, before any download or write. The plan's mode
then picks its flow, ``fresh``, ``upgrade`` or ``restore``; each is a plain list
of steps, each step a plain function that takes what it needs and returns what
it made. ``FRESH``, ``UPGRADE`` and ``RESTORE`` name those steps in the same order,
with their weights, so the walker can number them and report progress
(``installer_core.steps``; it refuses a flow that strays from its list).

The end of a run is one console line::

    netinstall: result installed in <seconds>s
    netinstall: result failed: <reason>

A failure (``StepFailed``, one sentence) unmounts what it can once there is a
plan, brings the network up when a SAN step failed before it, runs the
``installation-complete`` scripts with ``1`` once the answer file is valid,
uploads the log bundle and reports ``failed``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TextIO

from answerfile.bootargs import BootArgs
from answerfile.model import AnswerFile, Mode, ScriptStage
from common.errors import NetinstallError
from common.firmware import Firmware
from common.process import CommandRunner, run
from installer_core import (
    backup,
    bootloader,
    carry,
    configure,
    disk,
    download,
    existing,
    fetch,
    iscsi,
    logbundle,
    multipath,
    network,
    payload,
    scripts,
    survey,
)
from installer_core.install_log import install_logging
from installer_core.plan import Existing, InstallPlan, Paths, Staging
from installer_core.report import KeyRefused, ServerReporter
from installer_core.steps import Listed, Reporter, StepFailed, StepWalker, failure_reason, listed
from partitioning.model import Use

log = logging.getLogger(__name__)

WEIGHTS = {  # each step's share of a run, relative to the others
    "iscsi": 2,
    "multipath": 1,
    "network": 2,
    "fetch-answerfile": 1,
    "validate-answerfile": 0.5,
    "plan": 1,
    "installation-start-scripts": 1,
    "check-payload": 10,
    "download": 25,
    "partition": 2,
    "make-filesystems": 3,
    "layout": 0.5,
    "backup-root": 15,
    "save-settings": 0.5,
    "make-root": 2,
    "restore-root": 30,
    "mount-target": 0.5,
    "extract-root": 30,
    "install-boot-files": 1,
    "install-packs": 5,
    "configure": 3,
    "carry-settings": 1,
    "rearm-first-boot": 0.5,
    "bootloader": 4,
    "filesystem-populated-scripts": 2,
    "unmount": 1,
    "write-install-log": 0.5,
    "installation-complete-scripts": 1,
}
EARLY = ("iscsi", "multipath")  # before the network: a failure brings it up to report
BEFORE_PLAN = ("network", "fetch-answerfile", "validate-answerfile", "plan")
_LAY_DOWN = ("mount-target", "extract-root", "install-boot-files", "install-packs")
_FINISH = (
    "bootloader",
    "filesystem-populated-scripts",
    "unmount",
    "write-install-log",
    "installation-complete-scripts",
)
FRESH = (
    "installation-start-scripts",
    "download",  # in RAM: verified before anything is written
    "partition",
    "make-filesystems",
    *_LAY_DOWN,
    "configure",
    *_FINISH,
)
FRESH_STAGED_ON_DISK = (  # a payload too big for RAM goes to the new backup partition
    "installation-start-scripts",
    "check-payload",  # its checksums, streamed: nothing is written before they match
    "partition",
    "make-filesystems",
    "download",
    *_LAY_DOWN,
    "configure",
    *_FINISH,
)
UPGRADE = (  # nothing is written before the payload has verified
    "installation-start-scripts",
    "download",
    "layout",
    "backup-root",
    "save-settings",
    "make-root",
    *_LAY_DOWN,
    "carry-settings",
    *_FINISH,
)
RESTORE = (
    "make-root",
    "restore-root",
    "mount-target",
    "rearm-first-boot",
    "bootloader",
    "unmount",
    "write-install-log",
)


def steps_of(args: BootArgs, plan: InstallPlan | None = None) -> Listed:
    """The run's steps: the SAN steps asked for, those before the plan, then the mode's
    (a fresh install's until the plan is known)."""
    early = (("iscsi",) if args.use_ibft else ()) + (
        ("multipath",) if args.device_mapper_multipath else ()
    )
    mode: tuple[str, ...] = FRESH
    if plan is not None and plan.mode is Mode.UPGRADE:
        mode = UPGRADE
    elif plan is not None and plan.mode is Mode.RESTORE:
        mode = RESTORE
    elif plan is not None and plan.staging is not None and plan.staging.on_disk:
        mode = FRESH_STAGED_ON_DISK
    return listed((*early, *BEFORE_PLAN, *mode), WEIGHTS)


@dataclass(frozen=True)
class Host:
    """How the steps reach the machine; tests replace parts."""

    runner: CommandRunner = run
    transport: fetch.Transport = field(default_factory=fetch.Transport)
    network: network.System = field(default_factory=network.System)
    iscsi: iscsi.System = field(default_factory=iscsi.System)
    multipath: multipath.System = field(default_factory=multipath.System)
    machine: survey.Machine = field(default_factory=survey.Machine)


@dataclass(frozen=True)
class Boot:
    """What the installer starts from: the boot arguments, the firmware, the reporter."""

    args: BootArgs
    firmware: Firmware
    reporter: Reporter
    paths: Paths = field(default_factory=Paths)


# --- the flows ---------------------------------------------------------------------


def fresh(plan: InstallPlan, host: Host, walk: StepWalker) -> None:
    """A fresh install (``FRESH``, or ``FRESH_STAGED_ON_DISK`` for a big payload)."""
    with walk.step("installation-start-scripts"):
        _scripts(plan.answer, ScriptStage.INSTALLATION_START, None, plan, host)
    staging = _staging(plan)
    if staging.on_disk:  # too big for RAM (SPEC §7): the new backup partition holds it
        with walk.step("check-payload"):
            _check_payload(plan, host, walk.reporter)
        made = _make_disk(plan, host, walk)
        with walk.step("download"):
            got = _download(plan, staging, host, walk.reporter)
    else:  # nothing is written before the payload has verified
        with walk.step("download"):
            got = _download(plan, staging, host, walk.reporter)
        made = _make_disk(plan, host, walk)
    _lay_down(plan, got, host, walk)
    with walk.step("configure"):
        configure.configure_system(plan, got.version, made)
    _finish(plan, made.uuids[Use.ROOT], host, walk)


def upgrade(plan: InstallPlan, host: Host, walk: StepWalker) -> None:
    """An upgrade (and a reinstall): the backup taken once the payload has verified, root
    re-created with its UUID, the settings carried over (``UPGRADE``)."""
    found, work = _existing(plan), plan.paths.work
    with walk.step("installation-start-scripts"):
        _scripts(plan.answer, ScriptStage.INSTALLATION_START, None, plan, host)
    with walk.step("download"):
        got = _download(plan, _staging(plan), host, walk.reporter)
    with walk.step("layout"):
        existing.check_layout(plan.disk, plan.firmware, host.machine.probe)
    with walk.step("backup-root"):
        backup.backup_root(plan.disk, found, work, host.runner)
    with walk.step("save-settings"):
        saved = carry.save_settings(plan.disk, work, host.runner)
    with walk.step("make-root"):
        root_uuid = backup.make_root(plan.disk, found, upgrade=True, runner=host.runner)
    _lay_down(plan, got, host, walk)
    with walk.step("carry-settings"):
        carry.carry_settings(plan, saved, got.version)
    _finish(plan, root_uuid, host, walk)


def restore(plan: InstallPlan, host: Host, walk: StepWalker) -> None:
    """A restore: the backup partition back onto a root re-created with its UUID
    (``RESTORE``)."""
    found, paths = _existing(plan), plan.paths
    with walk.step("make-root"):
        root_uuid = backup.make_root(plan.disk, found, upgrade=False, runner=host.runner)
    with walk.step("restore-root"):
        backup.restore_root(plan.disk, found, paths.work, host.runner)
    with walk.step("mount-target"):
        disk.mount_target(paths.target, plan.disk, host.runner)
    with walk.step("rearm-first-boot"):
        carry.restore_settings(plan)
    with walk.step("bootloader"):
        bootloader.install_bootloader(plan.bootloader, paths.target, root_uuid, host.runner)
    with walk.step("unmount"):
        disk.unmount_target(paths.target, plan.staging, host.runner)
    with walk.step("write-install-log"):
        disk.write_install_log(paths.log_file, plan.disk, paths.work, host.runner)


FLOWS: dict[Mode, Callable[[InstallPlan, Host, StepWalker], None]] = {
    Mode.FRESH: fresh,
    Mode.UPGRADE: upgrade,
    Mode.RESTORE: restore,
}


def _make_disk(plan: InstallPlan, host: Host, walk: StepWalker) -> disk.Filesystems:
    with walk.step("partition"):
        disk.partition(plan.disk, host.runner)
    with walk.step("make-filesystems"):
        return disk.make_filesystems(plan.disk, host.runner)


def _lay_down(plan: InstallPlan, got: download.Payload, host: Host, walk: StepWalker) -> None:
    """The payload onto the mounted target: root, boot files, packs."""
    target = plan.paths.target
    with walk.step("mount-target"):
        disk.mount_target(target, plan.disk, host.runner)
    with walk.step("extract-root"):
        payload.extract_root(got.files, target, host.runner)
    with walk.step("install-boot-files"):
        payload.install_boot_files(got.files, target)
    with walk.step("install-packs"):
        packs = plan.fetch.packs if plan.fetch is not None else ()
        payload.install_packs(packs, target, host.runner)


def _finish(plan: InstallPlan, root_uuid: str, host: Host, walk: StepWalker) -> None:
    """Boot loader, the populated scripts, unmount, keep the log, the complete scripts."""
    paths = plan.paths
    with walk.step("bootloader"):
        bootloader.install_bootloader(plan.bootloader, paths.target, root_uuid, host.runner)
    with walk.step("filesystem-populated-scripts"):
        stage = ScriptStage.FILESYSTEM_POPULATED
        _scripts(plan.answer, stage, str(paths.target), plan, host)
    with walk.step("unmount"):
        disk.unmount_target(paths.target, plan.staging, host.runner)
    with walk.step("write-install-log"):
        disk.write_install_log(paths.log_file, plan.disk, paths.work, host.runner)
    with walk.step("installation-complete-scripts"):
        _scripts(plan.answer, ScriptStage.INSTALLATION_COMPLETE, "0", plan, host)


def _scripts(
    answer: AnswerFile, stage: ScriptStage, argument: str | None, plan: InstallPlan, host: Host
) -> None:
    scripts.run_scripts(answer.scripts, stage, argument, plan.paths.work, host.transport)


def _download(
    plan: InstallPlan, staging: Staging, host: Host, reporter: Reporter
) -> download.Payload:
    if plan.fetch is None:
        raise NetinstallError("the plan downloads nothing")
    log.info("staging the payload in %s: %s", staging.place.value, staging.reason)

    def report(message: str) -> None:
        reporter.event("installing", step="download", message=message)

    return download.download_payload(plan.fetch, staging, report, host.transport, host.runner)


def _check_payload(plan: InstallPlan, host: Host, reporter: Reporter) -> None:
    if plan.fetch is None:
        raise NetinstallError("the plan downloads nothing")

    def report(message: str) -> None:
        reporter.event("installing", step="check-payload", message=message)

    download.check_payload(plan.fetch, host.transport, report)


def _staging(plan: InstallPlan) -> Staging:
    if plan.staging is None:
        raise NetinstallError("the plan stages no payload")
    return plan.staging


def _existing(plan: InstallPlan) -> Existing:
    if plan.existing is None:
        raise NetinstallError("the plan holds no installation found on the disk")
    return plan.existing


# --- a run -------------------------------------------------------------------------


def bring_up_network(
    args: BootArgs, reporter: Reporter, storage: tuple[str, ...], host: Host
) -> network.Nic:
    """The network step; without BOOTIF the reporter learns the host's MAC here."""
    nic = network.bring_up(args, storage, host.network)
    if isinstance(reporter, ServerReporter) and reporter.mac is None:
        reporter.mac = nic.mac  # no BOOTIF: the NIC that got an address
        reporter.flush()
    return nic


def run_install(boot: Boot, out: TextIO | None = None, host: Host | None = None) -> int:
    """The whole run, logged to the install log and the console; 0 or 1."""
    out = out or sys.stdout
    secrets = logbundle.Secrets(boot.args)
    secrets.add(boot.reporter.install_key)
    with install_logging(boot.paths.log_file, out, secrets):
        walk = StepWalker(out, boot.reporter, secrets, steps_of(boot.args))
        return _run(boot, host or Host(), walk, secrets)


@dataclass(frozen=True)
class _Reached:
    """What a failure path may use: how far the run came before it failed."""

    storage: tuple[str, ...] = ()  # the iBFT's storage NICs, when attached
    network_up: bool = False
    answer_text: str | None = None
    answer: AnswerFile | None = None
    plan: InstallPlan | None = None


def _run(boot: Boot, host: Host, walk: StepWalker, secrets: logbundle.Secrets) -> int:
    args, paths, reached = boot.args, boot.paths, _Reached()
    started = walk.clock()
    try:
        san = None
        if args.use_ibft:
            with walk.step("iscsi"):
                san = iscsi.attach_ibft(args.device_mapper_multipath, host.iscsi)
            reached = replace(reached, storage=san.storage_macs)
        if args.device_mapper_multipath:
            with walk.step("multipath"):
                multipath.start(host.multipath)
        with walk.step("network"):
            nic = bring_up_network(args, boot.reporter, reached.storage, host)
        reached = replace(reached, network_up=True)
        with walk.step("fetch-answerfile"):
            # The install token's one use: enrol this install's key, which the answer
            # file's fetch and every later call then carry (docs/protocol.md).
            boot.reporter.enrol(host.transport.session)
            text = fetch.fetch_answerfile(args, paths.work, host.transport)
        secrets.learn_answer(text)
        reached = replace(reached, answer_text=text)
        with walk.step("validate-answerfile"):
            answer = fetch.validate_answerfile(text)
        secrets.add(answer.root_password.value if answer.root_password else None)
        reached = replace(reached, answer=answer)
        with walk.step("plan"):
            plan = survey.plan_install(
                args,
                boot.firmware,
                answer,
                san=san,
                fetched_by=nic,
                paths=paths,
                machine=host.machine,
                transport=host.transport,
                install_key=boot.reporter.install_key,
                update_key=boot.reporter.update_key,
            )
        reached = replace(reached, plan=plan)
        walk.expect(steps_of(args, plan))
        FLOWS[plan.mode](plan, host, walk)
    except StepFailed as failure:
        _fail(failure, reached, boot=boot, host=host, walk=walk, secrets=secrets)
        return 1
    try:
        boot.reporter.event("installed")
    except KeyRefused as exc:  # another boot of this host enrolled: this install is not it
        walk.say(f"result failed: {exc}")
        return 1
    walk.say(f"result installed in {walk.clock() - started:.1f}s")
    return 0


def _fail(
    failure: StepFailed,
    reached: _Reached,
    *,
    boot: Boot,
    host: Host,
    walk: StepWalker,
    secrets: logbundle.Secrets,
) -> None:
    """Unmount, reach the server, the complete scripts with 1, the log bundle, ``failed``."""
    paths, plan, answer = boot.paths, reached.plan, reached.answer
    if plan is not None:  # before the plan nothing is mounted: touch nothing
        _best_effort(
            "unmount the target",
            lambda: disk.unmount_target(paths.target, plan.staging, host.runner),
        )
    network_up = reached.network_up
    if failure.step in EARLY and not network_up:
        storage = reached.storage or _storage_macs(host)
        _best_effort(
            "bring up the network to report the failure",
            lambda: bring_up_network(boot.args, boot.reporter, storage, host),
        )
        network_up = True
    if network_up:
        # A failure before the answer file was fetched: enrol now, so that the failure
        # reaches the server (which then disarms netboot). Enrolled already: nothing sent.
        _best_effort(
            "enrol with the server to report the failure",
            lambda: boot.reporter.enrol(host.transport.session),
        )
    if answer is not None:
        stage = ScriptStage.INSTALLATION_COMPLETE
        _best_effort(
            "run the installation-complete scripts",
            lambda: scripts.run_scripts(answer.scripts, stage, "1", paths.work, host.transport),
        )

    def upload() -> None:
        bundle = logbundle.make_bundle(
            paths.log_file,
            paths.work,
            reached.answer_text,
            failure.reason,
            secrets,
            runner=host.runner,
        )
        boot.reporter.upload_logs(bundle)

    _best_effort("upload the log bundle", upload)
    walk.say(f"result failed: {failure.reason}")
    _best_effort(
        "report the failure",
        lambda: boot.reporter.event("failed", step=failure.step, message=failure.reason),
    )


def _storage_macs(host: Host) -> tuple[str, ...]:
    """The iBFT's NICs, when the table can be read: kept off the network that reports."""
    try:
        return tuple(n.mac for n in iscsi.read_ibft(host.iscsi.ibft).nics)
    except NetinstallError:
        return ()


def _best_effort(what: str, action: Callable[[], object]) -> None:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - the failure being reported matters more
        log.warning("could not %s: %s", what, failure_reason(exc))
