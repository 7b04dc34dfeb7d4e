"""dom0's /etc/iscsi.initramfs, sourced by open-iscsi's initramfs script, run under sh
against a fake iBFT and a fake iscsistart that prints its arguments."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hypervisor_payload.dom0_config import ISCSI_INITRAMFS

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX sh"),
]


def _source(tmp_path: Path, targets: int, call: str) -> list[str]:
    """Source the snippet as the initramfs does, then run ``call``: the fake's argv."""
    ibft = tmp_path / "ibft"
    for index in range(targets):
        (ibft / f"target{index}").mkdir(parents=True)
    fake = tmp_path / "iscsistart"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    text = ISCSI_INITRAMFS.replace("/sys/firmware/ibft", str(ibft))
    text = text.replace("/sbin/iscsistart", str(fake))
    script = f'{text}\necho "ISCSI_AUTO=$ISCSI_AUTO"\n{call}\n'
    done = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
    )  # fmt: skip
    return done.stdout.splitlines()


def test_one_target_logs_in_with_open_iscsi_s_defaults(tmp_path: Path) -> None:
    assert _source(tmp_path, 1, "iscsistart -b") == ["ISCSI_AUTO=true", "-b"]


def test_no_ibft_leaves_the_host_alone(tmp_path: Path) -> None:
    assert _source(tmp_path, 0, "true") == ["ISCSI_AUTO="]


def test_several_paths_get_multipath_session_settings(tmp_path: Path) -> None:
    lines = _source(tmp_path, 2, "iscsistart -b")
    assert lines[:2] == ["ISCSI_AUTO=true", "-b"]
    params = dict(line.split("=", 1) for line in lines[2:] if line != "-P")
    assert params == {
        "node.session.initial_login_retry_max": "4",
        "node.conn[0].timeo.noop_out_interval": "5",
        "node.conn[0].timeo.noop_out_timeout": "5",
        "node.session.timeo.replacement_timeout": "15",
    }
    # The script's other calls (-N brings the NICs up, -f lists the table) are untouched.
    assert _source(tmp_path / "n", 2, "iscsistart -N")[1:] == ["-N"]
