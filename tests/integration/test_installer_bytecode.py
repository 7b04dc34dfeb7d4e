"""Our packages' byte-code in the installer image (``images.installer.byte_compile``):
reproducible whatever the building process has done, and used by python3 as it is."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import CommandError
from images import installer
from tests.conftest import REPO

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        sys.implementation.cache_tag != installer.IMAGE_CACHE_TAG,
        reason="this python3 does not write the image's byte-code",
    ),
]
SITE = installer.PACKAGES_DIR


def test_every_python_file_of_ours_gets_hash_checked_byte_code() -> None:
    sources = installer.package_sources()
    compiled = installer.byte_compile(sources)
    assert set(compiled) == {installer.pyc_name(name) for name in sources}
    pyc = compiled[installer.pyc_name(f"{SITE}/common/errors.py")]
    source = (REPO / "common/errors.py").read_bytes()
    assert pyc[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(pyc[4:8], "little") == 0b11  # hash-based, checked against the source
    assert pyc[8:16] == importlib.util.source_hash(source)


_DIGEST = """
import hashlib
from images import installer
compiled = installer.byte_compile(installer.package_sources())
print(hashlib.sha256(b"".join(compiled[name] for name in sorted(compiled))).hexdigest())
"""


def _digest(prelude: str, seed: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", prelude + _DIGEST]
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, check=True, timeout=120
    ).stdout


def test_the_byte_code_does_not_depend_on_the_building_process() -> None:
    # marshal's output follows reference counts (a compile in a process that imported
    # requests first differs) and the string hash seed (frozenset constants).
    plain = _digest("", "1")
    assert _digest("import json, lxml.etree, requests\n", "2") == plain


def test_python_loads_our_packages_from_it(tmp_path: Path) -> None:
    sources = {n: p for n, p in installer.package_sources().items() if "/common/" in n}
    for name, path in sources.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(path.read_bytes())
    for name, data in installer.byte_compile(sources).items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    verbose = subprocess.run(
        [sys.executable, "-S", "-B", "-v", "-c", "import common.protocol.messages"],
        cwd=tmp_path / SITE, capture_output=True, text=True, check=True, timeout=60,
    ).stderr  # fmt: skip
    assert "protocol/__pycache__/messages.cpython-311.pyc matches" in verbose
    assert "code object from" in verbose


def test_a_file_that_does_not_compile_stops_the_build(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("def broken(:\n")
    with pytest.raises(CommandError, match="SyntaxError"):
        installer.byte_compile({"x/bad.py": tmp_path / "bad.py"})
