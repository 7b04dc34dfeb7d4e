"""``netinstall server``: the provisioning server and its registry (SPEC §9).

Hosts live in ``cli_host``, assigning work (``host rearm|upgrade|restore``) and
repositories (``server repo``) in ``cli_work``, profiles in ``cli_profile``; ``cli.py``
attaches them.

Every command takes ``--dir`` (default ``NETINSTALL_DIR``, else /var/lib/netinstall)
and opens the registry directly; that is safe beside a running server. No output
ever shows an install token, an agent credential, the API token or a password.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from common.errors import InputError, NetinstallError
from netinstall.cli_options import (
    dir_option,
    echo_json,
    open_fleet,
    open_registry,
    refuse_remote,
    server_directory,
    table,
    when,
)
from pxe_server.http_tls import DEFAULT_TLS_PORT
from pxe_server.limits import UNKNOWN_LIMIT, UNKNOWN_RATE
from pxe_server.secrets import API_TOKEN_FILE

if TYPE_CHECKING:
    pass

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


# -- server ----------------------------------------------------------------------


@click.group("server")
def server() -> None:
    """Create and run the provisioning server (TFTP, HTTP, optional DHCP)."""


def _repo_setting(value: str) -> str:
    if _URL.match(value):
        scheme = value.split("://", 1)[0].lower()
        if scheme not in ("http", "https", "ftp", "nfs"):
            raise InputError(f"--repo {value!r}: expected an http, https, ftp or nfs URL or a path")
        return value
    path = Path(value)
    if not path.is_dir():
        raise InputError(f"--repo {value}: no such directory")
    return str(path.resolve())


def _netboot_setting(value: str) -> str:
    path = Path(value)
    if not path.is_dir():
        raise InputError(f"--netboot {value}: no such directory")
    return str(path.resolve())


def _bmc_key(where: Path, *, made: bool) -> str:
    """``DIR/bmc-key`` made with a new registry (what seals BMC passwords); a directory that
    joins a registry another one made must have that one's copy."""
    from pxe_server.secrets import BMC_KEY_FILE, BmcKey

    path = where / BMC_KEY_FILE
    if path.is_file():
        return f"{path} (kept)"
    if made:
        BmcKey.load(where, create=True)
        return f"{path} (written, mode 0600)"
    return (
        f"{path} not written: copy bmc-key from the server directory that made the registry "
        "(mode 0600), or this server cannot open the BMC passwords it stores"
    )


