"""The step walker: numbers the run's steps, reports their progress, times them, and
turns a failure into ``StepFailed`` with its one sentence.

Each step is a ``with walker.step(name):`` block in a flow of
``installer_core.install``; the walker knows the run's list of step names and
weights (``expect``) and prints to the console (the serial line the test harness
reads)::

    netinstall: step <name> (<n>/<total>)
    netinstall: step <name> done in <seconds>s
    netinstall: step <name> FAILED after <seconds>s: <reason>

Before each step it reports ``installing`` with the step's name and the share of
the work done so far (by weight, 0..1; never back when the list grows).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from common.errors import InputError, NetinstallError
from installer_core.logbundle import Secrets

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

Listed = tuple[tuple[str, float], ...]  # the run's steps: (name, weight) in order


class Reporter(Protocol):
    """Where step progress goes: the server (SPEC §9) or nowhere."""

    @property
    def install_key(self) -> str | None:
        """The key this install enrols with the server (None: no server)."""

    @property
    def update_key(self) -> str | None:
        """The server's update key its enrolment handed out (None: none, or no server)."""

    def enrol(self, session: requests.Session) -> None: ...

    def event(
        self,
        state: str,
        *,
        step: str | None = None,
        progress: float | None = None,
        message: str | None = None,
    ) -> None: ...

    def upload_logs(self, bundle: Path) -> None: ...


class StepFailed(NetinstallError):
    """A step failed: its name and the reason in one sentence, secrets scrubbed.
    The underlying error is its ``__cause__``."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"step {step} failed: {reason}")
        self.step = step
        self.reason = reason


def failure_reason(exc: BaseException) -> str:
    """One sentence: the input's problems, our error's message, or an internal error."""
    if isinstance(exc, InputError):
        return "; ".join(exc.problems)
    if isinstance(exc, NetinstallError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


@dataclass
class StepWalker:
    """Walks the run's steps in the order its flow enters them."""

    out: TextIO
    reporter: Reporter
    secrets: Secrets
    steps: Listed = ()
    clock: Callable[[], float] = time.monotonic
    _number: int = field(default=0, init=False)  # steps entered so far
    _done: float = field(default=0.0, init=False)  # their weight, when they finished
    _progress: float = field(default=0.0, init=False)

    def expect(self, steps: Listed) -> None:
        """The run's whole list from now on (the mode's, once the plan is known); the
        steps walked so far must be its first ones."""
        walked, listed = self.steps[: self._number], steps[: self._number]
        if [name for name, _ in walked] != [name for name, _ in listed]:
            raise NetinstallError(f"internal error: the run's steps {listed} follow {walked}")
        self.steps = steps

    def say(self, text: str) -> None:
        """A console line (``netinstall: ...``), also in the install log; secrets scrubbed."""
        text = self.secrets.scrub(text)
        print(f"netinstall: {text}", file=self.out, flush=True)
        log.info("%s", text, extra={"said": True})

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """One step: announced, reported and timed; its failure raised as ``StepFailed``."""
        names = [listed for listed, _ in self.steps]
        total = sum(weight for _, weight in self.steps) or 1.0
        self._progress = max(self._progress, self._done / total)
        self._number += 1
        self.say(f"step {name} ({self._number}/{len(self.steps)})")
        began = self.clock()
        try:
            # In the try: a server that refuses this install's key fails the step.
            self.reporter.event("installing", step=name, progress=self._progress)
            _check_listed(name, self._number, names)
            yield
        except Exception as exc:
            reason = self.secrets.scrub(failure_reason(exc))
            traceback = None if isinstance(exc, InputError) else exc
            log.exception("step %s failed: %s", name, reason, exc_info=traceback)
            self.say(f"step {name} FAILED after {self.clock() - began:.1f}s: {reason}")
            raise StepFailed(name, reason) from exc
        self.say(f"step {name} done in {self.clock() - began:.1f}s")
        self._done += self.steps[self._number - 1][1]


def _check_listed(name: str, number: int, names: Sequence[str]) -> None:
    """A flow that strays from its list is our bug: said as the step's failure."""
    if names[number - 1 : number] != [name]:
        raise NetinstallError(f"internal error: step {name} is not step {number} of {names}")


def listed(names: Sequence[str], weights: dict[str, float]) -> Listed:
    """Step names with their weights."""
    return tuple((name, weights[name]) for name in names)
