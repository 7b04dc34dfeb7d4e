"""Every bound on an answer file, in one place (README "Answer files", docs/answerfile.md).

An answer file comes from the network and from operators' templates; these keep
reading, validating and reporting it small and quick whatever it holds. The
installer's fetch, the validator (``netinstall answerfile validate``), the server's
renderer and the registry's template check all use ``MAX_BYTES``.
"""

from __future__ import annotations

from typing import BinaryIO

from common.errors import AnswerFileError

MAX_BYTES = 1 << 20  # 1 MiB: an answer file, fetched (compressed or not), read or rendered
READ_CHUNK = 64 << 10  # how much a streamed read asks for at a time

# How often a repeatable element may appear (its aliases and legacy spellings count with it).
MAX_NAME_SERVERS = 8
MAX_NTP_SERVERS = 8
MAX_SCRIPTS = 32  # every stage and spelling together
MAX_GUEST_DISKS = 64
MAX_SOURCES = 8
MAX_DRIVER_SOURCES = 32
MAX_LEGACY_REPEATS = 8  # <time-config-method>, <ui-confirmation-prompt>

MAX_PROBLEMS = 50  # problems listed for one file; past that the reader stops
MAX_SHOWN_CHARS = 500  # a problem's message or place as shown; the rest is cut with "..."


def size_problem(size: int | None = None) -> str:
    """The one sentence for an answer file over ``MAX_BYTES``."""
    got = f"{size} bytes" if size is not None else "more than that"
    return f"an answer file may hold at most {MAX_BYTES} bytes (1 MiB); this one has {got}"


def read_bounded(stream: BinaryIO) -> bytes:
    """At most ``MAX_BYTES`` from ``stream``, read in chunks; ``AnswerFileError`` past that.

    Never reads more than ``MAX_BYTES + READ_CHUNK``, whatever the stream (``/dev/zero``,
    a pipe, a 200 MiB file).
    """
    parts: list[bytes] = []
    size = 0
    while size <= MAX_BYTES:
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        size += len(chunk)
    raise AnswerFileError(size_problem())