@server.command("init")
@click.argument("positional", required=False, metavar="[DIR]")
@dir_option
@click.option("--repo", help="The install repository: a directory or a URL (default build/repo).")
@click.option("--netboot", help="The netboot tree (default build/netboot).")
@click.option(
    "--advertise",
    help="The address clients reach this server at, put into boot configs and URLs "
    "(needed when the server binds 0.0.0.0 without --interface).",
)
@click.option(
    "--unknown-policy",
    type=click.Choice(["local", "install"]),
    help="What a MAC not in the registry gets: boot from its disk (the default: an "
    "unknown machine is never wiped) or install with the default profile.",
)
@click.option(
    "--token-ttl",
    type=click.IntRange(min=60, max=90 * 24 * 3600),
    help="Seconds a host's install token may enrol an installer, counted from its first "
    "hand-out to a boot (default 86400: a day). Every server sharing the registry uses it.",
)
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    help="Keep the registry in this PostgreSQL database (postgresql://USER@/DB?host=/SOCKET/DIR "
    "or postgresql://USER:PASSWORD@HOST/DB), recorded in DIR/database-url (0600). "
    "Default: SQLite, DIR/registry.sqlite.",
)
@click.option(
    "--shared-dir",
    metavar="PATH",
    help="Keep what every server of a shared registry serves alike (uploaded log bundles, "
    "the files at /files/) in PATH, a directory they all mount; recorded in DIR/shared-dir. "
    "Default: the server directory.",
)
def server_init(
    positional: str | None,
    *,
    directory: str,
    repo: str | None,
    netboot: str | None,
    advertise: str | None,
    unknown_policy: str | None,
    token_ttl: int | None,
    db_url: str | None,
    shared_dir: str | None,
) -> None:
    """Create the server directory: registry, API token, the default profile. Idempotent."""
    from pxe_server import shared_dir as shared
    from pxe_server.http_files import FILES_DIR
    from pxe_server.registry import TOKEN_TTL_SETTING, Registry, default_profile, has_registry

    where = server_directory(directory, positional)
    if where.exists() and not where.is_dir():
        raise InputError(f"{where} exists and is not a directory")
    if shared_dir is not None:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        click.echo(f"shared directory: {shared.record(where, shared_dir)}")
    files = shared.shared(where) / FILES_DIR
    if files.exists() and not files.is_dir():
        raise InputError(f"{files} exists and is not a directory (it holds the files for /files/)")
    existed = has_registry(where)
    settings = {
        "repo": _repo_setting(repo) if repo is not None else None,
        "netboot": _netboot_setting(netboot) if netboot is not None else None,
    }
    advertised = _ip("--advertise", advertise) if advertise is not None else None
    if not where.exists():
        where.mkdir(mode=0o700, parents=True)
    recorded = _record_database(where, db_url) if db_url is not None else None
    try:
        registry = Registry.open(where)
    except NetinstallError:
        if recorded is not None:
            recorded.unlink()  # this run wrote it: leave no directory that cannot open
        raise
    if recorded is not None:
        click.echo(f"registry database: {registry.where} (recorded in {recorded}, 0600)")
    with registry:
        if existed:
            click.echo(f"{where} is already initialised: nothing rotated or replaced")
        else:
            click.echo(f"initialised {where}: registry {registry.where}")
        state = "written, mode 0600" if not existed else "kept"
        if existed and not (where / API_TOKEN_FILE).is_file():
            # The registry keeps only the token's keyed hash: a lost copy is replaced.
            registry.new_api_token()
            state = "missing, so a new one was written, mode 0600; a running server takes it"
        elif not (where / API_TOKEN_FILE).is_file():
            # A database another server directory made: one API token for the registry.
            state = (
                "not written: this directory shares the registry's API token with the server "
                "directory that made the database; copy its api-token here (mode 0600) to "
                "use the CLI on this machine"
            )
        click.echo(f"API token: {where / API_TOKEN_FILE} ({state})")
        click.echo(f"BMC key: {_bmc_key(where, made=not state.startswith('not written'))}")
        if not files.is_dir():
            files.mkdir()
            files.chmod(0o755)  # not the umask's: the operator's files are meant to be read
        click.echo(f"files: {files} (served at /files/)")
        if registry.get_profile("default") is None:
            registry.add_profile(default_profile())
            click.echo("profile default: created")
        current = registry.settings()
        if unknown_policy is not None and unknown_policy != current.get("unknown_policy"):
            registry.set_setting("unknown_policy", unknown_policy)
        elif "unknown_policy" not in current:
            registry.set_setting("unknown_policy", "local")  # unknown MACs boot locally
        click.echo(f"unknown MACs: {registry.settings()['unknown_policy']}")
        if token_ttl is not None:
            registry.set_setting(TOKEN_TTL_SETTING, str(token_ttl))
        click.echo(f"install tokens enrol for {registry.token_ttl()} s after their first hand-out")
        if advertised is not None and advertised != current.get("advertise"):
            registry.set_setting("advertise", advertised)
            click.echo(f"advertise: {advertised}")
        for key, given in settings.items():
            built = Path("build") / key
            value = given
            if value is None and key not in current and built.is_dir():
                value = str(built.resolve())
            if value is not None and value != current.get(key):
                registry.set_setting(key, value)
                current[key] = value
            hint = f"not set (give --{key}, or build it with `netinstall images build`)"
            click.echo(f"{key}: {current.get(key, hint)}")
        from netinstall.cli_work import register_default

        register_default(registry, current.get("repo"), explicit=repo is not None)


@server.group("token")
def token() -> None:
    """The operator API token (``DIR/api-token``)."""


