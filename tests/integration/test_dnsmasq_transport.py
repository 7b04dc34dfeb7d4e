"""Boot transport end to end: crafted DHCP requests to the whole server (``netinstall server
run --dhcp full``: dnsmasq, TFTP, HTTP) in a network namespace, and the files they lead to.

The client namespace asks DHCP as a plain PXE ROM, as iPXE (user class "iPXE", option 175)
and as UEFI HTTP Boot (vendor class HTTPClient), then fetches what the reply names the way
that client would: a plain PXE ROM's pxelinux reads its config over TFTP and gets TFTP
names; iPXE's pxelinux.0 comes by URL, takes the URL's directory as its prefix and reads
its config from there: HTTP URLs for Xen, the kernel and install.img; HTTP Boot's GRUB
comes by URL with its prefix on HTTP. With ``--boot-transport tftp`` iPXE gets TFTP too.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pxe_server.server import DEFAULT_GRUB_MODULES
from tests.integration.conftest import netinstall
from tests.integration.test_dnsmasq import PXE_CLIENT
from tests.integration.veth import veth_pair

pytestmark = pytest.mark.integration

SERVER = "192.168.77.1"
CLIENT = "192.168.77.99"  # the client's address for the HTTP and TFTP fetches
BASE = f"http://{SERVER}:8080"
MAC = "52:54:00:77:02:01"
DASHES = MAC.replace(":", "-")
START_TIMEOUT = 60.0  # s for `server run` to say it serves (it builds a GRUB image first)
XEN_GZ = b"xen.gz bytes " * 100


@dataclass(frozen=True)
class Lab:
    server_ns: str
    client_ns: str
    workdir: Path


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "dnsmasq", "curl"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (scripts/host-packages.txt)"
    return None


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    why = _why_not()
    if why:
        pytest.skip(why)
    with veth_pair("t", (f"{SERVER}/24",), client_mac=MAC, client_address=f"{CLIENT}/24") as pair:
        yield Lab(pair.server_ns, pair.client_ns, tmp_path_factory.mktemp("transport"))


@contextmanager
def _server(lab: Lab, transport: str, dhcp: str = "full") -> Iterator[Path]:
    """``server run`` in the server namespace with one registered host; its directory."""
    where = lab.workdir / f"server-{transport}-{secrets.token_hex(2)}"
    netboot = lab.workdir / "netboot"
    netboot.mkdir(exist_ok=True)
    for name in ("pxelinux.0", "ldlinux.c32", "mboot.c32"):
        (netboot / name).write_bytes(name.encode() * 64)
    (netboot / "xen.gz").write_bytes(XEN_GZ)
    for argv in (
        ("server", "init", str(where), "--netboot", str(netboot), "--repo", str(lab.workdir)),
        ("host", "add", MAC, "--dir", str(where), "--name", "xenhost01"),
    ):
        done = netinstall(*argv)
        assert done.returncode == 0, done.stderr
    log = where.with_suffix(".log")
    script = Path(sys.executable).with_name("netinstall")
    argv = ["ip", "netns", "exec", lab.server_ns, str(script), "server", "run", str(where)]
    argv += ["--bind", SERVER, "--tftp-port", "69", "--http-port", "8080", "--dhcp", dhcp]
    argv += ["--interface", "srv0"]
    argv += ["--range", "192.168.77.10,192.168.77.50"] if dhcp == "full" else []
    argv += ["--boot-transport", transport]
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "serving: TFTP" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield where
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# One server at a time (one DHCP server on the interface): each test starts its own.
@pytest.fixture
def http_server(lab: Lab) -> Iterator[Path]:
    with _server(lab, "http") as where:
        yield where


@pytest.fixture
def tftp_server(lab: Lab) -> Iterator[Path]:
    with _server(lab, "tftp") as where:
        yield where


@pytest.fixture
def proxy_server(lab: Lab) -> Iterator[Path]:
    """``--dhcp proxy``: another DHCP server leases (the client has its address already)."""
    with _server(lab, "http", dhcp="proxy") as where:
        yield where


def ask(lab: Lab, arch: int, *, ipxe: bool = False, vendor: str = "PXEClient") -> dict[str, Any]:
    """A crafted DHCPDISCOVER from the client namespace (test_dnsmasq.PXE_CLIENT); the offer."""
    script = lab.workdir / "pxe_client.py"
    script.write_text(PXE_CLIENT)
    argv = ["ip", "netns", "exec", lab.client_ns, sys.executable, str(script), "cli0", MAC]
    argv += [str(arch), "1" if ipxe else "0", CLIENT, SERVER, vendor]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 0, done.stderr
    offer: dict[str, Any] = json.loads(done.stdout)["offer"]
    return offer


def fetch(lab: Lab, url: str) -> bytes:
    """``url`` (http:// or tftp://) fetched with curl from the client namespace."""
    argv = ["ip", "netns", "exec", lab.client_ns, "curl", "-sS", "--fail", "--max-time", "10"]
    done = subprocess.run([*argv, url], capture_output=True, timeout=20, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def directory_of(url: str) -> str:
    """pxelinux's path prefix: its boot file name up to the last slash."""
    return url.rpartition("/")[0] + "/"


def test_plain_pxe_rom_gets_tftp_all_the_way(lab: Lab, http_server: Path) -> None:
    offer = ask(lab, 0)
    assert (offer["file"], offer["siaddr"]) == ("pxelinux.0", SERVER)
    config = fetch(lab, f"tftp://{offer['siaddr']}/pxelinux.cfg/01-{DASHES}").decode()
    append = next(line for line in config.splitlines() if line.strip().startswith("append"))
    assert append.split()[1] == "xen.gz"  # a TFTP name, beside pxelinux.0
    assert " --- vmlinuz " in append
    assert append.endswith(" --- install.img")
    assert f"{BASE}/boot/" not in config


def test_ipxe_gets_pxelinux_and_its_files_over_http(lab: Lab, http_server: Path) -> None:
    offer = ask(lab, 0, ipxe=True)
    assert offer["file"] == f"{BASE}/boot/pxelinux.0"
    assert fetch(lab, offer["file"]) == b"pxelinux.0" * 64  # the loader itself, by URL
    prefix = directory_of(offer["file"])
    assert fetch(lab, prefix + "ldlinux.c32") == b"ldlinux.c32" * 64  # beside it, as pxelinux
    config = fetch(lab, f"{prefix}pxelinux.cfg/01-{DASHES}").decode()  # asks
    append = next(line for line in config.splitlines() if line.strip().startswith("append"))
    urls = [w for w in append.split() if w.startswith(f"{BASE}/boot/")]
    assert urls == [f"{BASE}/boot/xen.gz", f"{BASE}/boot/vmlinuz", f"{BASE}/boot/install.img"]
    assert fetch(lab, urls[0]) == XEN_GZ  # what mboot.c32 fetches by URL
    # The catch-all and a name that is no config: as under the rest of /boot/.
    assert "localboot 0" in fetch(lab, f"{prefix}pxelinux.cfg/default").decode()
    missing = ["ip", "netns", "exec", lab.client_ns, "curl", "-s", "-o", "/dev/null"]
    missing += ["-w", "%{http_code}", f"{prefix}pxelinux.cfg/C0A84D63"]
    assert subprocess.run(missing, capture_output=True, text=True, check=True).stdout == "404"


def test_grub_loads_its_big_files_over_http(lab: Lab, http_server: Path) -> None:
    offer = ask(lab, 7)
    assert offer["file"] == "grubx64.efi"  # GRUB itself and its config over TFTP, as before
    config = fetch(lab, f"tftp://{SERVER}/grub/grub.cfg-01-{DASHES}").decode()
    found = re.search(r"multiboot2 \(http,([0-9.]+):([0-9]+)\)(/boot/xen\.gz) ", config)
    assert found is not None, config
    assert fetch(lab, f"http://{found[1]}:{found[2]}{found[3]}") == XEN_GZ


def test_uefi_http_boot_gets_grub_by_url_with_its_prefix_on_http(
    lab: Lab, http_server: Path
) -> None:
    if not (DEFAULT_GRUB_MODULES / "moddep.lst").is_file():
        pytest.skip(f"no GRUB modules in {DEFAULT_GRUB_MODULES}: `netinstall images build`")
    offer = ask(lab, 16, vendor="HTTPClient")
    assert offer["file"] == f"{BASE}/http-boot/grubx64.efi"
    assert offer["vendor"] == "HTTPClient"
    image = fetch(lab, offer["file"])
    assert image[:2] == b"MZ"
    assert f"(http,{SERVER}:8080)/boot/grub".encode() in image  # its prefix: no TFTP
    # GRUB searches no per-MAC config on HTTP: the grub.cfg beside its prefix names it.
    chooser = fetch(lab, f"{BASE}/boot/grub/grub.cfg").decode()
    assert "configfile ${prefix}/grub.cfg-01-${net_default_mac}" in chooser
    assert "chainloader /EFI/BOOT/BOOTX64.EFI" in chooser  # an unknown machine: local
    config = fetch(lab, f"{BASE}/boot/grub/grub.cfg-01-{MAC}").decode()  # net_default_mac
    assert f"multiboot2 (http,{SERVER}:8080)/boot/xen.gz " in config


def test_tftp_transport_keeps_ipxe_and_grub_on_tftp(lab: Lab, tftp_server: Path) -> None:
    offer = ask(lab, 0, ipxe=True)
    assert (offer["file"], offer["siaddr"]) == ("pxelinux.0", SERVER)  # iPXE too: TFTP
    config = fetch(lab, f"tftp://{SERVER}/grub/grub.cfg-01-{DASHES}").decode()
    assert "multiboot2 /xen.gz " in config  # GRUB's root: the TFTP server
    assert "(http," not in config


def test_proxy_mode_gives_uefi_http_boot_a_proxy_offer(lab: Lab, proxy_server: Path) -> None:
    """dnsmasq's proxy mode answers PXEClient only; the server's own responder sends an
    HTTPClient the proxy offer edk2 takes (no address, option 60, the URL in option 67),
    and dnsmasq still gets every PXE request on the same port."""
    if not (DEFAULT_GRUB_MODULES / "moddep.lst").is_file():
        pytest.skip(f"no GRUB modules in {DEFAULT_GRUB_MODULES}: `netinstall images build`")
    offer = ask(lab, 16, vendor="HTTPClient")
    assert offer["yiaddr"] == "0.0.0.0"  # noqa: S104 - a proxy offer: no address
    assert (offer["vendor"], offer["siaddr"]) == ("HTTPClient", SERVER)
    assert offer["bootfile"] == f"{BASE}/http-boot/grubx64.efi"
    image = fetch(lab, offer["bootfile"])
    assert f"(http,{SERVER}:8080)/boot/grub".encode() in image
    pxe_offer = ask(lab, 7)  # a PXE client: dnsmasq's proxy answer, as before
    assert (pxe_offer["vendor"], pxe_offer["siaddr"], pxe_offer["bootfile"]) == (
        "PXEClient",
        SERVER,
        "",
    )
    log = proxy_server.with_suffix(".log").read_text()
    assert log.count("HTTP Boot proxy: offered") == 1, log  # none for the PXE request
