"""``netinstall host rearm|upgrade|restore`` and ``netinstall server repo add|list``.

A host with a BMC (``cli_bmc``): ``rearm --power`` starts its install at once, and an
upgrade or a restore given to a host that is off powers it on, for its agent to check in.

Assigning work to hosts (SPEC §8, §9) and the repositories it installs from: a
rearm is a network install (netboot armed); an upgrade or a restore is picked up
by the host's dom0 agent at its next check-in and never arms netboot. The server
holds several repositories side by side, one per payload version, each served at
``/repo/<version>/``; the one ``server init --repo DIR`` names is the default
(also ``/repo/``). ``cli.py`` attaches these commands to the ``host`` and
``server`` groups of ``cli_server``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from common.errors import InputError
from netinstall.cli_bmc import rearm_power
from netinstall.cli_options import (
    dir_option,
    echo_json,
    open_fleet,
    open_registry,
    refuse_remote,
    table,
)

if TYPE_CHECKING:
    from common.protocol.messages import HostRecord
    from pxe_server.registry import Registry

REBOOT_HELP = "auto: the agent reboots into the installer at once; manual: the operator reboots."


def _reboot_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--reboot",
        type=click.Choice(["auto", "manual"]),
        default="auto",
        show_default=True,
        help=REBOOT_HELP,
    )(func)


# -- work --------------------------------------------------------------------------


@click.command("rearm")
@click.argument("mac")
@dir_option
@click.option(
    "--power",
    is_flag=True,
    help="Then, through its BMC: next boot from the network (once), power on or cycle.",
)
def host_rearm(mac: str, directory: str, power: bool) -> None:
    """New network-install work for MAC: pending, netboot armed, a new install token.

    With --power its BMC sets its next boot to the network, once, then powers it on (if
    off) or cycles it (if on): the install starts now."""
    with open_fleet(directory) as fleet:
        if power and fleet.host(mac).bmc is None:
            raise InputError(
                f"host {mac} has no BMC for --power; give it one with "
                f"`netinstall host set {mac} --bmc URL --bmc-password-file FILE`"
            )
        item = fleet.rearm(mac)
        click.echo(
            f"rearmed {item.mac}: state {item.state.value}, netboot armed, new install token issued"
        )
        if power:
            rearm_power(fleet, item.mac)


def _assigned(item: HostRecord, what: str) -> None:
    click.echo(
        f"assigned {item.mac} {what} (reboot {item.reboot_policy.value}): state "
        f"{item.state.value}, new install token issued, netboot not armed; "
        "its agent picks the work up at its next check-in"
    )
    if item.power_on is not None:  # a host with a BMC: on if it was off (the server did it)
        click.echo(item.power_on)


@click.command("upgrade")
@click.argument("mac")
@dir_option
@click.option("--version", "version", required=True, help="The payload version to upgrade to.")
@_reboot_option
def host_upgrade(mac: str, directory: str, version: str, reboot: str) -> None:
    """Upgrade MAC in place to VERSION (a registered repository) through its dom0 agent."""
    from common.protocol.messages import RebootPolicy, UpgradeRequest

    with open_fleet(directory) as fleet:
        item = fleet.upgrade(mac, UpgradeRequest(version, RebootPolicy(reboot)))
        _assigned(item, f"an upgrade to {version}")


@click.command("restore")
@click.argument("mac")
@dir_option
@_reboot_option
def host_restore(mac: str, directory: str, reboot: str) -> None:
    """Restore MAC from its backup partition (the system before its last upgrade)."""
    from common.protocol.messages import RebootPolicy, RestoreRequest

    with open_fleet(directory) as fleet:
        item = fleet.restore(mac, RestoreRequest(RebootPolicy(reboot)))
        _assigned(item, "a restore from its backup partition")


# -- repositories --------------------------------------------------------------------


def treeinfo_version(directory: Path) -> str | None:
    """The payload version in ``directory/.treeinfo``; None without one."""
    from hypervisor_payload.treeinfo import TREEINFO, TreeInfoError, parse_treeinfo

    treeinfo = directory / TREEINFO
    if not treeinfo.is_file():
        return None
    try:
        return parse_treeinfo(treeinfo.read_text(encoding="utf-8")).version
    except (OSError, UnicodeDecodeError, TreeInfoError) as exc:
        raise InputError(f"{treeinfo} cannot be read as a .treeinfo: {exc}") from exc


def register_default(registry: Registry, repo: str | None, *, explicit: bool) -> None:
    """``server init``: the default repository's version becomes the default one and is
    registered (again, when ``--repo`` named it: ``explicit``). Prints the version."""
    version = None if repo is None or "://" in repo else treeinfo_version(Path(repo))
    current = registry.settings().get("payload_version")
    if version is not None and version != current:
        registry.set_setting("payload_version", version)
    served = ""
    if version is not None and repo is not None:
        if explicit or registry.repository(version) is None:
            registry.add_repository(version, repo, replace=True)
        served = f" (served at /repo/{version}/ and /repo/)"
    click.echo(f"payload version: {version or current or 'unknown'}{served}")


@click.group("repo")
def repo() -> None:
    """Install repositories, one per payload version, served side by side."""


@repo.command("add")
@click.argument("path", metavar="DIR")
@dir_option
@click.option("--replace", is_flag=True, help="Serve the version from DIR if another holds it.")
def repo_add(path: str, directory: str, replace: bool) -> None:
    """Register the repository DIR under the version its .treeinfo names."""
    refuse_remote(
        "server repo add",
        "a repository is a directory tree on the server's disk, hundreds of megabytes; the "
        "API neither uploads one nor lets a token holder name any directory to serve",
    )
    where = Path(path)
    if not where.is_dir():
        raise InputError(f"{path}: no such directory")
    version = treeinfo_version(where)
    if version is None:
        raise InputError(
            f"{path} holds no .treeinfo, so it is no install repository "
            "(build one with `netinstall images build --payload-version V`)"
        )
    with open_registry(Path(directory)) as registry:
        outcome = registry.add_repository(version, str(where.resolve()), replace=replace)
    click.echo(f"{outcome} repository {version}: {where.resolve()} (served at /repo/{version}/)")


@repo.command("list")
@dir_option
@click.option("--json", "as_json", is_flag=True)
def repo_list(directory: str, as_json: bool) -> None:
    """Every registered repository: version, directory, file count, the default."""
    from common.protocol.codec import encode

    with open_fleet(directory) as fleet:
        rows = fleet.repositories()
    if as_json:
        echo_json([encode(r, envelope=False) for r in rows])
        return
    if not rows:
        click.echo("no repositories; add one with `netinstall server repo add DIR`")
        return
    lines = [("VERSION", "DIRECTORY", "FILES", "DEFAULT")]
    for r in rows:
        files = "missing" if r.files is None else str(r.files)
        lines.append((r.version, r.directory, files, "yes" if r.default else ""))
    click.echo(table(lines))