@token.command("rotate")
@click.argument("positional", required=False, metavar="[DIR]")
@dir_option
def token_rotate(positional: str | None, directory: str) -> None:
    """Replace the API token: the new one goes to DIR/api-token (0600), the old one stops
    working (a running server takes the new one at its first use, within a second)."""
    refuse_remote("server token rotate", "the token's only copy is written on the server's disk")
    where = server_directory(directory, positional)
    with open_registry(where) as registry:
        registry.new_api_token()
    click.echo(
        f"new API token in {where / API_TOKEN_FILE} (mode 0600); the old one is refused from "
        "now on (a running server takes the new one within a second, no restart)"
    )


def _record_database(where: Path, text: str) -> Path | None:
    """Record the PostgreSQL URL ``text`` as ``where``'s registry (``DIR/database-url``);
    the file if this run wrote it. A directory with another registry already is refused."""
    from pxe_server.store.engine import (
        DATABASE_URL_FILE,
        REGISTRY_FILE,
        database_url,
        record_url,
        recorded_url,
        shown,
    )

    url = database_url(text)
    if (where / REGISTRY_FILE).is_file():
        raise InputError(
            f"{where} has a SQLite registry already ({REGISTRY_FILE}); --db is for a new "
            "server directory"
        )
    current = recorded_url(where)
    if current is not None:
        if current != url:
            raise InputError(
                f"{where} records another registry database already ({shown(current)}); "
                f"edit or remove {where / DATABASE_URL_FILE} to change it"
            )
        return None
    record_url(where, url)
    return where / DATABASE_URL_FILE


