"""TLS for the operator API (``pxe_server.http_tls``) and the API client's arguments
(``netinstall.api_client``): every bad input one sentence, before anything listens or
connects; the plain port's refusal of operator calls when TLS is on."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import ec

from common.errors import InputError
from netinstall.api_client import MAX_TOKEN_FILE, endpoint, read_token, tls_context
from pxe_server.http import make_app
from pxe_server.http_files import Context
from pxe_server.http_tls import MAX_PEM_BYTES, MINIMUM_VERSION, check_pair, server_context
from pxe_server.model import ServerSettings
from pxe_server.registry import Registry
from pxe_server.secrets import API_TOKEN_FILE
from tests.pki import Pki, key_pem, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def refused(cert: Path, key: Path) -> str:
    with pytest.raises(InputError) as caught:
        server_context(cert, key)
    (problem,) = caught.value.problems
    return problem


def test_a_good_pair_gives_a_tls_1_2_context(pki: Pki) -> None:
    context = server_context(pki.cert, pki.key)
    assert context.minimum_version is MINIMUM_VERSION is ssl.TLSVersion.TLSv1_2


def test_bad_certificates_and_keys_are_one_sentence_each(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    assert (
        refused(missing, pki.key)
        == f"--tls-cert {missing}: cannot read it (No such file or directory)"
    )
    assert refused(pki.cert, missing).startswith(f"--tls-key {missing}: cannot read it")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    assert refused(junk, pki.key) == f"--tls-cert {junk}: no PEM certificate in it"
    assert refused(pki.cert, junk) == f"--tls-key {junk}: no PEM private key in it"
    assert refused(pki.cert, pki.cert) == f"--tls-key {pki.cert}: no PEM private key in it"
    other = tmp_path / "other.key"
    other.write_bytes(key_pem(ec.generate_private_key(ec.SECP256R1())))
    assert refused(pki.cert, other) == (
        f"--tls-key {other} is not the key of the certificate --tls-cert {pki.cert}"
    )
    locked = tmp_path / "locked.key"
    locked.write_bytes(key_pem(ec.generate_private_key(ec.SECP256R1()), b"secret"))
    assert "the key is encrypted" in refused(pki.cert, locked)
    huge = tmp_path / "huge.pem"
    huge.write_bytes(b"x" * (MAX_PEM_BYTES + 1))
    assert (
        refused(huge, pki.key) == f"--tls-cert {huge}: over {MAX_PEM_BYTES} bytes, so no PEM file"
    )


def test_an_expired_certificate_is_refused(tmp_path: Path) -> None:
    old = make_pki(tmp_path, name="old", expired=True)
    with pytest.raises(InputError, match="the certificate expired on"):
        check_pair(old.cert, old.key)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://10.0.0.1:8080", "would send the API token across the network in clear"),
        ("ftp://10.0.0.1", "expected https://HOST[:PORT]"),
        ("https://", "expected https://HOST[:PORT]"),
        ("https://10.0.0.1:8443/api/v1", "without a path"),
        ("https://10.0.0.1:99999", "its port is not a number"),
        ("https://user@10.0.0.1", "without a path"),
    ],
)
def test_server_urls_are_checked(url: str, words: str) -> None:
    with pytest.raises(InputError, match=words.replace("[", r"\[").replace("]", r"\]")):
        endpoint(url)


def test_https_and_loopback_http_are_accepted() -> None:
    found = endpoint("https://10.0.0.1:8443/")
    assert (found.url, found.https, found.host, found.port) == (
        "https://10.0.0.1:8443", True, "10.0.0.1", 8443,
    )  # fmt: skip
    assert endpoint("https://server.example").port == 443
    assert endpoint("http://127.0.0.1:8080").https is False
    assert endpoint("http://localhost:8080").host == "localhost"


def test_the_token_comes_from_the_file_or_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "api-token"
    file.write_text("s3cr3t-token\n")
    assert read_token(file, "from-env") == "s3cr3t-token"
    assert read_token(None, " from-env ") == "from-env"
    with pytest.raises(InputError, match="needs the API token: --token-file FILE"):
        read_token(None, None)
    with pytest.raises(InputError, match="cannot read it"):
        read_token(tmp_path / "nope", None)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InputError, match="no API token in it"):
        read_token(tmp_path / "empty", None)
    (tmp_path / "huge").write_text("t" * (MAX_TOKEN_FILE + 1))
    with pytest.raises(InputError, match="no API token in it"):
        read_token(tmp_path / "huge", None)


def test_a_ca_file_that_is_no_certificate_is_refused(tmp_path: Path, pki: Pki) -> None:
    assert tls_context(pki.ca).verify_mode is ssl.CERT_REQUIRED
    junk = tmp_path / "ca.pem"
    junk.write_text("nothing\n")
    with pytest.raises(InputError, match="no PEM certificate in it"):
        tls_context(junk)
    with pytest.raises(InputError, match="cannot read it"):
        tls_context(tmp_path / "missing.pem")


# -- the plain port with TLS on -----------------------------------------------------------

SETTINGS = ServerSettings(http_base="http://192.0.2.1:8080", tftp_address="192.0.2.1")
BASE = "https://192.0.2.1:8443"


def send(ctx: Context, method: str, path: str, **headers: str) -> tuple[int, dict[str, Any]]:
    async def go() -> tuple[int, dict[str, Any]]:
        async with TestClient(TestServer(make_app(ctx))) as client:
            reply = await client.request(method, path, headers=headers)
            return reply.status, json.loads(await reply.text())

    return asyncio.run(go())


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    with Registry.open(tmp_path / "srv") as registry:
        yield registry


def test_with_tls_on_the_plain_port_refuses_every_operator_call(registry: Registry) -> None:
    token = (registry.path.parent / API_TOKEN_FILE).read_text().strip()
    ctx = Context(registry, registry.path.parent, SETTINGS, None, None, operator_base=BASE)
    for headers in ({"Authorization": f"Bearer {token}"}, {}, {"Authorization": "Bearer x"}):
        status, reply = send(ctx, "GET", "/api/v1/hosts", **headers)
        assert status == 403
        assert reply["error"] == (
            "this server serves its operator API over HTTPS only, so that the API token never "
            f"crosses the network in clear: use {BASE}/api/v1/hosts "
            f"(netinstall --server {BASE})"
        )
    status, reply = send(ctx, "GET", "/api/v1/profiles/default", Authorization=f"Bearer {token}")
    assert status == 403
    # what is no operator call stays: the API's description, and host routes' own checks
    assert send(ctx, "GET", "/api/v1/openapi.json")[0] == 200
    status, reply = send(ctx, "POST", "/api/v1/hosts/52:54:00:12:34:56/checkin")
    assert status == 401
    # without TLS the same token works on the plain port
    plain = Context(registry, registry.path.parent, SETTINGS, None, None)
    assert send(plain, "GET", "/api/v1/hosts", Authorization=f"Bearer {token}")[0] == 200
