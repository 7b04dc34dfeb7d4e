"""The registry's host lifecycle: what hosts report and what the server hands them
(mixed into ``registry.Registry``): reported states and the answer file's milestone,
progress queued, an install config's hand-out (signalled), the installer's enrolment,
new work (rearm, upgrade, restore) and the agent's check-ins.

Every write here is one transaction on the registry's writer (``Registry._write``) that
locks the host's row first; the rules of the host's states are ``model``'s
(``transition_allowed``), and each write leaves an event whose secrets are redacted
(``Registry._log``)."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import replace

from sqlalchemy import Connection, bindparam, func, select, update

from common.errors import InputError
from common.protocol.messages import ANSWER_FILE_STEP, FIRST_BOOT_STEPS
from pxe_server.checkin import OFFERED, Reported, apply_checkin, reported_state
from pxe_server.model import (
    AGENT_WORK,
    NOT_ENROLLED,
    REPORTABLE,
    Host,
    RebootPolicy,
    State,
    Work,
    awaiting_reboot,
    install_done,
    normalise_mac,
    reported_from,
    transition_allowed,
)
from pxe_server.registry_base import SETTING, RegistryBase, once_more_on_conflict
from pxe_server.registry_input import choice, progress_of
from pxe_server.registry_progress import Progress
from pxe_server.secrets import Purpose, new_token
from pxe_server.store.tables import events, hosts

log = logging.getLogger("netinstall.registry")

DEFAULT_TOKEN_TTL = 24 * 3600  # seconds an install token enrols, from its first hand-out
TOKEN_TTL_SETTING = "install_token_ttl"  # noqa: S105 - a setting's name
CHECKIN_INTERVAL = 300  # seconds between agent check-ins, handed out with the credential


class EnrolRefused(InputError):
    """An enrolment the registry refuses: ``status`` 401 (dead or expired token) or 409
    (another installer holds the enrolment: a conflict, recorded for the operator)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TransitionRefused(InputError):
    """An event that would move a host's state backwards or out of ``failed``."""


def reportable(state: State | str) -> State:
    """``state`` as an event may report it; InputError otherwise."""
    try:
        new = State(state)
    except ValueError:
        raise InputError(f"unknown state {state!r}") from None
    if new not in REPORTABLE:
        names = ", ".join(s.value for s in REPORTABLE)
        raise InputError(f"state {new.value!r} cannot be reported; expected one of {names}")
    return new


def check_transition(host: Host, new: State) -> None:
    """TransitionRefused unless an event may move ``host`` to ``new``."""
    if not transition_allowed(reported_from(host), new):
        raise TransitionRefused(
            f"host {host.mac} is {host.state.value}; it cannot become {new.value} "
            "(rearm it for new work)"
        )


def first_boot_applies(host: Host, new: State, step: str | None) -> bool:
    """Whether a report applies to ``host`` as far as first boot's milestones go: those
    (``installed`` with a ``FIRST_BOOT_STEPS`` step) annotate an ``installed`` host and
    never move one, so any other host (installing, awaiting its reboot, running, failed)
    ignores them. Every other report applies (the transition rules then judge it)."""
    if new is not State.INSTALLED or step not in FIRST_BOOT_STEPS:
        return True
    return host.state is State.INSTALLED and not awaiting_reboot(host)


def _noted(at: float | None, host: Host) -> bool:
    """Whether an "answer file fetched" event at ``at`` (None: none) is of ``host``'s
    current install: made since its key was enrolled."""
    return at is not None and host.enrolled_at is not None and float(at) >= host.enrolled_at


def _new_work(
    old: Host,
    work: Work,
    *,
    netboot_armed: bool,
    assigned_version: str | None,
    reboot_policy: RebootPolicy = RebootPolicy.AUTO,
) -> Host:
    """``old`` given new work: state pending, step cleared, a new install token."""
    return replace(
        old,
        state=State.PENDING,
        step=None,
        progress=None,
        token=new_token(),
        work=work,
        netboot_armed=netboot_armed,
        assigned_version=assigned_version,
        reboot_policy=reboot_policy,
        **NOT_ENROLLED,
    )


