"""``netinstall profile``: answer-file templates, boot parameters and SAN settings (SPEC §9).

Like every registry command, each takes ``--dir`` (the server directory's registry) or
works over the API (``netinstall --server URL``): one body over ``netinstall.fleet``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from common.errors import InputError
from netinstall.cli_options import dir_option, echo_json, open_fleet, table

if TYPE_CHECKING:
    from common.protocol.messages import ProfileRecord


@click.group("profile")
def profile() -> None:
    """Answer-file templates and boot parameters that hosts install with."""


def _profile_json(item: ProfileRecord) -> dict[str, object]:
    from common.protocol.codec import encode

    return encode(item, envelope=False)


def _template(template_file: str) -> str:
    try:
        return Path(template_file).read_text("utf-8")
    except OSError as exc:
        raise InputError(f"cannot read the template {template_file}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"the template {template_file} is not UTF-8 text") from exc


def _chain(chain: str) -> str:
    if chain not in ("seed", "ipxe"):
        raise InputError(f"--chain {chain!r}: expected seed or ipxe")
    return chain


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
    from common.protocol.messages import ProfileSpec

    spec = ProfileSpec(
        name=name,
        template=_template(template_file),
        boot_chain=_chain(chain),
        xen_args=xen_args,
        kernel_args=kernel_args,
        payload_version=payload_version,
        san_boot=san_boot,
        multipath=multipath,
        storage_nic=storage_nic,
    )
    with open_fleet(directory) as fleet:
        if update and fleet.find_profile(name) is not None:
            fleet.replace_profile(spec)
            click.echo(f"updated profile {name} (chain {chain})")
        else:
            fleet.add_profile(spec)
            click.echo(f"added profile {name} (chain {chain})")


@profile.command("edit")
@click.argument("name")
@dir_option
@click.option("--template", "template_file", help="A new answer-file template.")
@click.option("--chain", help="Boot chain: seed or ipxe.")
@click.option("--xen-args", help="Xen command line for the installer.")
@click.option("--kernel-args", help="Installer kernel command line (before the answerfile=...).")
@click.option("--payload-version", help="Payload version; '' for the server's default.")
@click.option("--san-boot/--no-san-boot", default=None, help="Hosts boot from an iSCSI LUN.")
@click.option("--multipath/--no-multipath", default=None, help="device_mapper_multipath=yes.")
@click.option("--storage-nic", help="iPXE's storage NIC.")
def profile_edit(
    name: str,
    directory: str,
    *,
    template_file: str | None,
    chain: str | None,
    xen_args: str | None,
    kernel_args: str | None,
    payload_version: str | None,
    san_boot: bool | None,
    multipath: bool | None,
    storage_nic: str | None,
) -> None:
    """Change what is given of profile NAME; the rest stays (its hosts' renders renew)."""
    import dataclasses

    from common.protocol.messages import ProfileSpec

    changes: dict[str, object] = {
        "template": None if template_file is None else _template(template_file),
        "boot_chain": None if chain is None else _chain(chain),
        "xen_args": xen_args,
        "kernel_args": kernel_args,
        "san_boot": san_boot,
        "multipath": multipath,
        "storage_nic": storage_nic,
    }
    given = {k: v for k, v in changes.items() if v is not None}
    if payload_version is not None:
        given["payload_version"] = payload_version or None
    if not given:
        raise InputError("nothing to change: give at least one option (see --help)")
    with open_fleet(directory) as fleet:
        current = fleet.find_profile(name)
        if current is None:
            raise InputError(f"no profile {name!r}; see `netinstall profile list`")
        fields = {f.name for f in dataclasses.fields(ProfileSpec)}
        spec = ProfileSpec(**{k: v for k, v in vars(current).items() if k in fields})
        fleet.replace_profile(dataclasses.replace(spec, **given))  # type: ignore[arg-type]
    click.echo(f"changed profile {name}: {', '.join(sorted(given))}")


@profile.command("list")
@dir_option
@click.option("--json", "as_json", is_flag=True)
def profile_list(directory: str, as_json: bool) -> None:
    """Every profile and how many hosts use it."""
    with open_fleet(directory) as fleet:
        items = fleet.profiles()
    if as_json:
        echo_json([_profile_json(p) for p in items])
        return
    lines = [("NAME", "CHAIN", "PAYLOAD", "HOSTS")]
    lines += [(p.name, p.boot_chain, p.payload_version or "(server)", str(p.hosts)) for p in items]
    click.echo(table(lines))


@profile.command("show")
@click.argument("name")
@dir_option
@click.option("--json", "as_json", is_flag=True)
def profile_show(name: str, directory: str, as_json: bool) -> None:
    """One profile: boot parameters and the answer-file template."""
    with open_fleet(directory) as fleet:
        item = fleet.find_profile(name)
    if item is None:
        raise InputError(f"no profile {name!r}; see `netinstall profile list`")
    if as_json:
        echo_json(_profile_json(item))
        return
    fields = [
        ("name", item.name),
        ("boot chain", item.boot_chain),
        ("xen args", item.xen_args),
        ("kernel args", item.kernel_args),
        ("payload version", item.payload_version or "(the server repository)"),
        ("SAN boot", f"iSCSI via {item.storage_nic}" if item.san_boot else "no"),
        ("multipath", "yes" if item.multipath else "no"),
        ("hosts", str(item.hosts)),
    ]
    for label, value in fields:
        click.echo(f"{label + ':':<17}{value}")
    click.echo("template:")
    click.echo(item.template, nl=not item.template.endswith("\n"))


@profile.command("remove")
@click.argument("name")
@dir_option
def profile_remove(name: str, directory: str) -> None:
    """Remove profile NAME; refused while hosts use it (it says how many)."""
    with open_fleet(directory) as fleet:
        fleet.remove_profile(name)
    click.echo(f"removed profile {name}")
