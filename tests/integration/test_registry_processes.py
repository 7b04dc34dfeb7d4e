"""The registry across processes: what the server, the CLI and the lab do at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pxe_server.registry import REGISTRY_FILE, Registry, default_profile

MAC = "52:54:00:12:34:56"


def test_two_registries_in_one_process_keep_seeing_other_processes(tmp_path: Path) -> None:
    """A second open in this process must not drop the first's locks: another process's
    write and close would then delete the WAL under us, and we would never see it."""
    first = Registry.open(tmp_path)
    first.add_profile(default_profile())
    first.add_host(MAC)
    second = Registry.open(tmp_path)  # as the server does: its HTTP side opens its own
    script = (
        "import sys; from pathlib import Path; from pxe_server.registry import Registry\n"
        "with Registry.open(Path(sys.argv[1])) as r:\n"
        "    r.update_host(sys.argv[2], name='written-elsewhere')\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path), MAC], check=True)
    try:
        for registry in (first, second):
            host = registry.get_host(MAC)
            assert host is not None
            assert host.name == "written-elsewhere"
        assert (tmp_path / f"{REGISTRY_FILE}-wal").exists()  # not deleted under us
    finally:
        second.close()
        first.close()
