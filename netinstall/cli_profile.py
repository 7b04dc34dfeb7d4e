"""``netinstall profile``: answer-file templates, boot parameters and SAN settings (SPEC §9).

Like every registry command, each takes ``--dir`` and opens the registry directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from common.errors import InputError
from common.jsonable import to_jsonable
from netinstall.cli_options import dir_option, echo_json, open_registry, table

if TYPE_CHECKING:
    from pxe_server.model import Profile


@click.group("profile")
def profile() -> None:
    """Answer-file templates and boot parameters that hosts install with."""


def _profile_json(item: Profile, hosts: int) -> dict[str, object]:
    return {**cast(dict[str, object], to_jsonable(item)), "hosts": hosts}


@profile.command("add")
@click.argument("name")
@dir_option
@click.option("--template", "template_file", required=True, help="The answer-file template.")
@click.option("--chain", default="seed", show_default=True, help="Boot chain: seed or ipxe.")
@click.option("--xen-args", help="Xen command line for the installer.")
@click.option("--kernel-args", help="Installer kernel command line (before the answerfile=...).")
@click.option("--payload-version", help="Payload version (default: the server's repository).")
@click.option(
    "--san-boot",
    is_flag=True,
    help="Hosts boot from an iSCSI LUN (host add --san-target): the iPXE chain hooks it "
    "(publishing the iBFT), the installer gets use_ibft, installed hosts sanboot.",
)
@click.option("--multipath", is_flag=True, help="The installer gets device_mapper_multipath=yes.")
@click.option("--storage-nic", default="net1", show_default=True, help="iPXE's storage NIC.")
@click.option("--update", is_flag=True, help="Replace the profile if it exists.")
def profile_add(
    name: str,
    directory: str,
    template_file: str,
    *,
    chain: str,
    xen_args: str | None,
    kernel_args: str | None,
    payload_version: str | None,
    san_boot: bool,
    multipath: bool,
    storage_nic: str,
    update: bool,
) -> None:
    """Add profile NAME whose answer file is the jinja2 template FILE."""
    from pxe_server.model import BootChain, Profile

    if chain not in tuple(BootChain):
        raise InputError(f"--chain {chain!r}: expected seed or ipxe")
    try:
        text = Path(template_file).read_text("utf-8")
    except OSError as exc:
        raise InputError(f"cannot read the template {template_file}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"the template {template_file} is not UTF-8 text") from exc
    extra = {"xen_args": xen_args, "kernel_args": kernel_args}
    item = Profile(
        name=name,
        template=text,
        boot_chain=BootChain(chain),
        payload_version=payload_version,
        san_boot=san_boot,
        multipath=multipath,
        storage_nic=storage_nic,
        **{k: v for k, v in extra.items() if v is not None},
    )
    with open_registry(Path(directory)) as registry:
        if update and registry.get_profile(name) is not None:
            registry.update_profile(item)
            click.echo(f"updated profile {name} (chain {chain})")
        else:
            registry.add_profile(item)
            click.echo(f"added profile {name} (chain {chain})")


@profile.command("list")
@dir_option
@click.option("--json", "as_json", is_flag=True)
def profile_list(directory: str, as_json: bool) -> None:
    """Every profile and how many hosts use it."""
    with open_registry(Path(directory)) as registry:
        items = registry.list_profiles()
        counts = {p.name: 0 for p in items}
        for item in registry.list_hosts():
            counts[item.profile] = counts.get(item.profile, 0) + 1
    if as_json:
        echo_json([_profile_json(p, counts[p.name]) for p in items])
        return
    lines = [("NAME", "CHAIN", "PAYLOAD", "HOSTS")]
    lines += [
        (p.name, p.boot_chain.value, p.payload_version or "(server)", str(counts[p.name]))
        for p in items
    ]
    click.echo(table(lines))


@profile.command("show")
@click.argument("name")
@dir_option
@click.option("--json", "as_json", is_flag=True)
def profile_show(name: str, directory: str, as_json: bool) -> None:
    """One profile: boot parameters and the answer-file template."""
    with open_registry(Path(directory)) as registry:
        item = registry.get_profile(name)
        if item is None:
            raise InputError(f"no profile {name!r}; see `netinstall profile list`")
        hosts = sum(1 for h in registry.list_hosts() if h.profile == name)
    if as_json:
        echo_json(_profile_json(item, hosts))
        return
    fields = [
        ("name", item.name),
        ("boot chain", item.boot_chain.value),
        ("xen args", item.xen_args),
        ("kernel args", item.kernel_args),
        ("payload version", item.payload_version or "(the server repository)"),
        ("SAN boot", f"iSCSI via {item.storage_nic}" if item.san_boot else "no"),
        ("multipath", "yes" if item.multipath else "no"),
        ("hosts", str(hosts)),
    ]
    for label, value in fields:
        click.echo(f"{label + ':':<17}{value}")
    click.echo("template:")
    click.echo(item.template, nl=not item.template.endswith("\n"))
