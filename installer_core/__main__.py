"""``python3 -m installer_core [--selftest]``: the entry point the image's /init runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

NOT_YET = 3  # exit status: the install steps do not exist yet


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
    print(
        "installer_core: the install steps arrive with the installer issue; nothing was written",
        file=sys.stderr,
        flush=True,
    )
    return NOT_YET


if __name__ == "__main__":
    sys.exit(main())
