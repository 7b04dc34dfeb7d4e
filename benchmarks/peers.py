"""The peer servers and clients the benchmarks compare against, from Debian's packages.

Each package is downloaded with `apt-get download` into a cache directory and unpacked
there with `dpkg-deb -x`: nothing is installed, no service is started or left running, and
a second run finds them in the cache. The benchmarks start each peer themselves, in a
network namespace of their own, and stop it after.

    .venv/bin/python benchmarks/peers.py        # fetch (once) and print where they are
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "netinstall/bench-peers"

# package -> the program in it the benchmarks run (its path inside the package)
PACKAGES = {
    "dnsmasq-base": ["usr/sbin/dnsmasq"],
    "tftpd-hpa": ["usr/sbin/in.tftpd"],
    "atftpd": ["usr/sbin/atftpd"],
    "atftp": ["usr/bin/atftp"],
    "libwrap0": [],  # tftpd-hpa and atftpd link it; the host need not have it
}


@dataclass(frozen=True)
class Peers:
    root: Path  # a directory per package, each with that package's tree

    def program(self, package: str) -> str:
        return str(self.root / package / PACKAGES[package][0])

    @property
    def env(self) -> dict[str, str]:
        """The environment the unpacked programs run in (their libraries found first)."""
        libs = [self.root / "libwrap0/usr/lib/x86_64-linux-gnu"]
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = ":".join(str(lib) for lib in libs)
        return env


def ensure(cache: Path = CACHE) -> Peers:
    """The unpacked packages, downloaded and unpacked first if the cache lacks them."""
    debs, root = cache / "debs", cache / "root"
    debs.mkdir(parents=True, exist_ok=True)
    root.mkdir(exist_ok=True)
    for package in PACKAGES:
        unpacked = root / package / ".unpacked"
        if unpacked.exists():
            continue
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            done = subprocess.run(
                ["apt-get", "download", package],
                cwd=debs,
                capture_output=True,
                text=True,
                check=False,
            )
            found = sorted(debs.glob(f"{package}_*.deb"))
            if done.returncode != 0 or not found:
                raise SystemExit(f"apt-get download {package} failed: {done.stderr.strip()}")
        # each in a tree of its own: atftpd and tftpd-hpa both have usr/sbin/in.tftpd
        subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(root / package)], check=True)
        unpacked.touch()
    return Peers(root)


if __name__ == "__main__":
    peers = ensure(Path(sys.argv[1]) if len(sys.argv) > 1 else CACHE)
    for package, programs in PACKAGES.items():
        if programs:
            print(f"{package}: {peers.program(package)}")
