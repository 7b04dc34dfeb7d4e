"""The GRUB image for proxy-DHCP mode: our TFTP server's address in its prefix (SPEC §9).

GRUB 2.06 takes its TFTP server from the DHCP server's reply, not from a
proxy-DHCP offer (../shared/TESTING.md), so in proxy mode the netboot tree's
``grubx64.efi`` (prefix ``/grub``) would look for its config on the wrong host.
The server builds its own image with the prefix ``(tftp,SERVER)/grub``, from the
same modules as ``images/netboot.py``: those of the unpacked grub-efi-amd64-bin
(``~/.cache/netinstall/work/netboot/grub-efi-amd64-bin/usr/lib/grub/x86_64-efi``
after ``netinstall images build``), whose directory the caller passes.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from common.errors import InputError
from common.process import run
from images.netboot import GRUB_MODULES


def grub_mkimage_argv(module_dir: Path, server_address: str, out: Path) -> list[str]:
    """``grub-mkimage`` argv for an x86_64-efi image whose prefix is ``(tftp,SERVER)/grub``."""
    try:
        server = ipaddress.IPv4Address(server_address)
    except ValueError:
        raise InputError(f"server address {server_address!r} is not an IPv4 address") from None
    return [
        "grub-mkimage",
        "--directory",
        str(module_dir),
        "--format",
        "x86_64-efi",
        "--prefix",
        f"(tftp,{server})/grub",
        "--output",
        str(out),
        *GRUB_MODULES,
    ]


def build_proxy_grub(module_dir: Path, server_address: str, out: Path) -> Path:
    """Write ``out`` (e.g. ``TFTPROOT/grubx64.efi``) for proxy mode; returns ``out``."""
    argv = grub_mkimage_argv(module_dir, server_address, out)
    if not (module_dir / "moddep.lst").is_file():
        raise InputError(
            f"{module_dir} holds no GRUB x86_64-efi modules (no moddep.lst); "
            "run `netinstall images build --only netboot` or name the directory"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    run(argv, timeout=300)
    out.chmod(0o644)
    return out
