"""netinstall: unattended network installs of Xen hypervisor hosts.

This package is the thin shell around the others (CLI, lab); it imports nothing
heavy so that the installer image can carry ``netinstall.errors`` alone.
"""

__version__ = "0.1.0"
