"""What a lab run installs, and what it must find afterwards.

A ``Scenario`` picks the answer file's features (through host variables of the
lab profile, ``files/profile.xml.j2``): a static admin interface or DHCP, the SR
type, a marker script at each stage, a supplemental pack from a driver source.
``prepare`` puts the profile, the scripts and the pack into a server directory
through the CLI, as an operator would. ``expected_markers`` and ``disk_files``
name what the run leaves on the console and on the installed disk.

Between them the two firmwares' default scenarios cover everything issue 6 asks
a full run to prove; ``bad-answer-file`` is the short run that must fail cleanly.
"""

from __future__ import annotations

import ipaddress
import shutil
from dataclasses import dataclass
from pathlib import Path

import hypervisor_payload
from common.errors import InputError
from common.process import run
from netinstall.lab import floor, san, services

FILES = Path(__file__).parent / "files"
PACK_SOURCE = Path(hypervisor_payload.__file__).parent / "packs_example"
PROFILE = "lab"
HOST_NAME = "lab01"
ROOT_PASSWORD = "netinstall-lab"  # noqa: S105 - the throw-away lab machine's password
SCRIPTS = ("start.sh", "populated.sh", "complete.sh")
MARKER = "netinstall-lab-marker: "
DRIVERS = "drivers"  # the driver source's directory under the server's files/


@dataclass(frozen=True)
class Scenario:
    name: str
    static_host: int | None = None  # the admin address's host number in the lab's /24, else DHCP
    srtype: str = "lvm"
    scripts: bool = True
    pack: bool = False
    timezone: str = "Europe/London"
    # A failing run: the fragment the host's failed message must contain.
    expect_failure: str | None = None
    installer_xen_args: str | None = None  # the lab profile's Xen line for the installer
    installer_kernel_args: str | None = None  # the lab profile's installer kernel line
    expect_log: str | None = None  # a line the installer must print on the console
    # After the install: upgrade through the agent, then restore (netinstall/lab/upgrade.py).
    upgrade: bool = False
    # SAN boot (netinstall/lab/san.py): a diskless machine whose root LUN is on the lab's
    # iSCSI target, hooked by its iPXE script (the iBFT), installed over use_ibft.
    san: bool = False
    # Multipath: the disk as two SCSI paths to one LUN (qemu.multipath_disk), the installer
    # with device_mapper_multipath=yes; once running, one path is removed (lab/paths.py).
    multipath: bool = False
    # SAN: the target turns the machine away once its installer is up (after iPXE's login).
    refuse_login: bool = False
    # SAN: the target's portals, each a path to the LUN (2 with multipath: iSCSI multipath,
    # where a path is lost by taking a portal off the storage network).
    portals: int = 1
    # A vendor utility partition (lab/utility.py) as partition 1 of the disk before the
    # install: kept byte for byte, and every partition of ours numbered one higher.
    utility: bool = False
    disk_size: int | None = None  # bytes; None: qemu.DISK_SIZE
    # A power cut during the install (lab/powercut.py: the cut point's name), then power on.
    cut: str | None = None
    # The server's --boot-transport: "http" (Xen, kernel and install.img over HTTP where
    # the loader can) or "tftp" (TFTP only, the TFTP-only way kept proven).
    boot_transport: str = "http"
    # UEFI: the machine boots by OVMF's HTTP boot (DHCP vendor class HTTPClient), no TFTP.
    http_boot: bool = False
    # The server's --dhcp: "full", or "proxy" beside a site DHCP server of the lab's own (a
    # plain dnsmasq that leases and says nothing of booting: services.site_dhcp_argv).
    dhcp: str = "full"
    # Measure the floor (lab/floor.py): dd the blank disk at installation-start, and once
    # running reset the machine to time a boot with nothing left to do.
    floor: bool = False
    # A BMC for the machine (lab/bmc.py): "redfish" or "ipmi". The lab registers the host
    # with it, starts no QEMU, and ``netinstall host rearm MAC --power`` powers it on.
    bmc: str | None = None

    @property
    def dos(self) -> bool:
        """The legacy DOS layout (SPEC §6), asked for on the installer's command line."""
        return "disable-gpt" in (self.installer_kernel_args or "").split()

    @property
    def root_partition(self) -> int:
        """The installed root's partition number (SPEC §6: a kept partition 1 shifts it)."""
        return 2 if self.utility else 1

    @property
    def backup_partition(self) -> int:
        return self.root_partition + 1

    @property
    def qemu_paths(self) -> bool:
        """The disk as two SCSI paths of the machine itself (not a SAN's portals)."""
        return self.multipath and not self.san

    def static_address(self, server: ipaddress.IPv4Interface) -> str | None:
        """The static admin address on the network of ``server`` (the lab server's address)."""
        if self.static_host is None:
            return None
        address = server.network.network_address + self.static_host
        if address not in server.network or address == server.ip:
            raise InputError(f"scenario {self.name}: host {self.static_host} of {server.network}")
        return str(address)

    def variables(self, server: ipaddress.IPv4Interface) -> dict[str, str]:
        """The host variables the lab profile reads; ``server``: the server's address/prefix."""
        found = {
            "disk": "iscsi:ibft" if self.san else "sda" if self.multipath else "vda",
            "root_password": ROOT_PASSWORD,
            "srtype": self.srtype,
            "timezone": self.timezone,
            "scripts": "yes" if self.scripts else "no",
        }
        if (address := self.static_address(server)) is not None:
            found |= {
                "static_ip": address,
                "netmask": str(server.netmask),
                "gateway": str(server.ip),
            }
        if self.pack:
            found["driver_source"] = DRIVERS
        if self.floor:
            found["disk_rate"] = floor.RATE_SCRIPT
        return found

    def expected_markers(self) -> list[str]:
        """The marker lines each stage's script prints (the installer logs them)."""
        if not self.scripts:
            return []
        return [
            f"{MARKER}installation-start",
            f"{MARKER}filesystem-populated",
            f"{MARKER}installation-complete 0",
        ]

    def disk_files(self) -> list[str]:
        """Files the installed root (partition 1) must hold, relative to it."""
        files = ["root/netinstall-lab-populated"] if self.scripts else []
        if self.pack:
            files += [
                "var/lib/netinstall/packs/example.installed",
                "etc/netinstall/packs/example.conf",
            ]
        return files


