"""SHA-512 crypt (``$6$``), as in Ulrich Drepper's "Unix crypt using SHA-256 and SHA-512".

The answer file carries the root password as a hash (SPEC §9), in the form
``crypt(3)``, ``chpasswd -e`` and our installer accept. The ``crypt`` module is
deprecated and removed in Python 3.13, so the algorithm is written out here from
the published specification, with hashlib doing the SHA-512; the specification's
own test vectors check it (tests/unit/test_passwords.py).
"""

from __future__ import annotations

import hashlib
import re
import secrets

ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SALT_MAX = 16
ROUNDS_DEFAULT = 5000
ROUNDS_MIN = 1000
ROUNDS_MAX = 999_999_999
_DIGEST = 64  # bytes of a SHA-512 digest


def sha512_crypt(password: str, salt: str, rounds: int | None = None) -> str:
    """``$6$[rounds=N$]<salt>$<86 characters>`` for ``password`` (UTF-8).

    The salt is cut to 16 characters, as the specification says; it may not hold
    ``$``, ``:`` or whitespace. ``rounds`` None means the default 5000 and leaves
    ``rounds=`` out of the result; a given value is clamped to 1000..999999999
    and written out.
    """
    if any(c in "$:" or c.isspace() or not c.isprintable() for c in salt):
        raise ValueError("a crypt salt may not hold '$', ':', whitespace or control characters")
    salt_bytes = salt[:SALT_MAX].encode("utf-8")
    count = ROUNDS_DEFAULT if rounds is None else min(max(rounds, ROUNDS_MIN), ROUNDS_MAX)
    digest = _digest(password.encode("utf-8"), salt_bytes, count)
    prefix = "$6$" if rounds is None else f"$6$rounds={count}$"
    return f"{prefix}{salt_bytes.decode('utf-8')}${_encode(digest)}"


def hash_password(password: str) -> str:
    """``password`` as a SHA-512 crypt hash with a random 16-character salt."""
    salt = "".join(secrets.choice(ALPHABET) for _ in range(SALT_MAX))
    return sha512_crypt(password, salt)


def _repeat(block: bytes, length: int) -> bytes:
    """``block`` repeated (whole, then a prefix) to exactly ``length`` bytes."""
    whole, rest = divmod(length, len(block))
    return block * whole + block[:rest]


def _digest(password: bytes, salt: bytes, rounds: int) -> bytes:
    # Digest B: password, salt, password.
    b = hashlib.sha512(password + salt + password).digest()
    # Digest A: password, salt, B stretched to the password's length, then for each
    # bit of that length (lowest first) B for a one and the password for a zero.
    a = hashlib.sha512(password + salt + _repeat(b, len(password)))
    length = len(password)
    while length:
        a.update(b if length & 1 else password)
        length >>= 1
    digest = a.digest()
    # Sequence P: the digest of the password repeated once per byte of it.
    p = _repeat(hashlib.sha512(password * len(password)).digest(), len(password))
    # Sequence S: the digest of the salt repeated 16 + A[0] times.
    s = _repeat(hashlib.sha512(salt * (16 + digest[0])).digest(), len(salt))
    for i in range(rounds):
        c = hashlib.sha512(p if i & 1 else digest)
        if i % 3:
            c.update(s)
        if i % 7:
            c.update(p)
        c.update(digest if i & 1 else p)
        digest = c.digest()
    return digest


def _encode(digest: bytes) -> str:
    """The specification's base-64: 21 groups of three bytes in its fixed order, then one."""
    out: list[str] = []
    third = _DIGEST // 3  # 21
    for i in range(third):
        group = (i, i + third, i + 2 * third)
        turn = i % 3  # each group starts one place further along the triple
        first, second, last = group[turn:] + group[:turn]
        out.append(_b64(digest[first] << 16 | digest[second] << 8 | digest[last], 4))
    out.append(_b64(digest[_DIGEST - 1], 2))
    return "".join(out)


def _b64(value: int, count: int) -> str:
    chars = []
    for _ in range(count):
        chars.append(ALPHABET[value & 0x3F])
        value >>= 6
    return "".join(chars)


# A SHA-512 crypt hash as ``sha512_crypt`` writes it (and crypt(3), mkpasswd, chpasswd -e).
_SHA512_CRYPT = re.compile(r"^\$6\$(rounds=[1-9][0-9]{0,8}\$)?[^$:\s]{0,16}\$[./0-9A-Za-z]{86}$")


def is_sha512_crypt(text: str) -> bool:
    """Whether ``text`` is a SHA-512 crypt hash (``$6$[rounds=N$]salt$86 characters``)."""
    return bool(_SHA512_CRYPT.match(text))


def password_hash(value: str) -> str:
    """``value`` as a SHA-512 crypt hash: a hash already is kept, anything else is hashed."""
    return value if is_sha512_crypt(value) else hash_password(value)
