"""The install flow (SPEC §7): the ordered ``STEPS`` and the runner that walks them.

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

from answerfile.model import ScriptStage
from installer_core import checks, download, fetch, logbundle, network, scripts
from installer_core.context import InstallContext
from installer_core.report import ServerReporter
from netinstall.errors import InputError, NetinstallError

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


STEPS: tuple[Step, ...] = (
    Step("network", bring_up_network, 2),
    Step("fetch-answerfile", fetch.fetch_answerfile, 1),
    Step("validate-answerfile", fetch.validate_answerfile, 0.5),
    Step("installation-start-scripts", start_scripts, 1),
    Step("hardware-checks", checks.check_hardware, 0.5),
    Step("download", download.download_payload, 25),
    Step("partition", external("disk", "partition"), 2),
    Step("make-filesystems", external("disk", "make_filesystems"), 3),
    Step("mount-target", external("disk", "mount_target"), 0.5),
    Step("extract-root", external("payload", "extract_root"), 30),
    Step("install-boot-files", external("payload", "install_boot_files"), 1),
    Step("install-packs", external("payload", "install_packs"), 5),
    Step("configure", external("configure", "configure_system"), 3),
    Step("bootloader", external("bootloader", "install_bootloader"), 4),
    Step("filesystem-populated-scripts", populated_scripts, 2),
    Step("unmount", external("disk", "unmount_target"), 1),
    Step("write-install-log", external("disk", "write_install_log"), 0.5),
    Step("installation-complete-scripts", complete_scripts, 1),
)


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


@dataclass
class Runner:
    """Walks the steps; every outside effect of the failure path can be replaced."""

    steps: Sequence[Step] = STEPS
    out: TextIO = sys.stdout
    cleanup: Action = _cleanup
    bundle: Callable[[InstallContext], Path] = logbundle.make_bundle
    finish_scripts: Callable[[InstallContext, str], None] = lambda ctx, arg: scripts.run_scripts(
        ctx, ScriptStage.INSTALLATION_COMPLETE, arg
    )
    clock: Callable[[], float] = time.monotonic

    def say(self, ctx: InstallContext, text: str) -> None:
        text = logbundle.scrub(text, logbundle.secrets_of(ctx))
        print(f"netinstall: {text}", file=self.out, flush=True)
        log.info("%s", text, extra={"said": True})

    def run(self, ctx: InstallContext) -> int:
        total = sum(step.weight for step in self.steps) or 1.0
        started, done = self.clock(), 0.0
        for number, step in enumerate(self.steps, 1):
            self.say(ctx, f"step {step.name} ({number}/{len(self.steps)})")
            ctx.reporter.event("installing", step=step.name, progress=done / total)
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
    steps: Sequence[Step] = STEPS,
    out: TextIO | None = None,
    bundle: Callable[[InstallContext], Path] = logbundle.make_bundle,
) -> int:
    """Run ``steps`` on ``ctx``, logging to ``ctx.log_file`` and the console; 0 or 1."""
    runner = Runner(steps=steps, out=out or sys.stdout, bundle=bundle)
    with install_logging(ctx, runner.out):
        return runner.run(ctx)
