"""What every builder is handed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from images.debian import Mirror
from images.progress import Progress

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BuildContext:
    out: Path  # build/: repo/, installer/, netboot/
    cache: Path  # ~/.cache/netinstall: debs/, roots/, work/
    mirror: Mirror
    payload_version: str
    progress: Progress
    versions: dict[str, str]  # resolved Debian versions of every builder's PACKAGES

    @property
    def work(self) -> Path:
        path = self.cache / "work"
        path.mkdir(parents=True, exist_ok=True)
        return path
