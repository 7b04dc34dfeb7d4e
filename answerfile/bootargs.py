"""The installer's boot command line (SPEC §3, §4): parse into a frozen value, render back.

``parse_cmdline`` reads the dom0 kernel's own line (what /proc/cmdline shows in the
installer); ``parse_multiboot`` reads the pxelinux ``mboot.c32`` append form
``XEN [xen args] --- KERNEL [dom0 args] --- MODULE [--- MODULE ...]``. Both render back:
``parse_cmdline(x.render()) == x`` and ``parse_multiboot(m.render()) == m``.

Words are split as the kernel's ``next_arg`` does: on whitespace, where a double-quoted
part may hold spaces; there are no escapes. Every problem in a line is collected and
raised as one ``BootArgsError``, one sentence per problem that starts with the parameter
as written (secrets and URL passwords are never echoed).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from common.errors import BootArgsError

REDACTED = "<redacted>"
_SPACE = " \t\n\v\f\r"  # the kernel's isspace() on ASCII
_SEPARATOR = "---"  # mboot.c32's module separator


# --- the tokenizer ------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One word of a kernel command line: key, value (None when bare) and the text as written."""

    key: str
    value: str | None
    raw: str


def tokenize(text: str) -> tuple[Param, ...]:
    """Split ``text`` into parameters exactly as the kernel's ``next_arg`` does."""
    params: list[Param] = []
    pos = _skip_spaces(text, 0)
    while pos < len(text):
        param, pos = _next_param(text, pos)
        params.append(param)
        pos = _skip_spaces(text, pos)
    return tuple(params)


