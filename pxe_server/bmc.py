"""A host's BMC, asked to power the host on, off or around and to boot it from the network.

    open_bmc(access) -> Bmc         a client for the BMC ``access`` names (a context manager)
    Bmc.status() -> PowerState
    Bmc.power(action) -> PowerState  on, off (at once), cycle (a host that is off: on)
    Bmc.boot_once_network()          the next boot, once, from the network

Redfish goes through sushy (OpenStack's Redfish client): the service root, the one
ComputerSystem (or the URL's), ``ComputerSystem.Reset`` and ``Boot.BootSourceOverride
Target: Pxe, Enabled: Once``. IPMI goes through pyghmi (IPMI 2.0 over LAN, RMCP+): chassis
control, chassis status and the boot flags (``network``, not persistent); no ipmitool
subprocess. Every call blocks: the server runs them on threads (``bmc_control``).

Every call is bounded: a connect and a read timeout (``BmcAccess.timeout``, 10 s), one
retry of a Redfish request the network lost, a Redfish reply of ``MAX_REPLY`` bytes at
most; IPMI's own retries end within pyghmi's session timeout. Every failure is one
``BmcError`` sentence that names the BMC (its URL, never the password): unreachable,
silent, TLS verification failed (naming --bmc-ca-file), wrong user or password, a reply
that is not Redfish or IPMI, or an action the BMC refused (its own message, cut to
``MAX_MESSAGE`` characters).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from common.protocol.messages import PowerAction, PowerState
from pxe_server.bmc_url import BmcError, BmcUrl

DEFAULT_TIMEOUT = 10.0  # seconds to connect, and to read each reply
MAX_REPLY = 4 * 1024 * 1024  # bytes of one Redfish reply
MAX_MESSAGE = 200  # characters of a BMC's own message quoted in an error
REDFISH_ATTEMPTS = 2  # a request the network lost (a timeout, a reset) is sent once more
REDFISH_RETRY_DELAY = 1  # seconds before it is
IPMI_LOGIN_WAITS = 2  # an IPMI login ends within this many timeouts


def _quiet_libraries() -> None:
    """sushy and pyghmi log what they do and what failed (URLs, retries, "check
    credentials"): our BmcError says it once, in a sentence, and a library's own line is
    never where a secret may slip out."""
    for name in ("sushy", "pyghmi", "urllib3"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class BmcAccess:
    """What it takes to talk to a BMC: its URL, its password (open), how to trust it."""

    url: BmcUrl
    password: str = field(repr=False)
    ca_pem: str | None = None  # Redfish over HTTPS: the CA certificates to verify with
    insecure: bool = False  # Redfish over HTTPS: no verification at all
    timeout: float = DEFAULT_TIMEOUT


class Bmc(Protocol):
    def status(self) -> PowerState: ...

    def power(self, action: PowerAction) -> PowerState: ...

    def boot_once_network(self) -> None: ...


def _cut(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


@contextlib.contextmanager
def open_bmc(access: BmcAccess) -> Iterator[Bmc]:
    """A logged-in client of ``access``'s BMC, logged out afterwards; BmcError if it
    cannot be reached or refuses the login."""
    _quiet_libraries()
    if access.url.redfish:
        with _ca_file(access.ca_pem) as ca_path:
            client = RedfishBmc(access, ca_path)
            try:
                yield client
            finally:
                client.close()
    else:
        ipmi = IpmiBmc(access)
        try:
            yield ipmi
        finally:
            ipmi.close()


@contextlib.contextmanager
def _ca_file(pem: str | None) -> Iterator[str | None]:
    """``pem`` in a temporary file (requests verifies with a path), removed afterwards."""
    if pem is None:
        yield None
        return
    fd, path = tempfile.mkstemp(prefix="netinstall-bmc-ca-", suffix=".pem")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(pem)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


# -- Redfish -------------------------------------------------------------------------------


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    for _ in range(16):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


class RedfishBmc:
    """A Redfish BMC through sushy (basic or session authentication, as the BMC offers)."""

    def __init__(self, access: BmcAccess, ca_path: str | None) -> None:
        import requests  # noqa: PLC0415 - sushy's transport; only where a BMC is used
        import sushy  # noqa: PLC0415
        from sushy import connector as sushy_connector  # noqa: PLC0415

        self.access = access
        self.url = access.url
        verify: bool | str = ca_path if ca_path is not None else not access.insecure
        if verify is False:
            warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        self._sushy: Any = None
        self._system: Any = None
        with self._translated("log in"):
            conn = sushy_connector.Connector(
                access.url.base_url,
                verify=verify,
                server_side_retries=REDFISH_ATTEMPTS,
                server_side_retries_delay=REDFISH_RETRY_DELAY,
                default_request_timeout=access.timeout,
                connect_timeout=access.timeout,
            )
            # Every reply is read to MAX_REPLY bytes at most: the hook runs before requests
            # reads the body (sushy's connector gives no other way to its session).
            conn._session.hooks["response"].append(_bounded)
            self._sushy = sushy.Sushy(
                access.url.base_url,
                username=access.url.user,
                password=access.password,
                connector=conn,
            )
            system = f"/redfish/v1/Systems/{access.url.system}" if access.url.system else None
            self._system = self._sushy.get_system(system)
        self._requests = requests

    def close(self) -> None:
        if self._sushy is not None:
            with contextlib.suppress(Exception):  # a session the BMC has dropped already
                self._sushy._auth.close()
            self._sushy._auth = None

    @contextlib.contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        """Every failure of sushy, requests or the reply as one BmcError sentence."""
        from requests import exceptions as rq  # noqa: PLC0415
        from sushy import exceptions as sx  # noqa: PLC0415

        where = f"the Redfish BMC {self.url}"
        try:
            yield
        except BmcError:
            raise
        except sx.AccessError:
            raise BmcError(
                f"{where} refused the login of {self.url.user!r}: wrong user or password"
            ) from None
        except sx.ResourceNotFoundError:
            what = f"system {self.url.system}" if self.url.system else "the resource asked for"
            raise BmcError(f"{where} has no {what} (404)") from None
        except sx.HTTPError as exc:
            said = _cut(exc.detail or f"HTTP {exc.status_code}")
            raise BmcError(f"{where} refused to {doing}: {said}") from None
        except sx.ConnectionError as exc:
            raise BmcError(_connection_sentence(where, exc, self.access, rq)) from None
        except sx.UnknownDefaultError:
            raise BmcError(
                f"{where} does not manage exactly one system: name it in the URL "
                f"({self.url}/redfish/v1/Systems/ID)"
            ) from None
        except (sx.SushyError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BmcError(
                f"{where} gave a reply that is not Redfish's: {_cut(str(exc))}"
            ) from None

    def status(self) -> PowerState:
        with self._translated("say its power state"):
            self._system.refresh(force=True)
            return _redfish_state(self.url, self._system.power_state)

    def power(self, action: PowerAction) -> PowerState:
        import sushy  # noqa: PLC0415

        if action is PowerAction.STATUS:
            return self.status()
        was = self.status()
        if action is PowerAction.BOOT:
            action = PowerAction.ON if was is PowerState.OFF else PowerAction.CYCLE
        if action is PowerAction.CYCLE and was is PowerState.OFF:
            action = PowerAction.ON
        wanted = {PowerAction.ON: PowerState.ON, PowerAction.OFF: PowerState.OFF}
        if wanted.get(action) is was:
            return was
        reset = {
            PowerAction.ON: sushy.ResetType.ON,
            PowerAction.OFF: sushy.ResetType.FORCE_OFF,
            PowerAction.CYCLE: sushy.ResetType.FORCE_RESTART,
        }[action]
        with self._translated(f"power the host {action.value}"):
            self._system.reset_system(reset)
        return wanted.get(action, PowerState.ON)

    def boot_once_network(self) -> None:
        import sushy  # noqa: PLC0415

        with self._translated("set the next boot to the network"):
            self._system.set_system_boot_options(
                target=sushy.BootSource.PXE, enabled=sushy.BootSourceOverrideEnabled.ONCE
            )


def _bounded(response: Any, *_args: object, **_kwargs: object) -> Any:
    """A requests response hook: the body read now, refused past ``MAX_REPLY`` bytes."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_REPLY:
        response.close()
        raise ValueError(f"a reply of {declared} bytes, more than {MAX_REPLY}")
    body = response.raw.read(MAX_REPLY + 1, decode_content=True)
    if len(body) > MAX_REPLY:
        response.close()
        raise ValueError(f"a reply of more than {MAX_REPLY} bytes")
    response._content = body
    response._content_consumed = True
    return response


def _connection_sentence(where: str, exc: BaseException, access: BmcAccess, rq: Any) -> str:
    for cause in _causes(exc):
        if isinstance(cause, rq.SSLError):
            if access.ca_pem is not None:
                how = "the certificates of --bmc-ca-file do not verify it"
            else:
                how = "give its CA certificate with --bmc-ca-file (or --bmc-insecure)"
            return f"TLS verification of {where} failed: {how}"
        if isinstance(cause, rq.Timeout):
            return f"{where} did not answer within {access.timeout:g} s"
        if isinstance(cause, ValueError) and "more than" in str(cause):
            return f"{where} sent {cause}"
    return f"{where} cannot be reached: {_cut(_reason(exc))}"


def _reason(exc: BaseException) -> str:
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    return "the connection failed"


def _redfish_state(url: BmcUrl, state: object) -> PowerState:
    text = str(getattr(state, "value", state) or "").lower()
    if text in ("on", "poweringoff", "powering off", "paused"):
        return PowerState.ON
    if text in ("off", "poweringon", "powering on"):
        return PowerState.OFF
    raise BmcError(f"the Redfish BMC {url} says the power is {_cut(text)!r}, not On or Off")


# -- IPMI ----------------------------------------------------------------------------------


def _ipmi_login_error(url: BmcUrl, said: str) -> BmcError:
    low = said.lower()
    where = f"the IPMI BMC {url}"
    if "password" in low or "unauthorized" in low or "name" in low or "privilege" in low:
        return BmcError(f"{where} refused the login of {url.user!r}: wrong user or password")
    if "timeout" in low or "failed to initialize" in low or low in ("", "none"):
        return BmcError(f"{where} did not answer (IPMI over UDP port {url.port})")
    return BmcError(f"{where} refused the login: {_cut(said)}")


class IpmiBmc:
    """An IPMI 2.0 BMC through pyghmi (RMCP+), logged in at construction."""

    def __init__(self, access: BmcAccess) -> None:
        self.url = access.url
        self.access = access
        self._command: Any = None
        with self._translated("log in"):
            self._command = self._login()

    def _login(self) -> Any:
        """A logged-in pyghmi Command. The login is pyghmi's asynchronous one, waited for
        here up to ``IPMI_LOGIN_WAITS`` timeouts: pyghmi's own synchronous login goes on
        retrying for minutes with a BMC that ignores an unknown user."""
        from pyghmi.ipmi import command  # noqa: PLC0415 - only where a BMC is used
        from pyghmi.ipmi.private import session  # noqa: PLC0415

        answers: list[dict[str, Any]] = []
        made = command.Command(
            bmc=self.url.address,
            userid=self.url.user,
            password=self.access.password,
            port=self.url.port,
            onlogon=lambda answer, _command: answers.append(answer),
            keepalive=False,
        )
        # pyghmi shares a session among logins with the same credentials by this key, and
        # an asynchronous login leaves its entry behind: the next login would get this
        # session back once it is logged out. Each of ours is its own.
        key = (self.url.address, self.url.user, self.access.password, self.url.port, None)
        deadline = time.monotonic() + IPMI_LOGIN_WAITS * self.access.timeout
        while not answers:
            left = deadline - time.monotonic()
            if left <= 0:
                session.Session.initting_sessions.pop(key, None)
                with contextlib.suppress(Exception):
                    made.ipmi_session._mark_broken()
                raise BmcError(
                    f"the IPMI BMC {self.url} did not log us in within "
                    f"{IPMI_LOGIN_WAITS * self.access.timeout:g} s (an unknown user, or no "
                    f"BMC on UDP port {self.url.port})"
                )
            session.Session.wait_for_rsp(timeout=min(left, 0.25))
        session.Session.initting_sessions.pop(key, None)
        said = answers[0].get("error") if isinstance(answers[0], dict) else "no answer"
        if said is not None:
            raise _ipmi_login_error(self.url, str(said))
        return made

    def close(self) -> None:
        if self._command is not None:
            with contextlib.suppress(Exception):
                self._command.ipmi_session.logout()

    @contextlib.contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        from pyghmi import exceptions as px  # noqa: PLC0415

        where = f"the IPMI BMC {self.url}"
        try:
            yield
        except BmcError:
            raise
        except px.IpmiException as exc:
            said = str(exc)
            low = said.lower()
            if "password" in low or "unauthorized" in low or "username" in low:
                raise BmcError(
                    f"{where} refused the login of {self.url.user!r}: wrong user or password"
                ) from None
            if "timeout" in low or "no longer connected" in low or "timed out" in low:
                raise BmcError(
                    f"{where} did not answer (IPMI over UDP port {self.url.port})"
                ) from None
            raise BmcError(f"{where} refused to {doing}: {_cut(said)}") from None
        except OSError as exc:
            raise BmcError(f"{where} cannot be reached: {_cut(exc.strerror or str(exc))}") from None
        except (ValueError, KeyError, TypeError, IndexError, AssertionError, struct.error) as exc:
            raise BmcError(f"{where} gave a reply that is not IPMI's: {_cut(str(exc))}") from None

    def _answer(self, reply: object, doing: str) -> dict[str, Any]:
        if not isinstance(reply, dict):
            raise BmcError(f"the IPMI BMC {self.url} gave a reply that is not IPMI's")
        if "error" in reply:
            raise BmcError(f"the IPMI BMC {self.url} refused to {doing}: {_cut(reply['error'])}")
        return reply

    def status(self) -> PowerState:
        with self._translated("say its power state"):
            reply = self._answer(self._command.get_power(), "say its power state")
            state = str(reply.get("powerstate", ""))
        if state not in ("on", "off"):
            raise BmcError(f"the IPMI BMC {self.url} says the power is {_cut(state)!r}")
        return PowerState(state)

    def power(self, action: PowerAction) -> PowerState:
        if action is PowerAction.STATUS:
            return self.status()
        was = self.status()
        if action is PowerAction.CYCLE and was is PowerState.OFF:
            action = PowerAction.ON
        which = {
            PowerAction.ON: "on",
            PowerAction.OFF: "off",
            PowerAction.CYCLE: "reset",
            PowerAction.BOOT: "boot",
        }[action]
        doing = f"power the host {action.value}"
        with self._translated(doing):
            self._answer(self._command.set_power(which, wait=False), doing)
        return PowerState.OFF if action is PowerAction.OFF else PowerState.ON

    def boot_once_network(self) -> None:
        doing = "set the next boot to the network"
        with self._translated(doing):
            self._answer(self._command.set_bootdev("network", persist=False), doing)
