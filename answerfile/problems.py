"""Problems found in an answer file: one sentence each, with the line."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from answerfile.limits import MAX_SHOWN_CHARS


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Problem:
    line: int
    where: str  # e.g. '<source type="ftp">'
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        return f"line {self.line}: {_cut(self.where)}: {prefix}{_cut(self.message)}"


def _cut(text: str) -> str:
    """``text`` as shown: a value quoted from a huge file does not make a huge message."""
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."


def tag(name: str, attr: str | None = None, value: str | None = None) -> str:
    """How a message names an element: ``<source>`` or ``<source type="ftp">``."""
    if attr is None:
        return f"<{name}>"
    return f'<{name} {attr}="{value}">'
