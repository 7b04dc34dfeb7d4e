"""docs/protocol.md against the declarations: its reference part is generated (stale:
run `make generated`), and every JSON example in it is a valid message of the type its
code block names."""

from __future__ import annotations

import json
import re

import pytest

from common.protocol import messages
from common.protocol.codec import decode
from pxe_server import protocol_doc
from tests.conftest import REPO

PAGE = REPO / "docs" / "protocol.md"
BLOCK = re.compile(r"^```json(?P<name>[^\n]*)\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)


def test_the_reference_part_is_current() -> None:
    text = PAGE.read_text("utf-8")
    assert protocol_doc.MARKER in text
    assert text == protocol_doc.updated(text), "docs/protocol.md is stale: run `make generated`"


def examples() -> list[tuple[str, object]]:
    found = []
    for block in BLOCK.finditer(PAGE.read_text("utf-8")):
        name, body = block["name"].strip(), block["body"]
        decoder, at = json.JSONDecoder(), 0
        while body[at:].strip():
            at += len(body[at:]) - len(body[at:].lstrip())
            value, at = decoder.raw_decode(body, at)
            found.append((name, value))
    return found


def test_the_page_has_examples_of_the_messages() -> None:
    names = {name for name, _ in examples()}
    assert {"Event", "EventReply", "Checkin", "CheckinReply", "HostCreate"} <= names


@pytest.mark.parametrize(("name", "value"), examples())
def test_every_json_example_is_a_message_of_its_type(name: str, value: object) -> None:
    assert name, f"a ```json block without a message name: {value!r}"
    decode(getattr(messages, name), value)  # ProtocolError names what is wrong


def test_the_reference_lists_every_secret_a_message_hands_out() -> None:
    text = protocol_doc.reference()
    assert "`EventReply.agent_credential`, `InstallerCmdline.kernel`" in text
    for route in protocol_doc.API:
        assert f"| {route.method} | `{route.path}` |" in text
