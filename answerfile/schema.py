"""The answer-file RELAX NG schema, generated from ``spec.py`` and applied with lxml.

RELAX NG rather than XSD because ``interleave`` says "these elements, in any
order, some repeatable" directly; XSD 1.0 ``all`` cannot repeat an element.
The generated schema is committed as ``answerfile.rng``; a test fails when the
committed copy is stale (regenerate with ``make generated``).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from lxml import etree

from answerfile.spec import ROOTS, Attr, Element, Text

RNG_NS = "http://relaxng.org/ns/structure/1.0"
XSD_TYPES = "http://www.w3.org/2001/XMLSchema-datatypes"
SCHEMA_FILE = "answerfile.rng"


def _sub(parent: etree._Element, tag: str, **attrib: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{RNG_NS}}}{tag}", attrib)


def _values(parent: etree._Element, values: tuple[str, ...]) -> None:
    choice = _sub(parent, "choice")
    for value in values:
        _sub(choice, "value").text = value


def _attr_pattern(parent: etree._Element, attr: Attr) -> None:
    holder = parent if attr.required else _sub(parent, "optional")
    if attr.aliases:
        holder = _sub(holder, "choice")
    for name in attr.names:
        node = _sub(holder, "attribute", name=name)
        if attr.values:
            _values(node, attr.values)
        elif attr.int_range:
            data = _sub(node, "data", type="integer")
            _sub(data, "param", name="minInclusive").text = str(attr.int_range[0])
            _sub(data, "param", name="maxInclusive").text = str(attr.int_range[1])
        else:
            _sub(node, "text")


def _anything(parent: etree._Element) -> None:
    _sub(parent, "ref", name="anything")


def _element_pattern(parent: etree._Element, element: Element) -> None:
    holder = _sub(parent, "choice") if element.aliases else parent
    for name in element.names:
        node = _sub(holder, "element", name=name)
        if element.legacy:
            _anything(node)
            continue
        for attr in element.attrs:
            _attr_pattern(node, attr)
        if element.children:
            interleave = _sub(node, "interleave")
            for child in element.children:
                if child.refused:
                    continue
                wrapper = "zeroOrMore" if child.repeatable else "optional"
                _element_pattern(_sub(interleave, wrapper), child)
        elif element.text_values:
            target = _sub(node, "optional") if element.text is Text.OPTIONAL else node
            _values(target, element.text_values)
        elif element.text is Text.EMPTY:
            _sub(node, "empty")
        else:
            _sub(node, "text")


def generate() -> str:
    """The schema as text, exactly as committed in ``answerfile.rng``."""
    grammar = etree.Element(f"{{{RNG_NS}}}grammar", nsmap={None: RNG_NS})  # type: ignore[dict-item]
    grammar.set("datatypeLibrary", XSD_TYPES)
    grammar.append(
        etree.Comment(
            " Generated from answerfile/spec.py by `netinstall answerfile schema`; do not edit. "
        )
    )
    start = _sub(_sub(grammar, "start"), "choice")
    for root in ROOTS:
        _element_pattern(start, root)
    anything = _sub(grammar, "define", name="anything")
    many = _sub(_sub(anything, "zeroOrMore"), "choice")
    _sub(_sub(many, "attribute"), "anyName")
    _sub(many, "text")
    any_element = _sub(many, "element")
    _sub(any_element, "anyName")
    _anything(any_element)
    text: str = etree.tostring(grammar, pretty_print=True, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + text


def committed() -> str:
    return resources.files("answerfile").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


@cache
def load() -> etree.RelaxNG:
    return etree.RelaxNG(etree.fromstring(committed().encode("utf-8")))
