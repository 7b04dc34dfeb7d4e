"""Logging for the dom0 services: one line per event to stderr, which is the journal."""

from __future__ import annotations

import logging


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # urllib3 logs request lines at DEBUG; they carry no secrets but drown ours.
    logging.getLogger("urllib3").setLevel(logging.INFO)
