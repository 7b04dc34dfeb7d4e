"""Builder of the install repository: Xen, dom0 kernel and root filesystem (SPEC §8).

Built by `netinstall images build --only repo` (repo.py); see dom0/ for what runs inside dom0.
"""
