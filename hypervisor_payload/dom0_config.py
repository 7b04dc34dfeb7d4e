"""What the dom0 root is made of: its Debian packages and the files netinstall adds.

Pure data and text, no commands: ``dom0_root`` writes these into the chroot.
Everything that shapes the cached package stage (``STAGE1_FILES``, the package
list, the debootstrap variant) is part of that cache's key through
``stage1_recipe``; bump ``STAGE1_REVISION`` when the stage's *code* changes.

Network stack: ifupdown (``/etc/network/interfaces`` and ``interfaces.d/``),
with isc-dhcp-client, bridge-utils (``bridge_ports``) and Open vSwitch's
ifupdown integration (``ovs_type``). Names are ``ethN`` (``net.ifnames=0``).
"""

from __future__ import annotations

import re

STAGE1_REVISION = 1
VARIANT = "minbase"

# TESTING.md's dom0 list, plus what a minbase system needs to be a usable host
# (dbus for logind/hostnamectl, tzdata for the timezone, ca-certificates for
# HTTPS to the server, a few admin tools). qemu-system-xen (HVM guests) is left
# out: xen-utils only recommends it, and it would double the archive.
DOM0_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "udev",
    "kmod",
    "xen-hypervisor-4.17-amd64",
    "xen-utils-4.17",
    "linux-image-6.12-amd64",
    "initramfs-tools",
    "lvm2",
    "e2fsprogs",
    "dosfstools",
    "open-iscsi",
    "multipath-tools",
    "multipath-tools-boot",
    "efibootmgr",
    "grub2-common",
    "grub-pc-bin",
    "grub-efi-amd64-bin",
    "openssh-server",
    "chrony",
    "keyboard-configuration",
    "console-setup",
    "tzdata",
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
    "bridge-utils",
    "openvswitch-switch",
    "python3",
    "python3-requests",
    "ca-certificates",
    "zstd",
    "netbase",
    "procps",
    "less",
    "iputils-ping",
)

# Kernel module trees a server hypervisor does not use (about 30 MB of the archive).
EXCLUDED_MODULES = (
    "kernel/sound",
    "kernel/drivers/media",
    "kernel/drivers/net/wireless",
    "kernel/net/wireless",
    "kernel/drivers/bluetooth",
    "kernel/net/bluetooth",
    "kernel/drivers/iio",
    "kernel/drivers/staging",
)


