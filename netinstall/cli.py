"""The ``netinstall`` command line (click). A thin shell: each command calls one
function of the packages and turns their errors into one message and an exit code.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import click

from common.errors import InputError, NetinstallError
from netinstall import __version__
from netinstall.cli_options import dir_option

F = TypeVar("F", bound=Callable[..., Any])


class _Group(click.Group):
    """Turns our errors into a message and an exit code; never a traceback for input errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InputError as exc:
            for problem in exc.problems:
                click.echo(f"netinstall: {problem}", err=True)
            ctx.exit(exc.exit_code)
        except NetinstallError as exc:
            click.echo(f"netinstall: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get("NETINSTALL_DEBUG"):
                raise
            click.echo(
                f"netinstall: internal error: {type(exc).__name__}: {exc} "
                "(set NETINSTALL_DEBUG=1 for the traceback, and please report it)",
                err=True,
            )
            ctx.exit(70)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="netinstall")
@click.option(
    "--server",
    envvar="NETINSTALL_SERVER",
    metavar="URL",
    help="Work on this server over its API (https://HOST:PORT) instead of a local server "
    "directory: host, profile, server repo list, pool and answerfile validate --host.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --server: a file holding the API token (else $NETINSTALL_TOKEN).",
)
@click.option(
    "--ca-file",
    envvar="NETINSTALL_CA_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --server: the CA certificate (PEM) that signed the server's (default: the "
    "system's CAs).",
)
@click.pass_context
def main(
    ctx: click.Context, server: str | None, token_file: Path | None, ca_file: Path | None
) -> None:
    """Unattended network installs of Xen hypervisor hosts."""
    from netinstall.cli_options import Remote

    if server:
        ctx.obj = Remote(server, token_file, ca_file)


# -- answer files -----------------------------------------------------------


@main.group(cls=_Group)
def answerfile() -> None:
    """Validate answer files and print examples."""


def _validate_host(mac: str, directory: str, as_json: bool) -> None:
    """``answerfile validate --host MAC``: the host's answer file as the server renders it
    now, validated (nothing else done); exit 2 if it is invalid."""
    from common.protocol.codec import encode
    from netinstall.cli_options import echo_json, open_fleet
    from pxe_server.model import normalise_mac

    with open_fleet(directory) as fleet:
        check = fleet.check_answer_file(normalise_mac(mac))
    name = f"host {check.mac}"
    if as_json:
        echo_json(encode(check, envelope=False))
    elif check.valid:
        count = len(check.warnings)
        plural = "warning" if count == 1 else "warnings"
        click.echo(f"{name}: valid: {check.summary}; {count} {plural}")
        for warning in check.warnings:
            click.echo(f"{name}: {warning}")
    else:
        for problem in check.problems:
            click.echo(f"{name}: {problem}", err=True)
    sys.exit(0 if check.valid else 2)


