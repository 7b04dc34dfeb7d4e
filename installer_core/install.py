"""The install flow (SPEC §7): the ordered steps of each mode and the runner that walks them.

The SAN steps come first when the boot arguments ask for them (``iscsi`` for
``use_ibft``, ``multipath`` for ``device_mapper_multipath``; SPEC §7); a failure
there brings the network up to report it. ``SHARED`` steps read and validate the
answer file; its mode then picks what
follows: ``FRESH`` (``STEPS`` is a fresh install's whole list), ``UPGRADE``
(reinstall too) or ``RESTORE``.

Before each step the runner reports ``installing`` with the step's name and the
share of the work done so far (by weight, 0..1), and prints to the console
(the serial line the test harness reads)::

    netinstall: step <name> (<n>/<total>)
    netinstall: step <name> done in <seconds>s
    netinstall: step <name> FAILED after <seconds>s: <reason>
    netinstall: result installed in <seconds>s
    netinstall: result failed: <reason>

A failure records one sentence in ``ctx.failed_reason``, unmounts what it can,
runs the ``installation-complete`` scripts with ``1``, uploads the log bundle
and reports ``failed``. The disk/system steps live in other modules and are
imported when their step runs, so a missing module fails that step by name.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from answerfile.model import Mode, ScriptStage
from common.errors import InputError, NetinstallError
from installer_core import checks, download, fetch, logbundle, network, scripts
from installer_core.context import InstallContext
from installer_core.report import ServerReporter

log = logging.getLogger(__name__)

Action = Callable[[InstallContext], None]


@dataclass(frozen=True)
class Step:
    name: str
    action: Action
    weight: float  # the step's share of the whole install, relative to the others


def external(module: str, function: str) -> Action:
    """A step implemented in ``installer_core.<module>``, imported when it runs."""

    def action(ctx: InstallContext) -> None:
        name = f"installer_core.{module}"
        try:
            found = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            raise NetinstallError(f"this installer has no {name} module for the step") from exc
        step = getattr(found, function, None)
        if not callable(step):
            raise NetinstallError(f"{name} has no {function}() for the step")
        step(ctx)

    action.__qualname__ = action.__name__ = f"{module}.{function}"
    return action


def bring_up_network(ctx: InstallContext) -> None:
    network.bring_up(ctx)
    if isinstance(ctx.reporter, ServerReporter) and ctx.reporter.mac is None:
        ctx.reporter.mac = ctx.admin_mac  # no BOOTIF: the NIC that got an address
        ctx.reporter.flush()


def start_scripts(ctx: InstallContext) -> None:
    scripts.run_scripts(ctx, ScriptStage.INSTALLATION_START)


def populated_scripts(ctx: InstallContext) -> None:
    scripts.run_scripts(ctx, ScriptStage.FILESYSTEM_POPULATED, str(ctx.target))


def complete_scripts(ctx: InstallContext) -> None:
    scripts.run_scripts(ctx, ScriptStage.INSTALLATION_COMPLETE, "0")


# use_ibft (SPEC §7 "(iBFT)"): the storage NIC and the iSCSI login, before the network.
ISCSI = Step("iscsi", external("iscsi", "attach_ibft"), 2)
# device_mapper_multipath (SPEC §7 "(multipath)"): the maps, after the iSCSI login.
MULTIPATH = Step("multipath", external("multipath", "start"), 1)
# Steps before the network: a failure brings it up to report.
EARLY = frozenset({ISCSI.name, MULTIPATH.name})

SHARED: tuple[Step, ...] = (  # every run, before the answer file's mode is known
    Step("network", bring_up_network, 2),
    Step("fetch-answerfile", fetch.fetch_answerfile, 1),
    Step("validate-answerfile", fetch.validate_answerfile, 0.5),
)
_START = Step("installation-start-scripts", start_scripts, 1)
_CHECKS = Step("hardware-checks", checks.check_hardware, 0.5)
_DOWNLOAD = Step("download", download.download_payload, 25)
_MOUNT = Step("mount-target", external("disk", "mount_target"), 0.5)
_LAY_DOWN = (  # the payload onto the mounted target
    _MOUNT,
    Step("extract-root", external("payload", "extract_root"), 30),
    Step("install-boot-files", external("payload", "install_boot_files"), 1),
    Step("install-packs", external("payload", "install_packs"), 5),
)
_BOOTLOADER = Step("bootloader", external("bootloader", "install_bootloader"), 4)
_POPULATED = Step("filesystem-populated-scripts", populated_scripts, 2)
_UNMOUNT = Step("unmount", external("disk", "unmount_target"), 1)
_WRITE_LOG = Step("write-install-log", external("disk", "write_install_log"), 0.5)
_COMPLETE = Step("installation-complete-scripts", complete_scripts, 1)
_MAKE_ROOT = Step("make-root", external("backup", "make_root"), 2)

FRESH: tuple[Step, ...] = (
    _START,
    _CHECKS,
    _DOWNLOAD,
    Step("partition", external("disk", "partition"), 2),
    Step("make-filesystems", external("disk", "make_filesystems"), 3),
    *_LAY_DOWN,
    Step("configure", external("configure", "configure_system"), 3),
    *(_BOOTLOADER, _POPULATED, _UNMOUNT, _WRITE_LOG, _COMPLETE),
)
# Upgrade (and reinstall): nothing is written before the payload has verified; the
# backup is taken then, root re-created with its UUID, the settings carried over.
UPGRADE: tuple[Step, ...] = (
    _START,
    _CHECKS,
    Step("find-installation", external("existing", "find_installation"), 1),
    _DOWNLOAD,
    Step("layout", external("existing", "check_layout"), 0.5),
    Step("backup-root", external("backup", "backup_root"), 15),
    Step("save-settings", external("carry", "save_settings"), 0.5),
    _MAKE_ROOT,
    *_LAY_DOWN,
    Step("carry-settings", external("carry", "carry_settings"), 1),
    *(_BOOTLOADER, _POPULATED, _UNMOUNT, _WRITE_LOG, _COMPLETE),
)
# Restore: the backup partition back onto a root re-created with its UUID.
RESTORE: tuple[Step, ...] = (
    _CHECKS,
    Step("find-backup", external("existing", "find_backup"), 1),
    _MAKE_ROOT,
    Step("restore-root", external("backup", "restore_root"), 30),
    _MOUNT,
    Step("rearm-first-boot", external("carry", "restore_settings"), 0.5),
    *(_BOOTLOADER, _UNMOUNT, _WRITE_LOG),
)
_BY_MODE = {Mode.FRESH: FRESH, Mode.UPGRADE: UPGRADE, Mode.RESTORE: RESTORE}
STEPS: tuple[Step, ...] = SHARED + FRESH  # a fresh install's steps


def steps_for(mode: Mode, *, use_ibft: bool = False, multipath: bool = False) -> tuple[Step, ...]:
    """Every step of a run in ``mode``: the SAN steps the boot arguments ask for, the
    shared ones, then the mode's."""
    early = ((ISCSI,) if use_ibft else ()) + ((MULTIPATH,) if multipath else ())
    return early + SHARED + _BY_MODE[mode]