def _dpkg_excludes() -> str:
    lines = [
        "# netinstall: dom0 keeps no documentation, manual pages, translations",
        "# or kernel modules for sound, media, wireless and bluetooth.",
        "path-exclude=/usr/share/doc/*",
        "path-include=/usr/share/doc/*/copyright",
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/info/*",
        "path-exclude=/usr/share/locale/*",
        "path-include=/usr/share/locale/locale.alias",
        "path-exclude=/usr/share/lintian/*",
    ]
    for tree in EXCLUDED_MODULES:
        lines += [
            f"path-exclude=/lib/modules/*/{tree}/*",
            f"path-exclude=/usr/lib/modules/*/{tree}/*",
        ]
    return "\n".join(lines) + "\n"


# Answers for the packages that would ask (keyboard-configuration, console-setup).
PRESEED = """\
keyboard-configuration keyboard-configuration/model select Generic 105-key PC
keyboard-configuration keyboard-configuration/modelcode string pc105
keyboard-configuration keyboard-configuration/layoutcode string us
keyboard-configuration keyboard-configuration/xkb-keymap select us
keyboard-configuration keyboard-configuration/variant select English (US)
keyboard-configuration keyboard-configuration/optionscode string
console-setup console-setup/charmap47 select UTF-8
console-setup console-setup/codeset47 select Guess optimal character set
console-setup console-setup/fontface47 select Fixed
tzdata tzdata/Areas select Etc
tzdata tzdata/Zones/Etc select UTC
"""

# Loaded early by the initramfs: the iBFT reader, and the Xen device drivers
# dom0's toolstack needs (xenstored, xl).
INITRAMFS_MODULES = (
    "iscsi_ibft",
    "xenfs",
    "xen-evtchn",
    "xen-gntdev",
    "xen-gntalloc",
    "xen-privcmd",
)

INITRAMFS_CONF = """\
# netinstall: one initramfs for every host, built without the target hardware.
MODULES=most
COMPRESS=zstd
"""

# Sourced by open-iscsi's local-top script. The iscsi hook always puts
# iscsistart, iscsi_tcp and iscsi_ibft into the initramfs; this file decides
# when to log in. iBFT boot: when the firmware published an iBFT (iPXE
# sanhook, an iSCSI boot ROM), log in to the target it names, exactly as the
# ``iscsi_auto`` kernel parameter asks. Without an iBFT nothing happens, so
# local-disk hosts boot as before.
#
# Several iBFT targets are several paths to the root LUN (iPXE sanhook with one
# URI per portal: iSCSI multipath). Then ``iscsistart -b`` (the script's login
# call, run in this shell) gets open-iscsi's settings for sessions under
# dm-multipath: a path that does not answer is given up after a few login
# attempts (iscsistart's boot default is 30, minutes per dead portal: one fabric
# down would hold every boot), NOP-Outs notice a path that dies later (off by
# default for boot sessions), and a failed path hands its I/O back after 15 s so
# multipath moves it to the others. One target keeps the defaults: there a
# session must ride out a storage outage rather than fail the root filesystem.
ISCSI_INITRAMFS = """\
# netinstall: boot from the iSCSI LUN named by the firmware's iBFT when there is one.
# Manual alternative: iscsi_auto, or root=iscsi:... / iscsi_target_ip=... on the
# kernel command line.
if [ -z "$ISCSI_AUTO" ] && [ -d /sys/firmware/ibft/target0 ]; then
	ISCSI_AUTO=true
fi
# Several paths to the root LUN (multipath): no path may hold the boot or the I/O.
if [ -d /sys/firmware/ibft/target1 ]; then
	iscsistart() {
		if [ "$1" = "-b" ]; then
			/sbin/iscsistart "$@" \\
				-P 'node.session.initial_login_retry_max=4' \\
				-P 'node.conn[0].timeo.noop_out_interval=5' \\
				-P 'node.conn[0].timeo.noop_out_timeout=5' \\
				-P 'node.session.timeo.replacement_timeout=15'
		else
			/sbin/iscsistart "$@"
		fi
	}
fi
"""

# No identity in the image: open-iscsi's startup check writes a unique
# InitiatorName the first time iscsid starts on each host.
ISCSI_INITIATOR_PLACEHOLDER = "GenerateName=yes\n"

# Copied into the initramfs by multipath-tools-boot's hook. "yes": a disk seen
# through two or more paths becomes a multipath map without a wwids file (SAN
# boot), a disk with one path stays a plain disk.
MULTIPATH_CONF = """\
# netinstall: multipath every disk reachable through two or more paths.
defaults {
	find_multipaths yes
}
"""

DEFAULT_LOCALE = "LANG=C.UTF-8\n"

# Written by stage 1 before the packages are installed.
STAGE1_FILES: dict[str, str] = {
    "etc/dpkg/dpkg.cfg.d/netinstall-minimal": _dpkg_excludes(),
}

# Written by stage 1 after the packages, before it builds the one initramfs.
STAGE1_LATE_FILES: dict[str, str] = {
    "etc/initramfs-tools/modules": "# netinstall\n" + "\n".join(INITRAMFS_MODULES) + "\n",
    "etc/initramfs-tools/conf.d/netinstall": INITRAMFS_CONF,
    "etc/iscsi/iscsi.initramfs": ISCSI_INITRAMFS,
    "etc/iscsi/initiatorname.iscsi": ISCSI_INITIATOR_PLACEHOLDER,
    "etc/multipath.conf": MULTIPATH_CONF,
    "etc/default/locale": DEFAULT_LOCALE,
}

SSH_KEYS_UNIT = """\
# netinstall: the image carries no SSH host keys; each host makes its own.
# At idle priority: the RSA key takes a slow CPU more than a minute, and the
# first boot's SR and running report should not wait behind it (only sshd does).
[Unit]
Description=netinstall: generate missing SSH host keys
Before=ssh.service
ConditionPathExists=/usr/bin/ssh-keygen

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes
Nice=19
CPUSchedulingPolicy=idle
IOSchedulingClass=idle

[Install]
WantedBy=multi-user.target ssh.service
"""

# Our own units, written in stage 2 next to hypervisor_payload/dom0/systemd's.
GENERATED_UNITS: dict[str, str] = {
    "netinstall-ssh-keys.service": SSH_KEYS_UNIT,
}

# systemd's 90 s wait for a device is too short for a SAN LUN, a path that is
# failing over or a loaded machine: past it a boot ends in emergency mode (fstab
# entries also say so, with x-systemd.device-timeout; this covers the rest, such
# as the console hvc0).
SYSTEM_CONF = """\
# netinstall: give devices 5 minutes to appear before a boot gives up on them.
[Manager]
DefaultDeviceTimeoutSec=5min
"""

# The management bridge keeps the MAC of its port, as the kernel gives a bridge whose
# address nobody set, instead of the one udev's default link policy (persistent) derives
# from the machine-id: the host keeps the DHCP identity it is registered by (the NIC's
# MAC) on every boot, and dhclient does not race udev changing the bridge's address
# under it (issue 18: a second boot's DHCP went unanswered, then waited dhclient's 5 min
# retry, and came back with another address).
BRIDGE_LINK = """\
# netinstall: xenbr* keep their port's MAC (no MACAddressPolicy=persistent).
[Match]
OriginalName=xenbr*

[Link]
MACAddressPolicy=none
"""

# Written in stage 2, next to the units.
SYSTEM_FILES: dict[str, str] = {
    "etc/systemd/system.conf.d/netinstall.conf": SYSTEM_CONF,
    "etc/systemd/network/10-netinstall-xenbr.link": BRIDGE_LINK,
}

# Written in stage 2: no host identity in the image.
IDENTITY_FILES: dict[str, str] = {
    "etc/machine-id": "",  # empty: systemd makes one at first boot (ConditionFirstBoot)
    "etc/hostname": "localhost\n",
    "etc/resolv.conf": "",  # the DHCP client or the installer writes it
}
IDENTITY_REMOVE = (
    "etc/ssh/ssh_host_*",
    "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/credential.secret",
)


_SAFE_VALUE = re.compile(r"[A-Za-z0-9._:+-]*")


def _release_value(value: str) -> str:
    if _SAFE_VALUE.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def release_text(version: str, build: str, kernel: str, xen: str) -> str:
    """``/etc/netinstall-release``: os-release style ``KEY=VALUE`` lines."""
    fields = {
        "NAME": "netinstall",
        "VERSION": version,
        "BUILD": build,
        "KERNEL_RELEASE": kernel,
        "XEN_VERSION": xen,
    }
    return "".join(f"{key}={_release_value(value)}\n" for key, value in fields.items())


def stage1_recipe() -> str:
    """Everything that shapes the cached package stage, as one text (for its key)."""
    parts = [f"revision={STAGE1_REVISION}", f"variant={VARIANT}", *DOM0_PACKAGES, PRESEED]
    for files in (STAGE1_FILES, STAGE1_LATE_FILES):
        parts += [f"{path}\n{text}" for path, text in sorted(files.items())]
    return "\0".join(parts)
