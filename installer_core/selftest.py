"""``python3 -m installer_core --selftest``: is the installer image complete?

Imports what the install steps will need (pyparted, lxml, requests and our
packages), parses the bundled example answer files (the RELAX NG schema and
the time-zone list of Debian's tzdata), lists the block disks with the size
the kernel reports and the partition table pyparted reads, under Xen reads the
host's memory with ``xl info`` (what the hardware checks will use), and prints
``INSTALLER-SELFTEST-OK``. The image's /init powers the machine off afterwards.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

MARKER = "INSTALLER-SELFTEST-OK"
FAILED = "INSTALLER-SELFTEST-FAILED"
MODULES = (
    "parted",
    "lxml.etree",
    "requests",
    "common.errors",
    "common.process",
    "answerfile",
    "answerfile.bootargs",
    "partitioning.facts",
    "partitioning.planner",
    "partitioning.apply",
    "partitioning.mkfs",
)
SKIPPED_PREFIXES = ("loop", "ram", "zram")
XEN_CAPABILITIES = Path("/proc/xen/capabilities")
SECTOR = 512  # /sys/block/X/size counts 512-byte units whatever the disk's sector size


@dataclass(frozen=True)
class Disk:
    name: str
    size: int  # bytes


def import_all(names: tuple[str, ...] = MODULES) -> list[str]:
    """Import every module; return "name version" lines for the third-party ones."""
    found = []
    for name in names:
        module = importlib.import_module(name)
        version = getattr(module, "__version__", None)
        if name == "lxml.etree":
            version = ".".join(str(part) for part in getattr(module, "LXML_VERSION", ()))
        if version:
            found.append(f"{name.split('.')[0]} {version}")
    return found


def block_disks(sys_block: Path = Path("/sys/block")) -> list[Disk]:
    """The whole disks the kernel knows, without loop, RAM and empty devices."""
    disks: list[Disk] = []
    if not sys_block.is_dir():
        return disks
    for entry in sorted(sys_block.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(SKIPPED_PREFIXES):
            continue
        try:
            sectors = int((entry / "size").read_text().strip())
        except (OSError, ValueError):
            continue
        if sectors > 0:
            disks.append(Disk(entry.name, sectors * SECTOR))
    return disks


def human(size: int) -> str:
    """Decimal units, one decimal: ``8.6 GB``."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def partition_table(device: Path) -> str:
    """What pyparted (through our partitioning package) reads on ``device``."""
    # Imported here, not at the top: a missing module is a self-test failure to report.
    from partitioning.facts import read_partitions  # noqa: PLC0415

    table = read_partitions(device)
    if table.label is None:
        return "no partition table"
    return f"{table.label.value} table, {len(table.partitions)} partitions"


def parse_examples() -> int:
    """Parse the example answer files shipped with the answerfile package."""
    import answerfile  # noqa: PLC0415 - as above

    examples = sorted((Path(answerfile.__file__).parent / "examples").glob("*.xml"))
    for example in examples:
        answerfile.parse(example.read_bytes())
    return len(examples)


def xl_total_memory(xl_info: str) -> int:
    """The host's memory in MiB from ``xl info`` output (``total_memory : 2047``)."""
    for line in xl_info.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "total_memory":
            return int(value.strip())
    raise ValueError("xl info printed no total_memory")


def xen_memory(capabilities: Path = XEN_CAPABILITIES) -> int | None:
    """The host's memory in MiB as Xen reports it; None when not in Xen's dom0."""
    try:
        if "control_d" not in capabilities.read_text():
            return None
    except OSError:
        return None
    from common.process import run as run_command  # noqa: PLC0415 - as above

    return xl_total_memory(run_command(["xl", "info"], timeout=60).stdout)


def run(out: TextIO = sys.stdout, dev: Path = Path("/dev")) -> int:
    """The self-test; 0 when everything worked (the marker is printed last)."""
    try:
        print(f"python {sys.version.split()[0]}; " + ", ".join(import_all()), file=out)
        print(f"answer file examples parsed: {parse_examples()}", file=out)
        disks = block_disks()
        for disk in disks:
            table = partition_table(dev / disk.name)
            print(f"disk {disk.name} {human(disk.size)}: {table}", file=out)
        if not disks:
            print("no disks found", file=out)
        memory = xen_memory()
        xen = "not running as Xen's dom0" if memory is None else f"host memory {memory} MiB"
        print(f"xen: {xen}", file=out)
    except Exception as exc:  # noqa: BLE001 - the self-test reports any failure
        print(f"{FAILED}: {type(exc).__name__}: {exc}", file=out, flush=True)
        return 1
    print(MARKER, file=out, flush=True)
    return 0
