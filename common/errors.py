"""The shared error base. A leaf module: it imports nothing of ours.

Two families, kept apart on purpose:

* ``InputError``: the user's input is wrong (an answer file, a boot parameter,
  a request). The CLI prints its message, one sentence per problem, and exits
  with ``exit_code``; never a traceback.
* Everything else (``NetinstallError`` and plain exceptions) is our bug or the
  environment's failure and is reported as such.
"""

from __future__ import annotations

from collections.abc import Sequence


class NetinstallError(Exception):
    """Base of every error netinstall raises on purpose."""

    exit_code = 1


class InputError(NetinstallError):
    """Input the user can fix. ``problems`` holds one sentence per problem."""

    exit_code = 2

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        if not self.problems:
            raise ValueError("an InputError needs at least one problem")
        super().__init__("\n".join(self.problems))


class AnswerFileError(InputError):
    """An answer file that cannot be used; every problem found is listed."""


class BootArgsError(InputError):
    """A malformed installer boot command line."""


class PlanError(InputError):
    """A partition plan that cannot work on this disk; nothing was written."""


class SourceError(NetinstallError):
    """A source (repository, answer file URL, script) could not be read."""


class CommandError(NetinstallError):
    """An external command failed; carries everything needed to diagnose it."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no output on stderr"
        super().__init__(f"{argv[0]} exited with status {returncode}: {detail}")
