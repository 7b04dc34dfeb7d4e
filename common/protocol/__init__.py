"""The wire protocol between the server, the installer, the dom0 services and operators.

``messages`` declares every message once (frozen dataclasses and enums); ``codec`` is
the one validator that turns parsed JSON into those types and back, and describes
them as JSON Schema. Standard library only: the installer initrd and dom0 carry it.
"""
