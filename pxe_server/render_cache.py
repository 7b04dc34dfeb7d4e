"""Rendered boot configs and answer files, kept per host revision (README "Fast request path").

    cache.get(key, revision)         -> the text rendered for ``key`` at ``revision``, or None
    cache.put(key, revision, value)

A key names everything a render reads besides the host record and what the registry
keeps beside it (the path asked for, the server's settings, ...); the revision is the
host's (``model.Host.revision``), which the registry renews with every write that
changes what a render of the host reads: its record, its profile, the settings and the
repositories. A caller reads the host (and so its revision) from the registry in the
same request, so another process's write (the CLI marking a host installed) is seen
at once: an entry of an older revision is never served. Bounded: the least recently
used of more than ``CACHE_ENTRIES`` entries goes. Thread-safe. Imports nothing of ours.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

CACHE_ENTRIES = 4096  # renders kept: a boot config and an answer file each for 2,048 hosts


class RenderCache:
    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self.entries = entries
        self._items: OrderedDict[Hashable, tuple[Hashable, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable, revision: Hashable) -> Any:
        """The value put for ``key`` at ``revision``; None if none, or of another revision."""
        with self._lock:
            found = self._items.get(key)
            if found is None or found[0] != revision:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found[1]

    def peek(self, key: Hashable) -> tuple[Hashable, Any] | None:
        """(revision, value) put for ``key`` last, whatever the revision; None if none."""
        with self._lock:
            return self._items.get(key)

    def put(self, key: Hashable, revision: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = (revision, value)
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)
