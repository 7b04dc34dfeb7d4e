"""The errors of the dom0 services, on the project's error base (``common.errors``).

``ConfigError`` (a bad configuration file, a device the SR must not take) is input an
operator fixes (``InputError``); the others are the environment failing. A failed
command raises ``common.errors.CommandError`` (``common.process.run``). Messages
never carry a token or a credential.
"""

from __future__ import annotations

from common.errors import InputError, NetinstallError


class ConfigError(InputError):
    """A configuration file or setting that cannot be used; names the bad key or file."""

    exit_code = 2


class SrRefused(ConfigError):
    """The local SR cannot be created without destroying something; nothing was touched."""


class NetworkError(NetinstallError):
    """The provisioning server could not be reached (connection, DNS, timeout)."""


class ServerError(NetinstallError):
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
