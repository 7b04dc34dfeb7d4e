"""Values in boot configs, by each loader's own rules: quoted where the loader can quote,
refused where it cannot (issue 17: a value must never add a menu entry, a command or
a kernel argument). The boot-config templates apply these as filters to every value.

* GRUB (``grub_word``): GRUB script quoting, as the shell's: a word GRUB would read
  otherwise is single-quoted, a ``'`` inside written ``'\\''``. Inside single quotes
  nothing is special (no ``$``, no ``;``, no newline ends the word), so every value
  stays one word of the ``multiboot2``/``module2`` line it is on. A control character
  is still refused: GRUB would pass it on to Xen's or Linux's command line.
* iPXE (``ipxe_word``): iPXE has no quoting and no escape (``core/exec.c`` splits a
  line at whitespace, then expands every ``${...}``; a token ``||``, ``&&`` or ``;``
  ends the command and ``#`` starts a comment). A value is written as it is when iPXE
  reads it back as one token and the same text; anything else is refused.
* pxelinux (``pxelinux_word``): no quoting at all; any byte up to the space is a
  separator and a line ends the directive. A value with whitespace or a control
  character is refused, as is non-ASCII text.
* Xen's EFI configuration (``xen_cfg_word``): ``key=value`` lines, the options split
  at spaces: as pxelinux.

Refusals are ``InputError``: one sentence naming the value and the loader.
"""

from __future__ import annotations

import re

from common.errors import InputError

# Words GRUB reads as one literal word; anything else is single-quoted.
_GRUB_BARE = re.compile(r"[A-Za-z0-9_.,:=/+%@~^!-]+")
# One token, read back as written, in a config with no quoting: printable ASCII, no space.
_PLAIN = re.compile(r"[!-~]+")
_IPXE_TERMINATORS = ("||", "&&", ";")


def _refuse(loader: str, value: str, why: str) -> InputError:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return InputError(f"{shown!r} cannot be written in a {loader} config: {why}")


def _control(value: str) -> bool:
    return any(not c.isprintable() for c in value)


def grub_word(value: str) -> str:
    """``value`` as one literal GRUB script word: bare when safe, else single-quoted."""
    if _control(value):
        raise _refuse("GRUB", value, "it holds a control character")
    if _GRUB_BARE.fullmatch(value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


def pxelinux_word(value: str) -> str:
    """``value`` unchanged, if pxelinux reads it back as one argument; else InputError."""
    if not _PLAIN.fullmatch(value):
        raise _refuse(
            "pxelinux",
            value,
            "pxelinux has no quoting, so whitespace, control characters and non-ASCII"
            " text would split or end the line",
        )
    return value


def xen_cfg_word(value: str) -> str:
    """``value`` unchanged, if Xen's EFI configuration reads it back as one option."""
    if not _PLAIN.fullmatch(value):
        raise _refuse(
            "Xen EFI",
            value,
            "whitespace, control characters and non-ASCII text would split or end the line",
        )
    return value


def ipxe_word(value: str) -> str:
    """``value`` unchanged, if iPXE reads it back as one token with the same text."""
    if not _PLAIN.fullmatch(value):
        raise _refuse(
            "iPXE",
            value,
            "iPXE has no quoting, so whitespace, control characters and non-ASCII text"
            " would split the command",
        )
    if "${" in value:
        raise _refuse("iPXE", value, "iPXE would expand '${' as a setting, and cannot escape it")
    if value.startswith("#") or value in _IPXE_TERMINATORS:
        raise _refuse("iPXE", value, "iPXE would read it as a comment or the end of a command")
    return value
