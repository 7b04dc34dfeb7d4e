"""The RELAX NG schema: generated from the element table, committed, applied by lxml."""

from __future__ import annotations

import pytest
from lxml import etree

from answerfile import schema
from answerfile.spec import ROOTS
from tests.conftest import DATA


def test_committed_schema_is_current() -> None:
    assert schema.committed() == schema.generate(), "answerfile.rng is stale: run `make generated`"


@pytest.mark.parametrize(
    "path", sorted((DATA / "answerfiles" / "good").glob("*.xml")), ids=lambda p: p.name
)
def test_schema_accepts_good_files(path: object) -> None:
    document = etree.parse(str(path))
    assert schema.load().validate(document), schema.load().error_log


@pytest.mark.parametrize(
    "xml",
    [
        "<installation><primary-disc>sda</primary-disc></installation>",
        '<installation mode="sideways"/>',
        '<installation><source type="ftp">x</source></installation>',
        '<installation><admin-interface proto="dhcp" vlan="4095" name="eth0"/></installation>',
        "<installation><hostname><b/></hostname></installation>",
        "<installation><timezone>a</timezone><timezone>b</timezone></installation>",
        "<restore><source type='local'/></restore>",
        "<installation><fcoe-interface>eth1</fcoe-interface></installation>",
    ],
)
def test_schema_rejects_structural_errors(xml: str) -> None:
    assert not schema.load().validate(etree.fromstring(xml))


def test_schema_knows_every_element_and_alias() -> None:
    text = schema.committed()
    for root in ROOTS:
        for child in root.children:
            for name in child.names:
                if not child.refused:
                    assert f'name="{name}"' in text


def test_committed_reference_is_current() -> None:
    from answerfile import reference
    from tests.conftest import REPO

    committed = (REPO / "docs" / "answerfile.md").read_text("utf-8")
    assert committed == reference.generate(), "docs/answerfile.md is stale: run `make generated`"