def _when(epoch: float | None) -> str:
    """``epoch`` as an ISO UTC time for messages."""
    if epoch is None:
        return "an unknown time"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def issue_ticket(host: Host, now: float, ttl: int, *, renew: bool = False) -> Host:
    """``host`` after its install token was handed to one of its boots (an install
    config fetched while armed, agent work in a check-in reply): the ticket is issued
    now, and expires ``ttl`` seconds after its first hand-out (after this one, with
    ``renew``)."""
    if not host.token:
        return host
    expires = host.token_expires
    if expires is None or renew:
        expires = now + ttl
    return replace(host, ticket_issued_at=now, token_expires=expires)


_ARMED_AT = (
    select(hosts.c.mac)
    .where(
        hosts.c.mac == bindparam("mac"),
        hosts.c.revision == bindparam("revision"),
        hosts.c.netboot_armed,
        hosts.c.token_hash.is_not(None),
    )
    .with_for_update()
)
_SIGNALLED = (
    update(hosts)
    .where(
        hosts.c.mac == bindparam("where_mac"),
        hosts.c.revision == bindparam("seen_revision"),
        hosts.c.netboot_armed,
        hosts.c.token_hash.is_not(None),
    )
    .values(
        ticket_issued_at=bindparam("now"),
        token_expires=func.coalesce(hosts.c.token_expires, bindparam("expires")),
        revision=bindparam("new_revision"),
    )
    .returning(hosts.c.token_expires)
)
_SIGNALLED_PENDING = _SIGNALLED.values(state=State.SIGNALLED.value, step=None, progress=None)
_ROUTINE_CHECKIN = (
    update(hosts)
    .where(
        hosts.c.mac == bindparam("where_mac"),
        hosts.c.revision == bindparam("seen_revision"),
        hosts.c.running_version == bindparam("version"),
        hosts.c.install_key_hash.is_(None),
        hosts.c.last_checkin.is_not(None),
    )
    .values(last_checkin=bindparam("now"))
)
_ANSWER_FILE_NOTED = select(func.max(events.c.time)).where(
    events.c.mac == bindparam("mac"), events.c.step == ANSWER_FILE_STEP
)
ANSWER_FILE_FETCHED = "answer file fetched"


