"""One problem, one message: the reader's verdict is not repeated by later checks."""

from __future__ import annotations

import pytest

import answerfile
from common.errors import AnswerFileError

FRESH = """<installation>
  <primary-disk>sda</primary-disk>
  <source type="url">http://repo.example.com/xs/</source>
  <timezone>Europe/London</timezone>
  {extra}
</installation>"""


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("<hostname></hostname>", "<hostname>: is empty; expected a host name"),
        ("<hostname><name>x</name></hostname>", "takes text, not child elements like <name>"),
        ("<keymap/>", "<keymap>: is empty"),
        ("<name-server> </name-server>", "<name-server>: is empty"),
        ('<script stage="installation-complete" type="local"/>', "<script>: is empty"),
        ('<admin-interface name="" proto="dhcp"/>', "name is empty"),
        ('<admin-interface hwaddr="zz" proto="dhcp"/>', "'zz' is not a MAC address"),
        (
            '<admin-interface name="eth0" proto="static"><ip/><subnet>255.255.255.0</subnet>'
            "<gateway>10.0.0.1</gateway></admin-interface>",
            "<ip>: is empty",
        ),
    ],
)
def test_one_problem_one_message(extra: str, fragment: str) -> None:
    with pytest.raises(AnswerFileError) as caught:
        answerfile.parse(FRESH.format(extra=extra))
    assert len(caught.value.problems) == 1, caught.value.problems
    assert fragment in caught.value.problems[0]


def test_all_problems_reported_at_once() -> None:
    text = FRESH.format(
        extra='<hostname>a.b</hostname><ntp-server>-bad-</ntp-server><admin-interface proto="x"/>'
    )
    with pytest.raises(AnswerFileError) as caught:
        answerfile.parse(text.replace("Europe/London", "Europe/Londn"))
    joined = "\n".join(caught.value.problems)
    assert "did you mean Europe/London?" in joined
    assert "'a.b' is a fully qualified domain name" in joined
    assert "'-bad-' is not a host name or IP address" in joined
    assert "proto must be one of dhcp, static, none" in joined


def test_plaintext_password_never_in_messages_or_repr() -> None:
    result = answerfile.parse(FRESH.format(extra="<root-password>hunter2-secret</root-password>"))
    assert "hunter2-secret" not in repr(result.model)
    assert result.model.root_password is not None
    assert result.model.root_password.value == "hunter2-secret"


def test_debian_tzdata_fallback_knows_the_same_zones(tmp_path: object) -> None:
    from pathlib import Path

    from answerfile import timezones

    sample = Path(str(tmp_path)) / "tzdata.zi"
    sample.write_text(
        "# version 2025b\nZ Europe/London -0:1:15 - LMT 1847 D\nR GB 1916 o - May 21 2s 1 BST\n"
        "L Europe/London GB\nL Europe/London Europe/Belfast\n"
    )
    assert timezones._debian_names(sample) == {"Europe/London", "GB", "Europe/Belfast"}
    if timezones.DEBIAN_TZDATA.exists():
        assert timezones._debian_names(timezones.DEBIAN_TZDATA) >= {"Europe/London", "Asia/Tokyo"}
