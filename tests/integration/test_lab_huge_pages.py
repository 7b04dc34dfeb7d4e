"""The lab starts QEMU without transparent huge pages (``qemu.no_huge_pages``): backing the
machine's RAM in huge pages waited on the kernel's memory compaction at every power-on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from netinstall.lab import qemu

pytestmark = pytest.mark.integration

PROBE = "print(open('/proc/self/status').read().count('THP_enabled:\\t0'))"


def test_set_before_exec_and_inherited() -> None:
    for before, expected in ((None, "0"), (qemu.no_huge_pages, "1")):
        done = subprocess.run(
            [sys.executable, "-c", PROBE],
            capture_output=True,
            text=True,
            preexec_fn=before,
            check=True,
            timeout=30,
        )
        assert done.stdout.strip() == expected
