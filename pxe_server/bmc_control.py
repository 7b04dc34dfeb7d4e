"""A host's BMC from the operator's request to the BMC's answer, for the API and the CLI.

    stored_bmc(registry, mac, spec) -> StoredBmc   the spec checked, its password sealed
    set_host_bmc(registry, mac, spec | None)       stored (or forgotten)
    power(registry, mac, request) -> PowerReply    the BMC asked, each step reported
    power_on_for_work(registry, mac) -> (Powered, str)  on if off, for agent work (jobs, console)
    powered_for_work(registry, mac) -> str | None      the same for the API's upgrade, restore

The API's handlers (``http_bmc``) and the CLI's local fleet (``netinstall.fleet``) call
these same functions. The password is sealed with the server directory's ``bmc-key``
(``secrets.BmcKey``), made at the first BMC stored if the directory has none and the
registry holds no password sealed with another; it is opened only to log in to the BMC,
and is never logged, shown or returned. Every function blocks (the registry, the BMC):
the server runs them on threads.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING

from common.errors import InputError
from common.protocol.messages import BmcSpec, PowerAction, PowerReply, PowerRequest, PowerState
from pxe_server import segments
from pxe_server.bmc import DEFAULT_TIMEOUT, BmcAccess, open_bmc
from pxe_server.bmc_url import BmcKind, parse_bmc_url
from pxe_server.registry_bmc import StoredBmc
from pxe_server.secrets import BMC_KEY_FILE, BmcKey, BmcKeyError

if TYPE_CHECKING:
    from pxe_server.registry import Registry

log = logging.getLogger("netinstall.bmc")

MAX_CA_CERTIFICATES = 16  # certificates in one --bmc-ca-file


def _check_ca(pem: str) -> None:
    from cryptography import x509  # noqa: PLC0415

    try:
        found = x509.load_pem_x509_certificates(pem.encode("ascii", errors="replace"))
    except ValueError:
        raise InputError("--bmc-ca-file holds no PEM certificate") from None
    if len(found) > MAX_CA_CERTIFICATES:
        raise InputError(f"--bmc-ca-file holds more than {MAX_CA_CERTIFICATES} certificates")


def bmc_key(registry: Registry) -> BmcKey:
    """The server directory's BMC key; made if there is none and no stored password was
    sealed with another (a second server must have the first one's copy instead)."""
    try:
        return BmcKey.load(registry.directory)
    except BmcKeyError:
        if registry.bmc_key_ids() or (registry.directory / BMC_KEY_FILE).exists():
            raise
    return BmcKey.load(registry.directory, create=True)


def stored_bmc(registry: Registry, mac: str, spec: BmcSpec) -> StoredBmc:
    """``spec`` for host ``mac``: its URL parsed, its CA checked, its password sealed;
    InputError, one sentence, for a bad one (nothing stored)."""
    url = parse_bmc_url(spec.url)
    if not spec.password:
        raise InputError(f"the BMC password of {mac} is empty")
    if url.kind is not BmcKind.REDFISH and (spec.ca_pem is not None or spec.insecure):
        option = "--bmc-ca-file" if spec.ca_pem is not None else "--bmc-insecure"
        raise InputError(f"{option} is for a redfish:// BMC (HTTPS), not {url.kind.value}://")
    if spec.ca_pem is not None and spec.insecure:
        raise InputError("--bmc-ca-file and --bmc-insecure exclude each other: give one")
    if spec.ca_pem is not None:
        _check_ca(spec.ca_pem)
    key = bmc_key(registry)
    sealed = key.seal(mac, spec.password)
    return StoredBmc(mac, url, sealed, key.key_id, spec.ca_pem, spec.insecure)


def set_host_bmc(registry: Registry, mac: str, spec: BmcSpec | None) -> None:
    """Store ``spec`` as ``mac``'s BMC (None: forget it)."""
    if spec is None:
        if registry.clear_bmc(mac):
            log.info("host %s: its BMC was removed", mac)
        return
    from pxe_server.registry import UnknownHost  # noqa: PLC0415 - SQLAlchemy's import

    bmc = stored_bmc(registry, mac, spec)
    if not registry.set_bmc(bmc):
        raise UnknownHost(f"no host {mac} in the registry")
    log.info("host %s: BMC %s stored (its password sealed)", mac, bmc.url)


def access(registry: Registry, mac: str, timeout: float = DEFAULT_TIMEOUT) -> BmcAccess:
    """What it takes to log in to ``mac``'s BMC: its password opened with this server's
    key. InputError if the host has no BMC; BmcKeyError if this server's key differs."""
    bmc = registry.bmc(mac)
    if bmc is None:
        raise InputError(
            f"host {mac} has no BMC; give it one with "
            f"`netinstall host set {mac} --bmc URL --bmc-password-file FILE`"
        )
    password = BmcKey.load(registry.directory).unseal(mac, bmc.password_sealed, bmc.key_id)
    return BmcAccess(bmc.url, password, bmc.ca_pem, bmc.insecure, timeout)


def power(
    registry: Registry, mac: str, request: PowerRequest, timeout: float = DEFAULT_TIMEOUT
) -> PowerReply:
    """Ask ``mac``'s BMC for ``request``: the next boot from the network first if asked,
    then the action; what it did, step by step, and the power it says now. With several
    servers on the registry, the host's segment server asks it (``segments``: this one
    waits for its answer, and says when that server does not run or answer)."""
    from pxe_server.registry import UnknownHost  # noqa: PLC0415 - SQLAlchemy's import

    if registry.get_host(mac) is None:
        raise UnknownHost(f"no host {mac} in the registry")
    server = segments.power_route(registry, mac)
    if server is not None:
        return segments.ask_segment_server(registry, mac, request, server)
    return power_here(registry, mac, request, timeout)


def power_here(
    registry: Registry, mac: str, request: PowerRequest, timeout: float = DEFAULT_TIMEOUT
) -> PowerReply:
    """``power`` by this server itself: its BMC asked from here."""
    from pxe_server.registry import UnknownHost  # noqa: PLC0415 - SQLAlchemy's import

    if registry.get_host(mac) is None:
        raise UnknownHost(f"no host {mac} in the registry")
    how = access(registry, mac, timeout)
    steps: list[str] = []
    with open_bmc(how) as bmc:
        was = bmc.status()
        if request.network_once:
            bmc.boot_once_network()
            steps.append("next boot set to the network, once")
        state = was
        if request.action is not PowerAction.STATUS:
            state = bmc.power(request.action)
            steps.append(_step(request.action, was, state))
    log.info("host %s: BMC %s: %s", mac, how.url, "; ".join(steps) or f"power is {was}")
    return PowerReply(mac, state, was, tuple(steps))


class Powered(enum.StrEnum):
    """What ``power_on_for_work`` found: the host was off and is on, was on, or its BMC
    failed (the work stands)."""

    WAS_OFF = "was-off"
    ON = "on"
    FAILED = "failed"


def power_on_for_work(registry: Registry, mac: str) -> tuple[Powered, str]:
    """Agent work was given to ``mac``, which has a BMC: power it on if it is off, so that
    its agent checks in. What happened, and in one sentence; a BMC's failure is said, not
    raised (the host may be on, and the work stands)."""
    try:
        reply = power(registry, mac, PowerRequest(PowerAction.ON))
    except InputError as exc:
        return Powered.FAILED, f"{mac}: its BMC could not power it on: {' '.join(exc.problems)}"
    via = "" if reply.via is None else f" (through server {reply.via}, on its segment)"
    if reply.was is PowerState.OFF:
        said = f"{mac} was off: powered on through its BMC for its agent to check in{via}"
        return Powered.WAS_OFF, said
    return Powered.ON, f"{mac} is on (its BMC says so){via}"


def powered_for_work(registry: Registry, mac: str) -> str | None:
    """``power_on_for_work`` for agent work an operator assigned (the API's upgrade and
    restore, the CLI on the server directory): what happened, one sentence (a failure
    logged too); None for a host without a BMC."""
    if registry.bmc(mac) is None:
        return None
    powered, said = power_on_for_work(registry, mac)
    if powered is Powered.FAILED:
        log.warning("%s", said)
    return said


def _step(action: PowerAction, was: PowerState, now: PowerState) -> str:
    if action is PowerAction.OFF:
        return "was off already" if was is PowerState.OFF else "powered off"
    if was is PowerState.OFF:
        return "was off: powered on"
    if action is PowerAction.ON:
        return "was on already"
    return f"was on: power cycled ({now.value} now)"
