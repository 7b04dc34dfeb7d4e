"""What the operator commands do to the fleet, whether it is here or behind the API.

    Fleet              the interface every operator command calls (one body a command)
    LocalFleet         over the server directory's ``Registry`` (no --server)
    RemoteFleet        over the operator API (``netinstall --server URL``, ``api_client``)
    PoolOverFleet      ``pxe_server.pool``'s registry, over either

Both speak the protocol's records (``common.protocol.messages``), made by the same
functions (``pxe_server.operator_view``) on the server and here, so a command prints
the same either way, errors included: the server's refusal is the registry's sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

from common.protocol.codec import ABSENT
from common.protocol.messages import (
    AnswerFileCheck,
    Deleted,
    EventList,
    EventRecord,
    HostCreate,
    HostEdit,
    HostList,
    HostRecord,
    Presence,
    ProfileList,
    ProfileRecord,
    ProfileSpec,
    RebootPolicy,
    RepositoryList,
    RepositoryRecord,
    RestoreRequest,
    UpgradeRequest,
    Work,
)
from netinstall.api_client import ApiClient, NotFound
from pxe_server import operator_view
from pxe_server.model import (
    Event,
    Host,
    Repository,
    SanTarget,
    ServerSettings,
    event_record,
    host_record,
    mac_syntax,
    normalise_mac,
)

if TYPE_CHECKING:  # SQLAlchemy's import is a third of `host list` over the API's time
    from pxe_server.registry import Registry

# What the local fleet renders a host's answer file for when it checks one: a server on
# the registry's advertised address (else loopback) and the default HTTP port. The URLs in
# the file are not validated, so the verdict is the server's (its summary names this URL).
LOCAL_HTTP_PORT = 8080


class Fleet(Protocol):
    """Every operator command's access to the registry: records in, records out."""

    def hosts(self) -> list[HostRecord]: ...  # by MAC, each with its latest event

    def host(self, mac: str) -> HostRecord: ...  # with its latest event; UnknownHost

    def events(self, mac: str) -> list[EventRecord]: ...  # oldest first

    def add_host(self, request: HostCreate) -> HostRecord: ...

    def edit_host(self, mac: str, edit: HostEdit) -> HostRecord: ...

    def remove_host(self, mac: str) -> str: ...  # the MAC removed

    def rearm(self, mac: str) -> HostRecord: ...

    def upgrade(self, mac: str, request: UpgradeRequest) -> HostRecord: ...

    def restore(self, mac: str, request: RestoreRequest) -> HostRecord: ...

    def profiles(self) -> list[ProfileRecord]: ...

    def find_profile(self, name: str) -> ProfileRecord | None: ...

    def add_profile(self, spec: ProfileSpec) -> ProfileRecord: ...

    def replace_profile(self, spec: ProfileSpec) -> ProfileRecord: ...

    def repositories(self) -> list[RepositoryRecord]: ...

    def check_answer_file(self, mac: str) -> AnswerFileCheck: ...


def _san(request: HostCreate) -> SanTarget | None:
    san = request.san
    if san is None:
        return None
    return SanTarget(san.root_path, san.address, san.gateway, san.initiator, san.paths)


