"""The answer-file reference (docs/answerfile.md), printed from the element table."""

from __future__ import annotations

from answerfile import limits
from answerfile.spec import ROOTS, Attr, Element, Text


def _attr(attr: Attr) -> str:
    names = " / ".join(f"`{n}`" for n in attr.names)
    if attr.values:
        kind = " \\| ".join(attr.values)
    elif attr.int_range:
        kind = f"{attr.int_range[0]}..{attr.int_range[1]}"
    else:
        kind = "text"
    notes = "; ".join(x for x in ("required" if attr.required else "", attr.doc) if x)
    return f"{names} = {kind}" + (f" ({notes})" if notes else "")


def _row(element: Element, depth: int) -> str:
    names = " / ".join(f"`<{n}>`" for n in element.names)
    indent = "&nbsp;&nbsp;" * depth
    if element.refused:
        what = f"refused: {element.refused}"
    elif element.legacy:
        what = f"accepted with a warning: {element.legacy}"
    else:
        what = element.doc
    if element.text_values:
        text = " \\| ".join(element.text_values)
    elif element.children:
        text = "child elements"
    else:
        text = {Text.EMPTY: "none", Text.OPTIONAL: "optional", Text.REQUIRED: "required"}[
            element.text
        ]
    attrs = "<br>".join(_attr(a) for a in element.attrs) or "-"
    times = f"at most {element.at_most}" if element.repeatable else "once"
    if element.tally:
        times += f" (with `<{element.tally}>`)"
    return f"| {indent}{names} | {what} | {text} | {attrs} | {times} |"


def generate() -> str:
    lines = [
        "# Answer-file reference",
        "",
        "Generated from `answerfile/spec.py` by `netinstall answerfile reference`;",
        "do not edit. Elements may come in any order; text is stripped; every",
        "spelling shown is accepted and read as the first one.",
        "",
    ]
    for root in ROOTS:
        lines += [
            f"## `<{root.name}>`: {root.doc}",
            "",
            "Attributes: " + ("; ".join(_attr(a) for a in root.attrs) or "none") + ".",
            "",
            "| element | meaning | text | attributes | times |",
            "|---|---|---|---|---|",
        ]
        for child in root.children:
            lines.append(_row(child, 0))
            lines.extend(_row(grandchild, 1) for grandchild in child.children)
        lines.append("")
    lines += [
        "## Rules beyond the table",
        "",
        "- fresh: exactly one `<primary-disk>`, at least one `<source>`, a `<timezone>`;",
        "  no `<existing-installation>`.",
        "- upgrade / reinstall: `<existing-installation>` and a `<source>`; no",
        "  `<primary-disk>` or `<guest-disk>`.",
        "- restore: `<backup-disk>`.",
        "- `admin-interface`: exactly one of `name` or `hwaddr`; `proto=static` needs",
        "  `<ipaddr>`, `<subnet>` (a dotted netmask) and `<gateway>`, all IPv4;",
        "  `protov6=static` needs `<ipv6>` as address/prefix.",
        "- `source` / `driver-source` / `script` text: url = http, https, ftp or file URL",
        "  (optional `user:pass@`; an `nfs://` URL is read as nfs); nfs = `server:/path`;",
        "  a local source's text is ignored with a warning; a local script is a",
        "  `file:///path`.",
        "- `hostname` is a host name, not an FQDN; `timezone` is a tz database name;",
        '  `root-password type="hash"` is a crypt(3) hash.',
        "- A disk is named once: a `guest-disk` equal to the primary disk is refused.",
        f"- An answer file holds at most {limits.MAX_BYTES} bytes (1 MiB), however it is",
        "  fetched (an HTTP body that inflates past it is refused too), read or rendered;",
        "  a repeatable element appears at most as often as its *times* column says.",
        f"  At most {limits.MAX_PROBLEMS} problems are listed for one file.",
        "",
    ]
    return "\n".join(lines)
