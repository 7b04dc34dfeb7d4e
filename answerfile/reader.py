"""XML -> a checked tree of known elements (structure only).

Walks the document with the table in ``spec.py`` and reports every structural
problem it finds (unknown elements and attributes, bad enumerated values,
missing attributes, text where none belongs, repeats), not just the first.
Meaning (mode rules, URLs, addresses) is checked later by ``build.py``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from lxml import etree

from answerfile import limits
from answerfile.problems import Problem, Severity, tag
from answerfile.spec import ROOTS, Attr, Element, Text, all_names


@dataclass
class Node:
    """One known element: canonical name, its checked attributes and stripped text."""

    spec: Element
    line: int
    written: str  # the name as written (may be an alias)
    attrs: dict[str, str] = field(default_factory=dict)  # canonical attribute name -> value
    bad_attrs: set[str] = field(default_factory=set)  # given but refused (already reported)
    text: str = ""
    text_reported: bool = False  # the reader already said what is wrong with the text
    children: list[Node] = field(default_factory=list)

    def all(self, name: str) -> list[Node]:
        return [child for child in self.children if child.spec.name == name]

    def one(self, name: str) -> Node | None:
        found = self.all(name)
        return found[0] if found else None

    def where(self, attr: str | None = None) -> str:
        return tag(self.written, attr, self.attrs.get(attr) if attr else None)


def _parser() -> etree.XMLParser:
    # No entities, no DTD, no network: an answer file comes from the network.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def _hint(name: str, parent: Element) -> str:
    for root in ROOTS:
        for child in root.children:
            if child.child(name) is not None and child is not parent:
                return f"it belongs inside <{child.name}>"
    for root in ROOTS:
        if root.child(name) is not None and root is not parent:
            return f"it belongs in an answer file whose root is <{root.name}>"
    close = difflib.get_close_matches(name, all_names(), n=1, cutoff=0.75)
    if close:
        return f"did you mean <{close[0]}>?"
    known = ", ".join(f"<{c.name}>" for c in parent.children if not (c.refused or c.legacy))
    return f"expected one of {known}"


_NAMESPACED = " in namespace "
_NAMESPACE_PROBLEM = "answer-file elements take no XML namespace; remove the xmlns declaration"


def _name(element: etree._Element) -> str:
    qname = etree.QName(element)
    if qname.namespace:
        return f"{qname.localname}{_NAMESPACED}{qname.namespace}"
    return str(qname.localname)


def _line(element: etree._Element) -> int:
    line = element.sourceline
    return line if isinstance(line, int) else 0


class _TooManyProblems(Exception):
    """The walk stops: ``limits.MAX_PROBLEMS`` are listed already."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def _too_many(line: int) -> Problem:
    return Problem(
        line,
        "answer file",
        f"more than {limits.MAX_PROBLEMS} problems; the first {limits.MAX_PROBLEMS} are"
        " listed: fix them and validate again",
    )


def _over_bound(spec: Element) -> str:
    together = " (its other spellings count with it)" if spec.tally else ""
    return (
        f"one too many: an answer file takes at most {spec.at_most}"
        f" <{spec.counted_as}> elements{together}"
    )


