"""What every install step is handed: the boot parameters, the answer file, where
things are, and how to report. Shared by the step modules (see STEPS in install.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from answerfile.bootargs import BootArgs
from answerfile.model import AnswerFile
from common.firmware import Firmware
from installer_core.treeinfo import TreeInfo
from partitioning.model import Plan

if TYPE_CHECKING:
    from installer_core.iscsi import SanState
    from installer_core.multipath import MultipathMap


@dataclass(frozen=True)
class Existing:
    """What an upgrade or a restore found on the disk before writing anything.

    Upgrade: the installation on root; restore: the copy on the backup partition.
    ``firstboot`` is that system's /etc/netinstall/firstboot.json (its SR section and
    management interface are kept), ``sr_uuid`` its first-boot state's SR uuid.
    """

    version: str
    build: str | None
    root_uuid: str  # root's filesystem UUID: re-created with it, so fstab and GRUB hold
    root_label: str | None = None
    firstboot: dict[str, Any] = field(default_factory=dict, repr=False)  # may hold a token
    sr_uuid: str | None = None


class Reporter(Protocol):
    """Where step progress goes: the server (SPEC §9) or nowhere."""

    def event(
        self,
        state: str,
        *,
        step: str | None = None,
        progress: float | None = None,
        message: str | None = None,
    ) -> None: ...

    def upload_logs(self, bundle: Path) -> None: ...


@dataclass
class InstallContext:
    """Mutable state of one install run; each step reads what earlier steps left."""

    args: BootArgs
    reporter: Reporter
    firmware: Firmware
    work: Path = Path("/tmp/netinstall")  # noqa: S108 - the initrd's RAM, ours alone
    target: Path = Path("/mnt/target")  # the new root is mounted here
    log_file: Path = Path("/tmp/netinstall/install.log")  # noqa: S108 - as above
    answer: AnswerFile | None = None  # set by the fetch/validate steps
    answer_text: str | None = None
    repo_url: str | None = None  # the install repository, from the answer file's source
    staging: Path | None = None  # where the payload was downloaded and verified
    payload: dict[str, Path] = field(default_factory=dict)  # treeinfo key -> local file
    payload_version: str | None = None
    treeinfo: TreeInfo | None = None  # the repository's .treeinfo (which file is which)
    disk: Path | None = None  # the primary disk's device path
    partitions: dict[str, Path] = field(default_factory=dict)  # use ("root", "esp", ...) -> dev
    uuids: dict[str, str] = field(default_factory=dict)  # use -> filesystem UUID
    admin_mac: str | None = None  # the NIC that fetched the answer file
    admin_interface: str | None = None  # that NIC's name in the installer (ethN, net.ifnames=0)
    plan: Plan | None = None  # the partition plan written to ``disk`` (disk.partition)
    partuuids: dict[str, str] = field(default_factory=dict)  # use -> partition UUID (PARTUUID)
    disk_ready: bool = False  # partitioned and formatted early, to stage the payload on disk
    staging_mount: Path | None = None  # the partition mounted for disk staging
    existing: Existing | None = None  # upgrade/restore: what was found (find steps)
    san: SanState | None = None  # use_ibft: the iBFT, the storage NIC, attached LUNs (iscsi)
    multipath: MultipathMap | None = None  # the primary disk's map (device_mapper_multipath)
    failed_reason: str | None = None
