"""The errors of the dom0 services: "your input is wrong" kept apart from failures.

``ConfigError`` (a bad configuration file, a device the SR must not take) is
something an operator fixes; the others are the environment failing. Messages
never carry a token or a credential.
"""

from __future__ import annotations

from collections.abc import Sequence


class Dom0Error(Exception):
    """Base of every error the dom0 services raise on purpose."""

    exit_code = 1


class ConfigError(Dom0Error):
    """A configuration file or setting that cannot be used; names the bad key or file."""

    exit_code = 2


class SrRefused(ConfigError):
    """The local SR cannot be created without destroying something; nothing was touched."""


class CommandError(Dom0Error):
    """An external command failed; carries everything needed to diagnose it."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        lines = stderr.strip().splitlines()
        detail = lines[-1] if lines else "no output on stderr"
        super().__init__(f"{' '.join(self.argv)} exited with status {returncode}: {detail}")


class NetworkError(Dom0Error):
    """The provisioning server could not be reached (connection, DNS, timeout)."""


class ServerError(Dom0Error):
    """The server answered, but not with what the protocol promises."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)

    @property
    def transient(self) -> bool:
        """A 5xx reply: the server may answer properly if asked again."""
        return self.status is not None and self.status >= 500


class Unauthorized(ServerError):
    """401: the token or credential was refused (wrong, used up or revoked).

    Its own exit code, so that systemd does not restart a service that cannot
    get further without an operator (``RestartPreventExitStatus=3``).
    """

    exit_code = 3