def _port(option: str, text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise InputError(f"{option} {text!r} is not a port number (0-65535)")
    return int(text)


def _count(option: str, text: str) -> int:
    if not text.isdigit() or int(text) > 1_000_000:
        raise InputError(f"{option} {text!r} is not a count (0 to 1000000)")
    return int(text)


def _ip(option: str, text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise InputError(f"{option} {text!r} is not an IP address") from None


def _dhcp_range(text: str) -> tuple[str, str]:
    parts = text.split(",")
    if len(parts) != 2:
        raise InputError(
            f"--range {text!r}: expected FIRST,LAST, e.g. 192.168.77.100,192.168.77.200"
        )
    first, last = (ipaddress.ip_address(_ip("--range", p.strip())) for p in parts)
    if first.version != 4 or last.version != 4 or first > last:
        raise InputError(f"--range {text!r}: expected two IPv4 addresses, the lower first")
    return str(first), str(last)


@server.command("run")
@click.argument("positional", required=False, metavar="[DIR]")
@dir_option
@click.option("--bind", default="0.0.0.0", show_default=True, help="Address to listen on.")  # noqa: S104
@click.option("--tftp-port", default="69", show_default=True)
@click.option("--http-port", default="8080", show_default=True)
@click.option("--dhcp", default="off", show_default=True, help="off, full or proxy (dnsmasq).")
@click.option("--interface", help="The interface dnsmasq serves (with --dhcp full|proxy).")
@click.option(
    "--advertise",
    metavar="ADDR",
    help="The address clients reach this server at, for this server only (several servers "
    "on one registry: each its own); over the registry's `advertise` setting, --bind and "
    "--interface.",
)
@click.option("--range", "dhcp_range", help="FIRST,LAST addresses to lease (--dhcp full).")
@click.option(
    "--unknown-limit",
    default=str(UNKNOWN_LIMIT),
    show_default=True,
    help="unknown_policy install: at most this many machines registered as unknown MACs "
    "and not running yet (more get 503 and no host record).",
)
@click.option(
    "--unknown-rate",
    default=str(UNKNOWN_RATE),
    show_default=True,
    help="unknown_policy install: at most this many unknown MACs registered a minute, "
    "in bursts of as many (more get 429).",
)
@click.option(
    "--boot-transport",
    type=click.Choice(["http", "tftp"]),
    default="http",
    show_default=True,
    help="How boot loaders that can choose fetch Xen, the kernel and install.img: http "
    "(GRUB's http module; pxelinux where iPXE is the PXE stack) or tftp only.",
)
@click.option(
    "--name",
    help="This server's name among the servers of its registry (several servers: one a "
    "segment); default: the one given before, else the machine's host name and the "
    "directory's id. Hosts' power calls go through the server on their segment.",
)
@click.option("--tls-cert", help="TLS: the certificate (PEM) of the operator API's listener.")
@click.option("--tls-key", help="TLS: its private key (PEM, unencrypted).")
@click.option(
    "--tls-port",
    help=f"TLS: the operator API's port (default {DEFAULT_TLS_PORT}); the HTTP port then "
    "serves the boot path only and refuses the API token.",
)
def server_run(
    positional: str | None,
    directory: str,
    *,
    tls_cert: str | None,
    tls_key: str | None,
    tls_port: str | None,
    bind: str,
    tftp_port: str,
    http_port: str,
    dhcp: str,
    interface: str | None,
    advertise: str | None,
    dhcp_range: str | None,
    unknown_limit: str,
    unknown_rate: str,
    boot_transport: str,
    name: str | None,
) -> None:
    """Serve TFTP, HTTP (boot files, repository, answer files, API) and optionally DHCP."""
    where = server_directory(directory, positional)
    if name is not None:
        from pxe_server.segments import server_name_of

        server_name_of(name)
    with open_registry(where):
        pass
    options: dict[str, Any] = {
        "bind": _ip("--bind", bind),
        "tftp_port": _port("--tftp-port", tftp_port),
        "http_port": _port("--http-port", http_port),
    }
    if advertise is not None:
        options["advertise"] = _ip("--advertise", advertise)
    if dhcp not in ("off", "full", "proxy"):
        raise InputError(f"--dhcp {dhcp!r}: expected off, full or proxy")
    if dhcp == "off" and (interface or dhcp_range):
        raise InputError("--interface and --range need --dhcp full or --dhcp proxy")
    if dhcp != "off" and not interface:
        raise InputError(f"--dhcp {dhcp} needs --interface IF (the interface to serve)")
    if dhcp == "full" and not dhcp_range:
        raise InputError("--dhcp full needs --range FIRST,LAST (the addresses to lease)")
    parsed = _dhcp_range(dhcp_range) if dhcp_range else None
    from pxe_server.admission import UnknownLimits
    from pxe_server.server import TlsFiles, run_server

    tls = None
    if (tls_cert is None) != (tls_key is None):
        raise InputError("--tls-cert and --tls-key go together: give both, or neither")
    if tls_cert is not None and tls_key is not None:
        port = DEFAULT_TLS_PORT if tls_port is None else _port("--tls-port", tls_port)
        tls = TlsFiles(Path(tls_cert), Path(tls_key), port)
    elif tls_port is not None:
        raise InputError("--tls-port needs --tls-cert and --tls-key")

    limits = UnknownLimits(
        _count("--unknown-limit", unknown_limit), _count("--unknown-rate", unknown_rate)
    )
    run_server(
        where,
        dhcp=dhcp,
        interface=interface,
        dhcp_range=parsed,
        unknown_limits=limits,
        boot_transport="tftp" if boot_transport == "tftp" else "http",
        tls=tls,
        name=name,
        **options,
    )


@server.command("list")
@dir_option
@click.option("--json", "as_json", is_flag=True)
def server_list(directory: str, as_json: bool) -> None:
    """The servers of the registry (several: one a segment), with their last heartbeat and
    the hosts whose power calls go through each."""
    import time

    from common.protocol.codec import encode

    with open_fleet(directory) as fleet:
        found = fleet.servers()
    if as_json:
        echo_json([encode(s, envelope=False) for s in found])
        return
    if not found:
        click.echo("no servers yet (a `server run` registers itself)")
        return
    now = time.time()
    lines = [("NAME", "ADDRESS", "LAST SEEN", "STATE", "HOSTS", "STARTED")]
    lines += [
        (s.name, s.address, f"{max(0.0, now - s.last_seen):.0f} s ago",
         "running" if s.running else "not seen lately", str(s.hosts), when(s.started))
        for s in found
    ]  # fmt: skip
    click.echo(table(lines))
