"""A running server takes a rotated API token without a restart: a wrong token reads the
stored hash again, at most once every ``API_TOKEN_RELOAD`` seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pxe_server.registry import API_TOKEN_RELOAD, Registry


def token(directory: Path) -> str:
    return (directory / "api-token").read_text("utf-8").strip()


def test_a_rotated_token_is_taken_and_wrong_tokens_read_once_a_second(
    registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert API_TOKEN_RELOAD == 1.0
    with Registry.open(registry_dir) as server, Registry.open(registry_dir) as cli:
        now = [100.0]
        server.api_token_clock = lambda: now[0]
        reads: list[object] = []
        original = server._query

        def counted(statement: Any, params: Any = None) -> Any:
            reads.append(statement)
            return original(statement, params)

        monkeypatch.setattr(server, "_query", counted)
        old = token(registry_dir)
        assert server.api_token_matches(old)
        assert reads == []  # the right token: no SQL
        cli.new_api_token()  # `server token rotate` in another process
        new = token(registry_dir)
        assert server.api_token_matches(new)  # taken without a restart
        assert len(reads) == 1
        assert not server.api_token_matches(old)  # the old one stops working
        cli.new_api_token()
        newer = token(registry_dir)
        now[0] += API_TOKEN_RELOAD / 2
        for _ in range(50):  # a flood of wrong tokens within the second: no read
            assert not server.api_token_matches(newer)
        assert len(reads) == 1
        now[0] += API_TOKEN_RELOAD / 2
        assert server.api_token_matches(newer)
        assert len(reads) == 2
        assert not server.api_token_matches("")
