"""A fuzz corpus for answer files (issue 17): random bytes, random XML made of the
answer-file vocabulary, and mutations of the valid corpus go through ``answerfile.parse``;
the outcome is always a valid model (which renders and parses back to itself) or an
``AnswerFileError`` of one-line problems, never another exception. Bounded: a few hundred
examples each, seconds in all. Inputs it ever broke on are kept below as plain tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import answerfile
from answerfile import limits
from answerfile.spec import all_names
from common.errors import AnswerFileError

DATA = Path(__file__).resolve().parent.parent / "data" / "answerfiles"
EXAMPLES = Path(answerfile.__file__).parent / "examples"
VALID = sorted(p.read_bytes() for p in [*EXAMPLES.glob("*.xml"), *(DATA / "good").glob("*.xml")])
NAMES = [*sorted(set(all_names())), "installation", "restore", "x", "name-server"]
ATTRS = ["type", "mode", "srtype", "proto", "name", "hwaddr", "vlan", "stage", "location", "x"]
VALUES = ["url", "nfs", "local", "fresh", "upgrade", "static", "dhcp", "eth0", "4095", "", "é"]
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def outcome(data: bytes | str) -> None:
    """What parse may do with any input: a model that survives a round trip, or problems."""
    problems: tuple[str, ...] = ()
    try:
        result = answerfile.parse(data)
    except AnswerFileError as exc:
        problems = exc.problems
    else:
        again = answerfile.parse(answerfile.render(result.model))
        assert again.model == result.model
        return
    assert 0 < len(problems) <= limits.MAX_PROBLEMS + 1
    for problem in problems:
        assert isinstance(problem, str)
        assert problem.startswith("line ") or problem.startswith("an answer file may hold")
        assert len(problem) < 2 * limits.MAX_SHOWN_CHARS + 100


text_piece = st.one_of(
    st.sampled_from(["sda", "http://r/x/", "Europe/London", "10.0.0.1", " ", "&amp;", "]]>"]),
    st.text(max_size=12),
)


@st.composite
def element(draw: st.DrawFn, depth: int = 0) -> str:
    name = draw(st.sampled_from(NAMES))
    attrs = draw(st.dictionaries(st.sampled_from(ATTRS), st.sampled_from(VALUES), max_size=3))
    written = "".join(f' {k}="{v}"' for k, v in attrs.items())
    if depth < 3 and draw(st.booleans()):
        children = draw(st.lists(element(depth + 1), max_size=6))
        body = "".join(children)
    else:
        body = draw(text_piece).replace("&", "&amp;").replace("<", "&lt;")
    return f"<{name}{written}>{body}</{name}>"


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["delete", "insert", "duplicate", "replace"]))
        if kind == "delete":
            del data[at : at + draw(st.integers(1, 20))]
        elif kind == "insert":
            piece = draw(st.one_of(st.binary(max_size=8), element().map(str.encode)))
            data[at:at] = piece
        elif kind == "duplicate":
            end = min(len(data), at + draw(st.integers(1, 60)))
            data[at:at] = data[at:end] * draw(st.integers(1, 12))
        else:
            name = draw(st.sampled_from(NAMES)).encode()
            data[at : at + len(name)] = name
    return bytes(data)


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    outcome(data)


@SETTINGS
@given(st.text(st.characters(exclude_categories=()), max_size=200))  # surrogates too
def test_random_text(text: str) -> None:  # the server renders text, then parses it
    outcome(text)


@settings(SETTINGS, max_examples=60)
@given(
    st.builds(
        lambda root, body: f"<{root}>{body}</{root}>",
        st.sampled_from(["installation", "restore"]),
        st.lists(element(), max_size=12).map("".join),
    )
)
def test_random_documents_of_answer_file_words(text: str) -> None:
    outcome(text.encode())


@SETTINGS
@given(mutated())
def test_mutations_of_valid_answer_files(data: bytes) -> None:
    outcome(data)


@pytest.mark.parametrize("data", VALID)
def test_the_valid_corpus_is_valid(data: bytes) -> None:
    answerfile.parse(data)
    outcome(data)


# --- regression cases: inputs the fuzzing broke on, written out --------------------------


def test_a_lone_surrogate_in_text_is_one_problem() -> None:
    # Found while building this corpus (test_random_text now draws surrogates too):
    # str.encode raised UnicodeEncodeError, so a host variable from JSON "\ud800"
    # rendered into an answer file was a 500 with a traceback, not a message.
    with pytest.raises(AnswerFileError) as caught:
        answerfile.parse("<installation>\n<hostname>\ud800</hostname></installation>")
    assert caught.value.problems == ("line 2: XML: not text: character 26 is a lone surrogate",)
