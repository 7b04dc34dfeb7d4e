"""Problems found in an answer file: one sentence each, with the line."""

from __future__ import annotations

import enum
from dataclasses import dataclass


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
        return f"line {self.line}: {self.where}: {prefix}{self.message}"


def tag(name: str, attr: str | None = None, value: str | None = None) -> str:
    """How a message names an element: ``<source>`` or ``<source type="ftp">``."""
    if attr is None:
        return f"<{name}>"
    return f'<{name} {attr}="{value}">'
