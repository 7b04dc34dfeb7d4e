"""dnsmasq from pxe_server.dnsmasq answering a real DHCP client, inside private namespaces.

Two network namespaces joined by a veth pair: the server side (192.168.77.1/24,
fd77::1/64) runs ``Dnsmasq``, the client side runs busybox ``udhcpc`` sending
client-arch (option 93) and, for the iPXE chain, option 175; for proxy-DHCP a
small PXE client (below) does the DHCPDISCOVER and the port-4011 boot server
request. Nothing touches the host's own network; the namespaces go away even
when a test fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.errors import CommandError
from pxe_server.dnsmasq import Dnsmasq, DnsmasqConfig
from pxe_server.grub_image import build_proxy_grub
from tests.integration.veth import ip, veth_pair

pytestmark = pytest.mark.integration

SERVER = "192.168.77.1"
IPXE_MAC = "52:54:00:77:00:01"
IPXE_URL = f"http://{SERVER}:8080/ipxe/{IPXE_MAC}"
PXELINUX_URL = f"http://{SERVER}:8080/boot/pxelinux.0"  # boot transport http, iPXE on BIOS
HTTP_BOOT_URL = f"http://{SERVER}:8080/http-boot/grubx64.efi"
HTTP_BOOT_ARCH = 16  # x86-64 UEFI HTTP Boot (RFC 4578 registry)
GRUB_MODULES = (
    Path.home() / ".cache/netinstall/work/netboot/grub-efi-amd64-bin/usr/lib/grub/x86_64-efi"
)
# A PXE client's two steps against a proxy-DHCP server: a DHCPDISCOVER (port 68 -> 67,
# broadcast) and, as PXE does, a DHCPREQUEST to the boot server's port 4011 (with the first
# item of the offer's PXE menu, option 43.9, layer 0, if it had one). Prints the replies as
# JSON. Its vendor class is PXEClient, or HTTPClient as UEFI HTTP Boot's (edk2) is; with
# iPXE it adds option 175, user class (77) "iPXE" and asks for option 175 back (55), as
# iPXE does; the offer's iPXE no-pxedhcp (175.176) is read back. No reply: offer null.
PXE_CLIENT = """
import json, os, socket, struct, sys
iface, mac, arch, ipxe = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
vendor = f"{sys.argv[7]}:Arch:{arch:05d}:UNDI:003001".encode()
opts = bytes([53, 1, 1, 60, len(vendor)]) + vendor + bytes([93, 2]) + arch.to_bytes(2, "big")
opts += bytes([97, 17, 0]) + os.urandom(16) + bytes([94, 3, 1, 2, 1])
opts += bytes([175, 3, 0x13, 1, 1, 77, 4]) + b"iPXE" + bytes([55, 1, 175]) if ipxe else b""
xid = os.urandom(4)
head = struct.pack("!BBBB4sHH16s16s", 1, 1, 6, 0, xid, 0, 0x8000, bytes(16),
                   bytes.fromhex(mac.replace(":", "")) + bytes(10))
cookie = bytes(192) + bytes([0x63, 0x82, 0x53, 0x63])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
sock.bind(("0.0.0.0", 68))
sock.settimeout(5)

def exchange(packet, to):
    sock.sendto(packet, to)
    while True:
        data, _ = sock.recvfrom(2048)
        if data[4:8] == xid:
            break
    pxe_options = options(options(data[240:]).get(43, b""))
    menu = pxe_options.get(9, b"")  # items: type (2 bytes), length, description
    return {"siaddr": socket.inet_ntoa(data[20:24]), "menu": 9 in pxe_options,
            "item": menu[:2].hex(), "file": data[108:236].split(bytes(1))[0].decode(),
            "vendor": options(data[240:]).get(60, b"").decode(),
            "bootfile": options(data[240:]).get(67, b"").decode(),
            "no_pxedhcp": options(options(data[240:]).get(175, b"")).get(176, b"").hex(),
            "yiaddr": socket.inet_ntoa(data[16:20])}

def options(data):
    found, i = {}, 0
    while i < len(data) and data[i] != 255:
        if data[i]:
            found[data[i]] = data[i + 2 : i + 2 + data[i + 1]]
            i += 2 + data[i + 1]
        else:
            i += 1
    return found

try:
    offer = exchange(head + cookie + opts + bytes([255]), ("255.255.255.255", 67))
except socket.timeout:
    print(json.dumps({"offer": None, "boot": None}))
    sys.exit(0)
