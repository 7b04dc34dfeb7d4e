"""TFTP's pure parts: path normalisation, request parsing, option negotiation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pxe_server.tftp import MAX_TIMEOUT, open_file
from pxe_server.tftp_protocol import (
    ACCESS_VIOLATION,
    FILE_NOT_FOUND,
    ILLEGAL_OPERATION,
    MAX_BLKSIZE,
    PathRefused,
    Refusal,
    error_packet,
    locate,
    loggable,
    negotiate,
    normalise_path,
    parse_request,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pxelinux.0", "pxelinux.0"),
        ("/pxelinux.0", "pxelinux.0"),
        ("//boot//./vmlinuz", "boot/vmlinuz"),
        ("pxelinux.cfg/01-aa-bb-cc-dd-ee-ff", "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff"),
        ("/etc/passwd", "etc/passwd"),  # absolute names are relative to the root
        ("grub/grub.cfg", "grub/grub.cfg"),
        ("a/b/", "a/b"),
        ("..foo/bar..", "..foo/bar.."),  # only a whole '..' component climbs
    ],
)
def test_normalise_keeps_names_inside_the_root(name: str, expected: str) -> None:
    assert normalise_path(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "/../etc/passwd",
        "boot/../../etc/passwd",
        "boot/..",
        "..",
        "a\x00b",
        "a\\..\\b",
        "C:\\Windows",
        "a\nb",
        "a\x7fb",
        "",
        "/",
        "./.",
    ],
)
def test_normalise_refuses_escapes_and_odd_characters(name: str) -> None:
    with pytest.raises(PathRefused):
        normalise_path(name)


def test_locate_follows_symlinks_only_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "vmlinuz").write_bytes(b"k")
    (root / "alias").symlink_to("boot/vmlinuz")
    outside = tmp_path / "secret"
    outside.write_text("secret")
    (root / "leak").symlink_to(outside)
    (root / "dir-leak").symlink_to(tmp_path)

    assert locate(root, "boot/vmlinuz") == (root / "boot" / "vmlinuz").resolve()
    assert locate(root, "alias") == (root / "boot" / "vmlinuz").resolve()
    with pytest.raises(PathRefused):
        locate(root, "leak")
    with pytest.raises(PathRefused):
        locate(root, "dir-leak/secret")
    with pytest.raises(FileNotFoundError):
        locate(root, "missing")
    with pytest.raises(FileNotFoundError):
        locate(root, "boot")  # a directory is no file


def test_parse_request_reads_name_mode_and_options() -> None:
    request = parse_request(b"\0\x01/pxelinux.0\0OCTET\0BLKSIZE\x001468\0tsize\x000\0")
    assert request.filename == "/pxelinux.0"
    assert request.mode == "octet"
    assert request.options == {"blksize": "1468", "tsize": "0"}


def test_parse_request_refuses_every_write() -> None:
    for packet in (b"\0\x02x\0octet\0", b"\0\x02", b"\0\x02\xff\xfe"):
        with pytest.raises(Refusal) as refused:
            parse_request(packet)
        assert refused.value.code == ACCESS_VIOLATION
        assert refused.value.message == "read-only server"


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\0",
        b"\0\x03\0\x01",
        b"\0\x01name",
        b"\0\x01name\0",
        b"\0\x01a\0b\0",
        b"\0\x01a\0mail\0",
    ],
)
def test_parse_request_refuses_malformed_requests(packet: bytes) -> None:
    with pytest.raises(Refusal) as refused:
        parse_request(packet)
    assert refused.value.code == ILLEGAL_OPERATION


def test_negotiate_clamps_blksize_and_reports_the_size() -> None:
    assert negotiate({"blksize": "1468", "tsize": "0"}, 1234, 3) == {"blksize": 1468, "tsize": 1234}
    assert negotiate({"blksize": "70000"}, 1, 3) == {"blksize": MAX_BLKSIZE}
    assert negotiate({"blksize": "4"}, 1, 3) == {}
    assert negotiate({"blksize": "x", "windowsize": "8"}, 1, 3) == {}
    assert negotiate({"blksize": "-9", "tsize": " 1", "timeout": "\u0661"}, 1, 3) == {}
    assert negotiate({"blksize": "9" * 40}, 1, 3) == {}


def test_negotiate_grants_a_timeout_only_up_to_the_servers_bound() -> None:
    assert MAX_TIMEOUT == 3
    assert negotiate({"timeout": "1"}, 1, MAX_TIMEOUT) == {"timeout": 1}
    assert negotiate({"timeout": "3"}, 1, MAX_TIMEOUT) == {"timeout": 3}
    assert negotiate({"timeout": "4"}, 1, MAX_TIMEOUT) == {}  # not acknowledged: ours is used
    assert negotiate({"timeout": "255"}, 1, MAX_TIMEOUT) == {}
    assert negotiate({"timeout": "0"}, 1, MAX_TIMEOUT) == {}


def test_loggable_drops_query_strings_and_control_characters() -> None:
    assert loggable("ipxe/aa?token=SECRET") == "ipxe/aa"
    assert loggable("a\x1b[31mb") == "a?[31mb"
    assert len(loggable("x" * 1000)) == 200


def test_error_packet_layout() -> None:
    assert error_packet(2, "read-only server") == b"\0\x05\0\x02read-only server\0"


def test_open_file_refuses_loops_fifos_and_directories_in_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "loop-a").symlink_to("loop-b")
    (tmp_path / "loop-b").symlink_to("loop-a")
    (tmp_path / "dangling").symlink_to("nowhere")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_bytes(b"12345")
    expected = {
        "loop-a": (ACCESS_VIOLATION, "cannot read it: Too many levels of symbolic links"),
        "loop-b/x": (ACCESS_VIOLATION, "cannot read it: Too many levels of symbolic links"),
        "dangling": (FILE_NOT_FOUND, "no such regular file"),
        "fifo": (FILE_NOT_FOUND, "no such regular file"),
        "dir": (FILE_NOT_FOUND, "no such regular file"),
        "file/x": (FILE_NOT_FOUND, "no such regular file"),
    }
    for name, (code, reason) in expected.items():
        with pytest.raises(Refusal) as refused:
            open_file(tmp_path, name)
        assert (refused.value.code, refused.value.reason) == (code, reason), name
    source = open_file(tmp_path, "file")
    assert (source.size, source.read(1, 3)) == (5, b"234")
    source.close()