class Reports(RegistryBase):
    """What hosts report and what the server hands them (see the module)."""

    @once_more_on_conflict
    def record_event(
        self,
        mac: str,
        state: State | str,
        *,
        step: str | None = None,
        progress: float | None = None,
        message: str | None = None,
        facts: Mapping[str, object] | None = None,
        by_install_key: bool = False,
    ) -> tuple[Host, dict[str, object]]:
        """Apply a reported event; the host after it and the reply body for the client.

        Repeating the current state keeps step/progress that are not given; a new
        state replaces them. ``installed``/``failed`` disarm netboot. The first
        ``running`` kills the install token and hands out the agent credential; a
        ``running`` again ``by_install_key`` before the agent's first check-in hands out a
        new one (first boot lost the reply: a power cut before it saved it).
        """
        mac = normalise_mac(mac)
        new = reportable(state)
        progress = progress_of(progress)
        reply: dict[str, object] = {}
        with self._write() as conn:
            old = self._load(conn, mac)
            if not first_boot_applies(old, new, step):
                log.info("host %s: first boot's %s ignored: the host is %s", mac, step, old.state)
                return old, reply
            current = reported_from(old)
            check_transition(old, new)
            if new is current:
                step = old.step if step is None else step
                progress = old.progress if progress is None else progress
            host = replace(old, state=new, step=step, progress=progress)
            if new in (State.INSTALLED, State.FAILED):
                host = replace(host, netboot_armed=False)
            if new is State.RUNNING:
                host = replace(host, work=None)
                if facts is not None:
                    host = replace(host, facts=dict(facts))
                version = (facts or {}).get("payload_version")
                if isinstance(version, str) and version:
                    host = replace(host, running_version=version)
                # The first running hands out the credential; a running again with the
                # install key, before the agent ever checked in, means first boot lost
                # the reply (a power cut before it saved it): a new one replaces it.
                again = by_install_key and old.install_key_hash is not None
                if old.state is not State.RUNNING or again:
                    credential = new_token()  # handed out here once; only its hash is kept
                    digest = self._keys.hash(Purpose.AGENT_CREDENTIAL, credential)
                    host = replace(install_done(host), agent_credential_hash=digest)
                    reply = {"agent_credential": credential, "checkin_interval": CHECKIN_INTERVAL}
            host = self._store_host(conn, host, old, logged=True, message=message, secrets_of=old)
        return host, reply

    def answer_file_noted(self, host: Host) -> bool:
        """Whether the install ``host`` is (its enrolled key) already has its "answer file
        fetched" event: one indexed read on this thread's connection, which never waits."""
        return _noted(self._scalar(self._reader(), _ANSWER_FILE_NOTED, {"mac": host.mac}), host)

    @once_more_on_conflict
    def note_answer_file(self, seen: Host) -> bool:
        """Record that the installer holding ``seen``'s enrolled key fetched its answer
        file: one event (state as reported from, step ``answer-file``), once per install.
        Nothing is written when the install already has it, or when another key has been
        enrolled since ``seen`` was read. True when the event was recorded."""
        with self._write() as conn:
            host = self._load(conn, seen.mac)
            if host.install_key_hash is None or host.install_key_hash != seen.install_key_hash:
                return False
            if _noted(self._scalar(conn, _ANSWER_FILE_NOTED, {"mac": host.mac}), host):
                return False
            state = reported_from(host)
            self._insert_event(
                conn,
                host.mac,
                state=state,
                step=ANSWER_FILE_STEP,
                progress=None,
                message=ANSWER_FILE_FETCHED,
            )
        return True

    def queue_progress(
        self,
        seen: Host,
        *,
        step: str | None = None,
        progress: float | None = None,
        message: str | None = None,
    ) -> bool:
        """A progress event (``installing`` again, with its step and percent) of ``seen``,
        the host as this request read it, queued rather than committed (``ProgressQueue``:
        applied within ``PROGRESS_DELAY`` s, before any other write, at close). Never
        blocks; True when the queue is full and the caller must ``flush_progress()``.
        TransitionRefused unless ``seen`` is installing."""
        if reported_from(seen) is not State.INSTALLING:
            check_transition(seen, State.INSTALLING)
            raise TransitionRefused(f"host {seen.mac} is not installing; report installing")
        redacted = None if message is None else self._redacted(message, seen, None)
        return self.progress.put(Progress(seen.mac, step, progress_of(progress), redacted))

    @once_more_on_conflict
    def flush_progress(self) -> None:
        """Apply the queued progress events now (one transaction)."""
        with self._write():
            pass

    def token_ttl(self) -> int:
        """Seconds an install token enrols, counted from its first hand-out to a boot."""
        return self._token_ttl(self._reader())

    def _token_ttl(self, conn: Connection) -> int:
        found = self._scalar(conn, SETTING, {"key": TOKEN_TTL_SETTING})
        return int(found) if found is not None else DEFAULT_TOKEN_TTL

    @once_more_on_conflict
    def mark_signalled(self, mac: str, seen: Host | None = None) -> Host | None:
        """An install config was fetched: pending -> signalled, and the install token was
        handed to a boot of the host (a later enrolment replaces the key; the token's
        lifetime starts at the first hand-out).

        With ``seen`` (the host as the request read it, its config rendered from that):
        the host is not read again; the write applies only if the host's revision is
        still ``seen``'s, else nothing is written and the result is None (the config was
        rendered from a state that is gone: render it again)."""
        mac = normalise_mac(mac)
        with self._write() as conn:
            ttl = self._token_ttl(conn)
            if seen is not None:
                return self._signalled(conn, seen, ttl)
            host = old = self._load(conn, mac)
            if host.netboot_armed:
                host = issue_ticket(host, time.time(), ttl)
            logged = host.state is State.PENDING
            if logged:
                host = replace(host, state=State.SIGNALLED, step=None, progress=None)
            if host.netboot_armed or logged:
                message = "fetched its boot configuration"
                host = self._store_host(conn, host, old, logged=logged, message=message)
        return host

    def _signalled(self, conn: Connection, seen: Host, ttl: int) -> Host | None:
        """``mark_signalled`` of an armed host read as ``seen``: only the columns it
        changes, and only at ``seen``'s revision (no other write changed what it read).
        A new revision (pending -> signalled) is taken after the host's row is locked."""
        now = time.time()
        pending = seen.state is State.PENDING
        values: dict[str, object] = {
            "where_mac": seen.mac,
            "seen_revision": seen.revision,
            "now": now,
            "expires": now + ttl,
            "new_revision": seen.revision,
        }
        statement = _SIGNALLED
        if pending:
            armed = self._first(conn, _ARMED_AT, {"mac": seen.mac, "revision": seen.revision})
            if armed is None:
                return None
            values["new_revision"] = self._next_revision()
            statement = _SIGNALLED_PENDING
        done = self._first(conn, statement, values)
        if done is None:
            return None
        revision = int(values["new_revision"])  # type: ignore[call-overload]
        host = replace(seen, ticket_issued_at=now, token_expires=done[0], revision=revision)
        if pending:
            host = replace(host, state=State.SIGNALLED, step=None, progress=None)
            self._log(conn, host, "fetched its boot configuration", None)
        return host

    @once_more_on_conflict
    def enrol(self, mac: str, token: str, key: str, address: str) -> tuple[Host, str]:
        """Enrol the installer ``key`` with the host's install ``token`` (docs/protocol.md,
        "Install tokens"); the host and "new", "again" or "replaced".

        The first key is taken; the same key again is a retry. Another key replaces it
        only after the token was handed to a new boot of the host since (a power cut, a
        retry: the old key is retired); from another address that is also recorded as a
        conflict. Without a new boot it is refused (409) and recorded as a conflict, never
        silent. A dead or expired token: 401.
        """
        mac = normalise_mac(mac)
        now = time.time()
        digest = self._keys.hash(Purpose.INSTALL_KEY, key)
        refused: EnrolRefused | None = None
        with self._write() as conn:
            host = loaded = self._load(conn, mac)
            if not host.token or not hmac.compare_digest(host.token.encode(), token.encode()):
                raise EnrolRefused(401, f"wrong or dead install token for host {mac}")
            if host.token_expires is not None and now > host.token_expires:
                raise EnrolRefused(
                    401,
                    f"the install token of host {mac} expired at {_when(host.token_expires)}; "
                    f"rearm the host (`netinstall host rearm {mac}`) for a new one",
                )
            if host.install_key_hash == digest:
                return host, "again"
            outcome, message = "new", f"installer enrolled from {address}"
            if host.install_key_hash is not None:
                earlier = f"the key enrolled from {host.enrolled_from} at {_when(host.enrolled_at)}"
                fresh_boot = (host.ticket_issued_at or 0) > (host.enrolled_at or 0)
                if not fresh_boot:
                    conflict = (
                        f"{_when(now)}: an installer at {address} presented the install token "
                        f"while {earlier} is live; refused"
                    )
                    host = self._store_host(
                        conn,
                        replace(host, conflict=conflict),
                        loaded,
                        logged=True,
                        message=f"enrolment refused: {conflict}",
                    )
                    log.warning("host %s: %s", mac, conflict)
                    refused = EnrolRefused(
                        409,
                        f"host {mac} has an installer enrolled already and was not booted "
                        "since; the operator is told",
                    )
                else:
                    outcome = "replaced"
                    message = f"a new boot enrolled from {address}; {earlier} is retired"
                    if address != host.enrolled_from:
                        conflict = f"{_when(now)}: {message} (another address)"
                        host = replace(host, conflict=conflict)
                        log.warning("host %s: %s", mac, conflict)
            if refused is None:
                host = replace(
                    host, install_key_hash=digest, enrolled_from=address, enrolled_at=now
                )
                host = self._store_host(conn, host, loaded, logged=True, message=message)
        if refused is not None:
            raise refused
        return host, outcome

    @once_more_on_conflict
    def rearm(self, mac: str) -> Host:
        """New network-install work: state pending, netboot armed, a new install token.

        The agent credential (if any) stays valid until the new system reports running,
        unless the host had an enrolment conflict (then it is revoked at once).
        """
        mac = normalise_mac(mac)
        with self._write() as conn:
            old = self._load(conn, mac)
            host = _new_work(
                old,
                Work.INSTALL,
                netboot_armed=True,
                assigned_version=self._assigned_version(conn, old.profile),
            )
            if old.conflict:  # whoever won that enrolment may hold the agent credential
                host = replace(host, agent_credential_hash=None)
            host = self._store_host(
                conn, host, old, logged=True, message="rearmed: new install work", secrets_of=old
            )
        return host

    @once_more_on_conflict
    def assign_work(
        self,
        mac: str,
        work: Work | str,
        *,
        version: str | None = None,
        reboot: RebootPolicy | str = RebootPolicy.AUTO,
    ) -> Host:
        """New agent-driven work (SPEC §8, §9): an upgrade to ``version``, or a restore.

        State pending, a new install token, the reboot policy; netboot is never armed
        (the agent boots the installer; a network-first boot order must not wipe the
        host). The agent credential stays valid until the new system reports running.
        InputError unless the host has an agent credential (it reported running
        before) and, for an upgrade, ``version`` is a registered repository.
        """
        mac = normalise_mac(mac)
        kind = choice(Work, work, "work", AGENT_WORK)
        policy = choice(RebootPolicy, reboot, "reboot policy", tuple(RebootPolicy))
        with self._write() as conn:
            return self._assign(conn, mac, kind, version, policy)

    def _assign(
        self, conn: Connection, mac: str, kind: Work, version: str | None, policy: RebootPolicy
    ) -> Host:
        old = self._load(conn, mac)
        if old.agent_credential_hash is None:
            raise InputError(
                f"host {mac} has never reported running, so it has no agent to "
                f"{kind.value} it; install it over the network (`netinstall host rearm {mac}`)"
            )
        assigned = old.assigned_version
        what = "restore from the backup partition"
        if kind is Work.UPGRADE:
            if version is None:
                raise InputError("an upgrade needs the version to upgrade to")
            assigned = self._registered(conn, version).version
            what = f"upgrade to {assigned}"
        host = _new_work(
            old, kind, netboot_armed=False, assigned_version=assigned, reboot_policy=policy
        )
        what = f"assigned: {what} (reboot {policy.value})"
        host = self._store_host(conn, host, old, logged=True, message=what, secrets_of=old)
        return host

    @once_more_on_conflict
    def check_in(
        self,
        mac: str,
        running_version: str,
        reported: Reported | str,
        multipath: list[dict[str, object]] | None = None,
        seen: Host | None = None,
    ) -> Host:
        """Record an agent check-in (``checkin.apply_checkin``); the host after it.

        With ``seen`` (the host as the request read it): a routine check-in (running, no
        work, no storage paths, the version it reported last, the install key spent)
        only writes its time, without reading the host again, provided nothing it
        depends on changed since ``seen``; anything else is applied as without it."""
        mac = normalise_mac(mac)
        state = reported_state(reported)
        routine = (
            seen is not None
            and state is Reported.RUNNING
            and multipath is None
            and seen.work is None
            and seen.state is State.RUNNING
            and seen.install_key_hash is None
            and seen.last_checkin is not None
            and seen.running_version == running_version
        )
        if routine and seen is not None:
            now = time.time()
            done = self._write_alone(
                _ROUTINE_CHECKIN,
                {
                    "now": now,
                    "where_mac": seen.mac,
                    "seen_revision": seen.revision,
                    "version": running_version,
                },
            )
            if done:
                return replace(seen, last_checkin=now)
        with self._write() as conn:
            ttl = self._token_ttl(conn)
            old = self._load(conn, mac)
            now = time.time()
            host, message = apply_checkin(old, running_version, state, now, multipath)
            if host.state is State.RUNNING:  # the agent holds its credential: the key is spent
                host = replace(host, install_key_hash=None)
            if host.work in AGENT_WORK and host.state in OFFERED:
                # The reply hands the agent the installer and its token (over the agent's
                # credential): a new boot of the installer may enrol, and the token lives
                # on while the host waits for its reboot.
                host = issue_ticket(host, now, ttl, renew=True)
            host = self._store_host(
                conn, host, old, logged=message is not None, message=message, secrets_of=old
            )
        return host
