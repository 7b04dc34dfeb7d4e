"""The netinstall services that run in the installed dom0 (SPEC §8, docs/protocol.md).

``firstboot`` creates the local SR and reports ``running``; ``agent`` checks in
with the provisioning server and boots the installer for an upgrade or a
restore. Standard library plus ``requests`` only: dom0 carries this package as
``/usr/lib/netinstall/netinstall_dom0/`` and nothing else of netinstall, so
modules here import each other relatively and nothing from the project.
"""
