"""Updates in dom0: download, verify, apply and record a bundle (README "Updates").

The check-in reply names an update (``UpdateWork``: its URL, size, sha256 and the
reboot policy). The agent:

1. skips it when its own update log (``/var/lib/netinstall/updates.json``) holds the
   id already: a re-run is a no-op;
2. downloads the bundle (at most the size the reply gives, with the agent credential)
   into ``/var/lib/netinstall/updates/`` and checks its sha256;
3. reads it (``common.update_bundle``: the metadata, every member's size and sha256),
   checks the id, that the running payload version is one the update applies to, and
   the signature of ``update.json`` with ``ssh-keygen -Y verify`` against the update
   key it holds (``/etc/netinstall/update-key.pub``; the first key a check-in reply
   handed it, or the one the installer wrote); then every entry of ``root.tar``;
4. only then changes the system: ``dpkg -i`` of the packages (one call), the files of
   ``root.tar``, ``post-apply.sh`` (with ``NETINSTALL_UPDATE=<id>``), and the version
   string the update sets in ``/etc/netinstall-updates/<id>``;
5. records the id in its update log and reports ``applied`` (``reboot-required`` when
   the update reboots and the policy is manual) or ``failed`` with the reason.

Any fault before step 4 changes nothing. Commands go through the injected runner.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from common.errors import CommandError, NetinstallError
from common.process import CommandRunner
from common.protocol.messages import (
    MAX_UPDATES_KEPT,
    RebootPolicy,
    UpdateOutcome,
    UpdateResult,
    UpdateWork,
)
from common.update_bundle import (
    MAX_BUNDLE_BYTES,
    ROOT_TAR,
    SCRIPT,
    SIGNATURE_NAMESPACE,
    SIGNER,
    Bundle,
    UpdateError,
    UpdateMeta,
    extract,
    file_sha256,
    read_bundle,
    root_entries,
)

from .errors import ConfigError
from .jsonfile import read_object, write_atomic, write_json
from .layout import Layout
from .server import ServerClient

log = logging.getLogger(__name__)

SCRIPT_TIMEOUT = 1800.0  # seconds post-apply.sh may run
DPKG_TIMEOUT = 3600.0  # seconds dpkg -i may run
VERIFY_TIMEOUT = 60.0
MAX_REASON = 4000  # characters of a failure's reason
JOURNAL_LINES = 2000  # of the agent's journal in a failed update's log bundle
MAX_JOURNAL = 8 << 20  # bytes of the journal (and the update log) in it


@dataclass
class UpdateLog:
    """The host's own record of its updates (``Layout.update_log``)."""

    applied: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> version, time
    last: UpdateResult | None = None  # what became of the last update given

    @classmethod
    def read(cls, layout: Layout) -> UpdateLog:
        """The log as the disk holds it (empty when there is none or it cannot be read)."""
        path = layout.update_log
        if not path.exists():
            return cls()
        try:
            data = read_object(path)
        except ConfigError as exc:
            log.warning("%s; treating it as empty", exc)
            return cls()
        applied = data.get("applied")
        last = data.get("last")
        result = None
        if isinstance(last, dict) and isinstance(last.get("id"), str):
            try:
                outcome = UpdateOutcome(str(last.get("outcome")))
            except ValueError:
                outcome = None
            if outcome is not None:
                reason = last.get("reason")
                result = UpdateResult(last["id"], outcome, reason if reason else None)
        found = {k: v for k, v in applied.items() if isinstance(v, dict)} if applied else {}
        return cls(found if isinstance(applied, dict) else {}, result)

    def write(self, layout: Layout) -> None:
        last = None
        if self.last is not None:
            last = {"id": self.last.id, "outcome": self.last.outcome.value}
            last["reason"] = self.last.reason or ""
        write_json(layout.update_log, {"applied": self.applied, "last": last}, mode=0o644)

    def ids(self) -> tuple[str, ...]:
        """The applied ids, oldest first (the newest ``MAX_UPDATES_KEPT`` reported)."""
        ordered = sorted(self.applied, key=lambda k: float(self.applied[k].get("time", 0)))
        return tuple(ordered[-MAX_UPDATES_KEPT:])


def keep_key(layout: Layout, offered: str | None) -> None:
    """Keep the update key a check-in reply offers when the host holds none; a different
    one is logged and ignored (the key the host holds was written at install time or
    came first)."""
    if not offered:
        return
    line = " ".join(offered.split())
    if line.count(" ") < 1 or not line.startswith("ssh-ed25519 ") or len(line) > 512:
        log.warning("the server offered an update key that is not an ssh-ed25519 key; ignored")
        return
    path = layout.update_key
    if path.exists():
        held = " ".join(path.read_text("utf-8", errors="replace").split())
        if held.split()[:2] != line.split()[:2]:
            log.warning(
                "the server offers another update key than %s holds; keeping ours (remove "
                "the file to take the server's)",
                path,
            )
        return
    write_atomic(path, f"{line}\n".encode(), 0o644)
    log.info("stored the server's update key in %s", path)


