"""``python3 -m installer_core [--selftest]``: the entry point the image's /init runs.

Without ``--selftest``: read /proc/cmdline (SPEC §4); without ``install`` on it,
say so and exit 0 (/init then follows ``atexit=``); with it, run the install
(``installer_core.install``) and exit 0 (installed) or 1 (failed). A malformed
command line exits 2 after printing every problem.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from answerfile.bootargs import BootArgs, parse_cmdline
from common.errors import BootArgsError
from common.firmware import Firmware
from installer_core.steps import Reporter

NO_INSTALL = 0  # exit status: no unattended install was asked for
NOT_YET = NO_INSTALL  # the old name, still used by tests/unit/test_installer_image.py
BAD_CMDLINE = 2
PROC_CMDLINE = Path("/proc/cmdline")
EFI = Path("/sys/firmware/efi")


def make_reporter(args: BootArgs) -> Reporter:
    """The server reporter when netinstall.server= and netinstall.token= are given."""
    # Imported here: requests is needed only for an install, not for the self-test.
    from installer_core import report  # noqa: PLC0415

    if args.server and args.token:
        return report.ServerReporter(args.server, args.bootif, args.token)
    return report.NullReporter()


def from_cmdline(cmdline: Path = PROC_CMDLINE, efi: Path = EFI) -> int:
    """Read the boot arguments and run the unattended install they ask for."""
    try:
        args = parse_cmdline(cmdline.read_text())
    except BootArgsError as exc:
        print("installer_core: the kernel command line cannot be used:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return BAD_CMDLINE
    if not args.install:
        print(
            "installer_core: no unattended install was asked for (no `install` on the kernel "
            "command line); nothing was written",
            file=sys.stderr,
            flush=True,
        )
        return NO_INSTALL
    from installer_core import install  # noqa: PLC0415 - as above

    firmware = Firmware.UEFI if efi.exists() else Firmware.BIOS
    boot = install.Boot(args=args, firmware=firmware, reporter=make_reporter(args))
    print(f"installer_core: installing ({firmware.value} firmware; {args!r})", flush=True)
    return install.run_install(boot)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m installer_core",
        description="The netinstall installer (runs inside the installer image).",
    )
    parser.add_argument(
        "--selftest",
        action="store_true",
        help="check the image (imports, answer files, disks) and print INSTALLER-SELFTEST-OK",
    )
    args = parser.parse_args(argv)
    if args.selftest:
        # Imported only for the self-test, which reports its own import failures.
        from installer_core import selftest  # noqa: PLC0415

        return selftest.run()
    return from_cmdline()


if __name__ == "__main__":
    sys.exit(main())
