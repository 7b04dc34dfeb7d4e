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

from common.errors import InputError, NetinstallError
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


# -- BMC passwords: sealed with the server directory's own key ---------------------------

BMC_KEY_FILE = "bmc-key"  # in the server directory, 0600: 64 hex digits and a newline
_BMC_SEALED = b"netinstall BMC password\0"  # associated data, followed by the host's MAC
_KEY_ID_BYTES = 8


class BmcKeyError(InputError):
    """The server directory's BMC key is missing, unreadable or not the one that sealed:
    the operator's to fix (copy the file), one sentence."""


class BmcKey:
    """The key that seals BMC passwords (``DIR/bmc-key``), kept apart from the registry
    so that a copy of the database alone does not open them (docs/deployment.md).

    ``seal`` encrypts with AES-256-GCM under a key derived from the file's, the host's MAC
    bound in as associated data (a sealed password moved to another host does not open);
    ``key_id`` (a keyed hash of the key, not the key) is stored beside it, so that a
    server with a different key says so rather than fail to decrypt."""

    def __init__(self, key: bytes, path: Path) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a BMC key has {KEY_BYTES} bytes, not {len(key)}")
        self.path = path
        self._sealer = AESGCM(hmac.new(key, b"bmc seal", hashlib.sha256).digest())
        digest = hmac.new(key, b"bmc key id", hashlib.sha256).digest()
        self.key_id = digest[:_KEY_ID_BYTES].hex()

    def __repr__(self) -> str:
        return f"BmcKey({self.path}, <redacted>)"

    @classmethod
    def load(cls, directory: Path, *, create: bool = False) -> BmcKey:
        """``directory``'s BMC key; made (0600) if there is none and ``create``.
        BmcKeyError, one sentence, for a missing or malformed file."""
        path = directory / BMC_KEY_FILE
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            if not create:
                raise BmcKeyError(
                    f"{path} is missing: this server cannot open BMC passwords (copy the file "
                    "from the server that stored them; docs/deployment.md)"
                ) from None
            key = new_key()
            try:
                write_secret_file(path, key.hex() + "\n")
            except OSError as exc:
                raise BmcKeyError(f"cannot write {path}: {exc.strerror}") from None
            return cls(key, path)
        except OSError as exc:
            raise BmcKeyError(f"cannot read {path}: {exc.strerror}") from None
        word = text.strip()
        if len(word) != 2 * KEY_BYTES or any(c not in "0123456789abcdef" for c in word.lower()):
            raise BmcKeyError(f"{path} does not hold a BMC key ({2 * KEY_BYTES} hex digits)")
        return cls(bytes.fromhex(word), path)

    def seal(self, mac: str, password: str) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        data = self._sealer.encrypt(nonce, password.encode("utf-8"), _BMC_SEALED + mac.encode())
        return base64.urlsafe_b64encode(nonce + data).decode("ascii")

    def unseal(self, mac: str, sealed: str, key_id: str) -> str:
        """The password of ``mac``'s BMC; BmcKeyError if this key did not seal it."""
        if not hmac.compare_digest(key_id, self.key_id):
            raise BmcKeyError(
                f"this server cannot open the BMC password of {mac}: {self.path} differs from "
                "the server that stored it"
            )
        try:
            raw = base64.urlsafe_b64decode(sealed.encode("ascii"))
            nonce, data = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
            return self._sealer.decrypt(nonce, data, _BMC_SEALED + mac.encode()).decode("utf-8")
        except (ValueError, InvalidTag) as exc:
            raise BmcKeyError(
                f"the stored BMC password of {mac} does not open with {self.path} (the "
                "registry's row was changed or comes from another host); set it again with "
                f"`netinstall host set {mac} --bmc URL --bmc-password-file FILE`"
            ) from exc
