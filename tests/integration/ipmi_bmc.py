"""A lab BMC that speaks IPMI 2.0 over LAN: pyghmi's BMC server class with the power state
and the boot device in memory, each change written to a JSON state file for the test to
read. Run as its own process (pyghmi's sessions share one I/O loop per process, so the
BMC and the client under test must not share one):

    python -m tests.integration.ipmi_bmc PORT USER PASSWORD STATE_FILE

It listens on 127.0.0.1:PORT (UDP) and writes STATE_FILE at once, then on every change:
{"power": "on"|"off", "boot": "network"|..., "cycles": N}.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from pyghmi.ipmi import bmc  # type: ignore[import-untyped]

# Imported for its SHA-1 session (it replaces pyghmi's server session on import).
from netinstall.lab import ipmi_bmc as _sha1  # noqa: F401


class LabBmc(bmc.Bmc):  # type: ignore[misc]
    """Power and boot device in memory, written to ``state_file`` on every change."""

    def __init__(self, authdata: dict[str, str], port: int, state_file: Path) -> None:
        super().__init__(authdata, port=port, address="127.0.0.1")
        self.state_file = state_file
        self.state: dict[str, Any] = {"power": "off", "boot": "default", "cycles": 0}
        self._save()

    def _save(self) -> None:
        part = self.state_file.with_suffix(".part")
        part.write_text(json.dumps(self.state))
        os.replace(part, self.state_file)

    def get_power_state(self) -> str:
        return str(self.state["power"])

    def power_on(self) -> int:
        self.state["power"] = "on"
        self._save()
        return 0

    def power_off(self) -> int:
        self.state["power"] = "off"
        self._save()
        return 0

    def power_reset(self) -> int:
        if self.state["power"] != "on":
            return 0xD5  # "not supported in present state": a host that is off is not reset
        self.state["cycles"] += 1
        self._save()
        return 0

    power_cycle = power_reset

    def get_boot_device(self) -> str:
        return str(self.state["boot"])

    def set_boot_device(self, bootdevice: str) -> None:
        self.state["boot"] = bootdevice
        self._save()

    def is_active(self) -> bool:
        return self.state["power"] == "on"


def main() -> None:
    port, user, password, state_file = sys.argv[1:5]
    LabBmc({user: password}, int(port), Path(state_file)).listen()


if __name__ == "__main__":
    main()
