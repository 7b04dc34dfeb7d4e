"""Mirror discovery from apt sources (pure file reading)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import NetinstallError
from images.debian import Mirror, discover_mirror

DEB822 = """Types: deb
# a comment
URIs: http://archive.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://security.example/debian-security/
Suites: bookworm-security
Components: main
"""


def test_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "debian.sources").write_text(DEB822)
    mirror = discover_mirror(sources_dir=tmp_path, sources_list=tmp_path / "none")
    assert mirror == Mirror(
        "http://archive.example/debian", "http://security.example/debian-security"
    )


def test_one_line_sources_list(tmp_path: Path) -> None:
    listing = tmp_path / "sources.list"
    listing.write_text(
        "# deb http://old.example/debian buster main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://archive.example/debian bookworm main contrib\n"
        "deb http://security.example/debian-security bookworm-security main\n"
    )
    mirror = discover_mirror(sources_dir=tmp_path / "none", sources_list=listing)
    assert mirror.archive == "http://archive.example/debian"
    assert mirror.security == "http://security.example/debian-security"


def test_overrides_win(tmp_path: Path) -> None:
    (tmp_path / "debian.sources").write_text(DEB822)
    mirror = discover_mirror(
        "http://mine.example/debian", sources_dir=tmp_path, sources_list=tmp_path / "x"
    )
    assert mirror.archive == "http://mine.example/debian"
    assert "deb http://mine.example/debian bookworm-updates main" in mirror.sources_list()


def test_missing_security_source_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb http://archive.example/debian bookworm main\n")
    with pytest.raises(NetinstallError, match="no apt source for bookworm-security"):
        discover_mirror(sources_dir=tmp_path / "none", sources_list=tmp_path / "sources.list")


def test_no_sources_at_all(tmp_path: Path) -> None:
    with pytest.raises(NetinstallError, match="pass --mirror"):
        discover_mirror(sources_dir=tmp_path, sources_list=tmp_path / "none")
