"""``netinstall plan``: the installer's whole plan for an answer file, touching nothing.

The same planner as the installer's plan step (``installer_core.planning``), with the
machine's facts given as options: the disk's size, the firmware, the boot arguments
and (optionally) the memory the installer may stage the payload in. The repository's
``.treeinfo`` is read when it is reachable over HTTP or as a local file, to list what
would be fetched; an NFS repository is not mounted. Every refusal the installer would
make in its plan step is the same sentence here, with exit status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from common.errors import InputError, SourceError

if TYPE_CHECKING:
    from installer_core.planning import PayloadFound


@click.command("plan")
@click.argument("answer_file", metavar="ANSWERFILE", type=click.Path(dir_okay=False))
@click.option("--disk-size", required=True, help="Size of the run's disk, e.g. 60GiB or 20G.")
@click.option(
    "--firmware",
    type=click.Choice(["bios", "uefi"]),
    default="bios",
    show_default=True,
    help="Firmware the machine boots the installer with.",
)
@click.option(
    "--boot-args",
    default="",
    help="The installer's boot arguments (SPEC §4), e.g. 'disable-gpt "
    "netinstall.server=http://10.0.0.1:8080 BOOTIF=52:54:00:12:34:56'.",
)
@click.option(
    "--memory",
    help="Memory the installer may stage the payload in, e.g. 2GiB (default: not checked).",
)
@click.option("--offline", is_flag=True, help="Do not read the repository's .treeinfo.")
def plan(
    answer_file: str,
    *,
    disk_size: str,
    firmware: str,
    boot_args: str,
    memory: str | None,
    offline: bool,
) -> None:
    """Print the install plan for ANSWERFILE (layout, fetches, boot loader, scripts, network)."""
    import answerfile
    from answerfile.bootargs import parse_cmdline
    from answerfile.model import Mode
    from common.firmware import Firmware
    from installer_core import planning
    from installer_core.plan import Paths, describe
    from partitioning.model import DiskFacts
    from partitioning.sizes import parse_size

    try:
        text = Path(answer_file).read_bytes()
    except OSError as exc:
        raise InputError(f"{answer_file}: cannot read the file: {exc.strerror}") from exc
    answer = answerfile.parse(text).model
    args = parse_cmdline(f"install {boot_args}")
    if answer.mode is not Mode.FRESH:
        raise InputError(
            f"{answer_file} is an answer file for {answer.mode.value}: netinstall plan plans "
            "fresh installs (an upgrade or a restore is planned from the disk the installer "
            "finds there)"
        )
    disk, _ = planning.disk_element(answer)
    device = Path(disk.path or disk.spec)
    found = planning.DiskFound(device, DiskFacts(size=parse_size(disk_size)))
    result = planning.make_plan(
        args,
        Firmware(firmware),
        answer,
        disk=found,
        network=planning.NetworkFound(),
        memory=planning.MemoryFound(available=parse_size(memory) if memory else None),
        learn_payload=_offline if offline else _learn,
        paths=Paths(),
    )
    for line in describe(result):
        click.echo(line)


def _offline(repository: str) -> PayloadFound:
    from installer_core.planning import PayloadFound

    return PayloadFound(None, (), "--offline: .treeinfo was not read")


def _learn(repository: str) -> PayloadFound:
    """.treeinfo and the sizes, over HTTP or from a local file; one quick try."""
    from installer_core.download import learn_payload
    from installer_core.fetch import Transport
    from installer_core.planning import PayloadFound

    if urlsplit(repository).scheme not in ("http", "https", "file"):
        return PayloadFound(None, (), "not read: netinstall plan reads http(s) and file URLs")
    try:
        info, files = learn_payload(repository, Transport(timeout=10), retries=1)
    except SourceError as exc:
        return PayloadFound(None, (), f"not read: {exc}")
    return PayloadFound(info, files)
