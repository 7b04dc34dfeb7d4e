"""Where the dom0 services keep their files.

Every path is under ``root`` ("/" in dom0; a temporary directory in tests).
Commands always name the live system's paths: ``root`` moves files, not devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The mount point of an ext SR, as XenServer names it (SPEC §8). /var/run is /run.
SR_MOUNT_BASE = "/var/run/sr-mount"
# The GRUB menu entry the agent writes and grub-reboot selects.
INSTALLER_ENTRY = "netinstall-installer"


@dataclass(frozen=True)
class Layout:
    root: Path = Path("/")

    def _at(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def firstboot_config(self) -> Path:
        return self._at("/etc/netinstall/firstboot.json")

    @property
    def agent_config(self) -> Path:
        return self._at("/etc/netinstall/agent.json")

    @property
    def release_file(self) -> Path:
        return self._at("/etc/netinstall-release")

    @property
    def state_file(self) -> Path:
        return self._at("/var/lib/netinstall/firstboot-state.json")

    @property
    def done_marker(self) -> Path:
        """The file whose presence stops netinstall-firstboot.service from starting."""
        return self._at("/var/lib/netinstall/firstboot.done")

    @property
    def fstab(self) -> Path:
        return self._at("/etc/fstab")

    @property
    def proc_cmdline(self) -> Path:
        return self._at("/proc/cmdline")

    @property
    def kernel_hostname(self) -> Path:
        return self._at("/proc/sys/kernel/hostname")

    @property
    def installer_dir(self) -> Path:
        """Where the agent puts the installer's xen, kernel and initrd."""
        return self._at("/boot/netinstall-installer")

    @property
    def grub_entry(self) -> Path:
        """The file the installed grub.cfg sources for the one-time installer entry."""
        return self._at(f"/boot/grub/{INSTALLER_ENTRY}.cfg")

    @property
    def staged_marker(self) -> Path:
        """On tmpfs: the installer is staged and waits for a reboot (gone after one)."""
        return self._at("/run/netinstall/installer-staged.json")

    @property
    def update_key(self) -> Path:
        """The server's update key (an OpenSSH public key line): every bundle's signer."""
        return self._at("/etc/netinstall/update-key.pub")

    @property
    def update_log(self) -> Path:
        """The updates this host has, from its own disk (``updates.UpdateLog``)."""
        return self._at("/var/lib/netinstall/updates.json")

    @property
    def update_dir(self) -> Path:
        """Where a bundle is downloaded and unpacked while it is applied."""
        return self._at("/var/lib/netinstall/updates")

    def update_version(self, update_id: str) -> Path:
        """The version string an applied update set."""
        return self._at(f"/etc/netinstall-updates/{update_id}")

    @property
    def boot_id(self) -> Path:
        return self._at("/proc/sys/kernel/random/boot_id")

    def sr_mount_dir(self, sr_uuid: str) -> Path:
        return self._at(f"{SR_MOUNT_BASE}/{sr_uuid}")