class LocalFleet:
    """The fleet in the server directory's registry (opened by the caller)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def hosts(self) -> list[HostRecord]:
        return operator_view.host_records(self.registry)

    def host(self, mac: str) -> HostRecord:
        return operator_view.host_view(self.registry, normalise_mac(mac))

    def events(self, mac: str) -> list[EventRecord]:
        return [event_record(e) for e in self.registry.events(normalise_mac(mac))]

    def add_host(self, request: HostCreate) -> HostRecord:
        host = self.registry.add_host(
            request.mac,
            profile=request.profile,
            name=request.name,
            variables=dict(request.variables),
            san=_san(request),
        )
        return host_record(host)

    def edit_host(self, mac: str, edit: HostEdit) -> HostRecord:
        changes: dict[str, object] = {}
        for name in ("name", "profile", "variables"):
            value = getattr(edit, name)
            if value is not ABSENT:
                changes[name] = dict(value or {}) if name == "variables" else value
        self.host(mac)  # UnknownHost, as the API says it
        return host_record(self.registry.update_host(mac, **changes))  # type: ignore[arg-type]

    def remove_host(self, mac: str) -> str:
        mac = mac_syntax(mac)  # a record made before group addresses were refused, too
        self.registry.delete_host(mac)
        return mac

    def rearm(self, mac: str) -> HostRecord:
        return host_record(self.registry.rearm(mac))

    def upgrade(self, mac: str, request: UpgradeRequest) -> HostRecord:
        host = self.registry.assign_work(
            mac, Work.UPGRADE, version=request.version, reboot=request.reboot
        )
        return host_record(host)

    def restore(self, mac: str, request: RestoreRequest) -> HostRecord:
        return host_record(self.registry.assign_work(mac, Work.RESTORE, reboot=request.reboot))

    def profiles(self) -> list[ProfileRecord]:
        return operator_view.profile_records(self.registry)

    def find_profile(self, name: str) -> ProfileRecord | None:
        return operator_view.find_profile(self.registry, name)

    def add_profile(self, spec: ProfileSpec) -> ProfileRecord:
        self.registry.add_profile(operator_view.profile_of(spec))
        return self._profile(spec.name)

    def replace_profile(self, spec: ProfileSpec) -> ProfileRecord:
        self.registry.update_profile(operator_view.profile_of(spec))
        return self._profile(spec.name)

    def _profile(self, name: str) -> ProfileRecord:
        found = self.find_profile(name)
        if found is None:
            raise operator_view.UnknownProfile(
                f"no profile {name!r}; see `netinstall profile list`"
            )
        return found

    def repositories(self) -> list[RepositoryRecord]:
        return operator_view.repository_records(self.registry)

    def check_answer_file(self, mac: str) -> AnswerFileCheck:
        values = self.registry.settings()
        address = values.get("advertise") or "127.0.0.1"
        shown = f"[{address}]" if ":" in address else address
        settings = ServerSettings(
            http_base=f"http://{shown}:{LOCAL_HTTP_PORT}", tftp_address=address
        )
        repo = values.get("repo") or ""
        default_url = repo if "://" in repo else f"{settings.http_base}/repo/"
        from pxe_server.answer_check import check_answer_file  # noqa: PLC0415 - jinja2, lxml

        return check_answer_file(self.registry, normalise_mac(mac), settings, default_url)


def _mac(mac: str) -> str:
    return quote(normalise_mac(mac), safe="")


class RemoteFleet:
    """The fleet behind the operator API (``api_client.ApiClient``)."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    def hosts(self) -> list[HostRecord]:
        return list(self.client.call("GET", "hosts", HostList).hosts)

    def host(self, mac: str) -> HostRecord:
        return self.client.call("GET", f"hosts/{_mac(mac)}", HostRecord)

    def events(self, mac: str) -> list[EventRecord]:
        return list(self.client.call("GET", f"hosts/{_mac(mac)}/events", EventList).events)

    def add_host(self, request: HostCreate) -> HostRecord:
        return self.client.call("POST", "hosts", HostRecord, request)

    def edit_host(self, mac: str, edit: HostEdit) -> HostRecord:
        return self.client.call("PATCH", f"hosts/{_mac(mac)}", HostRecord, edit)

    def remove_host(self, mac: str) -> str:
        # Any MAC of the right shape (``model.mac_syntax``): the server says what it is.
        done = self.client.call("DELETE", f"hosts/{quote(mac.strip(), safe='')}", Deleted)
        return done.deleted

    def rearm(self, mac: str) -> HostRecord:
        return self.client.call("POST", f"hosts/{_mac(mac)}/rearm", HostRecord)

    def upgrade(self, mac: str, request: UpgradeRequest) -> HostRecord:
        return self.client.call("POST", f"hosts/{_mac(mac)}/upgrade", HostRecord, request)

    def restore(self, mac: str, request: RestoreRequest) -> HostRecord:
        return self.client.call("POST", f"hosts/{_mac(mac)}/restore", HostRecord, request)

    def profiles(self) -> list[ProfileRecord]:
        return list(self.client.call("GET", "profiles", ProfileList).profiles)

    def find_profile(self, name: str) -> ProfileRecord | None:
        try:
            return self.client.call("GET", f"profiles/{quote(name, safe='')}", ProfileRecord)
        except NotFound:
            return None

    def add_profile(self, spec: ProfileSpec) -> ProfileRecord:
        return self.client.call("POST", "profiles", ProfileRecord, spec)

    def replace_profile(self, spec: ProfileSpec) -> ProfileRecord:
        return self.client.call("PUT", f"profiles/{quote(spec.name, safe='')}", ProfileRecord, spec)

    def repositories(self) -> list[RepositoryRecord]:
        return list(self.client.call("GET", "repositories", RepositoryList).repositories)

    def check_answer_file(self, mac: str) -> AnswerFileCheck:
        return self.client.call("GET", f"hosts/{_mac(mac)}/answerfile-check", AnswerFileCheck)


# -- pool upgrades over either ----------------------------------------------------------


@dataclass(frozen=True)
class PoolOverFleet:
    """``pxe_server.pool.PoolRegistry`` over a fleet: the rolling upgrade's one body for
    both. Hosts come back as the registry's ``Host`` with what the pool reads of them
    (its agent credential only as present or not)."""

    fleet: Fleet

    def get_host(self, mac: str) -> Host | None:
        from pxe_server.registry import UnknownHost  # noqa: PLC0415 - see the imports

        try:
            return host_of(self.fleet.host(mac))
        except (UnknownHost, NotFound):
            return None

    def last_event(self, mac: str) -> Event | None:
        record = self.fleet.host(mac).last_event
        if record is None:
            return None
        return Event(record.time, normalise_mac(mac), record.state, record.step,
                     record.progress, record.message)  # fmt: skip

    def repository(self, version: str) -> Repository | None:
        for item in self.fleet.repositories():
            if item.version == version:
                return Repository(item.version, item.directory)
        return None

    def assign_work(
        self, mac: str, work: Work, *, version: str | None, reboot: RebootPolicy
    ) -> Host:
        if work is Work.UPGRADE and version is not None:
            return host_of(self.fleet.upgrade(mac, UpgradeRequest(version, reboot)))
        return host_of(self.fleet.restore(mac, RestoreRequest(reboot)))


def host_of(record: HostRecord) -> Host:
    """The registry's ``Host`` of what ``record`` shows (no secret: the agent credential's
    hash only marked present, for ``pool.plan_pool``)."""
    return Host(
        mac=record.mac,
        name=record.name,
        profile=record.profile,
        netboot_armed=record.netboot_armed,
        state=record.state,
        step=record.step,
        progress=record.progress,
        assigned_version=record.assigned_version,
        running_version=record.running_version,
        agent_credential_hash="present" if record.agent_credential is Presence.SET else None,
        work=record.work,
        reboot_policy=record.reboot_policy,
        last_checkin=record.last_checkin,
    )
