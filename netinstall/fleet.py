"""What the operator commands do to the fleet, whether it is here or behind the API.

    Fleet              the interface every operator command calls (one body a command)
    LocalFleet         over the server directory's ``Registry`` (no --server)
    RemoteFleet        over the operator API (``netinstall --server URL``, ``api_client``)

A host's uploaded log bundles too: read from the shared directory here, streamed from
``GET .../logs/<name>`` there (``netinstall.cli_logs`` writes them to a file).

Pools and jobs too: a ``pool upgrade`` is a job the server runs (``pxe_server.job_runner``);
the CLI creates it here and follows it (``netinstall.cli_job``), either way.

Both speak the protocol's records (``common.protocol.messages``), made by the same
functions (``pxe_server.operator_view``) on the server and here, so a command prints
the same either way, errors included: the server's refusal is the registry's sentence.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, TypeVar
from urllib.parse import quote

from common.errors import InputError, NetinstallError
from common.protocol.codec import ABSENT, decode, encode
from common.protocol.messages import (
    AnswerFileCheck,
    Deleted,
    EventList,
    EventRecord,
    HostCreate,
    HostEdit,
    HostList,
    HostRecord,
    JobCancel,
    JobList,
    JobRecord,
    LogBundle,
    LogList,
    PoolList,
    PoolMember,
    PoolRecord,
    PoolSpec,
    PoolUpgradeRequest,
    PowerReply,
    PowerRequest,
    ProfileList,
    ProfileRecord,
    ProfileSpec,
    Removed,
    RepositoryList,
    RepositoryRecord,
    RestoreRequest,
    ServerList,
    ServerRecord,
    UpdateApplyRequest,
    UpdateList,
    UpdatePrecheck,
    UpdateRecord,
    UpdateTargets,
    UpgradeRequest,
    Work,
)
from netinstall.api_client import READ_CHUNK, ApiClient, NotFound, Sink
from pxe_server import log_bundles, operator_view, shared_dir, update_ops
from pxe_server.job_runner import start_pool_upgrade
from pxe_server.jobs import UnknownJob, job_record, pool_record
from pxe_server.limits import MAX_LOG_BUNDLE
from pxe_server.model import (
    Host,
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

    def power(self, mac: str, request: PowerRequest) -> PowerReply: ...  # through its BMC

    def log_bundles(self, mac: str) -> list[LogBundle]: ...  # oldest first; UnknownHost

    # The bundle ``name`` written to ``sink`` (at most MAX_LOG_BUNDLE bytes); its size.
    # InputError (the API's 404 sentence) for a name the host has no bundle of.
    def fetch_log(self, mac: str, name: str, sink: Sink) -> int: ...

    def upgrade(self, mac: str, request: UpgradeRequest) -> HostRecord: ...

    def restore(self, mac: str, request: RestoreRequest) -> HostRecord: ...

    def profiles(self) -> list[ProfileRecord]: ...

    def find_profile(self, name: str) -> ProfileRecord | None: ...

    def add_profile(self, spec: ProfileSpec) -> ProfileRecord: ...

    def replace_profile(self, spec: ProfileSpec) -> ProfileRecord: ...

    def repositories(self) -> list[RepositoryRecord]: ...

    def check_answer_file(self, mac: str) -> AnswerFileCheck: ...

    def remove_profile(self, name: str) -> str: ...  # the name removed

    def pools(self) -> list[PoolRecord]: ...

    def pool(self, name: str) -> PoolRecord: ...  # UnknownPool

    def create_pool(self, spec: PoolSpec) -> PoolRecord: ...

    def delete_pool(self, name: str) -> str: ...

    def add_to_pool(self, name: str, mac: str) -> PoolRecord: ...

    def remove_from_pool(self, name: str, mac: str) -> PoolRecord: ...

    def start_pool_upgrade(self, request: PoolUpgradeRequest) -> JobRecord: ...  # queued

    def jobs(self) -> list[JobRecord]: ...  # newest first

    def job(self, job_id: int, log_after: int = 0) -> JobRecord: ...  # UnknownJob

    def cancel_job(self, job_id: int, by: str) -> JobRecord: ...

    def add_update(self, bundle: Path, by: str) -> UpdateRecord: ...  # checked, signed, kept

    def updates(self) -> list[UpdateRecord]: ...  # by id

    def update(self, update_id: str) -> UpdateRecord: ...  # UnknownUpdate

    def clean_update(self, update_id: str) -> UpdateRecord: ...

    def precheck_update(self, update_id: str, targets: UpdateTargets) -> UpdatePrecheck: ...

    def start_update_apply(self, request: UpdateApplyRequest) -> JobRecord: ...  # queued

    def servers(self) -> list[ServerRecord]: ...  # the servers of the registry, by name


M = TypeVar("M")


def checked(request: M) -> M:
    """``request`` as the server's API would decode it (ProtocolError naming the field):
    the same bounds, and the same sentence, here as over the API."""
    return decode(type(request), encode(request))


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
        from pxe_server import bmc_control  # noqa: PLC0415 - cryptography, only when asked

        mac = normalise_mac(request.mac)
        bmc = None
        if request.bmc is not None:  # the API's bounds on its fields, then checked and sealed
            bmc = bmc_control.stored_bmc(self.registry, mac, checked(request.bmc))
        self.registry.add_host(
            mac,
            profile=request.profile,
            name=request.name,
            variables=dict(request.variables),
            san=_san(request),
        )
        if bmc is not None:
            self.registry.set_bmc(bmc)
        return self.host(mac)

    def edit_host(self, mac: str, edit: HostEdit) -> HostRecord:
        from pxe_server import bmc_control  # noqa: PLC0415 - cryptography, only when asked

        mac = normalise_mac(mac)
        self.host(mac)  # UnknownHost, as the API says it
        if edit.bmc is not ABSENT:
            spec = None if edit.bmc is None else checked(edit.bmc)
            bmc_control.set_host_bmc(self.registry, mac, spec)
        if edit.segment_server is not ABSENT:
            operator_view.pin_segment(self.registry, mac, edit.segment_server)
        operator_view.edit_host(self.registry, mac, edit)
        return self.host(mac)

    def remove_host(self, mac: str) -> str:
        mac = mac_syntax(mac)  # a record made before group addresses were refused, too
        self.registry.delete_host(mac)
        return mac

    def rearm(self, mac: str) -> HostRecord:
        return host_record(self.registry.rearm(mac))

    def _shared(self, mac: str) -> Path:
        """Where the server's API reads host ``mac``'s log bundles: the shared directory
        the server directory names (``pxe_server.shared_dir``), else the directory itself.
        UnknownHost first, as the API says it."""
        self.host(mac)
        return shared_dir.shared(self.registry.directory)

    def log_bundles(self, mac: str) -> list[LogBundle]:
        directory = log_bundles.log_dir(self._shared(mac), mac)
        try:
            return log_bundles.bundles(directory)
        except OSError as exc:
            raise NetinstallError(f"cannot read {directory}: {exc.strerror or exc}") from None

    def fetch_log(self, mac: str, name: str, sink: Sink) -> int:
        mac = normalise_mac(mac)
        path = log_bundles.bundle_file(self._shared(mac), mac, name)
        try:
            file = None if path is None else path.open("rb")
        except FileNotFoundError:  # pruned meanwhile
            file = None
        except OSError as exc:
            raise NetinstallError(f"cannot read {path}: {exc.strerror or exc}") from None
        if file is None:
            raise InputError(log_bundles.no_bundle(mac, name))
        with file:
            return _copied(file, sink, str(path))

    def power(self, mac: str, request: PowerRequest) -> PowerReply:
        from pxe_server import bmc_control  # noqa: PLC0415 - sushy, pyghmi: only when asked

        return bmc_control.power(self.registry, normalise_mac(mac), checked(request))

    def upgrade(self, mac: str, request: UpgradeRequest) -> HostRecord:
        host = self.registry.assign_work(
            mac, Work.UPGRADE, version=request.version, reboot=request.reboot
        )
        return self._powered(host)

    def restore(self, mac: str, request: RestoreRequest) -> HostRecord:
        return self._powered(self.registry.assign_work(mac, Work.RESTORE, reboot=request.reboot))

    def _powered(self, host: Host) -> HostRecord:
        """Agent work assigned: a host with a BMC that is off is powered on, as the API does."""
        from pxe_server import bmc_control  # noqa: PLC0415 - sushy, pyghmi: only when asked

        return replace(
            host_record(host), power_on=bmc_control.powered_for_work(self.registry, host.mac)
        )

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

    def remove_profile(self, name: str) -> str:
        self._profile(name)  # UnknownProfile, as the API says it
        self.registry.delete_profile(name)
        return name

    def pools(self) -> list[PoolRecord]:
        return operator_view.pool_records(self.registry)

    def pool(self, name: str) -> PoolRecord:
        return operator_view.pool_view(self.registry, name)

    def create_pool(self, spec: PoolSpec) -> PoolRecord:
        spec = checked(spec)
        return pool_record(self.registry.create_pool(spec.name, spec.master, spec.members), None)

    def delete_pool(self, name: str) -> str:
        self.registry.delete_pool(name)
        return name

    def add_to_pool(self, name: str, mac: str) -> PoolRecord:
        self.registry.add_to_pool(name, mac)
        return self.pool(name)

    def remove_from_pool(self, name: str, mac: str) -> PoolRecord:
        self.registry.remove_from_pool(name, mac)
        return self.pool(name)

    def start_pool_upgrade(self, request: PoolUpgradeRequest) -> JobRecord:
        request = checked(request)
        by = f"{request.by or 'an operator'} (local)"
        return job_record(start_pool_upgrade(self.registry, request, by))

    def jobs(self) -> list[JobRecord]:
        return [job_record(job) for job in self.registry.jobs()]

    def job(self, job_id: int, log_after: int = 0) -> JobRecord:
        found = self.registry.job(job_id)
        if found is None:
            raise UnknownJob(f"no job {job_id}; see `netinstall job list`")
        return job_record(found, log_after)

    def cancel_job(self, job_id: int, by: str) -> JobRecord:
        return job_record(self.registry.cancel_job(job_id, f"{by} (local)"))

    def add_update(self, bundle: Path, by: str) -> UpdateRecord:
        shared = shared_dir.shared(self.registry.directory)
        return update_ops.add_bundle(self.registry, shared, bundle, f"{by} (local)")

    def updates(self) -> list[UpdateRecord]:
        return update_ops.records(self.registry)

    def update(self, update_id: str) -> UpdateRecord:
        return update_ops.record(self.registry, update_id)

    def clean_update(self, update_id: str) -> UpdateRecord:
        shared = shared_dir.shared(self.registry.directory)
        return update_ops.clean(self.registry, shared, update_id)

    def precheck_update(self, update_id: str, targets: UpdateTargets) -> UpdatePrecheck:
        return update_ops.precheck(self.registry, update_id, checked(targets), time.time())

    def start_update_apply(self, request: UpdateApplyRequest) -> JobRecord:
        request = checked(request)
        by = f"{request.by or 'an operator'} (local)"
        job = update_ops.start_update_apply(self.registry, request, by, time.time())
        return job_record(job)

    def servers(self) -> list[ServerRecord]:
        return operator_view.server_records(self.registry, time.time())


def _copied(file: BinaryIO, sink: Sink, shown: str) -> int:
    """``file`` written to ``sink`` (at most ``MAX_LOG_BUNDLE`` bytes, as over the API);
    its size."""
    size = 0
    try:
        while chunk := file.read(READ_CHUNK):
            size += len(chunk)
            if size > MAX_LOG_BUNDLE:
                raise NetinstallError(
                    f"{shown} has more than {MAX_LOG_BUNDLE} bytes: no log bundle a server stored"
                )
            sink.write(chunk)
    except OSError as exc:
        raise NetinstallError(f"cannot read {shown}: {exc.strerror or exc}") from None
    return size


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

    def log_bundles(self, mac: str) -> list[LogBundle]:
        return list(self.client.call("GET", f"hosts/{_mac(mac)}/logs", LogList).bundles)

    def fetch_log(self, mac: str, name: str, sink: Sink) -> int:
        path = f"hosts/{_mac(mac)}/logs/{quote(name, safe='')}"
        return self.client.download(path, sink, MAX_LOG_BUNDLE)

    def power(self, mac: str, request: PowerRequest) -> PowerReply:
        return self.client.call("POST", f"hosts/{_mac(mac)}/power", PowerReply, request)

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

    def remove_profile(self, name: str) -> str:
        return self.client.call("DELETE", f"profiles/{quote(name, safe='')}", Removed).removed

    def pools(self) -> list[PoolRecord]:
        return list(self.client.call("GET", "pools", PoolList).pools)

    def pool(self, name: str) -> PoolRecord:
        return self.client.call("GET", f"pools/{quote(name, safe='')}", PoolRecord)

    def create_pool(self, spec: PoolSpec) -> PoolRecord:
        return self.client.call("POST", "pools", PoolRecord, spec)

    def delete_pool(self, name: str) -> str:
        return self.client.call("DELETE", f"pools/{quote(name, safe='')}", Removed).removed

    def add_to_pool(self, name: str, mac: str) -> PoolRecord:
        path = f"pools/{quote(name, safe='')}/members"
        return self.client.call("POST", path, PoolRecord, PoolMember(mac))

    def remove_from_pool(self, name: str, mac: str) -> PoolRecord:
        path = f"pools/{quote(name, safe='')}/members/{_mac(mac)}"
        return self.client.call("DELETE", path, PoolRecord)

    def start_pool_upgrade(self, request: PoolUpgradeRequest) -> JobRecord:
        return self.client.call("POST", "jobs/pool-upgrade", JobRecord, request)

    def jobs(self) -> list[JobRecord]:
        return list(self.client.call("GET", "jobs", JobList).jobs)

    def job(self, job_id: int, log_after: int = 0) -> JobRecord:
        return self.client.call("GET", f"jobs/{job_id}?log_after={log_after}", JobRecord)

    def cancel_job(self, job_id: int, by: str) -> JobRecord:
        return self.client.call("POST", f"jobs/{job_id}/cancel", JobRecord, JobCancel(by))

    def add_update(self, bundle: Path, by: str) -> UpdateRecord:
        path = f"updates?by={quote(by, safe='')}"
        return self.client.upload(path, bundle, "application/x-tar", UpdateRecord)

    def updates(self) -> list[UpdateRecord]:
        return list(self.client.call("GET", "updates", UpdateList).updates)

    def update(self, update_id: str) -> UpdateRecord:
        return self.client.call("GET", f"updates/{quote(update_id, safe='')}", UpdateRecord)

    def clean_update(self, update_id: str) -> UpdateRecord:
        path = f"updates/{quote(update_id, safe='')}/clean"
        return self.client.call("POST", path, UpdateRecord)

    def precheck_update(self, update_id: str, targets: UpdateTargets) -> UpdatePrecheck:
        path = f"updates/{quote(update_id, safe='')}/precheck"
        return self.client.call("POST", path, UpdatePrecheck, targets)

    def start_update_apply(self, request: UpdateApplyRequest) -> JobRecord:
        return self.client.call("POST", "jobs/update-apply", JobRecord, request)

    def servers(self) -> list[ServerRecord]:
        return list(self.client.call("GET", "servers", ServerList).servers)
