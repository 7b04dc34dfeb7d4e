"""The server's update key: it signs update bundles; dom0 verifies them (README "Updates").

An Ed25519 key pair, one per registry (every server of a registry signs alike): its
private half lives in the registry's ``secrets`` table, sealed under the registry's
key, made the first time a registry is opened without one (``server init``, or the
first run of a server directory made before updates existed). It never leaves the
server. Its public half is an OpenSSH public key line, which the check-in reply hands
to each agent.

Signatures are OpenSSH's ``SSHSIG`` format (PROTOCOL.sshsig in OpenSSH's sources):
dom0 checks them with ``ssh-keygen -Y verify`` from openssh-client, which dom0 has
(openssh-server depends on it), so the agent needs no crypto library of its own. The
signed text is ``update.json``, which holds every member's sha256.

    key = UpdateKey.generate(); key.public_line(); key.sign(data) -> armored text
    verify_signature(public_line, armored, data) -> bool      (the server's own check)
"""

from __future__ import annotations

import base64
import hashlib
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from common.update_bundle import SIGNATURE_NAMESPACE, SIGNER

SECRET_NAME = "update-key"  # noqa: S105 - the secrets row: the private key's 32 bytes, sealed
_MAGIC = b"SSHSIG"
_KEY_TYPE = b"ssh-ed25519"
_HASH = b"sha512"
_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_END = "-----END SSH SIGNATURE-----"


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _signed_data(message: bytes) -> bytes:
    """What an SSHSIG signature signs: the preamble, namespace, hash and the message's hash."""
    digest = hashlib.sha512(message).digest()
    return (
        _MAGIC
        + _string(SIGNATURE_NAMESPACE.encode())
        + _string(b"")
        + _string(_HASH)
        + (_string(digest))
    )


class UpdateKey:
    """The update key pair (the private half never leaves the server)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private

    def __repr__(self) -> str:
        return f"UpdateKey({self.public_line()})"

    @classmethod
    def generate(cls) -> UpdateKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_raw(cls, raw: bytes) -> UpdateKey:
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def raw(self) -> bytes:
        """The private key's 32 bytes (to be sealed in the registry)."""
        return self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def _public_raw(self) -> bytes:
        return self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def public_line(self) -> str:
        """``ssh-ed25519 AAAA... netinstall-updates``: what dom0 verifies with."""
        blob = _string(_KEY_TYPE) + _string(self._public_raw())
        return f"ssh-ed25519 {base64.b64encode(blob).decode('ascii')} {SIGNER}"

    def sign(self, message: bytes) -> str:
        """The armored SSHSIG signature of ``message`` (namespace ``netinstall-update``)."""
        public = _string(_KEY_TYPE) + _string(self._public_raw())
        signature = _string(_KEY_TYPE) + _string(self._private.sign(_signed_data(message)))
        blob = (
            _MAGIC
            + struct.pack(">I", 1)
            + _string(public)
            + _string(SIGNATURE_NAMESPACE.encode())
            + _string(b"")
            + _string(_HASH)
            + _string(signature)
        )
        text = base64.b64encode(blob).decode("ascii")
        lines = [text[i : i + 70] for i in range(0, len(text), 70)]
        return "\n".join([_BEGIN, *lines, _END]) + "\n"


def _strings(data: bytes) -> list[bytes]:
    """The SSH wire strings ``data`` is made of (ValueError if it is not)."""
    found: list[bytes] = []
    while data:
        if len(data) < 4:
            raise ValueError("truncated")
        (length,) = struct.unpack(">I", data[:4])
        if len(data) < 4 + length:
            raise ValueError("truncated")
        found.append(data[4 : 4 + length])
        data = data[4 + length :]
    return found


def verify_signature(public_line: str, armored: str, message: bytes) -> bool:
    """Whether ``armored`` is a valid SSHSIG signature of ``message`` (namespace
    ``netinstall-update``) by the key of ``public_line``: the check ``ssh-keygen -Y
    verify`` makes in dom0, made here so that ``update add`` refuses what no host would
    take."""
    try:
        words = public_line.split()
        expected = base64.b64decode(words[1], validate=True)
        body = armored.strip()
        if not (body.startswith(_BEGIN) and body.endswith(_END)):
            return False
        blob = base64.b64decode("".join(body[len(_BEGIN) : -len(_END)].split()), validate=True)
        if blob[:6] != _MAGIC or blob[6:10] != struct.pack(">I", 1):
            return False
        public, namespace, _reserved, hash_name, signature = _strings(blob[10:])
        if public != expected or namespace != SIGNATURE_NAMESPACE.encode() or hash_name != _HASH:
            return False
        key_type, key_raw = _strings(public)
        sig_type, sig_raw = _strings(signature)
        if key_type != _KEY_TYPE or sig_type != _KEY_TYPE:
            return False
        Ed25519PublicKey.from_public_bytes(key_raw).verify(sig_raw, _signed_data(message))
    except (ValueError, IndexError, InvalidSignature):
        return False
    return True