SCENARIOS = {
    # Between them the two full runs prove a static admin interface, both SR types,
    # the three script stages and a supplemental pack.
    "bios": Scenario("static, lvm SR, scripts", static_host=50, srtype="lvm"),
    "uefi": Scenario("dhcp, ext SR, scripts, pack", srtype="ext", pack=True),
}
# The installer's dom0 too small to hold the payload in RAM: it is staged on the new
# backup partition (SPEC §7).
LOW_MEMORY = Scenario(
    "low memory: payload staged on disk",
    srtype="ext",
    installer_xen_args="dom0_max_vcpus=1-2 dom0_mem=768M,max:768M com1=115200,8n1 console=com1,vga",
    expect_log="staging the payload on the backup partition",
)
UPGRADE = Scenario(
    "upgrade to B through the agent, then restore A; a utility partition kept",
    srtype="ext",
    upgrade=True,
    utility=True,
)
ISCSI = Scenario("iSCSI root LUN named by the iBFT, diskless", srtype="lvm", san=True)
ISCSI_REFUSED = Scenario(
    "the iSCSI target refuses the installer's login",
    san=True,
    refuse_login=True,
    expect_failure="iSCSI login to iqn.2026-12.org.netinstall.lab:lab-",
)
MULTIPATH = Scenario("a multipathed LUN: two paths, then one", srtype="lvm", multipath=True)
ISCSI_MULTIPATH = Scenario(
    "iSCSI multipath: the iBFT's LUN through two portals, then one",
    srtype="lvm",
    san=True,
    multipath=True,
    portals=2,
)
# use_ibft on a machine whose firmware published no iBFT (the seed chain, no sanhook): the
# installer must bring the network up anyway, report failed with one sentence, write nothing.
NO_IBFT = Scenario(
    "use_ibft without an iBFT",
    installer_kernel_args="xencons=hvc console=tty0 console=hvc0 net.ifnames=0 use_ibft",
    expect_failure="the firmware published no iSCSI Boot Firmware Table",
)
# Power cuts (lab/powercut.py): the plug pulled at one install step, then power on again.
# The BIOS ones install the legacy DOS layout (disable-gpt) on a small disk (SPEC §6).
CUT_NAMES = ("before-partition", "download", "extract", "bootloader", "first-boot")
SMALL_DISK = 16 * 2**30
DOS_KERNEL_ARGS = "xencons=hvc console=tty0 console=hvc0 net.ifnames=0 disable-gpt"


def power_cut(cut: str, *, dos: bool = False) -> Scenario:
    """The scenario that cuts the power at ``cut`` (a ``powercut.CUT_POINTS`` name)."""
    if dos:
        return Scenario(
            f"power cut: {cut}; DOS layout on a 16 GiB disk",
            srtype="lvm",
            cut=cut,
            installer_kernel_args=DOS_KERNEL_ARGS,
            disk_size=SMALL_DISK,
        )
    return Scenario(f"power cut: {cut}", srtype="ext", cut=cut)