chosen = bytes.fromhex(offer.pop("item") or "8000")  # the menu's first (only) item
item = bytes([43, 7, 71, 4, *chosen, 0, 0, 255]) if offer["menu"] else b""
request = head[:12] + socket.inet_aton(sys.argv[5]) + head[16:] + cookie
request += bytes([53, 1, 3]) + opts[3:] + item + bytes([255])
pxe_step = (offer["menu"] or not offer["file"]) and offer["vendor"] != "HTTPClient"
boot = exchange(request, (sys.argv[6], 4011)) if pxe_step else None
print(json.dumps({"offer": offer, "boot": boot}))
"""
SCRIPT = """#!/bin/sh
[ "$1" = bound ] || exit 0
{ echo "ip=$ip"; echo "siaddr=$siaddr"; echo "boot_file=$boot_file"; } > "$UDHCPC_OUT"
"""


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "dnsmasq", "busybox"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (scripts/host-packages.txt)"
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"`ip netns` unavailable: {done.stderr.strip()}"
    applets = subprocess.run(["busybox", "--list"], capture_output=True, text=True, check=False)
    if "udhcpc" not in applets.stdout.split():
        return "busybox has no udhcpc applet"
    return None


@dataclass(frozen=True)
class Net:
    server_ns: str
    client_ns: str
    workdir: Path


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    why = _why_not()
    if why:
        print(f"skipping dnsmasq integration tests: {why}")
        pytest.skip(why)
    with veth_pair("", (f"{SERVER}/24", "fd77::1/64")) as pair:
        yield Net(pair.server_ns, pair.client_ns, tmp_path_factory.mktemp("dnsmasq"))


def config(net: Net, mode: str, **changes: object) -> DnsmasqConfig:
    values: dict[str, object] = {
        "interface": "srv0",
        "mode": mode,
        "range_start": "192.168.77.10" if mode == "full" else "192.168.77.0",
        "range_end": "192.168.77.50" if mode == "full" else None,
        "server_address": SERVER,
        "http_base": f"http://{SERVER}:8080",
        "ipxe_hosts": (IPXE_MAC,),
        "lease_file": net.workdir / f"{mode}.leases",
        "subnet": "192.168.77.0/24",
        "ipv6_ra_prefix": "fd77::",
        "ping_check": False,  # dnsmasq's ping of a new address delays each first offer 3 s
        "http_boot_url": HTTP_BOOT_URL,
    }
    values.update(changes)
    return DnsmasqConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def full_dnsmasq(net: Net) -> Iterator[Dnsmasq]:
    with Dnsmasq(config(net, "full"), net.workdir / "full", netns=net.server_ns) as dnsmasq:
        yield dnsmasq


def dhcp(net: Net, mac: str, arch: int, *, ipxe: bool = False) -> dict[str, str]:
    """One DHCP exchange from the client namespace as ``mac``; the lease's variables."""
    ip("-n", net.client_ns, "link", "set", "cli0", "down")
    ip("-n", net.client_ns, "link", "set", "cli0", "address", mac)
    ip("-n", net.client_ns, "link", "set", "cli0", "up")
    script = net.workdir / "udhcpc.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    out = net.workdir / "lease.env"
    out.unlink(missing_ok=True)
    argv = ["ip", "netns", "exec", net.client_ns, "busybox", "udhcpc", "-i", "cli0"]
    argv += ["-n", "-q", "-f", "-t", "5", "-T", "1", "-s", str(script)]
    argv += ["-x", f"0x5d:{arch:04x}"]  # option 93, client system architecture
    if ipxe:
        argv += ["-x", "0xaf:130101"]  # option 175: iPXE's encapsulated options
    env = {**os.environ, "UDHCPC_OUT": str(out)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in out.read_text().splitlines())


def test_bios_client_gets_pxelinux(net: Net, full_dnsmasq: Dnsmasq) -> None:
    lease = dhcp(net, "52:54:00:77:00:10", 0)
    assert lease["boot_file"] == "pxelinux.0"
    assert lease["siaddr"] == SERVER
    assert lease["ip"].startswith("192.168.77.")
    assert 10 <= int(lease["ip"].rsplit(".", 1)[1]) <= 50
    assert full_dnsmasq.running


@pytest.mark.parametrize("arch", [7, 9])
def test_uefi_client_gets_grub(net: Net, full_dnsmasq: Dnsmasq, arch: int) -> None:
    lease = dhcp(net, f"52:54:00:77:00:{arch:02x}", arch)
    assert lease["boot_file"] == "grubx64.efi"
    assert lease["siaddr"] == SERVER


def test_ipxe_chain_only_for_ipxe_requests_of_chosen_hosts(net: Net, full_dnsmasq: Dnsmasq) -> None:
    assert dhcp(net, IPXE_MAC, 0, ipxe=True)["boot_file"] == IPXE_URL
    assert dhcp(net, IPXE_MAC, 7, ipxe=True)["boot_file"] == IPXE_URL
    assert dhcp(net, IPXE_MAC, 0)["boot_file"] == "pxelinux.0"  # the firmware's own request
    # Any other host's iPXE on BIOS: pxelinux.0 by URL (boot transport http).
    assert dhcp(net, "52:54:00:77:00:20", 0, ipxe=True)["boot_file"] == PXELINUX_URL