class _Walker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, problem: Problem) -> None:
        if len(self.problems) >= limits.MAX_PROBLEMS:
            raise _TooManyProblems(problem.line)
        self.problems.append(problem)

    def error(self, line: int, where: str, message: str) -> None:
        self.add(Problem(line, where, message))

    def warn(self, line: int, where: str, message: str) -> None:
        self.add(Problem(line, where, message, Severity.WARNING))

    def attrs(self, element: etree._Element, node: Node) -> None:
        spec, name, line = node.spec, node.written, node.line
        written_as: dict[str, str] = {}
        for raw_name, raw_value in element.attrib.items():
            attr_name = str(raw_name)
            value = str(raw_value).strip()
            attr = spec.attr(attr_name)
            if attr is None:
                self.error(line, tag(name, attr_name, value), _unknown_attr(attr_name, spec))
                continue
            if attr.name in written_as:
                self.error(
                    line,
                    tag(name, attr_name, value),
                    f"{attr_name} repeats {written_as[attr.name]}; give only one of "
                    + " or ".join(attr.names),
                )
                continue
            written_as[attr.name] = attr_name
            problem = _attr_value_problem(attr, attr_name, value)
            if problem:
                self.error(line, tag(name, attr_name, value), problem)
                node.bad_attrs.add(attr.name)
                continue
            node.attrs[attr.name] = value
        for attr in spec.attrs:
            if attr.required and attr.name not in written_as:
                choices = f" (one of {', '.join(attr.values)})" if attr.values else ""
                self.error(line, tag(name), f"the {attr.name} attribute is required{choices}")

    def text(self, element: etree._Element, node: Node) -> None:
        spec, name, line = node.spec, node.written, node.line
        pieces = [element.text or ""] + [child.tail or "" for child in element]
        text = "".join(pieces).strip()
        before = len(self.problems)
        if spec.children:
            if text:
                self.error(line, tag(name), f"takes child elements, not text; found {text!r}")
            text = ""
        elif len(element):
            first = _name(element[0])
            self.error(line, tag(name), f"takes text, not child elements like <{first}>")
        elif spec.text is Text.EMPTY and text:
            self.error(line, tag(name), f"takes no text; found {text!r}")
        elif spec.text is Text.REQUIRED and not text:
            self.error(line, tag(name), f"is empty; expected {spec.doc}")
        elif spec.text_values and text and text not in spec.text_values:
            self.error(line, tag(name), f"{text!r} is not one of {', '.join(spec.text_values)}")
        node.text = text
        node.text_reported = len(self.problems) > before

    def walk(self, element: etree._Element, spec: Element) -> Node:
        node = Node(spec, _line(element), _name(element))
        self.attrs(element, node)
        self.text(element, node)
        if not spec.children:
            return node
        seen: dict[str, int] = {}
        counts: dict[str, int] = {}
        for child in element:
            child_name, line = _name(child), _line(child)
            child_spec = spec.child(child_name)
            if child_spec is not None and child_spec.repeatable:
                count = counts[child_spec.counted_as] = counts.get(child_spec.counted_as, 0) + 1
                if count > child_spec.at_most:  # reported once; the rest are not looked at
                    if count == child_spec.at_most + 1:
                        self.error(line, tag(child_name), _over_bound(child_spec))
                    continue
            if _NAMESPACED in child_name:
                self.error(line, tag(child_name), _NAMESPACE_PROBLEM)
            elif child_spec is None:
                self.error(line, tag(child_name), f"unknown element; {_hint(child_name, spec)}")
            elif child_spec.refused:
                self.error(line, tag(child_name), child_spec.refused)
            elif child_spec.legacy:
                self.warn(line, tag(child_name), child_spec.legacy)
            elif not child_spec.repeatable and child_spec.name in seen:
                first = seen[child_spec.name]
                self.error(
                    line,
                    tag(child_name),
                    f"appears again (first at line {first}); expected at most one",
                )
            else:
                seen.setdefault(child_spec.name, line)
                node.children.append(self.walk(child, child_spec))
        return node


def _unknown_attr(attr_name: str, spec: Element) -> str:
    known = [n for a in spec.attrs for n in a.names]
    if not known:
        return f"unknown attribute {attr_name}; <{spec.name}> takes no attributes"
    close = difflib.get_close_matches(attr_name, known, n=1, cutoff=0.6)
    if close:
        return f"unknown attribute {attr_name}; did you mean {close[0]}?"
    return f"unknown attribute {attr_name}; expected one of {', '.join(known)}"


def _attr_value_problem(attr: Attr, written: str, value: str) -> str | None:
    if attr.values and value not in attr.values:
        return f"{written} must be one of {', '.join(attr.values)}"
    if attr.int_range:
        low, high = attr.int_range
        if not re.fullmatch(r"[0-9]{1,9}", value) or not low <= int(value) <= high:
            return f"{written} must be a whole number from {low} to {high}"
    if not attr.values and not attr.int_range and not value:
        return f"{written} is empty"
    return None


def read(data: bytes) -> tuple[Node | None, list[Problem]]:
    """Parse and walk an answer file. Returns the tree (None if unusable) and problems."""
    try:
        tree = etree.fromstring(data, _parser()).getroottree()
    except etree.XMLSyntaxError as exc:
        line = exc.lineno or 1
        message = re.sub(r", line \d+, column \d+$", "", " ".join(str(exc.msg).split()))
        message = message if len(message) <= 100 else message[:97] + "..."
        if "EntityRef" in message:
            message += " (write a literal & as &amp;)"
        return None, [Problem(line, "XML", f"not well-formed: {message}")]
    if tree.docinfo.doctype:  # type: ignore[union-attr]
        line = data[: max(data.find(b"<!DOCTYPE"), 0)].count(b"\n") + 1
        return None, [Problem(line, "XML", "a DOCTYPE is not allowed in an answer file")]
    root = tree.getroot()
    name = _name(root)
    if _NAMESPACED in name:
        return None, [Problem(_line(root), tag(name), _NAMESPACE_PROBLEM)]
    for spec in ROOTS:
        if name == spec.name:
            walker = _Walker()
            try:
                node = walker.walk(root, spec)
            except _TooManyProblems as stop:
                return None, [*walker.problems, _too_many(stop.line)]
            return node, walker.problems
    expected = " or ".join(f"<{r.name}>" for r in ROOTS)
    return None, [Problem(_line(root), tag(name), f"unknown root element; expected {expected}")]
