"""SHA-512 crypt against the test vectors of Drepper's specification ("Unix crypt using
SHA-256 and SHA-512"), and the random-salt wrapper."""

from __future__ import annotations

import re

import pytest

from pxe_server.passwords import ALPHABET, hash_password, sha512_crypt

# (password, salt, rounds, expected) from the specification's SHA-512 test table.
VECTORS = [
    (
        "Hello world!",
        "saltstring",
        None,
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdF"
        "CoEOfaS35inz1",
    ),
    (
        "Hello world!",
        "saltstringsaltstring",
        10000,
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8"
        "vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
    ),
    (
        "This is just a test",
        "toolongsaltstring",
        5000,
        "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1"
        "yxdYcz/e1JSbq3y6JMxxl8audkUEm0",
    ),
    (
        "a very much longer text to encrypt.  This one even stretches over morethan one line.",
        "anotherlongsaltstring",
        1400,
        "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66"
        "x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1",
    ),
    (
        "we have a short salt string but not a short password",
        "short",
        77777,
        "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOx"
        "FmtlcGZelFl5CxtgfiAc0",
    ),
    (
        "a short string",
        "asaltof16chars..",
        123456,
        "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevo"
        "BK25fs2xXgMNrCzIMVcgEJAstJeonj1",
    ),
    (
        "the minimum number is still observed",
        "roundstoolow",
        10,
        "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTf"
        "F4ZEQpyUNGc0dqbpBYYBaHHrsX.",
    ),
]


@pytest.mark.parametrize(("password", "salt", "rounds", "expected"), VECTORS)
def test_specification_vectors(password: str, salt: str, rounds: int | None, expected: str) -> None:
    assert sha512_crypt(password, salt, rounds) == expected


def test_explicit_default_rounds_are_written_out() -> None:
    implicit = sha512_crypt("pw", "salt")
    explicit = sha512_crypt("pw", "salt", 5000)
    assert explicit == implicit.replace("$6$", "$6$rounds=5000$", 1)


@pytest.mark.parametrize("salt", ["a$b", "a:b", "a b", "a\nb"])
def test_salt_with_separator_refused(salt: str) -> None:
    with pytest.raises(ValueError, match="salt"):
        sha512_crypt("pw", salt)


HASH = re.compile(rf"^\$6\$([{re.escape(ALPHABET)}]{{16}})\$[{re.escape(ALPHABET)}]{{86}}$")


@pytest.mark.parametrize("password", ["", "change-me", "ünïcødé ✓", "x" * 300])
def test_hash_password_random_salt_and_verifiable(password: str) -> None:
    first, second = hash_password(password), hash_password(password)
    match = HASH.match(first)
    assert match is not None
    assert first != second  # a fresh salt each time
    assert sha512_crypt(password, match[1]) == first  # what crypt(3) does to verify
    if password:
        assert password not in first