def _skip_spaces(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _SPACE:
        pos += 1
    return pos


def _next_param(text: str, start: int) -> tuple[Param, int]:
    quoted = text[start] == '"'
    begin = start + 1 if quoted else start
    in_quote, equals, end = quoted, 0, begin
    while end < len(text) and (in_quote or text[end] not in _SPACE):
        if not equals and text[end] == "=":
            equals = end - begin  # as in the kernel, an "=" in first place does not count
        if text[end] == '"':
            in_quote = not in_quote
        end += 1
    closing = end > begin and text[end - 1] == '"'
    raw = text[start:end]
    if not equals:
        return Param(text[begin : end - 1 if quoted and closing else end], None, raw), end
    value_start = begin + equals + 1
    value_quoted = value_start < end and text[value_start] == '"'
    value_end = end - 1 if (quoted or value_quoted) and closing else end
    value_start += value_quoted
    value = text[value_start : max(value_start, value_end)]
    return Param(text[begin : begin + equals], value, raw), end


def render_param(key: str, value: str | None) -> str:
    """One word of a command line; a value holding whitespace is double-quoted."""
    if value is None:
        return key
    if any(c in _SPACE for c in value):
        return f'{key}="{value}"'
    return f"{key}={value}"


# --- values -------------------------------------------------------------------------


class AtExit(enum.StrEnum):
    REBOOT = "reboot"
    POWEROFF = "poweroff"
    SHELL = "shell"


class DeviceKind(enum.StrEnum):
    INTERFACE = "interface"  # ethN
    MAC = "mac"
    ALL = "all"


@dataclass(frozen=True)
class AnswerfileDevice:
    """The NIC(s) brought up to fetch the answer file; ``explicit`` is False when defaulted."""

    kind: DeviceKind
    name: str  # "eth0", a lowercase colon MAC, or "all"
    explicit: bool = True

    @classmethod
    def default(cls, bootif: str | None) -> AnswerfileDevice:
        """The BOOTIF NIC when the boot loader named one, else every NIC."""
        if bootif is None:
            return cls(DeviceKind.ALL, "all", explicit=False)
        return cls(DeviceKind.MAC, bootif, explicit=False)

    def __str__(self) -> str:
        return self.name


_EVERY_NIC = AnswerfileDevice.default(None)


class NetworkMode(enum.StrEnum):
    DHCP = "dhcp"
    STATIC = "static"


@dataclass(frozen=True)
class NetworkConfig:
    """``dhcp`` or ``static:ip=A;netmask=M[;gateway=G][;dns=D1,D2]`` (netmask as a prefix)."""

    mode: NetworkMode = NetworkMode.DHCP
    ip: ipaddress.IPv4Address | None = None
    prefix_length: int | None = None
    gateway: ipaddress.IPv4Address | None = None
    dns: tuple[ipaddress.IPv4Address, ...] = ()

    def __post_init__(self) -> None:  # a programming error, not an input error
        static = self.ip is not None and self.prefix_length in range(33)
        dhcp = (self.ip, self.prefix_length, self.gateway, self.dns) == (None, None, None, ())
        if not (static if self.mode is NetworkMode.STATIC else dhcp):
            raise ValueError(f"inconsistent {self!r}")

    def __str__(self) -> str:
        if self.mode is NetworkMode.DHCP:
            return "dhcp"
        items = [f"ip={self.ip}", f"netmask={self.prefix_length}"]
        if self.gateway is not None:
            items.append(f"gateway={self.gateway}")
        if self.dns:
            items.append("dns=" + ",".join(map(str, self.dns)))
        return "static:" + ";".join(items)


_SECRETS = frozenset({"token", "sshpassword"})
_URLS = frozenset({"answerfile", "answerfile_generator", "server"})


@dataclass(frozen=True, repr=False)
class BootArgs:
    """The installer's boot parameters (SPEC §4), defaults filled in."""

    answerfile: str | None = None
    install: bool = False
    answerfile_generator: str | None = None
    # Left non-explicit, it is recomputed from ``bootif`` (see __post_init__).
    answerfile_device: AnswerfileDevice = _EVERY_NIC
    network_config: NetworkConfig = NetworkConfig()
    use_ibft: bool = False
    device_mapper_multipath: bool = False
    disable_gpt: bool = False
    atexit: AtExit = AtExit.REBOOT
    server: str | None = None
    token: str | None = field(default=None, repr=False)
    bootif: str | None = None
    selftest: bool = False
    consoles: tuple[str, ...] = ()  # in order: the last one owns /dev/console
    sshpassword: str | None = field(default=None, repr=False)
    extra: tuple[str, ...] = ()  # every other word, verbatim: the kernel's, not ours

    def __post_init__(self) -> None:
        if not self.answerfile_device.explicit:
            object.__setattr__(self, "answerfile_device", AnswerfileDevice.default(self.bootif))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self._redacted())
        return f"BootArgs({shown})"

    def _redacted(self) -> Iterable[tuple[str, object]]:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRETS and value is not None:
                value = REDACTED
            elif f.name in _URLS and value is not None:
                value = redact_url(value)
            yield f.name, value

    def render(self) -> str:
        """A canonical command line: our parameters in a fixed order, then ``extra``."""
        words: list[str] = []
        for key, spec in _PARAMS.items():
            value = getattr(self, spec.attr)
            if spec.parse is None:
                words += [key] if value else []
            elif spec.repeats:
                words += [render_param(key, item) for item in value]
            elif _is_given(spec.attr, value):
                words.append(render_param(key, spec.show(value)))
        return " ".join([*words, *self.extra])

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly view; secrets (tokens, passwords, URL passwords) redacted."""
        return {name: _jsonable(value) for name, value in self._redacted()}


def _is_given(attr: str, value: object) -> bool:
    if isinstance(value, AnswerfileDevice):
        return value.explicit
    return bool(value != _DEFAULTS[attr])


def _jsonable(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, ipaddress.IPv4Address):
        return str(value)
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, AnswerfileDevice | NetworkConfig):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    return value


_SECRET_PASSWORD = re.compile(r"(://[^/@:?#\s]*):[^/@?#\s]*@")
_SECRET_QUERY = re.compile(r"([?&;](?:token|password|passwd)=)[^&;#\s]*", re.IGNORECASE)


def redact_url(text: str) -> str:
    """``text`` with URL passwords (``user:pass@``) and ``token=`` query values hidden."""
    text = _SECRET_PASSWORD.sub(lambda m: f"{m[1]}:{REDACTED}@", text)
    return _SECRET_QUERY.sub(lambda m: m[1] + REDACTED, text)


# --- value parsers: each returns the value or raises _Invalid("expected ...") ---------


class _Invalid(Exception):
    """Internal: what was wrong with one value; becomes one sentence of a BootArgsError."""


_URL_FORMS = "an http://, https:// or ftp:// URL, file:///path or nfs://server:/path"
_ETH = re.compile(r"eth[0-9]+")
_MAC = re.compile(r"[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}", re.IGNORECASE)
_BOOTIF = re.compile(r"01-([0-9a-f]{2}(?:-[0-9a-f]{2}){5})|([0-9a-f]{2}(?::[0-9a-f]{2}){5})", re.I)
_TOKEN = re.compile(r"[A-Za-z0-9._~-]+")
_YES = ("yes", "enabled", "true", "1")
_NO = ("no", "disabled", "false", "0")


def _parse_url(value: str) -> str:
    if any(c in _SPACE or not c.isprintable() for c in value):
        raise _Invalid(f"expected {_URL_FORMS} without spaces")
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        raise _Invalid(f"expected {_URL_FORMS} (the host or port is malformed)") from None
    scheme, path = parts.scheme.lower(), parts.path
    if scheme in ("http", "https", "ftp"):
        ok = bool(parts.hostname)
    elif scheme == "file":
        ok = parts.netloc == "" and path.startswith("/") and path != "/"
    elif scheme == "nfs":
        ok = bool(parts.hostname) and "@" not in parts.netloc and path.startswith("/")
        ok = ok and path != "/"
    else:
        ok = False
    if not ok:
        raise _Invalid(f"expected {_URL_FORMS}")
    return value


def _parse_server(value: str) -> str:
    if value.lower().startswith(("http://", "https://")):
        with suppress(_Invalid):
            return _parse_url(value)
    raise _Invalid("expected an http:// or https:// URL with a host")


def _parse_device(value: str) -> AnswerfileDevice:
    if value == "all":
        return AnswerfileDevice(DeviceKind.ALL, "all")
    if _ETH.fullmatch(value):
        return AnswerfileDevice(DeviceKind.INTERFACE, value)
    if _MAC.fullmatch(value):
        return AnswerfileDevice(DeviceKind.MAC, value.lower().replace("-", ":"))
    raise _Invalid("expected ethN (e.g. eth0), a MAC address or all")


def _parse_bootif(value: str) -> str:
    match = _BOOTIF.fullmatch(value)
    if match is None:
        raise _Invalid("expected 01-aa-bb-cc-dd-ee-ff (pxelinux) or aa:bb:cc:dd:ee:ff (GRUB)")
    return (match[1] or match[2]).lower().replace("-", ":")


def _parse_yes_no(value: str) -> bool:
    if value.lower() in _YES + _NO:
        return value.lower() in _YES
    raise _Invalid("expected one of " + ", ".join(_YES + _NO))


def _parse_atexit(value: str) -> AtExit:
    try:
        return AtExit(value.lower())
    except ValueError:
        raise _Invalid("expected one of " + ", ".join(AtExit)) from None


def _parse_token(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise _Invalid("expected a non-empty token of letters, digits and . _ ~ -")
    return value


def _parse_nonempty(what: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not value:
            raise _Invalid(f"expected {what}")
        return value

    return parse


def _parse_network_config(value: str) -> NetworkConfig:
    if value == "dhcp":
        return NetworkConfig()
    mode, colon, rest = value.partition(":")
    if mode != "static" or not colon:
        raise _Invalid("expected dhcp or static:ip=A;netmask=M[;gateway=G][;dns=D1,D2]")
    items: dict[str, str] = {}
    problems: list[str] = []
    for item in filter(None, rest.split(";")):
        key, equals, val = item.partition("=")
        if not equals or key not in ("ip", "netmask", "gateway", "dns"):
            problems.append(f"{item} is not one of ip=, netmask=, gateway=, dns=")
        elif key in items:
            problems.append(f"{key}= is given twice")
        else:
            items[key] = val
    problems += [f"{key}= is missing" for key in ("ip", "netmask") if key not in items]
    ip = _ipv4("ip", items.get("ip"), problems)
    prefix = _prefix_length(items.get("netmask"), problems)
    gateway = _ipv4("gateway", items.get("gateway"), problems)
    dns = _dns(items.get("dns"), problems)
    if problems or ip is None or prefix is None:
        raise _Invalid("; ".join(problems))
    return NetworkConfig(NetworkMode.STATIC, ip, prefix, gateway, dns)


def _ipv4(key: str, text: str | None, problems: list[str]) -> ipaddress.IPv4Address | None:
    if text is None:
        return None
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        problems.append(f"{key}={text} is not an IPv4 address")
        return None


def _prefix_length(text: str | None, problems: list[str]) -> int | None:
    if text is None:
        return None
    if text.isdigit() and text.isascii() and int(text) <= 32:
        return int(text)
    mask = _ipv4("netmask", text, [])
    inverted = None if mask is None else ~int(mask) & 0xFFFFFFFF
    if inverted is None or inverted & (inverted + 1):
        problems.append(f"netmask={text} is not a netmask (255.255.255.0) or a length 0-32")
        return None
    return 32 - inverted.bit_length()


def _dns(text: str | None, problems: list[str]) -> tuple[ipaddress.IPv4Address, ...]:
    if text is None:
        return ()
    found = [_ipv4("dns", server, problems) for server in text.split(",")]
    return tuple(server for server in found if server is not None)


# --- the table of our parameters (SPEC §4), in render order ----------------------------


@dataclass(frozen=True)
class _Spec:
    attr: str
    parse: Callable[[str], object] | None = None  # None: a bare flag
    show: Callable[[object], str] = str
    repeats: bool = False  # console= accumulates; everything else: the last one wins
    secret: bool = False  # never echo the value in a message


_PARAMS: Mapping[str, _Spec] = {
    "answerfile": _Spec("answerfile", _parse_url),
    "answerfile_generator": _Spec("answerfile_generator", _parse_url),
    "install": _Spec("install"),
    "answerfile_device": _Spec("answerfile_device", _parse_device),
    "network_config": _Spec("network_config", _parse_network_config),
    "use_ibft": _Spec("use_ibft"),
    "device_mapper_multipath": _Spec(
        "device_mapper_multipath", _parse_yes_no, show=lambda v: "yes" if v else "no"
    ),
    "disable-gpt": _Spec("disable_gpt"),
    "atexit": _Spec("atexit", _parse_atexit),
    "netinstall.server": _Spec("server", _parse_server),
    "netinstall.token": _Spec("token", _parse_token, secret=True),
    "BOOTIF": _Spec("bootif", _parse_bootif),
    "selftest": _Spec("selftest"),
    "console": _Spec("consoles", _parse_nonempty("a console such as tty0 or hvc0"), repeats=True),
    "sshpassword": _Spec("sshpassword", _parse_nonempty("a non-empty password"), secret=True),
}
_BY_NAME = {key.replace("-", "_"): spec for key, spec in _PARAMS.items()}
_DEFAULTS: Mapping[str, object] = {f.name: f.default for f in fields(BootArgs)}


def _spec_of(key: str) -> _Spec | None:
    """Our parameter named ``key``; as in the kernel's parameq, "-" and "_" are the same."""
    return _BY_NAME.get(key.replace("-", "_"))


