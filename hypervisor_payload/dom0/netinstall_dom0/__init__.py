"""The netinstall services that run in the installed dom0 (SPEC §8, docs/protocol.md).

``firstboot`` creates the local SR and reports ``running``; ``agent`` checks in
with the provisioning server and boots the installer for an upgrade or a
restore. Standard library plus ``requests``, and of netinstall only the leaf
package ``common`` (the protocol's messages, the error base, ``common.process``):
dom0 carries this package as ``/usr/lib/netinstall/netinstall_dom0/`` with
``common`` beside it, so modules here import each other relatively and nothing
of the project but ``common``.
"""
