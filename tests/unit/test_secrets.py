"""pxe_server.secrets and the password side of registry_input: keyed hashes, sealing,
redaction of secrets known only by their hash, hashing passwords on the way in."""

from __future__ import annotations

import base64

import pytest

from common.errors import InputError, NetinstallError
from pxe_server.passwords import is_sha512_crypt, password_hash, sha512_crypt
from pxe_server.registry_input import check_profile, hashed_template, variables_of
from pxe_server.secrets import (
    REDACTED,
    Keyring,
    Purpose,
    is_password_variable,
    new_key,
    new_token,
    redact_tokens,
    shown_variables,
)
from tests.unit.test_registry import TEMPLATE

KEYS = Keyring(bytes(range(32)))


def test_keyed_hashes_depend_on_the_key_and_the_purpose() -> None:
    token = new_token()
    digest = KEYS.hash(Purpose.INSTALL_TOKEN, token)
    assert len(digest) == 64
    assert token not in digest
    assert digest == Keyring(bytes(range(32))).hash(Purpose.INSTALL_TOKEN, token)
    assert digest != KEYS.hash(Purpose.AGENT_CREDENTIAL, token)
    assert digest != Keyring(new_key()).hash(Purpose.INSTALL_TOKEN, token)
    assert KEYS.matches(Purpose.INSTALL_TOKEN, token, digest)
    assert not KEYS.matches(Purpose.INSTALL_TOKEN, token + "x", digest)
    assert not KEYS.matches(Purpose.INSTALL_TOKEN, token, None)
    assert "0001" not in repr(KEYS)
    with pytest.raises(ValueError, match="32 bytes"):
        Keyring(b"short")


@pytest.mark.parametrize(
    "value",
    ["", "t", new_token(), "ä" * 40, "x" * 100],
    ids=["empty", "one", "token", "utf8", "long"],
)
def test_sealing_round_trips_with_a_fresh_nonce_each_time(value: str) -> None:
    first, second = KEYS.seal(value), KEYS.seal(value)
    assert first != second
    assert KEYS.unseal(first) == KEYS.unseal(second) == value
    if len(value) >= 8:  # a shorter text may turn up in random base64 by chance
        assert value not in first


def test_secrets_known_by_their_hash_are_redacted_word_by_word() -> None:
    secret, other = new_token(), new_token()
    text = f"token={secret}&x {other} {secret}. a{secret} {secret[:-1]}"
    redacted = redact_tokens(text, lambda word: word == secret)
    # Recognised as a word once, every occurrence goes (inside a longer word too).
    assert redacted == f"token={REDACTED}&x {other} {REDACTED}. a{REDACTED} {secret[:-1]}"
    assert redact_tokens(f"a{secret}", lambda word: word == secret) == f"a{secret}"


def test_password_variables_are_shown_redacted() -> None:
    assert is_password_variable("root_password")
    assert is_password_variable("BMC_Password")
    assert not is_password_variable("disk")
    shown = shown_variables((("disk", "sda"), ("root_password", "$6$x")))
    assert shown == {"disk": "sda", "root_password": "<redacted>"}


def test_sha512_crypt_hashes_are_recognised_and_kept() -> None:
    made = sha512_crypt("pw", "saltsalt")
    rounds = sha512_crypt("pw", "saltsalt", rounds=10_000)
    assert is_sha512_crypt(made)
    assert is_sha512_crypt(rounds)
    assert password_hash(made) == made
    assert not is_sha512_crypt("$5$salt$" + "a" * 43)
    assert not is_sha512_crypt(made[:-1])
    assert not is_sha512_crypt("$6$salt:x$" + made.split("$")[-1])
    hashed = password_hash("pw")
    assert is_sha512_crypt(hashed)
    assert sha512_crypt("pw", hashed.split("$")[2]) == hashed


def test_variables_hash_every_password_and_keep_the_rest() -> None:
    pairs = variables_of({"disk": "sda", "root_password": "pw", "bmc_password": "pw2"})
    values = dict(pairs)
    assert values["disk"] == "sda"
    assert all(is_sha512_crypt(values[k]) for k in ("root_password", "bmc_password"))
    assert variables_of({"root_password": "<redacted>"}, pairs) == (
        ("root_password", values["root_password"]),
    )
    with pytest.raises(InputError, match="root_password_hash' is set by the server"):
        variables_of({"root_password_hash": "x"})


@pytest.mark.parametrize(
    "kept",
    [
        '<root-password type="hash">{{ root_password_hash }}</root-password>',
        "<root-password type='hash'>$6$abc$def</root-password>",
        "<root-password>{{ something }}</root-password>",
        "<root-password></root-password>",
        "<root-password>a & b</root-password>",  # not XML: the answer file is refused anyway
    ],
)
def test_template_elements_that_are_no_plaintext_password_are_kept(kept: str) -> None:
    template = f"<installation>{kept}</installation>"
    assert hashed_template(template) == template


def test_a_literal_plaintext_root_password_is_hashed() -> None:
    template = (
        '<installation>\n  <root-password type="plaintext">\n    p&lt;w&#33;\n'
        "  </root-password>\n  <keymap>us</keymap>\n</installation>"
    )
    hashed = hashed_template(template)
    element = hashed.split("\n")[1]
    value = element.removeprefix('  <root-password type="hash">').removesuffix("</root-password>")
    assert sha512_crypt("p<w!", value.split("$")[2]) == value
    assert hashed.endswith("  <keymap>us</keymap>\n</installation>")


def test_sshpassword_in_a_profile_is_refused_without_echoing_it() -> None:
    from pxe_server.model import Profile

    for field in ("kernel_args", "xen_args"):
        with pytest.raises(InputError) as refused:
            check_profile(Profile("lab", TEMPLATE, **{field: "a=1 sshpassword=hunter2"}))
        assert f"profile lab: {field} may not carry sshpassword=" in str(refused.value)
        assert "hunter2" not in str(refused.value)


def test_a_changed_or_foreign_sealed_token_is_refused_in_one_sentence() -> None:
    sealed = KEYS.seal(new_token())
    raw = bytearray(base64.urlsafe_b64decode(sealed))
    raw[-1] ^= 1
    changed = base64.urlsafe_b64encode(bytes(raw)).decode("ascii")
    for bad in (changed, Keyring(new_key()).seal("x" * 32), "not base64!"):
        with pytest.raises(NetinstallError, match="does not open with the registry's key"):
            KEYS.unseal(bad)