# --- parsing ----------------------------------------------------------------------------


def parse_cmdline(text: str) -> BootArgs:
    """The dom0 kernel's command line (/proc/cmdline) as ``BootArgs``; all problems at once."""
    args, problems = _parse_params(tokenize(text))
    if args is None:
        raise BootArgsError(problems)
    return args


def _parse_params(params: Sequence[Param]) -> tuple[BootArgs | None, list[str]]:
    last = {_spec_of(p.key): i for i, p in enumerate(params)}  # the last one wins
    values: dict[str, Any] = {}
    consoles: list[str] = []
    extra: list[str] = []
    problems: list[str] = []
    for i, param in enumerate(params):
        spec = _spec_of(param.key)
        if spec is None:
            if param.raw == _SEPARATOR:
                problems.append(f"{_SEPARATOR}: a multiboot (mboot.c32) line needs parse_multiboot")
            extra.append(param.raw)
            continue
        if not spec.repeats and last[spec] != i:
            continue
        try:
            value = _convert(param, spec)
        except _Invalid as invalid:
            shown = param.key if spec.secret else redact_url(param.raw)
            problems.append(f"{shown}: {invalid}")
            continue
        if spec.repeats:
            consoles.append(str(value))
        else:
            values[spec.attr] = value
    problems += _check_static_device(params, values)
    if problems:
        return None, problems
    return BootArgs(**values, consoles=tuple(consoles), extra=tuple(extra)), []


