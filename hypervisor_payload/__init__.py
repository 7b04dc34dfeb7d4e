"""Builder of the install repository: Xen, dom0 kernel and root filesystem (SPEC §8).

Not built yet: the builder arrives with the images issue.
"""
