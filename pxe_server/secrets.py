"""Tokens, their keyed hashes, and redaction (SPEC §9 "Protect"). Imports only common.

Install tokens, agent credentials and the API token are ``token_urlsafe(24)``
(32 url-safe characters). The registry keeps none of them in clear (docs/protocol.md,
"Secrets"): each is found by its keyed hash (HMAC-SHA256 under the registry's own
key, ``Keyring``), an indexed column, so a presented token costs one lookup however
many hosts there are; and equality of two keyed hashes says nothing about the
token to anyone without the key. The install token must still be written into its
host's boot config, so the registry also keeps it sealed (``Keyring.seal``).

Passwords: every host variable whose name holds "password" is a password variable
(``is_password_variable``): stored as its SHA-512 crypt hash, shown as ``<redacted>``.
Secrets never reach a log or a stored message: ``redact`` replaces them with
``REDACTED``.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import itertools
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag  # and cryptography, for sealing
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.errors import NetinstallError
from common.jsonable import REDACTED as LISTED_REDACTED

REDACTED = "REDACTED"
SHOWN_REDACTED = LISTED_REDACTED  # how listings (CLI, API) show a password variable's value
API_TOKEN_FILE = "api-token"  # noqa: S105 - in the server directory: the operator's copy
KEY_BYTES = 32
_NONCE_BYTES = 12  # AES-GCM's
_SEALED = b"netinstall sealed token"  # associated data: what a sealed text is
TOKEN_LENGTH = 32  # characters of new_token()
# A word that may be a token: a maximal run of url-safe characters, as long as one.
_TOKEN_WORD = re.compile(rf"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{{{TOKEN_LENGTH}}}(?![A-Za-z0-9_-])")
_MAX_TOKEN_WORDS = 256  # words of a message checked against keyed hashes


def new_token() -> str:
    """A fresh random token: 24 bytes, 32 url-safe characters."""
    return secrets.token_urlsafe(24)


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


class Purpose(enum.StrEnum):
    """What a keyed hash is of: each kind of secret hashes apart from the others."""

    INSTALL_TOKEN = "install-token"  # noqa: S105 - names, not secrets
    INSTALL_KEY = "install-key"  # the key an installer enrolled with the install token
    AGENT_CREDENTIAL = "agent-credential"
    API_TOKEN = "api-token"  # noqa: S105


class Keyring:
    """The registry's secret key and what it does: keyed hashes, sealing.

    ``hash`` is HMAC-SHA256 over the purpose and the value (hex). ``seal`` encrypts a
    short text with AES-256-GCM (the ``cryptography`` package) under a key derived
    from the registry's for sealing alone, with a fresh random nonce; ``unseal``
    checks and inverts it. Sealed text is ``base64url(nonce || ciphertext || tag)``.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a registry key has {KEY_BYTES} bytes, not {len(key)}")
        self._key = key
        self._sealer = AESGCM(hmac.new(key, b"seal", hashlib.sha256).digest())

    def __repr__(self) -> str:
        return "Keyring(<redacted>)"

    def hash(self, purpose: str, value: str) -> str:
        message = purpose.encode("ascii") + b"\0" + value.encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def matches(self, purpose: str, given: str, stored: str | None) -> bool:
        """Whether ``given`` is the secret whose keyed hash is ``stored`` (constant time)."""
        return stored is not None and hmac.compare_digest(self.hash(purpose, given), stored)

    def seal(self, value: str) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = nonce + self._sealer.encrypt(nonce, value.encode("utf-8"), _SEALED)
        return base64.urlsafe_b64encode(sealed).decode("ascii")

    def unseal(self, sealed: str) -> str:
        try:
            raw = base64.urlsafe_b64decode(sealed.encode("ascii"))
            nonce, data = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
            return self._sealer.decrypt(nonce, data, _SEALED).decode("utf-8")
        except (ValueError, InvalidTag) as exc:  # binascii.Error is a ValueError
            raise NetinstallError(
                "a sealed token in the registry does not open with the registry's key "
                "(the file was changed, or its secrets table comes from another registry)"
            ) from exc


def redact(text: str, secret_values: Iterable[str | None]) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by ``REDACTED``.

    Longer secrets go first, so a secret that contains another is not half-redacted.
    """
    for value in sorted((v for v in secret_values if v), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def redact_tokens(text: str, is_secret: Callable[[str], bool]) -> str:
    """``text`` with every token-shaped word that ``is_secret`` recognises replaced by
    ``REDACTED``: how a secret known only by its keyed hash is kept out of a message."""
    words = {m[0] for m in itertools.islice(_TOKEN_WORD.finditer(text), _MAX_TOKEN_WORDS)}
    found = [word for word in words if is_secret(word)]
    return redact(text, found)


def is_password_variable(name: str) -> bool:
    """Whether host variable ``name`` holds a password (stored hashed, shown redacted)."""
    return "password" in name.lower()


def shown_variables(variables: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
    """Host variables as listings show them: every password variable as ``<redacted>``."""
    pairs = variables.items() if isinstance(variables, Mapping) else variables
    return {k: SHOWN_REDACTED if is_password_variable(k) else v for k, v in pairs}


def write_secret_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600) whole: a new file renamed over the old one."""
    part = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
