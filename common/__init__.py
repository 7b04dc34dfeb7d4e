"""What every layer shares, and the bottom of the import graph: it imports nothing of ours.

``errors`` (the error base), ``process`` (the one choke point for running a program),
``protocol`` (every message between server, installer, dom0 agent and operators),
``cpio`` (the newc writer), ``jsonable`` (plain-data copies for ``--json``) and
``firmware``. The installer image and dom0 carry this package as it is, without the CLI.
"""

__version__ = "0.1.0"
