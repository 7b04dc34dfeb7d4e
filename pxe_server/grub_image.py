"""The server's own GRUB images: proxy-DHCP mode's and UEFI HTTP Boot's (SPEC §9).

GRUB 2.06 takes its TFTP server from the DHCP server's reply, not from a
proxy-DHCP offer (../shared/TESTING.md), so in proxy mode the netboot tree's
``grubx64.efi`` (prefix ``/grub``) would look for its config on the wrong host.
The server builds its own image with the prefix ``(tftp,SERVER)/grub``, from the
same modules as ``images/netboot.py``: those of the unpacked grub-efi-amd64-bin
(``~/.cache/netinstall/work/netboot/grub-efi-amd64-bin/usr/lib/grub/x86_64-efi``
after ``netinstall images build``), whose directory the caller passes.

UEFI HTTP Boot loads GRUB by URL and the client never touches TFTP, so its GRUB image
has its prefix on our HTTP server: ``(http,ADDR:PORT)/boot/grub``, where the server
renders its configs (``render.grub_http_device``; GRUB 2.06 reads the port after a
colon). GRUB takes its address from the firmware's HTTP boot (in the lab, OVMF's: it
fetched its prefix's files at once, with no DHCP of its own), but searches no per-MAC
config when its prefix is not on TFTP: the ``grub.cfg`` it reads there names it
(``render.config_for_path``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from common.errors import InputError
from common.process import run
from images.netboot import GRUB_MODULES
from pxe_server.render import grub_http_device

HTTP_BOOT_PREFIX = "/boot/grub"  # on the HTTP server: where GRUB reads its grub.cfg


def grub_mkimage_argv(
    module_dir: Path, server_address: str, out: Path, *, prefix: str | None = None
) -> list[str]:
    """``grub-mkimage`` argv for an x86_64-efi image whose prefix is ``(tftp,SERVER)/grub``
    (or ``prefix``)."""
    if prefix is None:
        try:
            server = ipaddress.IPv4Address(server_address)
        except ValueError:
            raise InputError(f"server address {server_address!r} is not an IPv4 address") from None
        prefix = f"(tftp,{server})/grub"
    return [
        "grub-mkimage",
        "--directory",
        str(module_dir),
        "--format",
        "x86_64-efi",
        "--prefix",
        prefix,
        "--output",
        str(out),
        *GRUB_MODULES,
    ]


def build_proxy_grub(module_dir: Path, server_address: str, out: Path) -> Path:
    """Write ``out`` (e.g. ``TFTPROOT/grubx64.efi``) for proxy mode; returns ``out``."""
    return _build(module_dir, grub_mkimage_argv(module_dir, server_address, out), out)


def build_http_grub(module_dir: Path, http_base: str, out: Path) -> Path:
    """Write ``out``: UEFI HTTP Boot's GRUB, prefix ``(http,ADDR:PORT)/boot/grub``."""
    prefix = grub_http_device(http_base) + HTTP_BOOT_PREFIX
    return _build(module_dir, grub_mkimage_argv(module_dir, "", out, prefix=prefix), out)


def _build(module_dir: Path, argv: list[str], out: Path) -> Path:
    try:
        present = (module_dir / "moddep.lst").is_file()
    except OSError as exc:  # unreadable (permissions): the operator's to fix
        raise InputError(f"{module_dir}: GRUB's modules cannot be read ({exc.strerror})") from None
    if not present:
        raise InputError(
            f"{module_dir} holds no GRUB x86_64-efi modules (no moddep.lst); "
            "run `netinstall images build --only netboot` or name the directory"
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"{out.parent}: the GRUB image cannot be written there ({exc.strerror})"
        ) from None
    run(argv, timeout=300)
    out.chmod(0o644)
    return out
