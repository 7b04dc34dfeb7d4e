"""Builders of the installer initrd and the netboot tree.

Not built yet: the builders arrive with the images issue.
"""