def test_bios_transport_follows_the_pxe_stack(net: Net, full_dnsmasq: Dnsmasq) -> None:
    """A crafted PXE request with and without user-class iPXE (option 77, and 175)."""
    mac = "52:54:00:77:00:21"
    with_ipxe = pxe(net, mac, 0, ipxe=True)["offer"]
    assert with_ipxe["file"] == PXELINUX_URL  # iPXE fetches it, and all after it, by HTTP
    # The whole answer: iPXE need not wait for ProxyDHCP offers (its no-pxedhcp, 175.176).
    assert with_ipxe["no_pxedhcp"] == "01"
    plain = pxe(net, mac, 0)["offer"]  # a plain PXE ROM: TFTP from our address
    assert (plain["file"], plain["siaddr"]) == ("pxelinux.0", SERVER)
    assert plain["no_pxedhcp"] == ""  # a plain PXE ROM's request does not get it
    uefi = pxe(net, mac, 7, ipxe=True)["offer"]  # iPXE EFI: GRUB as before (TFTP)
    assert uefi["file"] == "grubx64.efi"


def test_tftp_transport_keeps_ipxe_on_tftp(net: Net, full_dnsmasq: Dnsmasq) -> None:
    full_dnsmasq.stop()
    tftp_only = config(net, "full", boot_transport="tftp")
    try:
        with Dnsmasq(tftp_only, net.workdir / "full-tftp", netns=net.server_ns):
            got = pxe(net, "52:54:00:77:00:22", 0, ipxe=True)["offer"]
            assert (got["file"], got["siaddr"]) == ("pxelinux.0", SERVER)
            assert dhcp(net, IPXE_MAC, 0, ipxe=True)["boot_file"] == IPXE_URL  # chain kept
    finally:
        full_dnsmasq.start()


def test_uefi_http_boot_client_gets_a_url_and_httpclient(net: Net, full_dnsmasq: Dnsmasq) -> None:
    got = pxe(net, "52:54:00:77:00:23", HTTP_BOOT_ARCH, vendor="HTTPClient")["offer"]
    assert got["file"] == HTTP_BOOT_URL  # no TFTP: the loader is a URL
    assert got["vendor"] == "HTTPClient"  # edk2 takes only such an offer for HTTP boot
    assert got["yiaddr"].startswith("192.168.77.")
    pxe_client = pxe(net, "52:54:00:77:00:23", 7)["offer"]  # the same machine's PXE client
    assert (pxe_client["file"], pxe_client["vendor"]) == ("grubx64.efi", "")  # no option 60


@pytest.fixture
def proxy_dnsmasq(net: Net, full_dnsmasq: Dnsmasq) -> Iterator[Dnsmasq]:
    """dnsmasq as proxy-DHCP; the client holds an address from "another" DHCP server."""
    full_dnsmasq.stop()  # one DHCP server per interface
    ip("-n", net.client_ns, "addr", "add", "192.168.77.99/24", "dev", "cli0")
    try:
        with Dnsmasq(config(net, "proxy"), net.workdir / "proxy", netns=net.server_ns) as proxy:
            yield proxy
    finally:
        ip("-n", net.client_ns, "addr", "flush", "dev", "cli0")


def pxe(
    net: Net, mac: str, arch: int, *, ipxe: bool = False, vendor: str = "PXEClient"
) -> dict[str, Any]:
    script = net.workdir / "pxe_client.py"
    script.write_text(PXE_CLIENT)
    argv = ["ip", "netns", "exec", net.client_ns, sys.executable, str(script), "cli0", mac]
    argv += [str(arch), "1" if ipxe else "0", "192.168.77.99", SERVER, vendor]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_proxy_bios_client_gets_pxelinux_from_the_boot_server(
    net: Net, proxy_dnsmasq: Dnsmasq
) -> None:
    got = pxe(net, "52:54:00:77:01:10", 0)
    assert got["offer"]["menu"]  # a one-entry PXE menu naming our boot server
    assert got["boot"]["file"] == "pxelinux.0"  # dnsmasq added PXE's layer suffix ".0"
    assert got["boot"]["siaddr"] == SERVER
    assert "enable-tftp" not in proxy_dnsmasq.conf_path.read_text()


@pytest.mark.parametrize("arch", [7, 9])
def test_proxy_uefi_client_gets_grub(net: Net, proxy_dnsmasq: Dnsmasq, arch: int) -> None:
    got = pxe(net, f"52:54:00:77:01:{arch:02x}", arch)
    assert got["offer"]["siaddr"] == SERVER
    assert not got["offer"]["menu"]  # dnsmasq's UEFI path: no menu, the file at port 4011
    assert got["boot"]["file"] == "grubx64.efi"
    assert got["boot"]["siaddr"] == SERVER


