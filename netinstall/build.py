"""``netinstall images build``: every builder (images: the installer and the netboot tree;
hypervisor_payload: the repository), in order, each skipped when its inputs are unchanged.
It sits on top, beside the CLI, because it uses both builder packages.

Incremental: each target's inputs (our files, the resolved Debian package
versions, the payload version, the mirror, and the targets it consumes) are
hashed into a key kept beside its outputs; a target whose key and outputs are
unchanged is skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol, cast

from common import __version__
from common.errors import InputError
from hypervisor_payload import repo
from images import debian, installer, netboot
from images.context import REPO_ROOT, BuildContext
from images.progress import Progress, size_text
from netinstall.build_view import for_this_terminal

BUDGET_SECONDS = 15 * 60
BUDGET_DOM0 = 300 * 10**6
BUDGET_INSTALL_IMG = 120 * 10**6


class Builder(Protocol):
    TARGET: str
    PACKAGES: tuple[str, ...]
    SOURCES: tuple[str, ...]  # repo-relative files or directories
    OUTPUTS: tuple[str, ...]  # paths under out/<TARGET>
    DEPENDS: tuple[str, ...]  # targets whose outputs this one consumes

    def build(self, ctx: BuildContext) -> None: ...


def builders() -> dict[str, Builder]:
    modules: Sequence[ModuleType] = (installer, repo, netboot)  # in build order
    return {cast("Builder", m).TARGET: cast("Builder", m) for m in modules}


def _source_files(relative: str) -> list[Path]:
    path = REPO_ROOT / relative
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def input_key(builder: Builder, ctx: BuildContext, dependency_keys: Sequence[str]) -> str:
    digest = hashlib.sha256()

    def add(text: str) -> None:
        digest.update(text.encode() + b"\0")

    add(builder.TARGET)
    add(ctx.payload_version)
    add(ctx.mirror.archive)
    add(ctx.mirror.security)
    for name in sorted(builder.PACKAGES):
        add(f"{name}={ctx.versions[name]}")
    for relative in builder.SOURCES:
        for file in _source_files(relative):
            add(str(file.relative_to(REPO_ROOT)))
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    for key in dependency_keys:
        add(key)
    return digest.hexdigest()


@dataclass(frozen=True)
class Outcome:
    target: str
    built: bool
    key: str


def _stamp(ctx: BuildContext, target: str) -> Path:
    return ctx.out / target / ".inputs"


def _up_to_date(builder: Builder, ctx: BuildContext, key: str) -> bool:
    stamp = _stamp(ctx, builder.TARGET)
    if not stamp.is_file() or stamp.read_text().strip() != key:
        return False
    return all((ctx.out / builder.TARGET / name).exists() for name in builder.OUTPUTS)


LOCK = "build.lock"


@contextmanager
def one_build_at_a_time(cache: Path, progress: Progress) -> Iterator[None]:
    """Builds share the cache (and may share an output): a second one waits for the first,
    e.g. two end-to-end test workers, or a shell's ``make images`` beside a test run."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / LOCK).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.step("images", f"waiting for another build ({cache / LOCK} is held)")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build(
    out: Path,
    cache: Path,
    *,
    only: str | None = None,
    payload_version: str | None = None,
    mirror: str | None = None,
    security_mirror: str | None = None,
) -> list[Outcome]:
    if os.geteuid() != 0:
        raise InputError("building images needs root (debootstrap, chroot, mount)")
    progress = for_this_terminal()
    all_builders = builders()
    if only is not None and only not in all_builders:
        raise InputError(f"--only {only}: expected one of {', '.join(all_builders)}")
    with one_build_at_a_time(cache, progress):
        return _build(
            out,
            cache,
            progress,
            all_builders,
            only=only,
            payload_version=payload_version,
            mirror=mirror,
            security_mirror=security_mirror,
        )


def _build(
    out: Path,
    cache: Path,
    progress: Progress,
    all_builders: dict[str, Builder],
    *,
    only: str | None,
    payload_version: str | None,
    mirror: str | None,
    security_mirror: str | None,
) -> list[Outcome]:
    found_mirror = debian.discover_mirror(mirror, security_mirror)
    progress.step("images", f"mirror {found_mirror.archive}, security {found_mirror.security}")
    packages = sorted({p for b in all_builders.values() for p in b.PACKAGES})
    versions = debian.candidate_versions(packages)
    ctx = BuildContext(
        out=out,
        cache=cache,
        mirror=found_mirror,
        payload_version=payload_version or __version__,
        progress=progress,
        versions=versions,
    )
    keys: dict[str, str] = {}
    outcomes: list[Outcome] = []
    for target, builder in all_builders.items():
        key = input_key(builder, ctx, [keys[d] for d in builder.DEPENDS])
        keys[target] = key
        if only is not None and target != only:
            continue
        if _up_to_date(builder, ctx, key):
            progress.step(target, "up to date")
            outcomes.append(Outcome(target, False, key))
            continue
        for dependency in builder.DEPENDS:
            if not _up_to_date(all_builders[dependency], ctx, keys[dependency]):
                raise InputError(
                    f"{target} needs an up-to-date {dependency}: build it first "
                    f"(without --only, or --only {dependency})"
                )
        progress.step(target, "building")
        (out / target).mkdir(parents=True, exist_ok=True)
        _stamp(ctx, target).unlink(missing_ok=True)
        builder.build(ctx)
        _stamp(ctx, target).write_text(key + "\n")
        outcomes.append(Outcome(target, True, key))
    report_budgets(ctx)
    return outcomes


def report_budgets(ctx: BuildContext) -> None:
    progress = ctx.progress
    elapsed = progress.elapsed()
    verdict = "within" if elapsed <= BUDGET_SECONDS else "OVER"
    progress.step("budget", f"build time {elapsed:.0f} s ({verdict} {BUDGET_SECONDS} s)")
    for path, budget in (
        (ctx.out / "repo" / "dom0-rootfs.tar.zst", BUDGET_DOM0),
        (ctx.out / "installer" / "install.img", BUDGET_INSTALL_IMG),
    ):
        if path.exists():
            size = path.stat().st_size
            verdict = "within" if size <= budget else "OVER"
            progress.step(
                "budget",
                f"{path.relative_to(ctx.out)} {size_text(size)} ({verdict} {size_text(budget)})",
            )


def summary(outcomes: Sequence[Outcome]) -> str:
    return json.dumps([{"target": o.target, "built": o.built} for o in outcomes])
