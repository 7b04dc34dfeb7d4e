"""The provisioning server: TFTP, HTTP and (optionally) dnsmasq, wired together (SPEC §9).

``Server`` starts and stops the parts (tests and the demo use it as a context
manager, on ephemeral ports); ``run_server`` is ``netinstall server run``: it starts
a ``Server``, says where everything listens, and stops it on SIGINT or SIGTERM.

Registry settings read at start (``netinstall server init`` writes them):
``netboot`` (the netboot tree: TFTP root and ``/boot/``), ``repo`` (``/repo/``),
``unknown_policy`` (``local`` or ``install``), ``advertise`` (the address clients
reach this server at, used in every URL handed out; needed when the server binds
0.0.0.0 without ``--interface``) and ``grub_modules`` (the GRUB modules directory of
proxy-DHCP mode's and UEFI HTTP Boot's GRUB images).

``tls`` (``server run --tls-cert/--tls-key/--tls-port``, ``http_tls``): a TLS listener
for the operator API, which the plain HTTP port then refuses.

Every server runs a job runner (``job_runner``: a thread of its own, never the event
loop): it claims queued jobs, or jobs whose server died, and drives them; at ``stop`` it
gives its job's lease up so that any server (or this one, restarted) goes on at once.

``boot_transport`` (``server run --boot-transport``): "http" (default) or "tftp", how
boot loaders that can choose fetch Xen, the kernel and install.img (README "Boot
transport"). With ``--dhcp full`` the server builds UEFI HTTP Boot's GRUB image
(``grub_image.build_http_grub``) and dnsmasq offers it to HTTPClient requests.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import logging
import signal
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, cast

import jinja2

from common.errors import InputError
from common.logformat import SecondFormatter
from pxe_server import grub_image
from pxe_server.admission import RegistrationRefused, UnknownGate, UnknownLimits
from pxe_server.dnsmasq import Dnsmasq, DnsmasqConfig
from pxe_server.http import HttpServer, boot_config, boot_config_cached
from pxe_server.http_boot_proxy import HttpBootProxy
from pxe_server.http_tls import DEFAULT_TLS_PORT, server_context
from pxe_server.job_runner import JobRunner, holder_name
from pxe_server.model import BOOT_TRANSPORTS, BadMac, BootTransport, ServerSettings, UnknownPolicy
from pxe_server.power_desk import PowerDesk
from pxe_server.registry import Registry
from pxe_server.segments import name_server, server_name, server_name_of
from pxe_server.store import outage
from pxe_server.tftp import LATER, Later, TftpServer
from pxe_server.tftp_protocol import NOT_DEFINED, Refusal

log = logging.getLogger("netinstall.server")

DHCP_MODES = ("off", "full", "proxy")
# TFTP opener threads on a PostgreSQL registry: a boot config's reads and its signalling
# write wait on the network there, and one thread would queue every other client's boot
# config behind them (two servers' fleet at 1,000 hosts: a TFTP boot config's p99 1.2 s
# with one, 0.15-0.34 s with four). On SQLite one: its reads never wait.
TFTP_OPENERS = 4
_SIOCGIFADDR, _SIOCGIFNETMASK = 0x8915, 0x891B
DEFAULT_GRUB_MODULES = (
    Path.home() / ".cache/netinstall/work/netboot/grub-efi-amd64-bin/usr/lib/grub/x86_64-efi"
)


def _ioctl_address(interface: str, request: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(
                sock.fileno(), request, struct.pack("256s", interface.encode()[:15])
            )
        except OSError as exc:
            raise InputError(
                f"interface {interface!r} has no IPv4 address ({exc.strerror})"
            ) from None
    return socket.inet_ntoa(packed[20:24])


def interface_network(interface: str) -> ipaddress.IPv4Interface:
    """The IPv4 address and network of a network interface, e.g. ``192.168.77.1/24``."""
    address = _ioctl_address(interface, _SIOCGIFADDR)
    netmask = _ioctl_address(interface, _SIOCGIFNETMASK)
    return ipaddress.IPv4Interface(f"{address}/{netmask}")


def interface_ra_prefix(interface: str, if_inet6: Path = Path("/proc/net/if_inet6")) -> str | None:
    """The /64 prefix of ``interface``'s first global IPv6 address, if it has one.

    dnsmasq then sends router advertisements for it, which spares the 2019 iPXE
    ROMs their 16 s wait for one (TESTING.md).
    """
    if not if_inet6.is_file():
        return None
    for line in if_inet6.read_text().splitlines():
        fields = line.split()
        if len(fields) != 6 or fields[5] != interface or fields[3] != "00":
            continue
        if int(fields[2], 16) != 64:
            continue
        address = ipaddress.IPv6Address(int(fields[0], 16))
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False).network_address)
    return None


def advertised_address(bind: str, interface: str | None, advertise: str | None) -> str:
    """The address put into URLs and boot configs: ``advertise`` (``server run
    --advertise``, else the registry's setting), else a specific bind address, else
    ``interface``'s address; an InputError if none says it."""
    if advertise:
        return advertise
    if bind not in ("", "0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
        return bind
    if interface:
        return str(interface_network(interface).ip)
    raise InputError(
        f"the server listens on {bind or 'every address'}, so it cannot tell clients its address: "
        "give --interface, bind one address, or --advertise ADDR (this server's), or set "
        "the registry setting `advertise` (netinstall server init --advertise ADDR)"
    )


class PortUnavailable(InputError):
    """The server cannot listen where it was told to: one sentence, what to do about it."""


@contextmanager
def listening(what: str, proto: str, bind: str, port: int, option: str) -> Iterator[None]:
    """Turn a failure to bind ``bind:port`` into one sentence naming them and the way out."""
    try:
        yield
    except OSError as exc:
        where = f"{_url_host(bind or '0.0.0.0')}:{port}/{proto}"  # noqa: S104 - only shown
        if exc.errno == errno.EADDRINUSE:
            why = (
                "something else listens there already (another `netinstall server run`? "
                f"see `ss -lnp sport = :{port}`); stop it or choose another port with {option}"
            )
        elif exc.errno == errno.EACCES:
            why = (
                "permission denied: ports below 1024 need root (or CAP_NET_BIND_SERVICE); "
                f"run as root or choose a port of 1024 or more with {option}"
            )
        elif exc.errno == errno.EADDRNOTAVAIL:
            why = "this machine has no such address; give one of its own with --bind"
        else:
            why = f"{exc.strerror or exc}"
        raise PortUnavailable(f"cannot serve {what} on {where}: {why}") from None


@dataclass(frozen=True)
class TlsFiles:
    """``server run --tls-cert FILE --tls-key FILE --tls-port N`` (``http_tls``)."""

    cert: Path
    key: Path
    port: int = DEFAULT_TLS_PORT


class Server:
    """TFTP + HTTP (+ dnsmasq) on one registry directory. ``start()``/``stop()`` or ``with``."""

    def __init__(
        self,
        directory: Path,
        *,
        bind: str = "0.0.0.0",  # noqa: S104 - a PXE server answers on every interface by default
        tftp_port: int = 69,
        http_port: int = 8080,
        dhcp: str = "off",
        interface: str | None = None,
        dhcp_range: tuple[str, str] | None = None,
        unknown_limits: UnknownLimits | None = None,
        boot_transport: BootTransport = "http",
        tls: TlsFiles | None = None,
        job_runner: bool = True,
        advertise: str | None = None,
        name: str | None = None,
    ) -> None:
        if name is not None:
            server_name_of(name)
        if boot_transport not in BOOT_TRANSPORTS:
            raise InputError(
                f"--boot-transport {boot_transport!r} is not one of {', '.join(BOOT_TRANSPORTS)}"
            )
        if dhcp not in DHCP_MODES:
            raise InputError(f"--dhcp {dhcp!r} is not one of {', '.join(DHCP_MODES)}")
        if dhcp != "off" and not interface:
            raise InputError(f"--dhcp {dhcp} needs --interface (the network to answer DHCP on)")
        if dhcp == "full" and dhcp_range is None:
            raise InputError("--dhcp full needs --dhcp-range FIRST,LAST (the addresses to lease)")
        self.directory = Path(directory)
        self.bind = bind
        self.dhcp = dhcp
        self.interface = interface
        self.advertise = advertise  # this server's own, over the registry's setting
        self.dhcp_range = dhcp_range
        self.boot_transport = boot_transport
        self.tls = tls
        self.unknown = UnknownGate(unknown_limits or UnknownLimits())  # TFTP's and HTTP's
        self._tftp_port = tftp_port
        self._http_port = http_port
        self.registry: Registry | None = None
        self.settings: ServerSettings | None = None
        self.tftp: TftpServer | None = None
        self.http: HttpServer | None = None
        self.dnsmasq: Dnsmasq | None = None
        self.http_boot_proxy: HttpBootProxy | None = None
        self._proxy_grub: bytes | None = None
        self._run_jobs = job_runner
        self.jobs: JobRunner | None = None  # claims and runs jobs (pxe_server.job_runner)
        self._name = name  # `server run --name` (None: the one recorded, or the default)
        self.name: str | None = None  # the name it runs under (pxe_server.segments)
        self.desk: PowerDesk | None = None  # heartbeat, segment servers, power requests

    @property
    def http_port(self) -> int:
        return self.http.port if self.http else self._http_port

    @property
    def tftp_port(self) -> int:
        return self.tftp.port if self.tftp else self._tftp_port

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    @property
    def tls_port(self) -> int | None:
        """The TLS listener's port (None: no TLS, or not started)."""
        return self.http.tls_port if self.http else None

    def _start(self) -> None:
        # The certificate and key first: a bad one is refused before anything listens.
        tls_context = server_context(self.tls.cert, self.tls.key) if self.tls else None
        registry = self.registry = Registry.open(self.directory)
        values = registry.settings()
        netboot = Path(values["netboot"]) if values.get("netboot") else None
        repo_value = values.get("repo") or None
        remote = repo_value is not None and "://" in repo_value
        repo = Path(repo_value) if repo_value and not remote else None
        try:
            policy = UnknownPolicy(values.get("unknown_policy", UnknownPolicy.LOCAL.value))
        except ValueError:
            raise InputError(
                f"registry setting unknown_policy is {values['unknown_policy']!r}; "
                "expected local or install"
            ) from None
        address = advertised_address(
            self.bind, self.interface, self.advertise or values.get("advertise")
        )
        provisional = ServerSettings(http_base="", tftp_address=address, unknown_policy=policy)
        with listening("HTTP", "tcp", self.bind, self._http_port, "--http-port"):
            self.http = HttpServer(
                self.directory,
                provisional,
                netboot,
                repo,
                host=self.bind,
                port=self._http_port,
                repo_url=repo_value if remote else None,
                unknown=self.unknown,
                registry=registry,  # one writer and one render cache for TFTP and HTTP
            )
        if self.tls is not None and tls_context is not None:
            with listening("HTTPS", "tcp", self.bind, self.tls.port, "--tls-port"):
                self.http.listen_tls(tls_context, self.tls.port)
            self.http.operator_base = f"https://{_url_host(address)}:{self.http.tls_port}"
        settings = self.settings = ServerSettings(
            http_base=f"http://{_url_host(address)}:{self.http.port}",
            tftp_address=address,
            unknown_policy=policy,
            boot_transport=self.boot_transport,
        )
        self.http.settings = settings
        if netboot is None or not netboot.is_dir():
            log.warning(
                "no netboot tree (%s): TFTP serves boot configs only; run `netinstall images "
                "build`, then `netinstall server init --netboot DIR`",
                netboot or "not configured",
            )
            root = self.directory / "empty-tftp-root"
            root.mkdir(exist_ok=True)
        else:
            root = netboot
        if self.dhcp == "proxy":
            self._build_proxy_grub(values.get("grub_modules"), address)
        if self.dhcp != "off":
            self.http.http_boot_loader = self._build_http_grub(values.get("grub_modules"))
        self.tftp = TftpServer(
            root,
            self._resolve,
            host=self.bind,
            port=self._tftp_port,
            resolve_now=self._resolve_now,
            openers=TFTP_OPENERS if registry.networked else 1,
        )
        with listening("TFTP", "udp", self.bind, self._tftp_port, "--tftp-port"):
            self.tftp.start()
        self.http.start()
        if self.dhcp != "off":
            self._start_dnsmasq(registry, settings)
        if self.dhcp == "proxy" and self.http.http_boot_loader is not None:
            self._start_http_boot_proxy(settings)
        if self._run_jobs:
            self.jobs = JobRunner(registry, holder_name(settings.http_base))
            self.jobs.start()
        before = server_name(self.directory)
        self.name = name_server(self.directory, self._name)
        if before is not None and before != self.name:
            moved = registry.rename_server(before, self.name)
            log.info("server %s is %s now; %d host(s) follow it", before, self.name, moved)
        self.desk = PowerDesk(registry, self.name, self.http.operator_base or settings.http_base)
        self.desk.start()
        log.info(
            "serving: TFTP %s:%d (root %s), HTTP %s:%d (clients use %s), DHCP %s%s",
            self.bind,
            self.tftp.port,
            root,
            self.bind,
            self.http.port,
            settings.http_base,
            self.dhcp,
            f" on {self.interface}" if self.interface and self.dhcp != "off" else "",
        )
        if self.http.operator_base is not None:
            log.info(
                "operator API on %s only (TLS); the HTTP port refuses the API token",
                self.http.operator_base,
            )
        console = self.http.operator_base or settings.http_base
        log.info("web console: %s/ui/ (log in with the API token)", console)

    def _dynamic(self, path: str) -> tuple[Registry, ServerSettings, str] | bytes | None:
        """What TFTP's ``path`` is: proxy mode's GRUB image (its bytes), a name to look up
        among the boot configs (with the registry and settings to render it from), or
        nothing while the server is not serving."""
        registry, settings = self.registry, self.settings
        if registry is None or settings is None:
            return None
        name = path.lstrip("/")
        if self._proxy_grub is not None and name == "grubx64.efi":
            return self._proxy_grub
        return registry, settings, name

    def _resolve(self, path: str, client: tuple[str, int]) -> bytes | None:
        """TFTP's dynamic files: proxy mode's GRUB image, then rendered boot configs."""
        found = self._dynamic(path)
        if not isinstance(found, tuple):
            return found
        registry, settings, name = found
        try:
            with _database_refusal():
                text = boot_config(registry, name, settings, self.unknown)
        except (BadMac, RegistrationRefused):  # names no machine, or may not become one now
            return None  # (refusals are logged once a burst by the gate)
        except (InputError, jinja2.TemplateError) as exc:
            log.warning("tftp %s for %s: cannot render it: %s", name, client[0], exc)
            return None
        return text.encode() if text is not None else None

    def _resolve_now(self, path: str, client: tuple[str, int]) -> bytes | Later | None:
        """_resolve's answer when the TFTP loop can give it without blocking (a config the
        render cache holds and whose serving writes nothing), else LATER."""
        found = self._dynamic(path)
        if not isinstance(found, tuple):
            return found
        registry, settings, name = found
        with _database_refusal():
            text = boot_config_cached(registry, name, settings)
        return LATER if text is None else text.encode()

    def _build_proxy_grub(self, modules: str | None, address: str) -> None:
        out = self.directory / "proxy-grub" / "grubx64.efi"
        grub_image.build_proxy_grub(
            Path(modules) if modules else DEFAULT_GRUB_MODULES, address, out
        )
        self._proxy_grub = out.read_bytes()
        log.info("built %s with prefix (tftp,%s)/grub for proxy-DHCP", out, address)

    def _build_http_grub(self, modules: str | None) -> Path | None:
        """UEFI HTTP Boot's GRUB in the server directory; None (logged) without modules."""
        settings = cast(ServerSettings, self.settings)
        out = self.directory / "http-grub" / "grubx64.efi"
        try:
            grub_image.build_http_grub(
                Path(modules) if modules else DEFAULT_GRUB_MODULES, settings.http_base, out
            )
        except InputError as exc:
            log.warning("no UEFI HTTP Boot (HTTPClient requests get no offer): %s", exc)
            return None
        log.info("built %s for UEFI HTTP Boot (prefix on %s)", out, settings.http_base)
        return out

    def _start_dnsmasq(self, registry: Registry, settings: ServerSettings) -> None:
        interface = cast(str, self.interface)
        network = interface_network(interface)
        ipxe = {p.name for p in registry.list_profiles() if p.uses_ipxe}
        san = {p.name for p in registry.list_profiles() if p.san_boot}
        mode = cast(Literal["full", "proxy"], self.dhcp)
        first, last = self.dhcp_range or (str(network.network.network_address), None)
        config = DnsmasqConfig(
            interface=interface,
            mode=mode,
            range_start=first,
            range_end=last if mode == "full" else None,
            server_address=settings.tftp_address,
            tftp_port=self.tftp_port,
            http_base=settings.http_base,
            ipxe_hosts=[h.mac for h in registry.list_hosts() if h.profile in ipxe],
            load_ipxe_hosts=[h.mac for h in registry.list_hosts() if h.profile in san],
            lease_file=self.directory / "dnsmasq.leases",
            subnet=str(network.network),
            ipv6_ra_prefix=interface_ra_prefix(interface),
            boot_transport=self.boot_transport,
            http_boot_url=(
                f"{settings.http_base}/http-boot/grubx64.efi"
                if self.http is not None and self.http.http_boot_loader is not None
                else ""
            ),
        )
        workdir = self.directory / "dnsmasq"
        workdir.mkdir(exist_ok=True)
        self.dnsmasq = Dnsmasq(config, workdir)
        self.dnsmasq.start()

    def _start_http_boot_proxy(self, settings: ServerSettings) -> None:
        """Proxy offers for UEFI HTTP Boot (dnsmasq's proxy mode answers PXEClient only)."""
        url = f"{settings.http_base}/http-boot/grubx64.efi"
        try:
            proxy = HttpBootProxy(cast(str, self.interface), settings.tftp_address, url)
        except ValueError as exc:  # an IPv6 address or an over-long URL
            log.warning("no UEFI HTTP Boot in proxy mode: %s", exc)
            return
        proxy.start()
        self.http_boot_proxy = proxy

    def stop(self) -> None:
        """Stop everything that runs (in reverse order) and release the ports (HttpServer
        binds at construction: its stop releases the port even if it never started)."""
        parts = (self.desk, self.jobs, self.http_boot_proxy, self.dnsmasq, self.http, self.tftp)
        for part in parts:
            if part is not None:
                try:
                    part.stop()
                except Exception:
                    log.exception("stopping %s", type(part).__name__)
        self.dnsmasq = self.http = self.tftp = None
        self.http_boot_proxy = self.jobs = self.desk = None
        if self.registry is not None:
            self.registry.close()
            self.registry = None

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def _database_refusal() -> Iterator[None]:
    """The registry's database in trouble (``store.outage``) while a TFTP request is
    served: a TFTP error naming it, logged as the transfer's one line, no traceback."""
    try:
        yield
    except Exception as exc:
        why = outage.reason(exc)
        if why is None:
            raise
        said = f"the registry's database: {why}"
        raise Refusal(NOT_DEFINED, "server busy, try again", said) from None


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def run_server(
    directory: Path,
    *,
    bind: str,
    tftp_port: int,
    http_port: int,
    dhcp: str,
    interface: str | None,
    dhcp_range: tuple[str, str] | None,
    unknown_limits: UnknownLimits | None = None,
    boot_transport: BootTransport = "http",
    tls: TlsFiles | None = None,
    advertise: str | None = None,
    name: str | None = None,
) -> None:
    """``netinstall server run``: serve until SIGINT or SIGTERM, then stop cleanly."""
    if not logging.getLogger().handlers:  # the request log and where things listen, on stderr
        stderr = logging.StreamHandler()
        stderr.setFormatter(SecondFormatter("%(asctime)s %(name)s: %(message)s"))
        logging.basicConfig(level=logging.INFO, handlers=[stderr])
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Server(
            directory,
            bind=bind,
            tftp_port=tftp_port,
            http_port=http_port,
            dhcp=dhcp,
            interface=interface,
            dhcp_range=dhcp_range,
            unknown_limits=unknown_limits,
            boot_transport=boot_transport,
            tls=tls,
            advertise=advertise,
            name=name,
        ):
            while not stopping.wait(1.0):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped")