def free_mib(layout: Layout) -> int | None:
    """MiB free where bundles are downloaded (None: unknown)."""
    where = layout.update_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        stat = os.statvfs(where)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize // (1 << 20)


def boot_id(layout: Layout) -> str | None:
    try:
        text = layout.boot_id.read_text("ascii", errors="replace").strip()
    except OSError:
        return None
    return text[:64] or None


# -- verifying ---------------------------------------------------------------------------


def verify_signature(bundle: Bundle, key: Path, runner: CommandRunner, scratch: Path) -> None:
    """UpdateError unless ``update.json`` carries a good signature by the key in ``key``
    (``ssh-keygen -Y verify``: the key as the only allowed signer, our namespace)."""
    if bundle.signature is None:
        raise UpdateError("the bundle is not signed (add it to the server with `update add`)")
    try:
        words = key.read_text("utf-8", errors="replace").split()
    except FileNotFoundError:
        raise UpdateError(
            f"this host holds no update key ({key}): it cannot verify the bundle"
        ) from None
    if len(words) < 2:
        raise UpdateError(f"{key} does not hold an OpenSSH public key")
    allowed = scratch / "allowed-signers"
    allowed.write_text(f'{SIGNER} namespaces="{SIGNATURE_NAMESPACE}" {words[0]} {words[1]}\n')
    signature = scratch / "update.json.sig"
    signature.write_bytes(bundle.signature)
    argv = ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", SIGNER]
    argv += ["-n", SIGNATURE_NAMESPACE, "-s", str(signature)]
    try:
        runner(argv, input_text=bundle.metadata.decode("utf-8"), timeout=VERIFY_TIMEOUT)
    except CommandError as exc:
        raise UpdateError(
            f"the bundle's signature does not verify with the update key in {key}: {exc}"
        ) from None


@dataclass(frozen=True)
class Checked:
    """A bundle that passed every check, unpacked: nothing of the system changed yet."""

    bundle: Bundle
    files: dict[str, Path]  # member path -> unpacked file
    entries: list[tuple[str, int, str | None]]  # root.tar: path, mode, symlink target


@dataclass(frozen=True)
class Host:
    """What applying an update needs of the agent: its server, credential, commands, files
    and the payload version it runs."""

    client: ServerClient
    credential: str = field(repr=False)
    runner: CommandRunner
    layout: Layout
    running_version: str


def check_bundle(work: UpdateWork, path: Path, host: Host, scratch: Path) -> Checked:
    """Every check of a downloaded bundle (UpdateError naming the first that fails)."""
    if path.stat().st_size != work.size or file_sha256(path) != work.sha256:
        raise UpdateError(f"the bundle downloaded for {work.id} does not match its sha256")
    bundle = read_bundle(path)
    if bundle.meta.id != work.id:
        raise UpdateError(f"the bundle is update {bundle.meta.id}, not {work.id}")
    verify_signature(bundle, host.layout.update_key, host.runner, scratch)
    if host.running_version not in bundle.meta.applies_to:
        raise UpdateError(
            f"update {work.id} applies to {', '.join(bundle.meta.applies_to)}; this host runs "
            f"{host.running_version}"
        )
    files = extract(bundle, scratch / "members")
    entries: list[tuple[str, int, str | None]] = []
    if ROOT_TAR in files:
        with tarfile.open(files[ROOT_TAR], "r:") as archive:
            for entry, _info in root_entries(archive, f"{work.id}: {ROOT_TAR}"):
                _inside(host.layout.root, entry.path)
                entries.append((entry.path, entry.mode, entry.link))
        links = {name for name, _mode, link in entries if link is not None}
        for name, _mode, _link in entries:
            if any(str(parent) in links for parent in PurePosixPath(name).parents):
                raise UpdateError(f"{ROOT_TAR}: {name} is under a symlink the update writes")
    return Checked(bundle, files, entries)


def _inside(root: Path, relative: str) -> Path:
    """``root / relative``, UpdateError if a symlink on its way leads out of ``root``."""
    target = root / relative
    real_root = os.path.realpath(root)
    parent = os.path.realpath(target.parent)
    if parent != real_root and not parent.startswith(real_root.rstrip("/") + "/"):
        raise UpdateError(f"{ROOT_TAR}: {relative} leads out of the root through a symlink")
    return target


# -- applying ----------------------------------------------------------------------------


def _live(layout: Layout, path: Path) -> str:
    """``path`` (under the layout's root) as the running system names it."""
    return "/" + path.relative_to(layout.root).as_posix()


def _in_root(layout: Layout, argv: list[str]) -> list[str]:
    return argv if layout.root == Path("/") else ["chroot", str(layout.root), *argv]


