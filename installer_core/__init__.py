"""The installer that runs inside the installer initrd (SPEC §7).

Not built yet: the install steps arrive with the installer issue.
"""
