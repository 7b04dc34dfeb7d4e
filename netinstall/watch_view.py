"""How a watch shows its hosts (``netinstall.watch``): rich progress bars on a terminal,
one plain line per change otherwise, one JSON object per change with ``--json``.

rich draws the bars (a bar, a percent and an elapsed time per host, redrawn in place
several times a second, lines printed above them): what a terminal can do and a log
file cannot, so anything that is not a terminal gets the plain lines instead.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from common.protocol.messages import State
from netinstall.watch import HostView

# Each state's colour on the terminal.
STYLES = {
    State.PENDING: "dim",
    State.SIGNALLED: "cyan",
    State.INSTALLING: "yellow",
    State.INSTALLED: "blue",
    State.RUNNING: "green",
    State.FAILED: "bold red",
}


def on_terminal() -> bool:
    """Whether standard output is a terminal (bars), not a pipe or a file (lines)."""
    return sys.stdout.isatty()


class PlainView:
    """One line per change: ``[  42 s] MAC (name): installing partition 35%: message``."""

    def __init__(self, echo: Callable[[str], None] = click.echo) -> None:
        self.echo = echo

    def change(self, host: HostView, elapsed: float) -> None:
        message = f": {host.message}" if host.message else ""
        self.echo(f"[{elapsed:6.0f} s] {host.label}: {host.status}{message}")

    def close(self) -> None:
        pass


class JsonView:
    """One JSON object per change (JSON lines), for programs."""

    def __init__(
        self, echo: Callable[[str], None] = click.echo, clock: Callable[[], float] = time.time
    ) -> None:
        self.echo = echo
        self.clock = clock

    def change(self, host: HostView, elapsed: float) -> None:
        document = {
            "time": round(self.clock(), 3),
            "elapsed": round(elapsed, 1),
            "mac": host.mac,
            "name": host.name,
            "state": host.state.value,
            "step": host.step,
            "progress": host.progress,
            "message": host.message,
        }
        self.echo(json.dumps(document))

    def close(self) -> None:
        pass


class BarsView:
    """A rich progress bar per host: its name, state and step, how far, the time since
    the watch began; stopped (its time kept) once the host runs or failed. ``say`` prints
    a line above the bars (a job's log, while ``pool upgrade`` follows it)."""

    def __init__(self, console: Console | None = None, *, auto_refresh: bool = True) -> None:
        self.console = console or Console()
        self.progress: Progress = Progress(
            TextColumn("{task.fields[label]}"),
            TextColumn("{task.fields[status]}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=self.console,
            auto_refresh=auto_refresh,
        )
        self.tasks: dict[str, TaskID] = {}
        self.stopped: set[str] = set()  # the hosts whose time stands (running or failed)
        self.progress.start()

    def change(self, host: HostView, elapsed: float) -> None:
        style = STYLES[host.state]
        status = f"[{style}]{escape(host.phase)}[/]"  # the bar's column has the percent
        if host.state is State.FAILED and host.message:
            status += f" [red]{escape(host.message)}[/]"
        task = self.tasks.get(host.mac)
        if task is None:
            task = self.progress.add_task(
                host.label, total=100, label=escape(host.label), status=status
            )
            self.tasks[host.mac] = task
        elif host.mac in self.stopped and not host.done:
            self.progress.reset(task, start=True)  # a host that ran has new work: time anew
            self.stopped.discard(host.mac)
        self.progress.update(task, completed=host.fraction * 100, status=status)
        if host.done:
            self.progress.stop_task(task)
            self.stopped.add(host.mac)
        self.progress.refresh()

    def say(self, line: str) -> None:
        self.progress.console.print(line, markup=False, highlight=False)

    def close(self) -> None:
        self.progress.stop()
