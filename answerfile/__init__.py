"""Answer files (SPEC §5): parse, validate, model, render; and the installer
boot command line (SPEC §4, ``answerfile.bootargs``).

    result = answerfile.parse(data)        # raises AnswerFileError with every problem
    result.model, result.warnings
    answerfile.render(result.model)        # XML text; parse(render(m)).model == m
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from answerfile import limits, schema
from answerfile.build import build
from answerfile.model import AnswerFile
from answerfile.problems import Problem, Severity
from answerfile.reader import read
from answerfile.render import render
from common.errors import AnswerFileError


@dataclass(frozen=True)
class Result:
    model: AnswerFile
    warnings: tuple[Problem, ...]


def _schema_problems(data: bytes) -> list[Problem]:
    """The RELAX NG schema's verdict, as problems (a backstop behind the reader)."""
    validator = schema.load()
    document = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    if validator.validate(document):
        return []
    return [
        Problem(entry.line, "schema", entry.message.rstrip(".")) for entry in validator.error_log
    ]


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from JSON "\ud800"
        line = text.count("\n", 0, exc.start) + 1
        problem = f"line {line}: XML: not text: character {exc.start + 1} is a lone surrogate"
        raise AnswerFileError(problem) from exc


def parse(data: bytes | str) -> Result:
    """Parse and validate an answer file; every problem is reported at once."""
    raw = _utf8(data) if isinstance(data, str) else data
    if len(raw) > limits.MAX_BYTES:
        raise AnswerFileError(limits.size_problem(len(raw)))
    root, problems = read(raw)
    model = None
    if root is not None:
        model, more = build(root)
        problems.extend(more)
    failed = any(p.severity is Severity.ERROR for p in problems)
    if root is not None and not failed:
        # The reader and the schema come from the same table; if the schema still
        # objects, report it rather than accept a file we do not understand.
        problems.extend(_schema_problems(raw))
        failed = any(p.severity is Severity.ERROR for p in problems)
    if failed or model is None:
        raise AnswerFileError([str(p) for p in sorted(problems)])
    warnings = tuple(sorted(p for p in problems if p.severity is Severity.WARNING))
    return Result(model, warnings)


def parse_file(path: str | Path) -> Result:
    """``parse`` of a file, read in chunks and never past ``limits.MAX_BYTES``."""
    with Path(path).open("rb") as stream:
        return parse(limits.read_bounded(stream))


__all__ = ["AnswerFile", "AnswerFileError", "Problem", "Result", "parse", "parse_file", "render"]
