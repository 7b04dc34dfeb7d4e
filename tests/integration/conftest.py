"""Integration fixtures: loop devices (with a skip that says why), the console script, and
the registry on PostgreSQL (a throwaway cluster per session, a database per test)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import postgres

Attach = Callable[..., str]


@pytest.fixture
def loop_devices() -> None:
    """Skip, saying why, where loop devices or the mkfs tools cannot be used."""
    for tool in ("losetup", "mkfs.ext4", "mkfs.vfat", "mkswap", "blkid", "partprobe"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing")
    done = subprocess.run(["losetup", "--find"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"loop devices unavailable: {done.stderr.strip() or 'losetup --find failed'}")


@pytest.fixture
def attach() -> Iterator[Attach]:
    """Attach images to loop devices (read-only unless asked), partitions too; detach after."""
    loops: list[str] = []

    def attach(path: Path, *, read_only: bool = True) -> str:
        argv = ["losetup", "--find", "--show", "--partscan", str(path)]
        argv[1:1] = ["--read-only"] if read_only else []
        loop = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
        loops.append(loop)
        subprocess.run(["partprobe", loop], capture_output=True, check=False)
        return loop

    yield attach
    for loop in loops:
        subprocess.run(["losetup", "-d", loop], check=False)


NETINSTALL = Path(sys.executable).parent / "netinstall"


def netinstall(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed ``netinstall ARGS`` as an operator would, with no terminal on stdin."""
    assert NETINSTALL.exists(), "run `make setup` first"
    return subprocess.run(
        [str(NETINSTALL), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[postgres.Cluster]:
    """One throwaway PostgreSQL cluster for the session (tests/postgres.py)."""
    try:
        postgres.binaries()
    except postgres.Unavailable as exc:
        pytest.fail(str(exc))  # make setup installs it: a missing server is a broken set-up
    with postgres.cluster() as running:
        yield running


@pytest.fixture
def postgres_url(postgres_cluster: postgres.Cluster) -> Iterator[str]:
    """A fresh database of the session's cluster, dropped after the test; its URL."""
    with postgres_cluster.database() as url:
        yield url
