"""Tokens and their redaction (SPEC §9 "Protect"). A leaf module.

Install tokens, agent credentials and the API token are ``token_urlsafe(24)``
(32 url-safe characters). They are compared in constant time and never reach a
log or a stored message: ``redact`` replaces them with ``REDACTED``.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable

REDACTED = "REDACTED"


def new_token() -> str:
    """A fresh random token: 24 bytes, 32 url-safe characters."""
    return secrets.token_urlsafe(24)


def same_token(given: str, stored: str) -> bool:
    """Constant-time comparison (``hmac.compare_digest``) of a presented token."""
    return hmac.compare_digest(given.encode("utf-8"), stored.encode("utf-8"))


def redact(text: str, secret_values: Iterable[str | None]) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by ``REDACTED``.

    Longer secrets go first, so a secret that contains another is not half-redacted.
    """
    for value in sorted((v for v in secret_values if v), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text
