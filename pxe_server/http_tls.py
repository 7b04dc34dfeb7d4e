"""TLS for the operator API: ``server run --tls-cert FILE --tls-key FILE [--tls-port N]``.

With TLS on, the server listens on a second port with TLS (1.2 at least) and serves the
same routes there; the operator API (``Caller.OPERATOR`` routes) is served there only.
The plain HTTP port keeps the boot path (boot files, configs, answer files, the
repository, the installer's and agent's reports, enrolment, log bundles) and answers
every operator route with 403 and the https URL to use, whatever the request carries,
so the API token never crosses the provisioning LAN in clear (``http_edge.caller_check``).

``server_context`` reads and checks the certificate and its key before anything
listens: a file that cannot be read, is no PEM certificate or key, holds an encrypted
key, or a key that is not the certificate's is one sentence naming the option and file.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from common.errors import InputError

DEFAULT_TLS_PORT = 8443
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
MAX_PEM_BYTES = 1 << 20  # a certificate chain or key file larger than this is no PEM file


def _read(option: str, path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > MAX_PEM_BYTES:
        raise InputError(f"{option} {path}: over {MAX_PEM_BYTES} bytes, so no PEM file")
    return data


class _Encrypted(Exception):
    """The key file wants a password (``load_cert_chain`` would ask on the terminal)."""


def _no_password() -> bytes:
    raise _Encrypted


def check_pair(cert: Path, key: Path, now: datetime | None = None) -> None:
    """InputError (one sentence naming the option and the file) unless ``cert`` holds a
    PEM certificate valid ``now`` and ``key`` its unencrypted PEM private key."""
    cert_data, key_data = _read("--tls-cert", cert), _read("--tls-key", key)
    try:
        certificate = x509.load_pem_x509_certificate(cert_data)
    except ValueError:
        raise InputError(f"--tls-cert {cert}: no PEM certificate in it") from None
    try:
        private = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:  # the key is encrypted
        raise InputError(
            f"--tls-key {key}: the key is encrypted; give it unencrypted (mode 0600): "
            "the server starts unattended"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"--tls-key {key}: no PEM private key in it") from None
    mine = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    its = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if mine != its:
        raise InputError(f"--tls-key {key} is not the key of the certificate --tls-cert {cert}")
    when = now or datetime.now(UTC)
    if certificate.not_valid_after_utc < when:
        raise InputError(
            f"--tls-cert {cert}: the certificate expired on "
            f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The TLS listener's context (TLS 1.2 at least); InputError as ``check_pair`` says."""
    check_pair(cert, key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except _Encrypted:
        raise InputError(f"--tls-key {key}: the key is encrypted; give it unencrypted") from None
    except ssl.SSLError as exc:  # checked above; what OpenSSL still refuses
        raise InputError(
            f"--tls-cert {cert} and --tls-key {key} cannot be used: {exc.reason or exc}"
        ) from None
    return context
