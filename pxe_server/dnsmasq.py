"""DHCP for network boot: a generated dnsmasq config and dnsmasq as a child process (SPEC §9).

dnsmasq only answers DHCP (``port=0``: no DNS; no ``enable-tftp``: our own TFTP
server serves files). Two modes:

* ``full``: dnsmasq hands out addresses from a range and names the boot loader
  by client-arch: ``pxelinux.0`` (0, BIOS), ``grubx64.efi`` (7 and 9, x86-64 UEFI),
  with next-server (siaddr) = our address.
* ``proxy``: another DHCP server hands out addresses; dnsmasq answers PXE
  clients only (``dhcp-range=<network>,proxy``) with a one-entry PXE menu per
  client system type. GRUB ignores the proxy's server address, so the server
  builds its GRUB image with its address in the prefix (``grub_image``).

Boot transport (README "Boot transport"). With ``boot_transport`` "http" (the default), a
BIOS request that says user-class iPXE (option 175 or 77: QEMU's ROM, an iPXE-flashed
NIC) gets ``<http_base>/boot/pxelinux.0`` as its boot file: iPXE fetches it over HTTP,
and pxelinux takes the URL's directory as its path prefix, so ldlinux.c32, mboot.c32 and
its config ``<http_base>/boot/pxelinux.cfg/01-<mac>`` come over HTTP through iPXE's PXE
file API; the server renders configs asked for under ``/boot/`` with HTTP URLs for Xen,
the kernel and install.img. That path is how dnsmasq's finding reaches the renderer. A
plain PXE ROM (no user-class iPXE) keeps ``pxelinux.0`` over TFTP, and its config, asked
for over TFTP, names TFTP files. With "tftp" every PXE request gets the TFTP loaders.

UEFI HTTP Boot: a request whose vendor class holds ``HTTPClient`` gets ``http_boot_url``
(the server's own GRUB image, its prefix on HTTP: ``grub_image.build_http_grub``) and
option 60 ``HTTPClient``, which edk2 needs to take the offer as an HTTP boot offer; it
never touches TFTP. That is full mode: dnsmasq's proxy mode answers only requests whose
vendor class is ``PXEClient`` (tests/integration/test_dnsmasq.py proves it gives an
HTTPClient no offer), so in proxy mode ``http_boot_proxy`` sends HTTP Boot's offers.

Hosts whose profile chose the iPXE chain get ``<http_base>/ipxe/<mac>`` as boot
file, but only on requests that say user-class iPXE (option 175 or 77); their
firmware's own request still gets the seed's loader. SAN hosts (``load_ipxe_hosts``)
get iPXE itself on their firmware's request instead (``undionly.kpxe``, ``ipxe.efi``),
in both modes: only iPXE hooks the LUN and publishes the iBFT.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from common.errors import CommandError, InputError
from pxe_server.model import normalise_mac

log = logging.getLogger("netinstall.dnsmasq")

Mode = Literal["full", "proxy"]
IPXE_NO_PXEDHCP = 176  # iPXE's encapsulated option (in 175): do not wait for ProxyDHCP
Transport = Literal["http", "tftp"]
HTTP_CLIENT = "HTTPClient"  # the vendor class (option 60) of UEFI HTTP Boot, asked and answered
PXE_TFTP_PORT = 69  # PXE ROMs and firmware only ever ask port 69
_INTERFACE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
_URL = re.compile(r"^https?://[^\s,\"'#]+$")
_LEASE = re.compile(r"^(infinite|[0-9]+[smhdw]?)$")


@dataclass(frozen=True)
class DnsmasqConfig:
    """What dnsmasq needs to know; ``render()`` gives its config file text (pure)."""

    interface: str
    mode: Mode
    range_start: str  # full: first address handed out; proxy: the subnet's network address
    range_end: str | None  # full: last address handed out; proxy: None
    server_address: str  # our IPv4 address on ``interface``: next-server, PXE boot server
    tftp_port: int = PXE_TFTP_PORT  # our TFTP server's port (PXE clients use 69 only)
    http_base: str = ""  # e.g. "http://192.168.77.1:8080", for the iPXE chain's URLs
    ipxe_hosts: Sequence[str] = ()  # MACs whose profile chose the iPXE chain
    # Of those, the MACs that need iPXE even when their firmware is not iPXE (SAN boot:
    # only iPXE hooks the LUN): such a client is first given iPXE itself (ipxe.efi with
    # every driver, so it sees the storage NIC too; undionly.kpxe on BIOS).
    load_ipxe_hosts: Sequence[str] = ()
    lease_file: Path = Path("dnsmasq.leases")
    subnet: str | None = None  # the interface's IPv4 network, e.g. "192.168.77.0/24", if known
    lease_time: str = "1h"
    ipv6_ra_prefix: str | None = None  # e.g. "fd77::": RA only (the interface has such an address)
    log_dhcp: bool = True  # dnsmasq's per-request DHCP log (client-arch, tags, boot file)
    ping_check: bool = True  # ping a new address before offering it (delays a first offer 3 s)
    boot_transport: Transport = "http"  # "http": iPXE BIOS clients get pxelinux.0 by URL
    http_boot_url: str = ""  # UEFI HTTP Boot's loader URL (full mode); "": not offered
    ipxe_macs: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ipxe_hosts", tuple(self.ipxe_hosts))
        object.__setattr__(self, "load_ipxe_hosts", tuple(self.load_ipxe_hosts))
        object.__setattr__(self, "lease_file", Path(self.lease_file))
        object.__setattr__(self, "ipxe_macs", self._validate())

    def _validate(self) -> tuple[str, ...]:
        problems: list[str] = []

        def ipv4(what: str, text: str | None) -> ipaddress.IPv4Address | None:
            try:
                return ipaddress.IPv4Address(text or "")
            except ValueError:
                problems.append(f"{what} {text!r} is not an IPv4 address")
                return None

        if not _INTERFACE.match(self.interface):
            problems.append(f"interface {self.interface!r} is not a network interface name")
        if self.mode not in ("full", "proxy"):
            problems.append(f"mode {self.mode!r} is neither 'full' nor 'proxy'")
        server = ipv4("server_address", self.server_address)
        start = ipv4("range_start", self.range_start)
        end = ipv4("range_end", self.range_end) if self.mode == "full" else None
        if self.mode == "proxy" and self.range_end is not None:
            problems.append("range_end must be empty in proxy mode (another server leases)")
        if start and end and int(start) > int(end):
            problems.append(f"range_start {start} comes after range_end {end}")
        try:
            net = ipaddress.IPv4Network(self.subnet) if self.subnet is not None else None
        except ValueError:
            net = None
            problems.append(f"subnet {self.subnet!r} is not an IPv4 network like 10.0.0.0/24")
        named = (("server_address", server), ("range_start", start), ("range_end", end))
        for what, addr in named:
            if net is not None and addr is not None and addr not in net:
                problems.append(f"{what} {addr} is outside the interface's subnet {net}")
        if net and self.mode == "proxy" and start and start != net.network_address:
            where = f"the network address {net.network_address}"
            problems.append(f"range_start {start} must be {where} in proxy mode")
        if server is not None and start and end and int(start) <= int(server) <= int(end):
            problems.append(f"server_address {server} lies inside the range {start}-{end}")
        if not 0 < self.tftp_port < 65536:
            problems.append(f"tftp_port {self.tftp_port} is not a port number (1-65535)")
        if self.http_base and not _URL.match(self.http_base):
            problems.append(f"http_base {self.http_base!r} is not an http:// URL")
        if self.ipxe_hosts and not self.http_base:
            problems.append("ipxe_hosts need http_base (their boot file is an HTTP URL)")
        if self.boot_transport not in ("http", "tftp"):
            problems.append(f"boot_transport {self.boot_transport!r} is neither 'http' nor 'tftp'")
        if self.boot_transport == "http" and not self.http_base:
            problems.append("boot_transport http needs http_base (pxelinux.0's URL)")
        if self.http_boot_url and not _URL.match(self.http_boot_url):
            problems.append(f"http_boot_url {self.http_boot_url!r} is not an http:// URL")
        elif len(self.http_boot_url) > 127:  # the reply's file field: 128 bytes with its NUL
            problems.append(f"http_boot_url {self.http_boot_url!r} is longer than 127 bytes")
        if not _LEASE.match(self.lease_time):
            problems.append(f"lease_time {self.lease_time!r} is not like 1h, 30m or infinite")
        if any(c in str(self.lease_file) for c in "\n\r"):
            problems.append("lease_file must not contain line breaks")
        if self.ipv6_ra_prefix is not None:
            try:
                prefix = ipaddress.IPv6Address(self.ipv6_ra_prefix)
                if int(prefix) & (2**64 - 1):
                    problems.append(f"ipv6_ra_prefix {prefix} has bits set beyond /64")
            except ValueError:
                problems.append(f"ipv6_ra_prefix {self.ipv6_ra_prefix!r} is not an IPv6 prefix")
        macs: set[str] = set()
        if not {normalise_mac(m) for m in self.load_ipxe_hosts} <= {
            normalise_mac(m) for m in self.ipxe_hosts
        }:
            problems.append("load_ipxe_hosts must be ipxe_hosts too (iPXE then needs a script)")
        for mac in self.ipxe_hosts:
            try:
                macs.add(normalise_mac(mac))
            except InputError as exc:
                problems.extend(exc.problems)
        if problems:
            raise InputError(problems)
        return tuple(sorted(macs))

    def render(self) -> str:
        """The dnsmasq config text; the same config always gives the same text."""
        server = self.server_address
        lines = [
            "# Generated by netinstall: DHCP only, files come from netinstall's own servers.",
            "port=0",
            f"interface={self.interface}",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "log-facility=-",
            f"dhcp-leasefile={self.lease_file}",
        ]
        if self.log_dhcp:
            lines.append("log-dhcp")
        if not self.ping_check:
            lines.append("no-ping")
        if self.tftp_port != PXE_TFTP_PORT:
            lines.append(f"# TFTP runs on port {self.tftp_port}; PXE clients only ask port 69.")
        lines += [
            "dhcp-match=set:bios,option:client-arch,0",
            "dhcp-match=set:efi64,option:client-arch,7",
            "dhcp-match=set:efi64,option:client-arch,9",
            "dhcp-match=set:ipxe,175",
            "dhcp-userclass=set:ipxe,iPXE",
        ]
        for mac in self.ipxe_macs:
            host = "ipxe-host-" + mac.replace(":", "")
            lines += [
                f"dhcp-host={mac},set:{host}",
                f"tag-if=set:chain-ipxe,tag:ipxe,tag:{host}",
                f"dhcp-boot=tag:chain-ipxe,tag:{host},{self.http_base.rstrip('/')}/ipxe/{mac}",
            ]
            if mac in {normalise_mac(m) for m in self.load_ipxe_hosts}:
                lines += [
                    f"tag-if=set:load-ipxe,tag:!ipxe,tag:{host}",
                    f"dhcp-boot=tag:load-ipxe,tag:bios,tag:{host},undionly.kpxe,,{server}",
                    f"dhcp-boot=tag:load-ipxe,tag:efi64,tag:{host},ipxe.efi,,{server}",
                ]
        http = ""
        if self.boot_transport == "http":
            # iPXE on BIOS (not a chained or SAN host): pxelinux.0 and all after it by URL.
            lines += [
                "tag-if=set:http-pxelinux,tag:bios,tag:ipxe,tag:!chain-ipxe,tag:!load-ipxe",
                f"dhcp-boot=tag:http-pxelinux,{self.http_base.rstrip('/')}/boot/pxelinux.0",
            ]
            http = ",tag:!http-pxelinux"
        # tag:!chain-ipxe: the iPXE chain's URL must win whatever the line order (dnsmasq
        # takes the last matching dhcp-boot), and iPXE boots a PXE menu before any file.
        mask = [str(ipaddress.IPv4Network(self.subnet).netmask)] if self.subnet else []
        load = ",tag:!load-ipxe" if self.load_ipxe_hosts else ""
        if self.mode == "full":
            dhcp_range = [self.range_start, str(self.range_end), *mask, self.lease_time]
            lines += [
                f"dhcp-range={','.join(dhcp_range)}",
                # iPXE's "no-pxedhcp" (175.176): this offer is the whole answer. Without it
                # iPXE waits for ProxyDHCP offers that never come before it requests (3 s on
                # every boot of the lab's ROM, the install's and each reboot's).
                f"dhcp-option=tag:ipxe,encap:175,{IPXE_NO_PXEDHCP},1",
                f"dhcp-boot=tag:bios,tag:!chain-ipxe{load}{http},pxelinux.0,,{server}",
                f"dhcp-boot=tag:efi64,tag:!chain-ipxe{load},grubx64.efi,,{server}",
            ]
            if self.http_boot_url:
                lines += [
                    f"dhcp-vendorclass=set:httpclient,{HTTP_CLIENT}",  # a substring match
                    f"dhcp-boot=tag:httpclient,{self.http_boot_url}",
                    f"dhcp-option-force=tag:httpclient,60,{HTTP_CLIENT}",
                ]
        else:
            service = f"pxe-service=tag:!chain-ipxe{load}{http}"
            lines += [
                f"dhcp-range={','.join([self.range_start, 'proxy', *mask])}",
                # x86PC: dnsmasq/PXE append the layer suffix ".0"; names with a dot are kept.
                f'{service},x86PC,"netinstall",pxelinux,{server}',
                f'{service},BC_EFI,"netinstall",grubx64.efi,{server}',  # client-arch 7
                f'{service},X86-64_EFI,"netinstall",grubx64.efi,{server}',  # client-arch 9
            ]
            if self.load_ipxe_hosts:  # their firmware loads iPXE first, as in full mode
                service = "pxe-service=tag:load-ipxe"
                lines += [
                    f'{service},x86PC,"netinstall iPXE",undionly.kpxe,{server}',
                    f'{service},BC_EFI,"netinstall iPXE",ipxe.efi,{server}',
                    f'{service},X86-64_EFI,"netinstall iPXE",ipxe.efi,{server}',
                ]
        if self.ipv6_ra_prefix is not None:
            lines += ["enable-ra", f"dhcp-range={self.ipv6_ra_prefix},ra-only"]
        return "\n".join(lines) + "\n"


class Dnsmasq:
    """dnsmasq in the foreground (``--no-daemon``), its stderr forwarded to our log."""

    def __init__(
        self,
        config: DnsmasqConfig,
        workdir: Path,
        *,
        netns: str | None = None,
        binary: str = "dnsmasq",
        ready_timeout: float = 10.0,
    ) -> None:
        self.config = config
        self.workdir = Path(workdir)
        self.netns = netns
        self.binary = binary
        self.ready_timeout = ready_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._lines: list[str] = []
        self._ready = threading.Event()

    @property
    def conf_path(self) -> Path:
        return self.workdir / "dnsmasq.conf"

    def argv(self) -> list[str]:
        """The command line (pure): ``[ip netns exec NS] dnsmasq --no-daemon ...``."""
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [
            *prefix,
            self.binary,
            "--no-daemon",
            f"--conf-file={self.conf_path}",
            f"--pid-file={self.workdir / 'dnsmasq.pid'}",  # unused by --no-daemon; harmless
        ]

    def start(self) -> None:
        """Write the config, start dnsmasq, return once it serves DHCP; CommandError if not."""
        if self._proc is not None:
            raise RuntimeError("dnsmasq is already running")
        if (port := self.config.tftp_port) != PXE_TFTP_PORT:
            log.warning("TFTP is on port %d, but PXE clients only use port 69", port)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config.render())
        argv = self.argv()
        log.info("starting: %s", " ".join(argv))
        self._lines = []
        self._ready.clear()
        self._proc = proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(
            target=self._forward, args=(proc.stderr,), name="dnsmasq-stderr", daemon=True
        )
        self._reader.start()
        deadline = time.monotonic() + self.ready_timeout
        while not self._ready.wait(0.05):
            if proc.poll() is not None or time.monotonic() > deadline:
                self._fail(proc, argv)
        time.sleep(0.1)  # a bind or permission error follows the banner at once
        if proc.poll() is not None:
            self._fail(proc, argv)

    def _fail(self, proc: subprocess.Popen[str], argv: list[str]) -> None:
        running = proc.poll() is None
        self.stop()
        why = [f"no DHCP start-up line within {self.ready_timeout:g} s"] if running else []
        stderr = "\n".join([*self._lines, *why]) or "(no output)"
        raise CommandError(argv, proc.returncode if not running else -1, "", stderr)

    def _forward(self, stream: IO[str] | None) -> None:
        for raw in stream or ():
            line = raw.rstrip("\n")
            self._lines.append(line)
            log.info("%s", line)
            # dnsmasq logs "DHCP, IP range ..." / "DHCP, proxy on subnet ..." once listening.
            if "dnsmasq-dhcp" in line and ("IP range" in line or "proxy on subnet" in line):
                self._ready.set()

    def stop(self) -> None:
        """Terminate dnsmasq and wait for it (SIGKILL after 5 s); no-op if not running."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        log.info("dnsmasq stopped (exit code %s)", proc.returncode)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Dnsmasq:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