def _convert(param: Param, spec: _Spec) -> object:
    if spec.parse is None:
        if param.value is not None:
            raise _Invalid(f"{param.key} is a flag and takes no value")
        return True
    if param.value is None:
        raise _Invalid(f"{param.key} needs a value ({param.key}=...)")
    if '"' in param.value:
        raise _Invalid("a double quote cannot be passed inside a value")
    return spec.parse(param.value)


def _check_static_device(params: Sequence[Param], values: Mapping[str, object]) -> list[str]:
    config, device = values.get("network_config"), values.get("answerfile_device")
    if not isinstance(config, NetworkConfig) or config.mode is not NetworkMode.STATIC:
        return []
    if device is None and values.get("bootif") is not None:
        return []  # the default device is the BOOTIF NIC
    if isinstance(device, AnswerfileDevice) and device.kind is not DeviceKind.ALL:
        return []
    raw = next(p.raw for p in reversed(params) if _spec_of(p.key) is _PARAMS["network_config"])
    return [f"{raw}: a static address needs one NIC, so give answerfile_device=ethN or a MAC"]


# --- the multiboot (mboot.c32) form --------------------------------------------------


@dataclass(frozen=True)
class MultibootModule:
    """A module after a ``---``: its path and any words after it (e.g. ipappend's BOOTIF=)."""

    path: str
    args: tuple[str, ...] = ()

    def render(self) -> str:
        return " ".join((self.path, *self.args))