@answerfile.command("validate")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the model of each file as JSON.")
@click.option(
    "--host",
    "host_mac",
    metavar="MAC",
    help="Validate the answer file the server renders for host MAC now (with --server: over "
    "its API), instead of FILES; the host is not signalled.",
)
@dir_option
def answerfile_validate(
    files: tuple[str, ...], as_json: bool, host_mac: str | None, directory: str
) -> None:
    """Validate answer FILES (or a host's: --host MAC); exit 2 if any is invalid."""
    import answerfile as af
    from common.jsonable import to_jsonable
    from pxe_server.answer_check import summary

    if host_mac is not None:
        if files:
            raise InputError("give answer FILES or --host MAC, not both")
        _validate_host(host_mac, directory, as_json)
        return
    if not files:
        raise InputError("give answer FILES to validate, or --host MAC")

    failed = False
    reports: list[dict[str, Any]] = []
    for name in files:
        try:
            result = af.parse_file(name)  # streamed: never more than the size cap
        except OSError as exc:
            failed = True
            message = f"cannot read the file: {exc.strerror}"
            reports.append({"file": name, "valid": False, "errors": [message]})
            if not as_json:
                click.echo(f"{name}: {message}", err=True)
            continue
        except af.AnswerFileError as exc:
            failed = True
            reports.append({"file": name, "valid": False, "errors": list(exc.problems)})
            if not as_json:
                for problem in exc.problems:
                    click.echo(f"{name}: {problem}", err=True)
            continue
        warnings = [str(w) for w in result.warnings]
        reports.append(
            {"file": name, "valid": True, "model": to_jsonable(result.model), "warnings": warnings}
        )
        if not as_json:
            count = len(warnings)
            plural = "warning" if count == 1 else "warnings"
            click.echo(f"{name}: valid: {summary(result.model)}; {count} {plural}")
            for warning in warnings:
                click.echo(f"{name}: {warning}")
    if as_json:
        click.echo(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    sys.exit(2 if failed else 0)


@answerfile.command("example")
@click.option(
    "--mode",
    type=click.Choice(["fresh", "upgrade", "restore"]),
    default="fresh",
    show_default=True,
)
def answerfile_example(mode: str) -> None:
    """Print a commented example answer file that validates."""
    text = resources.files("answerfile").joinpath("examples", f"{mode}.xml").read_text("utf-8")
    click.echo(text, nl=False)


@answerfile.command("schema")
def answerfile_schema() -> None:
    """Print the RELAX NG schema of answer files."""
    from answerfile import schema

    click.echo(schema.generate(), nl=False)


@answerfile.command("reference")
def answerfile_reference() -> None:
    """Print the answer-file reference (docs/answerfile.md) in Markdown."""
    from answerfile import reference

    click.echo(reference.generate(), nl=False)


# -- boot parameters -----------------------------------------------------------


@main.group(cls=_Group)
def bootargs() -> None:
    """Parse installer boot command lines."""


@bootargs.command("parse")
@click.argument("cmdline")
def bootargs_parse(cmdline: str) -> None:
    """Parse CMDLINE (the dom0 part, or the whole mboot.c32 line with ---) and print it as JSON."""
    from answerfile import bootargs as ba

    document = (
        ba.parse_multiboot(cmdline).to_dict()
        if "---" in cmdline.split()
        else ba.parse_cmdline(cmdline).to_dict()
    )
    click.echo(json.dumps(document, indent=2))


# -- partitioning ----------------------------------------------------------------

from netinstall.cli_partition import partition  # noqa: E402

main.add_command(partition)
from netinstall.cli_plan import plan  # noqa: E402

main.add_command(plan)


# -- supplemental packs -----------------------------------------------------------

from netinstall.cli_pack import pack  # noqa: E402

main.add_command(pack)


# -- images -----------------------------------------------------------------------


@main.group(cls=_Group)
def images() -> None:
    """Build the installer, the install repository and the netboot tree."""


@images.command("build")
@click.option("--out", type=click.Path(file_okay=False), default="build", show_default=True)
@click.option(
    "--cache",
    type=click.Path(file_okay=False),
    default=str(Path.home() / ".cache" / "netinstall"),
    show_default=True,
)
@click.option("--only", type=click.Choice(["installer", "repo", "netboot"]))
@click.option("--payload-version", help="Version of the payload (default: netinstall's own).")
@click.option("--mirror", help="Debian archive URI (default: from this machine's apt sources).")
@click.option("--security-mirror", help="Debian security archive URI (default: from apt sources).")
def images_build(
    out: str,
    cache: str,
    *,
    only: str | None,
    payload_version: str | None,
    mirror: str | None,
    security_mirror: str | None,
) -> None:
    """Build images incrementally: an unchanged target is skipped."""
    from netinstall.build import build

    outcomes = build(
        Path(out),
        Path(cache),
        only=only,
        payload_version=payload_version,
        mirror=mirror,
        security_mirror=security_mirror,
    )
    for outcome in outcomes:
        state = "built" if outcome.built else "up to date"
        click.echo(f"{outcome.target}: {state} ({Path(out) / outcome.target})")


# -- demo -----------------------------------------------------------------------


from netinstall.cli_demo import demo  # noqa: E402

main.add_command(demo)


# -- provisioning server ------------------------------------------------------------

from netinstall.cli_bmc import host_power  # noqa: E402
from netinstall.cli_host import host  # noqa: E402
from netinstall.cli_logs import host_logs  # noqa: E402
from netinstall.cli_profile import profile  # noqa: E402
from netinstall.cli_server import server  # noqa: E402
from netinstall.cli_unit import unit  # noqa: E402
from netinstall.cli_work import host_rearm, host_restore, host_upgrade, repo  # noqa: E402

server.add_command(repo)
from netinstall.cli_backup import server_backup, server_migrate, server_restore  # noqa: E402

for command in (server_backup, server_restore, server_migrate):
    server.add_command(command)
server.add_command(unit)
from netinstall.cli_watch import host_watch  # noqa: E402

for command in (host_rearm, host_upgrade, host_restore, host_logs, host_watch, host_power):
    host.add_command(command)
main.add_command(server)
main.add_command(host)
main.add_command(profile)

# -- pools --------------------------------------------------------------------------

from netinstall.cli_job import job  # noqa: E402
from netinstall.cli_pool import pool  # noqa: E402

main.add_command(pool)
main.add_command(job)
from netinstall.cli_update import update  # noqa: E402

main.add_command(update)