def test_proxy_bios_ipxe_gets_pxelinux_by_url(net: Net, proxy_dnsmasq: Dnsmasq) -> None:
    got = pxe(net, "52:54:00:77:01:21", 0, ipxe=True)
    # As for the iPXE chain: no menu (iPXE would boot its item), the URL in the offer.
    assert got["offer"]["file"] == PXELINUX_URL
    assert not got["offer"]["menu"]
    assert got["offer"]["no_pxedhcp"] == ""  # a proxy: the site's offer is not the whole answer
    assert pxe(net, "52:54:00:77:01:21", 0)["boot"]["file"] == "pxelinux.0"  # plain PXE


def test_proxy_mode_does_not_answer_http_boot(net: Net, proxy_dnsmasq: Dnsmasq) -> None:
    """dnsmasq's proxy-DHCP answers vendor class PXEClient only: an HTTPClient gets no offer
    (edk2 would take a proxy offer with a URI and option 60 HTTPClient, were one sent)."""
    got = pxe(net, "52:54:00:77:01:23", HTTP_BOOT_ARCH, vendor="HTTPClient")
    assert got == {"offer": None, "boot": None}
    assert "HTTPClient" not in proxy_dnsmasq.conf_path.read_text()  # not offered: see above
    assert pxe(net, "52:54:00:77:01:23", 7)["boot"]["file"] == "grubx64.efi"  # PXE still is


def test_proxy_ipxe_chain(net: Net, proxy_dnsmasq: Dnsmasq) -> None:
    got = pxe(net, IPXE_MAC, 0, ipxe=True)
    # No PXE menu: iPXE would boot the menu's entry before looking at the file name.
    offer = {k: got["offer"][k] for k in ("siaddr", "menu", "file")}
    assert offer == {"siaddr": "0.0.0.0", "menu": False, "file": IPXE_URL}  # noqa: S104
    assert got["boot"] is None
    assert pxe(net, IPXE_MAC, 0)["boot"]["file"] == "pxelinux.0"
    assert proxy_dnsmasq.running


@pytest.fixture
def proxy_san_dnsmasq(net: Net, full_dnsmasq: Dnsmasq) -> Iterator[Dnsmasq]:
    """Proxy-DHCP with the iPXE host a SAN host: its firmware is to load iPXE first."""
    full_dnsmasq.stop()
    ip("-n", net.client_ns, "addr", "add", "192.168.77.99/24", "dev", "cli0")
    san = config(net, "proxy", load_ipxe_hosts=(IPXE_MAC,))
    try:
        with Dnsmasq(san, net.workdir / "proxy-san", netns=net.server_ns) as proxy:
            yield proxy
    finally:
        ip("-n", net.client_ns, "addr", "flush", "dev", "cli0")


@pytest.mark.parametrize(
    ("arch", "loader"), [(0, "undionly.kpxe"), (7, "ipxe.efi"), (9, "ipxe.efi")]
)
def test_proxy_san_host_firmware_loads_ipxe_first(
    net: Net, proxy_san_dnsmasq: Dnsmasq, arch: int, loader: str
) -> None:
    got = pxe(net, IPXE_MAC, arch)
    assert got["boot"]["file"] == loader  # a name with a dot: no layer suffix added
    assert got["boot"]["siaddr"] == SERVER
    assert pxe(net, IPXE_MAC, arch, ipxe=True)["offer"]["file"] == IPXE_URL  # then its script
    other = pxe(net, "52:54:00:77:01:30", arch)["boot"]["file"]  # other hosts: the seed chain
    assert other == ("pxelinux.0" if arch == 0 else "grubx64.efi")


def test_start_failure_says_why(net: Net) -> None:
    broken = config(net, "full", interface="nosuch0")
    dnsmasq = Dnsmasq(broken, net.workdir / "broken", netns=net.server_ns)
    with pytest.raises(CommandError) as caught:
        dnsmasq.start()
    assert "nosuch0" in caught.value.stderr
    assert not dnsmasq.running


def test_proxy_grub_image(tmp_path: Path) -> None:
    if shutil.which("grub-mkimage") is None or not (GRUB_MODULES / "moddep.lst").is_file():
        pytest.skip(f"no grub-mkimage or no modules in {GRUB_MODULES}: build the netboot target")
    out = build_proxy_grub(GRUB_MODULES, SERVER, tmp_path / "grubx64.efi")
    image = out.read_bytes()
    assert image[:2] == b"MZ"
    assert f"(tftp,{SERVER})/grub".encode() in image