@dataclass(frozen=True)
class MultibootCmdline:
    """``XEN_IMAGE xen-args --- KERNEL dom0-args --- MODULE [--- MODULE ...]``."""

    xen_image: str
    xen_args: tuple[str, ...]  # Xen's own, kept as written
    kernel: str
    args: BootArgs  # the dom0 (installer) part: ours
    modules: tuple[MultibootModule, ...]

    def render(self) -> str:
        sections = [
            " ".join((self.xen_image, *self.xen_args)),
            " ".join(word for word in (self.kernel, self.args.render()) if word),
            *(module.render() for module in self.modules),
        ]
        return f" {_SEPARATOR} ".join(sections)

    def to_dict(self) -> dict[str, object]:
        return {
            "xen_image": self.xen_image,
            "xen_args": list(self.xen_args),
            "kernel": self.kernel,
            "args": self.args.to_dict(),
            "modules": [{"path": m.path, "args": list(m.args)} for m in self.modules],
        }


_FORM = "XEN_IMAGE [xen args] --- KERNEL [dom0 args] --- MODULE [--- MODULE ...]"
_WORD = re.compile(f"[^{_SPACE}]+")


def parse_multiboot(text: str) -> MultibootCmdline:
    """The pxelinux ``mboot.c32`` append line; sections are split on ``---`` words."""
    sections: list[list[re.Match[str]]] = [[]]
    for word in _WORD.finditer(text):
        if word[0] == _SEPARATOR:
            sections.append([])
        else:
            sections[-1].append(word)
    if len(sections) == 1:
        raise BootArgsError(f"The line has no {_SEPARATOR}, so it is not of the form {_FORM}")
    names = ["hypervisor", "dom0 kernel"] + ["module"] * (len(sections) - 2)
    problems = [
        f"The {name} part of the multiboot line is empty: expected {_FORM}"
        for name, section in zip(names, sections, strict=True)
        if not section
    ]
    if len(sections) < 3:
        problems.append(f"The multiboot line has no module (the initrd): expected {_FORM}")
    if problems:
        raise BootArgsError(problems)
    kernel = sections[1][0]
    dom0_end = sections[1][-1].end()
    args, problems = _parse_params(tokenize(text[kernel.end() : dom0_end]))
    if args is None:
        raise BootArgsError(problems)
    return MultibootCmdline(
        xen_image=sections[0][0][0],
        xen_args=tuple(word[0] for word in sections[0][1:]),
        kernel=kernel[0],
        args=args,
        modules=tuple(
            MultibootModule(s[0][0], tuple(word[0] for word in s[1:])) for s in sections[2:]
        ),
    )
