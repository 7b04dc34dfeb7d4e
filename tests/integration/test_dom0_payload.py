"""The dom0 services as the payload installs them: ``netinstall_dom0`` with ``common``
beside it under /usr/lib/netinstall, run by a fresh interpreter the way the launchers
start them (the copied ``common`` is what they import, not the source tree's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hypervisor_payload.dom0_root import Dom0Root, install_netinstall_files

pytestmark = pytest.mark.integration

PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])  # as /usr/sbin/netinstall-agent does
import netinstall_dom0.agent, netinstall_dom0.firstboot
import common.protocol.codec, common.process
from common.protocol.messages import Checkin
from netinstall_dom0.facts import parse_multipath
maps = parse_multipath(sys.argv[2])
print(json.dumps({
    "codec": common.protocol.codec.__file__,
    "process": common.process.__file__,
    "agent": netinstall_dom0.agent.__file__,
    "body": common.protocol.codec.encode(Checkin("0.1.0", multipath=maps)),
}))
"""


def test_the_agent_imports_the_common_package_copied_beside_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    units = install_netinstall_files(Dom0Root(root, "6.12", {}, 0), "0.1.0")
    assert "netinstall-agent.service" in units
    lib = root / "usr/lib/netinstall"
    maps = json.dumps({"maps": [{"name": "mpatha", "uuid": "3600", "path_groups": [
        {"paths": [{"dev": "sda", "chk_st": "ready"}]}]}]})  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(lib), maps],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    for key in ("codec", "process", "agent"):
        assert Path(found[key]).is_relative_to(lib), found[key]
    assert found["body"] == {
        "protocol": 2,
        "running_version": "0.1.0",
        "state": "running",
        "multipath": [
            {"name": "mpatha", "wwid": "3600", "paths": [{"device": "sda", "state": "ready"}]}
        ],
    }
    assert not (lib / "netinstall_dom0" / "runner.py").exists()  # common.process serves
