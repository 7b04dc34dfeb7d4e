"""The install log (DEBUG, a file) and the console (INFO), both scrubbed of every secret
the run knows before any handler sees a record."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from installer_core.logbundle import Secrets


class _Scrub(logging.Filter):
    """Replaces every secret the run knows in each record before any handler sees it."""

    def __init__(self, secrets: Secrets) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.secrets.scrub(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.secrets.scrub(record.exc_text)
        return True


class _NotSaid(logging.Filter):
    """Keeps the walker's own lines (printed already) off the console handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "said", False)


@contextmanager
def install_logging(log_file: Path, out: TextIO, secrets: Secrets) -> Iterator[None]:
    """The install log file (DEBUG) and the console (INFO), secrets scrubbed; removed after."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(log_file, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console = logging.StreamHandler(out)
    console.setLevel(logging.INFO)
    console.setFormatter(logging.Formatter("  %(levelname)s %(name)s: %(message)s"))
    console.addFilter(_NotSaid())
    scrub = _Scrub(secrets)
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    for handler in (file_handler, console):
        handler.addFilter(scrub)
        root.addHandler(handler)
    try:
        yield
    finally:
        for handler in (file_handler, console):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(old_level)