def choose_steps(ctx: InstallContext) -> tuple[Step, ...]:
    """The run's steps as far as they are known: a fresh install's until the answer
    file is validated, then those of its mode (the shared steps come first in each)."""
    mode = ctx.answer.mode if ctx.answer is not None else Mode.FRESH
    return steps_for(mode, use_ibft=ctx.args.use_ibft, multipath=ctx.args.device_mapper_multipath)


def failure_reason(exc: BaseException) -> str:
    """One sentence: the input's problems, our error's message, or an internal error."""
    if isinstance(exc, InputError):
        return "; ".join(exc.problems)
    if isinstance(exc, NetinstallError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


class _Scrub(logging.Filter):
    """Replaces every secret the run knows in each record before any handler sees it."""

    def __init__(self, ctx: InstallContext) -> None:
        super().__init__()
        self.ctx = ctx

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = logbundle.secrets_of(self.ctx)
        record.msg = logbundle.scrub(record.getMessage(), secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = logbundle.scrub(record.exc_text, secrets)
        return True


class _NotSaid(logging.Filter):
    """Keeps the runner's own lines (printed already) off the console handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "said", False)


@contextmanager
def install_logging(ctx: InstallContext, out: TextIO) -> Iterator[None]:
    """The install log file (DEBUG) and the console (INFO), secrets scrubbed; removed after."""
    ctx.log_file.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(ctx.log_file, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console = logging.StreamHandler(out)
    console.setLevel(logging.INFO)
    console.setFormatter(logging.Formatter("  %(levelname)s %(name)s: %(message)s"))
    console.addFilter(_NotSaid())
    scrub = _Scrub(ctx)
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    for handler in (file_handler, console):
        handler.addFilter(scrub)
        root.addHandler(handler)
    try:
        yield
    finally:
        for handler in (file_handler, console):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(old_level)


def _cleanup(ctx: InstallContext) -> None:
    external("disk", "unmount_target")(ctx)


def _reach_server(ctx: InstallContext) -> None:
    """After a failure before the network step: bring the network up to report it."""
    if ctx.admin_mac is None:
        bring_up_network(ctx)


@dataclass
class Runner:
    """Walks the steps; every outside effect of the failure path can be replaced."""

    steps: Sequence[Step] | None = None  # fixed steps; None: ``choose`` them as the run goes
    out: TextIO = sys.stdout
    cleanup: Action = _cleanup
    reach_server: Action = _reach_server  # for failures of the EARLY steps
    bundle: Callable[[InstallContext], Path] = logbundle.make_bundle
    finish_scripts: Callable[[InstallContext, str], None] = lambda ctx, arg: scripts.run_scripts(
        ctx, ScriptStage.INSTALLATION_COMPLETE, arg
    )
    clock: Callable[[], float] = time.monotonic
    choose: Callable[[InstallContext], Sequence[Step]] = choose_steps

    def plan(self, ctx: InstallContext) -> Sequence[Step]:
        return self.steps if self.steps is not None else self.choose(ctx)

    def say(self, ctx: InstallContext, text: str) -> None:
        text = logbundle.scrub(text, logbundle.secrets_of(ctx))
        print(f"netinstall: {text}", file=self.out, flush=True)
        log.info("%s", text, extra={"said": True})

    def run(self, ctx: InstallContext) -> int:
        """Walk the steps; the list is chosen again after each one (the answer file's
        mode decides what follows validation), so ``n/N`` counts the run's own steps."""
        started, done, number, progress = self.clock(), 0.0, 0, 0.0
        while number < len(steps := self.plan(ctx)):
            step = steps[number]
            number += 1
            total = sum(s.weight for s in steps) or 1.0
            progress = max(progress, done / total)  # never back when the list changes
            self.say(ctx, f"step {step.name} ({number}/{len(steps)})")
            ctx.reporter.event("installing", step=step.name, progress=progress)
            began = self.clock()
            try:
                step.action(ctx)
            except Exception as exc:  # noqa: BLE001 - every failure is reported, then handled
                self.fail(ctx, step, exc, self.clock() - began)
                return 1
            self.say(ctx, f"step {step.name} done in {self.clock() - began:.1f}s")
            done += step.weight
        self.say(ctx, f"result installed in {self.clock() - started:.1f}s")
        ctx.reporter.event("installed")
        return 0

    def fail(self, ctx: InstallContext, step: Step, exc: Exception, took: float) -> None:
        reason = logbundle.scrub(failure_reason(exc), logbundle.secrets_of(ctx))
        ctx.failed_reason = reason
        traceback = None if isinstance(exc, InputError) else exc
        log.error("step %s failed: %s", step.name, reason, exc_info=traceback)
        self.say(ctx, f"step {step.name} FAILED after {took:.1f}s: {reason}")
        if ctx.partitions:  # before partitioning nothing is mounted: touch nothing
            self._best_effort("unmount the target", lambda: self.cleanup(ctx))
        if step.name in EARLY:
            self._best_effort(
                "bring up the network to report the failure", lambda: self.reach_server(ctx)
            )
        self._best_effort(
            "run the installation-complete scripts", lambda: self.finish_scripts(ctx, "1")
        )
        self._best_effort("upload the log bundle", lambda: self._upload(ctx))
        self.say(ctx, f"result failed: {reason}")
        ctx.reporter.event("failed", step=step.name, message=reason)

    def _upload(self, ctx: InstallContext) -> None:
        ctx.reporter.upload_logs(self.bundle(ctx))

    @staticmethod
    def _best_effort(what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - the failure being reported matters more
            log.warning("could not %s: %s", what, failure_reason(exc))


def run_install(
    ctx: InstallContext,
    steps: Sequence[Step] | None = None,
    out: TextIO | None = None,
    bundle: Callable[[InstallContext], Path] = logbundle.make_bundle,
) -> int:
    """Run ``steps`` (default: those of the answer file's mode) on ``ctx``, logging to
    ``ctx.log_file`` and the console; 0 or 1."""
    runner = Runner(steps=steps, out=out or sys.stdout, bundle=bundle)
    with install_logging(ctx, runner.out):
        return runner.run(ctx)
