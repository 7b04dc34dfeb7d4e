"""netinstall: unattended network installs of Xen hypervisor hosts.

This package is the thin shell on top of the others (the CLI and its lab); nothing
of ours imports it. What every layer shares lives in ``common``.
"""

from common import __version__

__all__ = ["__version__"]
