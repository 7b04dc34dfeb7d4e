"""answerfile.limits: the size cap, the element counts, the problem count, message length."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import answerfile
from answerfile import limits
from answerfile.reader import read
from answerfile.spec import ROOTS, Element
from common.errors import AnswerFileError

HEAD = (
    "<installation><primary-disk>sda</primary-disk>"
    '<source type="url">http://repo.example.com/xs/</source>'
    "<timezone>Europe/London</timezone>"
)


def fresh(extra: str) -> str:
    return f"{HEAD}{extra}</installation>"


def problems_of(text: str | bytes) -> tuple[str, ...]:
    with pytest.raises(AnswerFileError) as caught:
        answerfile.parse(text)
    return caught.value.problems


def _repeatables() -> list[Element]:
    found: list[Element] = []

    def walk(element: Element) -> None:
        found.extend(c for c in element.children if c.repeatable)
        for child in element.children:
            walk(child)

    for root in ROOTS:
        walk(root)
    return found


def test_every_repeatable_element_has_a_bound_of_its_own() -> None:
    bounds = {e.name: e.at_most for e in _repeatables()}
    assert bounds == {
        "guest-disk": limits.MAX_GUEST_DISKS,
        "source": limits.MAX_SOURCES,
        "driver-source": limits.MAX_DRIVER_SOURCES,
        "script": limits.MAX_SCRIPTS,
        "post-install-script": limits.MAX_SCRIPTS,
        "install-failed-script": limits.MAX_SCRIPTS,
        "name-server": limits.MAX_NAME_SERVERS,
        "ntp-server": limits.MAX_NTP_SERVERS,
        "time-config-method": limits.MAX_LEGACY_REPEATS,
        "ui-confirmation-prompt": limits.MAX_LEGACY_REPEATS,
    }
    assert all(1 < bound < 100 for bound in bounds.values())


@pytest.mark.parametrize(
    ("element", "name", "bound", "in_head"),
    [
        ("<name-server>10.0.0.{n}</name-server>", "name-server", limits.MAX_NAME_SERVERS, 0),
        ("<nameserver>10.0.0.{n}</nameserver>", "name-server", limits.MAX_NAME_SERVERS, 0),
        ("<ntp-server>ntp{n}.example.com</ntp-server>", "ntp-server", limits.MAX_NTP_SERVERS, 0),
        ("<guest-disk>vd{n}</guest-disk>", "guest-disk", limits.MAX_GUEST_DISKS, 0),
        ('<source type="url">http://r{n}.example.com/</source>', "source", limits.MAX_SOURCES, 1),
        (
            '<driver-source type="url">http://d{n}.example.com/</driver-source>',
            "driver-source",
            limits.MAX_DRIVER_SOURCES,
            0,
        ),
        (
            '<script stage="installation-start" type="url">http://s/{n}.sh</script>',
            "script",
            limits.MAX_SCRIPTS,
            0,
        ),
        ("<ui-confirmation-prompt/>", "ui-confirmation-prompt", limits.MAX_LEGACY_REPEATS, 0),
    ],
)
def test_one_past_the_bound_is_one_message_naming_the_element_and_the_bound(
    element: str, name: str, bound: int, in_head: int
) -> None:
    at_bound = "".join(element.format(n=n) for n in range(bound - in_head))
    answerfile.parse(fresh(at_bound))  # exactly at the bound: fine
    over = at_bound + element.format(n=998) + element.format(n=999)
    problems = [p for p in problems_of(fresh(over)) if ": warning: " not in p]
    assert len(problems) == 1, problems
    assert f"one too many: an answer file takes at most {bound} <{name}> elements" in problems[0]


def test_legacy_script_spellings_count_with_script() -> None:
    half = limits.MAX_SCRIPTS // 2
    scripts = '<script stage="installation-start" type="url">http://s/a.sh</script>' * half
    legacy = "<post-install-script>http://s/b.sh</post-install-script>" * (half + 1)
    (problem,) = problems_of(fresh(scripts + legacy))
    assert "<post-install-script>: one too many" in problem
    assert f"at most {limits.MAX_SCRIPTS} <script> elements (its other spellings" in problem


def test_100000_name_servers_are_refused_by_the_reader_after_the_bound() -> None:
    data = fresh("<name-server>10.0.0.1</name-server>" * 100_000).encode()
    node, problems = read(data)  # the reader alone: no size cap in the way
    assert [p.message for p in problems] == [
        f"one too many: an answer file takes at most {limits.MAX_NAME_SERVERS}"
        " <name-server> elements"
    ]
    assert node is not None
    assert len(node.all("name-server")) == limits.MAX_NAME_SERVERS
    # and whole, through parse: the size cap speaks first
    (problem,) = problems_of(data)
    assert problem == limits.size_problem(len(data))


def test_a_file_one_byte_over_the_cap_is_refused_and_one_at_the_cap_is_read() -> None:
    body = fresh("").encode()
    padded = body + b" " * (limits.MAX_BYTES - len(body))
    assert len(padded) == limits.MAX_BYTES
    answerfile.parse(padded)
    (problem,) = problems_of(padded + b" ")
    assert problem == (
        "an answer file may hold at most 1048576 bytes (1 MiB); this one has 1048577 bytes"
    )


class Endless(io.RawIOBase):
    """A stream that never ends (``/dev/zero``), counting what was read from it."""

    def __init__(self) -> None:
        self.given = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        size = len(buffer)
        buffer[:size] = b"\0" * size
        self.given += size
        return size


def test_read_bounded_stops_an_endless_stream_just_past_the_cap() -> None:
    stream = Endless()
    with pytest.raises(AnswerFileError) as caught:
        limits.read_bounded(stream)  # type: ignore[arg-type]
    assert caught.value.problems == (limits.size_problem(),)
    assert stream.given <= limits.MAX_BYTES + limits.READ_CHUNK


def test_parse_file_reads_a_big_file_no_further_than_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "big.xml"
    with path.open("wb") as out:
        out.truncate(200 << 20)  # 200 MiB, sparse
    with pytest.raises(AnswerFileError) as caught:
        answerfile.parse_file(path)
    assert caught.value.problems == (limits.size_problem(),)


def test_problems_stop_at_the_bound_with_a_last_line_saying_so() -> None:
    problems = problems_of(fresh("<foo/>" * 10_000))
    assert len(problems) == limits.MAX_PROBLEMS + 1
    assert problems[-1].endswith(
        f"more than {limits.MAX_PROBLEMS} problems; the first {limits.MAX_PROBLEMS} are listed:"
        " fix them and validate again"
    )


def test_a_huge_value_is_cut_in_the_message() -> None:
    (problem,) = problems_of(fresh(f"<hostname>{'x' * 100_000}</hostname>"))
    assert len(problem) < limits.MAX_SHOWN_CHARS + 50
    assert problem.endswith("...")
