"""Update bundles: the example built, read back and signed; every bad bundle one error."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from common.update_bundle import (
    METADATA,
    SIGNATURE,
    Bundle,
    UpdateError,
    extract,
    parse_metadata,
    read_bundle,
    signed_copy,
)
from hypervisor_payload.updates import build_update
from pxe_server.update_key import UpdateKey, verify_signature

EXAMPLE = Path(__file__).resolve().parents[2] / "hypervisor_payload" / "updates_example"


@pytest.fixture
def built(tmp_path: Path) -> Bundle:
    _meta, path = build_update(EXAMPLE, tmp_path / "example.update")
    return read_bundle(path)


def test_example_builds_reproducibly_and_reads_back(tmp_path: Path, built: Bundle) -> None:
    meta = built.meta
    assert meta.id == "example-hotfix-1"
    assert meta.version == "1.0-hotfix1"
    assert meta.applies_to == ("0.1.0",)
    assert [m.path for m in meta.members] == ["root.tar", "post-apply.sh"]
    assert built.signature is None
    _again, second = build_update(EXAMPLE, tmp_path / "again.update")
    assert second.read_bytes() == built.path.read_bytes()
    files = extract(built, tmp_path / "out")
    with tarfile.open(files["root.tar"]) as archive:
        assert archive.getnames() == ["etc/netinstall/hotfix-example.conf"]


def test_a_signed_copy_verifies_and_a_changed_one_does_not(tmp_path: Path, built: Bundle) -> None:
    key = UpdateKey.generate()
    signature = key.sign(built.metadata).encode()
    signed = tmp_path / "signed.update"
    signed_copy(built, signed, signature)
    again = read_bundle(signed)
    assert again.signature == signature
    assert again.metadata == built.metadata
    assert verify_signature(key.public_line(), signature.decode(), again.metadata)
    assert not verify_signature(key.public_line(), signature.decode(), again.metadata + b" ")
    other = UpdateKey.generate()
    assert not verify_signature(other.public_line(), signature.decode(), again.metadata)
    assert UpdateKey.from_raw(key.raw()).public_line() == key.public_line()


def _rewrite(source: Path, target: Path, change: dict[str, bytes | None]) -> Path:
    """``source`` with members replaced (bytes) or dropped (None), or added."""
    with tarfile.open(source) as old, tarfile.open(target, "w") as new:
        names = old.getnames()
        for info in old.getmembers():
            data = old.extractfile(info).read()  # type: ignore[union-attr]
            if info.name in change:
                replaced = change[info.name]
                if replaced is None:
                    continue
                data = replaced
            info.size = len(data)
            new.addfile(info, io.BytesIO(data))
        for name, data in change.items():
            if name not in names and data is not None:
                added = tarfile.TarInfo(name)
                added.size = len(data)
                new.addfile(added, io.BytesIO(data))
    return target


def test_a_wrong_checksum_is_refused(tmp_path: Path, built: Bundle) -> None:
    script = b"#!/bin/sh\necho changed!\n"
    meta = json.loads(built.metadata)
    size = next(m for m in meta["members"] if m["path"] == "post-apply.sh")["size"]
    bad = _rewrite(
        built.path, tmp_path / "bad.update", {"post-apply.sh": script[:size].ljust(size)}
    )
    with pytest.raises(UpdateError, match=r"sha256 mismatch for post-apply\.sh"):
        read_bundle(bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"post-apply.sh": None}, "post-apply.sh is missing"),
        ({"../evil": b"x"}, "has no place in an update bundle"),
        ({"debs/x.deb": b"x"}, "debs/x.deb is in the bundle but not in update.json"),
        ({METADATA: b"{not json"}, "update.json is not JSON"),
        ({METADATA: None}, "has no update.json"),
        ({SIGNATURE: b"x" * 5000}, "update.json.sig has more than 4096 bytes"),
    ],
)
def test_bad_bundles_are_one_clear_error(
    tmp_path: Path, built: Bundle, change: dict[str, bytes | None], message: str
) -> None:
    with pytest.raises(UpdateError, match=message):
        read_bundle(_rewrite(built.path, tmp_path / "bad.update", change))


def test_not_a_tar_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.update"
    path.write_bytes(b"\x00junk" * 300)
    with pytest.raises(UpdateError, match="not an update bundle"):
        read_bundle(path)


def _metadata(**changes: object) -> bytes:
    base: dict[str, object] = {
        "format": 1,
        "id": "hotfix-2",
        "name": "A hotfix",
        "version": "1.0-2",
        "applies_to": ["1.0"],
        "reboot": False,
        "members": [{"path": "root.tar", "type": "tar", "size": 10, "sha256": "a" * 64}],
    }
    return json.dumps(base | changes).encode()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": 2}, "format 2 is not 1"),
        ({"id": "Bad Id"}, "is not an update id"),
        ({"applies_to": []}, "applies_to must list 1 to 64 versions"),
        ({"applies_to": ["1.0 beta"]}, "is not a version"),
        ({"reboot": "yes"}, "reboot must be true or false"),
        ({"extra": 1}, "unknown keys extra"),
        ({"members": []}, "members must list 1 to 256 files"),
        (
            {"members": [{"path": "/etc/x", "type": "tar", "size": 1, "sha256": "a" * 64}]},
            "is not a member path",
        ),
        (
            {"members": [{"path": "root.tar", "type": "deb", "size": 1, "sha256": "a" * 64}]},
            "has type 'deb', not tar",
        ),
        (
            {"members": [{"path": "root.tar", "type": "tar", "size": 1 << 31, "sha256": "a" * 64}]},
            "size must be 0 to",
        ),
    ],
)
def test_malformed_metadata_is_one_clear_error(changes: dict[str, object], message: str) -> None:
    with pytest.raises(UpdateError, match=message):
        parse_metadata(_metadata(**changes))


def test_a_source_without_anything_to_apply_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "update.toml").write_text(
        'id = "x"\nname = "x"\nversion = "1"\napplies_to = ["1.0"]\nreboot = false\n'
    )
    with pytest.raises(UpdateError, match="nothing to update"):
        build_update(source, tmp_path / "x.update")
    (source / "update.toml").write_text('id = "x"\n')
    with pytest.raises(UpdateError, match="needs applies_to, name, reboot, version"):
        build_update(source, tmp_path / "x.update")
    assert not (tmp_path / "x.update").exists()
