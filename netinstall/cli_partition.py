"""``netinstall partition plan|apply``: the partitioning commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from common.errors import InputError
from common.jsonable import to_jsonable


def _options(**kwargs: Any) -> Any:
    from common.firmware import Firmware
    from partitioning.model import Mode, Options, Preserve

    return Options(
        firmware=Firmware(kwargs["firmware"]),
        disable_gpt=kwargs["disable_gpt"],
        guest_storage=not kwargs["no_guest_storage"],
        preserve_first_partition=Preserve(kwargs["preserve_first_partition"]),
        zap_utility_partitions=kwargs["zap_utility_partitions"],
        mode=Mode(kwargs["mode"]),
    )


def _layout_options(func: Any) -> Any:
    decorators = [
        click.option(
            "--firmware",
            type=click.Choice(["bios", "uefi"]),
            default="bios",
            show_default=True,
            help="Firmware the machine boots with: partition 4 is BIOS boot or an ESP.",
        ),
        click.option("--disable-gpt", is_flag=True, help="The legacy DOS layout (small disks)."),
        click.option("--no-guest-storage", is_flag=True, help="No local SR partition."),
        click.option(
            "--preserve-first-partition",
            type=click.Choice(["true", "false", "if-utility"]),
            default="if-utility",
            show_default=True,
        ),
        click.option(
            "--zap-utility-partitions", is_flag=True, help="Do not keep a utility partition."
        ),
        click.option(
            "--mode", type=click.Choice(["fresh", "upgrade"]), default="fresh", show_default=True
        ),
        click.option(
            "--sr-has-vms",
            is_flag=True,
            help="Upgrade: the local SR holds VMs (keeps the old GPT layout and the SR).",
        ),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _table(plan: Any) -> str:
    from partitioning.model import MiB
    from partitioning.planner import human

    rows = [("no.", "start", "size", "type", "use", "fs", "label", "mount", "")]
    for part in plan.partitions:
        kind = part.gpt_type if part.gpt_type else f"0x{part.dos_type or 0:02x}"
        rows.append(
            (
                str(part.number),
                f"{part.start // MiB} MiB",
                human(part.size),
                kind,
                part.use.value,
                part.filesystem.value if part.filesystem.value != "none" else "-",
                part.fs_label or "-",
                part.mount_point or "-",
                "kept" if part.keep else "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        f"{plan.label.value.upper()} label, {plan.layout.value} layout, "
        f"disk {human(plan.disk_size)} ({plan.sector_size}-byte sectors)"
    ]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines += [f"note: {note}" for note in plan.notes]
    return "\n".join(lines)


@click.group("partition")
def partition() -> None:
    """Plan and write the primary disk's partitions (SPEC §6)."""


@partition.command("plan")
@click.option("--disk-size", help="Size of the disk, e.g. 60GiB (not with --existing).")
@click.option(
    "--existing",
    type=click.Path(exists=True, dir_okay=False),
    help="An image or device whose table (and installation) the plan starts from.",
)
@_layout_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_command(disk_size: str | None, existing: str | None, as_json: bool, **kw: Any) -> None:
    """Print the partition plan for a disk, without touching anything."""
    from partitioning.facts import read_facts
    from partitioning.model import DiskFacts
    from partitioning.planner import plan
    from partitioning.sizes import parse_size

    options = _options(**kw)
    if existing is not None:
        if disk_size is not None:
            raise InputError("give --disk-size or --existing, not both")
        facts = read_facts(existing, sr_has_vms=kw["sr_has_vms"])
    elif disk_size is None:
        raise InputError("give --disk-size SIZE (e.g. 60GiB) or --existing IMAGE")
    else:
        if kw["mode"] == "upgrade":
            raise InputError("an upgrade plan starts from a disk: give --existing IMAGE")
        facts = DiskFacts(size=parse_size(disk_size), sr_has_vms=kw["sr_has_vms"])
    result = plan(facts, options)
    click.echo(json.dumps(to_jsonable(result), indent=2) if as_json else _table(result))


@partition.command("apply")
@click.argument("target", type=click.Path(exists=True, dir_okay=False))
@_layout_options
@click.option("--mkfs", is_flag=True, help="Make the filesystems (root, backup, logs, ESP, swap).")
@click.option("--yes", is_flag=True, help="Write without asking.")
def apply_command(target: str, mkfs: bool, yes: bool, **kw: Any) -> None:
    """Plan TARGET (a block device or image file) from its own facts, show the plan, write it."""
    from partitioning.apply import apply_plan
    from partitioning.facts import read_facts
    from partitioning.mkfs import make_filesystems
    from partitioning.planner import plan

    facts = read_facts(target, sr_has_vms=kw["sr_has_vms"])
    result = plan(facts, _options(**kw))
    click.echo(_table(result))
    if not yes:
        if not sys.stdin.isatty():
            raise InputError("not writing without --yes: there is no terminal to ask")
        click.confirm(f"Write this table to {target}? Everything else on it is lost", abort=True)
    apply_plan(result, Path(target), facts_before=facts)
    click.echo(f"wrote the {result.layout.value} table to {target}")
    if mkfs:
        for made in make_filesystems(result, Path(target)):
            click.echo(f"made {made}")