# make test folds one cut into the UEFI install (test_network_boot), the rest is test-all.
CI_CUT = "extract"
BAD_ANSWER_FILE = Scenario(
    "bad answer file",
    timezone="Europe/Londen",
    expect_failure="'Europe/Londen' is not a time zone in the tz database",
)


def prepare(
    directory: Path,
    scenario: Scenario,
    server: ipaddress.IPv4Interface,
    mac: str,
    *,
    repo: Path,
    netboot: Path,
    storage: san.Storage | None = None,
) -> None:
    """``server init``, the scenario's files, ``profile add`` and ``host add``, all via the CLI."""
    cli = services.netinstall_command()
    run([
        *cli, "server", "init", str(directory),
        "--repo", str(repo.resolve()), "--netboot", str(netboot.resolve()),
        "--advertise", str(server.ip),
    ])  # fmt: skip
    files = directory / "files"
    scripts = files / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    for name in SCRIPTS:
        shutil.copy2(FILES / name, scripts / name)
    if scenario.floor:
        device = f"/dev/{scenario.variables(server)['disk']}"
        (scripts / floor.RATE_SCRIPT).write_text(floor.rate_script(device))
    if scenario.pack:
        run([*cli, "pack", "build", str(PACK_SOURCE), "--into", str(files / DRIVERS)])
    xen = ["--xen-args", scenario.installer_xen_args] if scenario.installer_xen_args else []
    if scenario.installer_kernel_args:
        xen += ["--kernel-args", scenario.installer_kernel_args]
    san_profile = ["--san-boot"] if scenario.san else []
    san_profile += ["--multipath"] if scenario.multipath else []
    run([
        *cli, "profile", "add", PROFILE, "--dir", str(directory),
        "--template", str(FILES / "profile.xml.j2"), *xen, *san_profile,
    ])  # fmt: skip
    variables = [
        arg
        for key, value in scenario.variables(server).items()
        for arg in ("--var", f"{key}={value}")
    ]
    if scenario.san and storage is None:
        raise InputError(f"scenario {scenario.name}: a SAN scenario needs the lab's storage")
    lun = (
        [*(a for path in storage.root_paths for a in ("--san-target", path)),
         "--san-address", storage.host_address]
        if scenario.san and storage is not None
        else []
    )  # fmt: skip
    run([
        *cli, "host", "add", mac, "--dir", str(directory), "--name", HOST_NAME,
        "--profile", PROFILE, *variables, *lun,
    ])  # fmt: skip


# The scenarios ``netinstall demo --scenario NAME`` runs besides the firmware's own install.
TFTP_ONLY = Scenario("TFTP only (server run --boot-transport tftp)", boot_transport="tftp")
HTTP_BOOT = Scenario("UEFI HTTP Boot: GRUB by URL, no TFTP", srtype="ext", http_boot=True)
HTTP_BOOT_PROXY = Scenario(
    "UEFI HTTP Boot beside another DHCP server (server run --dhcp proxy)",
    srtype="ext",
    http_boot=True,
    dhcp="proxy",
)
NAMED: dict[str, Scenario] = {
    "upgrade": UPGRADE,
    "iscsi": ISCSI,
    "multipath": MULTIPATH,
    "iscsi-multipath": ISCSI_MULTIPATH,
    "low-memory": LOW_MEMORY,
    "bad-answer-file": BAD_ANSWER_FILE,
    "no-ibft": NO_IBFT,
    "iscsi-refused": ISCSI_REFUSED,
    "tftp": TFTP_ONLY,
    "http-boot": HTTP_BOOT,
    "http-boot-proxy": HTTP_BOOT_PROXY,
}
DOS = Scenario("DOS layout on a 16 GiB disk", installer_kernel_args=DOS_KERNEL_ARGS,
               disk_size=SMALL_DISK)  # fmt: skip
CUT_PREFIX = "power-cut-"
NAMES = ("install", *NAMED, "dos", *(CUT_PREFIX + cut for cut in CUT_NAMES))


def scenario_for(firmware: str, name: str) -> Scenario:
    """The scenario ``netinstall demo --scenario NAME`` runs on ``firmware``."""
    if name == "install":
        return SCENARIOS[firmware]
    if name == "dos":
        if firmware != "bios":
            raise InputError("the DOS layout (disable-gpt) is for BIOS machines only (SPEC §6)")
        return DOS
    if name.startswith(CUT_PREFIX) and name.removeprefix(CUT_PREFIX) in CUT_NAMES:
        return power_cut(name.removeprefix(CUT_PREFIX), dos=firmware == "bios")
    if name not in NAMED:
        raise InputError(f"unknown scenario {name!r}; expected {', '.join(NAMES)}")
    if NAMED[name].http_boot and firmware != "uefi":
        raise InputError(f"UEFI HTTP Boot ({name}) is for UEFI machines only")
    return NAMED[name]