def _write_files(checked: Checked, layout: Layout) -> None:
    with tarfile.open(checked.files[ROOT_TAR], "r:") as archive:
        for path, mode, link in checked.entries:
            target = _inside(layout.root, path)
            target.parent.mkdir(parents=True, exist_ok=True)
            if link is not None:
                part = target.with_name(f".{target.name}.netinstall-update")
                part.unlink(missing_ok=True)
                part.symlink_to(link)
                part.replace(target)
                continue
            stream = archive.extractfile(path)
            if stream is None:
                raise UpdateError(f"{ROOT_TAR}: {path} is not a regular file")
            write_atomic(target, stream.read(), mode)


def apply_checked(checked: Checked, layout: Layout, runner: CommandRunner, say: list[str]) -> None:
    """Change the system: packages, files, script, the version string (in that order)."""
    meta = checked.bundle.meta
    debs = [_live(layout, checked.files[m.path]) for m in meta.members if m.type == "deb"]
    if debs:
        runner(_in_root(layout, ["dpkg", "-i", *debs]), timeout=DPKG_TIMEOUT)
        say.append(f"installed {len(debs)} package(s)")
    if checked.entries:
        _write_files(checked, layout)
        say.append(f"wrote {len(checked.entries)} file(s)")
    if SCRIPT in checked.files:
        env = {**os.environ, "NETINSTALL_UPDATE": meta.id}
        argv = _in_root(layout, ["/bin/sh", _live(layout, checked.files[SCRIPT])])
        runner(argv, timeout=SCRIPT_TIMEOUT, env=env)
        say.append(f"ran {SCRIPT}")
    write_atomic(layout.update_version(meta.id), f"{meta.version}\n".encode(), 0o644)


@dataclass(frozen=True)
class Applied:
    result: UpdateResult
    reboot: bool  # the host reboots now (the update says so, the policy is auto)


def log_bundle(layout: Layout, runner: CommandRunner, reason: str) -> bytes:
    """A tar.bz2 for the server's logs route after a failed update: the reason, the
    agent's journal of this boot (its last ``JOURNAL_LINES`` lines) and the update log."""
    parts: dict[str, bytes] = {"update-failure.txt": f"{reason}\n".encode()}
    try:
        argv = ["journalctl", "-u", "netinstall-agent", "-b", "--no-pager", "-n"]
        journal = runner([*argv, str(JOURNAL_LINES)], timeout=VERIFY_TIMEOUT).stdout
        parts["netinstall-agent.journal"] = journal.encode()[-MAX_JOURNAL:]
    except NetinstallError as exc:
        parts["netinstall-agent.journal"] = f"journalctl failed: {exc}\n".encode()
    if layout.update_log.exists():
        parts["updates.json"] = layout.update_log.read_bytes()[:MAX_JOURNAL]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:bz2") as archive:
        for name, data in parts.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def apply_update(work: UpdateWork, host: Host) -> Applied:
    """Download, check and apply ``work``; what to report (never raises for a bad bundle
    or a failed command: those are a ``failed`` result with the reason)."""
    layout = host.layout
    record = UpdateLog.read(layout)
    if work.id in record.applied:
        log.info("update %s is applied already (%s)", work.id, layout.update_log)
        return Applied(UpdateResult(work.id, UpdateOutcome.APPLIED), reboot=False)
    say: list[str] = []
    try:
        meta = _download_and_apply(work, host, say)
    except (NetinstallError, OSError) as exc:
        reason = f"update {work.id} failed: {exc}"[:MAX_REASON]
        log.error("%s", reason)  # noqa: TRY400 - one line for the journal
        result = UpdateResult(work.id, UpdateOutcome.FAILED, reason)
        record.last = result
        record.write(layout)
        return Applied(result, reboot=False)
    record.applied[work.id] = {
        "version": meta.version,
        "time": time.time(),
        "boot_id": boot_id(layout),
    }
    manual = meta.reboot and work.reboot is RebootPolicy.MANUAL
    outcome = UpdateOutcome.REBOOT_REQUIRED if manual else UpdateOutcome.APPLIED
    record.last = UpdateResult(work.id, outcome)
    record.write(layout)
    log.info("update %s %s applied: %s", work.id, meta.version, "; ".join(say) or "no change")
    return Applied(record.last, reboot=meta.reboot and not manual)


def _download_and_apply(work: UpdateWork, host: Host, say: list[str]) -> UpdateMeta:
    layout = host.layout
    if not 0 < work.size <= MAX_BUNDLE_BYTES:
        raise UpdateError(
            f"the bundle of {work.id} has {work.size} bytes (most: {MAX_BUNDLE_BYTES})"
        )
    space = free_mib(layout)
    need = 2 * work.size // (1 << 20) + 1  # the bundle and its unpacked members
    if space is not None and space < need:
        raise UpdateError(f"{layout.update_dir} has {space} MiB free; the update needs {need}")
    layout.update_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{work.id}.", dir=layout.update_dir))
    try:
        bundle = scratch / "bundle.update"
        host.client.download(work.url, bundle, host.credential, limit=work.size)
        checked = check_bundle(work, bundle, host, scratch)
        apply_checked(checked, layout, host.runner, say)
        return checked.bundle.meta
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
