"""The machine's firmware: how it boots (SPEC §3) and so which partition table,
boot loader and boot chain it gets. One definition for every layer."""

from __future__ import annotations

import enum


class Firmware(enum.StrEnum):
    BIOS = "bios"  # legacy PXE, DHCP client-arch 0
    UEFI = "uefi"  # client-arch 7 or 9
