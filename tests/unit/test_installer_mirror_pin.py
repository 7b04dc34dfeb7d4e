"""A repository URL's ``#sha256=`` pin: the answer file vouches for the mirror's .treeinfo.

A mirror (nginx, a CDN) serves the repository instead of the netinstall server; every
file is checked against .treeinfo's checksums as ever, and with the pin .treeinfo itself
must be the one the answer file names, so a stale or altered mirror is refused whole
before anything is downloaded (tests/integration/test_mirror.py does it against nginx)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from answerfile.model import Source, SourceType
from common.errors import InputError, SourceError
from installer_core.download import learn_payload
from installer_core.fetch import repository_url, split_pin
from tests.unit.test_installer_download import _repo
from tests.unit.test_installer_fakes import (
    FakeSession,
    answer_for,
    file_server,
    make_plan,
    transport,
)

PIN = "ab" * 32


def pinned(treeinfo: bytes) -> str:
    return f"#sha256={hashlib.sha256(treeinfo).hexdigest()}"


@pytest.mark.parametrize(
    ("url", "split"),
    [
        ("http://m/repo/", ("http://m/repo/", None)),
        (f"http://m/repo/#sha256={PIN}", ("http://m/repo/", PIN)),
        (f"http://m/repo/#sha256={PIN.upper()}", ("http://m/repo/", PIN)),
    ],
)
def test_split_pin(url: str, split: tuple[str, str | None]) -> None:
    assert split_pin(url) == split


@pytest.mark.parametrize("fragment", ["", "sha256=abc", f"md5={PIN}", f"sha256={PIN}x", "top"])
def test_anything_else_after_the_hash_is_refused(fragment: str) -> None:
    with pytest.raises(InputError, match=r"after # only sha256=<the 64 hex digits"):
        split_pin(f"http://m/repo/#{fragment}")


@pytest.mark.parametrize(
    ("location", "url"),
    [
        (f"http://m/repo#sha256={PIN}", f"http://m/repo/#sha256={PIN}"),
        (f"http://m/repo/#sha256={PIN}", f"http://m/repo/#sha256={PIN}"),
        ("http://m/repo", "http://m/repo/"),
    ],
)
def test_the_slash_goes_before_the_pin(location: str, url: str) -> None:
    assert repository_url(Source(SourceType.URL, location), None) == url


def test_a_pinned_treeinfo_that_matches_is_learnt() -> None:
    repo = _repo()
    session = FakeSession(file_server(repo))
    info, files = learn_payload(
        "http://s/repo/" + pinned(repo["repo/.treeinfo"]), transport(session)
    )
    assert info.version == "0.3.0"
    assert files[0].url == "http://s/repo/boot/xen.gz"  # no pin in the files' URLs
    assert session.calls[0][1] == "http://s/repo/.treeinfo"


def test_a_mirror_with_another_treeinfo_is_refused_before_any_download() -> None:
    vouched = _repo()["repo/.treeinfo"]
    other = _repo(**{"boot/xen.gz": b"another xen"})  # its .treeinfo is not the vouched one
    other["repo/.treeinfo"] = other["repo/.treeinfo"].replace(b"0.3.0", b"0.2.0")
    session = FakeSession(file_server(other))
    with pytest.raises(SourceError) as caught:
        learn_payload("http://s/repo/" + pinned(vouched), transport(session))
    got = hashlib.sha256(other["repo/.treeinfo"]).hexdigest()
    want = hashlib.sha256(vouched).hexdigest()
    assert str(caught.value) == (
        f"http://s/repo/.treeinfo has sha256 {got}, not {want} as the answer file's source "
        "says: this repository serves another payload (a stale or altered copy); refused"
    )
    assert [call[0] for call in session.calls] == ["GET"]  # .treeinfo only: nothing else


def test_packs_are_looked_for_without_the_pin(tmp_path: Path) -> None:
    sources = (Source(SourceType.URL, f"http://m/repo#sha256={PIN}"),)
    drivers = (Source(SourceType.URL, f"http://d/pack/#sha256={PIN}"),)
    plan = make_plan(tmp_path, answer_for(sources=sources, driver_sources=drivers))
    assert plan.fetch is not None
    assert plan.fetch.repository == f"http://m/repo/#sha256={PIN}"
    assert [p.url for p in plan.fetch.packs] == ["http://m/repo/", "http://d/pack/"]
