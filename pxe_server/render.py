"""Boot configs and answer files as text (SPEC §3, §9): pure functions over model values.

Boot configs come from the jinja2 templates in ``pxe_server/templates/``
(StrictUndefined), every value written through its loader's filter
(``pxe_server.boot_words``: GRUB quotes, iPXE, pxelinux and Xen's EFI config refuse
what they cannot carry); answer files from each profile's own template (or, while
a host's work is an upgrade or a restore, the built-in one next to
``default_profile.xml.j2``), rendered in a sandbox with XML autoescaping (a host
variable is text, never markup), at most ``answerfile.limits.MAX_BYTES``, and
validated with ``answerfile.parse`` before anyone gets them. ``decide.explain``
chooses between the install and the local-boot variant.

Install entries carry, after the profile's ``kernel_args`` (so its last
``console=``, ``hvc0`` by default, stays last and owns /dev/console)::

    answerfile=<http_base>/answerfile/<mac> install
    netinstall.server=<http_base> netinstall.token=<token> BOOTIF=<boot NIC>

The per-host configs need a host record (its token). An unknown machine gets the
catch-all config (``pxelinux.cfg/default``, ``grub/grub.cfg``), which therefore
always boots the local disk: under ``UnknownPolicy.INSTALL`` the server registers
the machine on first contact, before it renders, so it is no longer unknown.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import jinja2
import jinja2.sandbox

import answerfile
from answerfile import limits
from common.errors import AnswerFileError, InputError
from pxe_server import passwords
from pxe_server.boot_words import grub_word, ipxe_word, pxelinux_word, xen_cfg_word
from pxe_server.decide import IPXE_PREFIX, Action, Decision, explain
from pxe_server.model import Host, Profile, ServerSettings, Work, mac_dashes, normalise_mac
from pxe_server.secrets import is_password_variable

TEMPLATES = Path(__file__).resolve().parent / "templates"

# What no loader can carry in a boot argument: quotes and backslashes (GRUB
# escapes them, pxelinux and iPXE pass them on), iPXE's ${...} expansion.
_UNCARRIABLE = re.compile(r"[\"'\\]|\$\{")
# Words iPXE reads as the end of a command (boot_words.ipxe_word refuses them too).
_IPXE_ENDS = ("||", "&&", ";")
# Words that ``render`` writes itself after the profile's kernel arguments.
_OURS = ("answerfile=", "netinstall.server=", "netinstall.token=", "BOOTIF=")
_ANSWER_VARIABLES = ("mac", "name", "server", "repo_url", "root_password_hash")
_UNDEFINED = re.compile(r"^'([^']+)' is undefined$")
# An http_base GRUB's http device can name, bare (no GRUB quoting needed): host and port.
_HTTP_BASE = re.compile(r"http://(?P<host>[A-Za-z0-9.-]{1,253})(?::(?P<port>[0-9]{1,5}))?/?")

Lookup = Callable[[str], tuple[Host | None, Profile | None]]
# How a boot loader fetched its config: over TFTP, or over HTTP under ``/boot/`` (a loader
# that came over HTTP: pxelinux.0 through iPXE, GRUB booted by UEFI HTTP Boot).
Via = Literal["tftp", "http"]


# --- boot arguments -----------------------------------------------------------------


def check_profile_args(profile: Profile) -> None:
    """InputError listing every Xen or dom0 argument of ``profile`` a boot loader would misread.

    Called by ``render`` for every install config; the registry and the CLI may
    call it when a profile is written, so the operator hears of it at once.
    """
    problems: list[str] = []
    for field, text in (("xen_args", profile.xen_args), ("kernel_args", profile.kernel_args)):
        for word in text.split():
            where = f"profile {profile.name}: {field} word {word!r}"
            if word == "---":
                problems.append(f"{where} is mboot.c32's module separator")
            elif not (word.isascii() and word.isprintable()):
                problems.append(f"{where} holds a character that is not printable ASCII")
            elif _UNCARRIABLE.search(word) or word.startswith("#") or word in _IPXE_ENDS:
                problems.append(
                    f"{where} cannot be passed through pxelinux, GRUB and iPXE alike"
                    " (no quotes, backslashes or '${', no leading '#', no word"
                    " '||', '&&' or ';', which end an iPXE command)"
                )
            elif field == "kernel_args" and (word == "install" or word.startswith(_OURS)):
                problems.append(f"{where} is written by the server itself; remove it")
    if problems:
        raise InputError(problems)


def answerfile_url(host: Host, settings: ServerSettings) -> str:
    """Where the installer fetches ``host``'s answer file (with the key it enrolled)."""
    return f"{settings.http_base}/answerfile/{host.mac}"


def san_words(profile: Profile) -> list[str]:
    """``use_ibft`` and ``device_mapper_multipath=yes`` for a SAN profile, unless its
    kernel arguments carry them already (the seed's examples write them there)."""
    given = profile.kernel_args.split()
    words = []
    if profile.san_boot and "use_ibft" not in given:
        words.append("use_ibft")
    if profile.multipath and not any(w.startswith("device_mapper_multipath=") for w in given):
        words.append("device_mapper_multipath=yes")
    return words


def installer_args(
    host: Host, profile: Profile, settings: ServerSettings, bootif: str
) -> list[str]:
    """The dom0 (installer) words: the profile's, then ours (see the module docstring)."""
    check_profile_args(profile)
    return [
        *profile.kernel_args.split(),
        *san_words(profile),
        f"answerfile={answerfile_url(host, settings)}",
        "install",
        f"netinstall.server={settings.http_base}",
        f"netinstall.token={host.token}",
        f"BOOTIF={bootif}",
    ]


# --- boot configs -------------------------------------------------------------------


def _oneline(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


@functools.cache
def _environment() -> jinja2.Environment:
    """The boot configs' environment, made once; each template is compiled once (the
    templates are part of the package: no modification time is checked per render)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - boot configs and XML answer files, not HTML
        keep_trailing_newline=True,
        auto_reload=False,
        cache_size=-1,  # every template stays compiled
    )
    env.filters["grub_word"] = grub_word
    env.filters["ipxe_word"] = ipxe_word
    env.filters["pxelinux_word"] = pxelinux_word
    env.filters["xen_cfg_word"] = xen_cfg_word
    env.filters["oneline"] = _oneline
    return env


def _render(name: str, **variables: object) -> str:
    return _environment().get_template(name).render(**variables)


# templates/<loader>-<install or local>.<suffix>.j2
_SUFFIX = {"pxelinux": "cfg", "grub": "cfg", "ipxe": "ipxe", "xen-efi": "cfg"}


def san_boot(host: Host | None, profile: Profile | None) -> dict[str, str] | None:
    """What an iPXE script needs to reach ``host``'s root LUN (None: not a SAN host).

    The storage NIC is opened last, after the NIC iPXE booted from: iPXE describes the
    last opened NIC in the iBFT, and the installer and dom0 find the storage NIC there.
    """
    if host is None or host.san is None or profile is None or not profile.san_boot:
        return None
    paths = " ".join(ipxe_word(path) for path in host.san.root_paths)  # one token each
    san = {"nic": profile.storage_nic, "root_path": paths}
    san["initiator"] = host.initiator()
    if host.san.address is not None:
        interface = ipaddress.IPv4Interface(host.san.address)
        san |= {"ip": str(interface.ip), "netmask": str(interface.netmask)}
    if host.san.gateway is not None:
        san["gateway"] = host.san.gateway
    return san


def grub_http_device(http_base: str) -> str:
    """GRUB's device for our HTTP server: ``(http,ADDR:PORT)`` (GRUB 2.06 reads the port
    after a colon; a bare ``(http,ADDR)`` would ask port 80)."""
    match = _HTTP_BASE.fullmatch(http_base)
    if match is None:
        raise InputError(
            f"http_base {http_base!r} cannot be written in a GRUB config as an http device"
            " (expected http://ADDR[:PORT], ADDR an IPv4 address or a host name)"
        )
    return f"(http,{match['host']}:{match['port'] or 80})"


def boot_files(loader: str, settings: ServerSettings, via: Via = "tftp") -> str:
    """Where ``loader``'s install config takes xen.gz, vmlinuz and install.img from: the
    prefix written before their names ("" for the TFTP root the loader came from).

    pxelinux: HTTP URLs (``<http_base>/boot/``) when its config came over HTTP (iPXE is
    its PXE stack: iPXE's PXE file API opens URLs), else TFTP names. GRUB: its own http
    module (``(http,ADDR:PORT)/boot``) unless ``settings.boot_transport`` is "tftp"; a
    GRUB that came over HTTP (UEFI HTTP Boot) has no TFTP to fall back to: HTTP always.
    """
    if loader == "pxelinux" and via == "http":
        return f"{settings.http_base}/boot/"
    if loader == "grub" and (via == "http" or settings.boot_transport == "http"):
        return f"{grub_http_device(settings.http_base)}/boot"
    return ""


def _local(
    loader: str,
    host: Host | None,
    decision: Decision,
    settings: ServerSettings,
    profile: Profile | None = None,
) -> str:
    who = host.mac if host is not None else "a machine without a host record"
    return _render(
        f"{loader}-local.{_SUFFIX[loader]}.j2",
        who=who,
        reason=decision.reason,
        http_base=settings.http_base,
        san=san_boot(host, profile),
    )


def _config(
    loader: str,
    host: Host | None,
    profile: Profile | None,
    settings: ServerSettings,
    bootif: Callable[[str], str],
    *,
    via: Via = "tftp",
) -> str:
    return _decided(loader, host, profile, settings, bootif, via=via)[0]


def _decided(
    loader: str,
    host: Host | None,
    profile: Profile | None,
    settings: ServerSettings,
    bootif: Callable[[str], str],
    *,
    via: Via = "tftp",
) -> tuple[str, Decision]:
    """The config text and the decision it carries out (made here, once)."""
    if host is None:
        # Catch-all: always local (see the module docstring).
        decision = Decision(Action.LOCAL, "unknown machines are never wiped")
        return _local(loader, None, decision, settings), decision
    decision = explain(host, profile, settings)
    if decision.action is Action.LOCAL or profile is None:
        return _local(loader, host, decision, settings, profile), decision
    return _render(
        f"{loader}-install.{_SUFFIX[loader]}.j2",
        mac=host.mac,
        reason=decision.reason,
        http_base=settings.http_base,
        files=boot_files(loader, settings, via),
        xen_args=profile.xen_args.split(),
        dom0_args=installer_args(host, profile, settings, bootif(host.mac)),
        san=san_boot(host, profile),
    ), decision


def _bootif_dashes(mac: str) -> str:
    return f"01-{mac_dashes(mac)}"


def pxelinux_config(
    host: Host | None, profile: Profile | None, settings: ServerSettings, via: Via = "tftp"
) -> str:
    """``pxelinux.cfg/01-<mac>`` (``host`` None: ``pxelinux.cfg/default``, local boot).

    Install: ``mboot.c32`` with ``xen.gz --- vmlinuz ... --- install.img`` from the
    TFTP root, or (``via`` "http": pxelinux.0 came over HTTP through iPXE) from
    ``<http_base>/boot/``; ``ipappend 2`` kept. Local: ``localboot 0``.
    """
    return _config("pxelinux", host, profile, settings, _bootif_dashes, via=via)


def grub_config(
    host: Host | None, profile: Profile | None, settings: ServerSettings, via: Via = "tftp"
) -> str:
    """``grub/grub.cfg-01-<mac>`` (``host`` None: ``grub/grub.cfg``, local boot).

    Install: ``multiboot2 xen.gz`` and two ``module2`` from our HTTP server's ``/boot/``
    (``(http,ADDR:PORT)/boot``, ``boot_files``), or with ``boot_transport`` "tftp" from
    GRUB's root, the TFTP server it booted from; ``BOOTIF`` in GRUB's colon form; words GRUB would
    misread are single-quoted. ``install.img`` is loaded ``--nounzip``: the kernel
    unpacks its initrd itself, and GRUB cannot unpack every compression.
    ``vmlinuz`` after the path is the conventional first word of a module's command
    line (Xen leaves it to the installer, which ignores it). Local: chainload the
    disk's ``/EFI/BOOT/BOOTX64.EFI``, never ``exit`` (TESTING.md "Boot once").
    """
    return _config("grub", host, profile, settings, lambda mac: mac, via=via)


def ipxe_script(host: Host | None, profile: Profile | None, settings: ServerSettings) -> str:
    """``ipxe/<mac>``: one script for both firmwares, branching on iPXE's ``${platform}``.

    BIOS (``pcbios``): multiboot the uncompressed ``xen`` with ``vmlinuz`` and
    ``install.img`` over HTTP (install), or ``exit`` to the next boot device
    (local). UEFI (``efi``): iPXE EFI cannot multiboot, so it chains
    ``grubx64.efi`` over HTTP in both cases; GRUB then reads this host's GRUB
    config, which installs or chainloads the disk (an EFI ``exit`` may strand the
    firmware in its setup menu, as GRUB's does).

    A SAN host (``san_boot``): the install script first opens the storage NIC and
    ``sanhook``s the host's LUN, so the iBFT describes it for the installer; the
    local script ``sanboot``s the LUN (both firmwares) instead of the disk.
    """
    return _config("ipxe", host, profile, settings, _bootif_dashes)


def xen_efi_config(host: Host | None, profile: Profile | None, settings: ServerSettings) -> str:
    """``xen-efi/<mac>.cfg``: ``xen.cfg`` for Xen booted as an EFI application by iPXE EFI
    (a SAN host on UEFI: iPXE cannot multiboot), naming the kernel and initrd iPXE
    fetched beside it. Only the install script asks for it; local: a comment."""
    return _config("xen-efi", host, profile, settings, lambda mac: mac)


# --- answer files -------------------------------------------------------------------


def hash_name(name: str) -> str:
    """The name templates see password variable ``name`` under: ``<name>_hash``."""
    return name if name.endswith("_hash") else f"{name}_hash"


def answer_variables(host: Host, settings: ServerSettings, repo_url: str) -> dict[str, str]:
    """The variables a profile's answer-file template sees.

    Every host variable, then ``mac``, ``name`` (or ""), ``server`` (the HTTP
    base), ``repo_url``; a password variable (``root_password``) only as its SHA-512
    crypt hash, named ``<name>_hash`` (``root_password_hash``). The registry hashed it
    when it was given; a value that is no hash yet (a host made in memory) is hashed here.
    """
    given = dict(host.variables)
    reserved = sorted(set(given) & set(_ANSWER_VARIABLES))
    if reserved:
        raise InputError(
            f"host {host.mac}: the variable(s) {', '.join(reserved)} are set by the server;"
            " rename them"
        )
    variables = {k: v for k, v in given.items() if not is_password_variable(k)}
    variables |= {
        "mac": host.mac,
        "name": host.name or "",
        "server": settings.http_base,
        "repo_url": repo_url,
    }
    for name, value in given.items():
        if is_password_variable(name):
            variables[hash_name(name)] = passwords.password_hash(value)
    return variables


@functools.cache
def _sandbox() -> jinja2.sandbox.SandboxedEnvironment:
    return jinja2.sandbox.SandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=True,  # every value is XML text: a host variable cannot become an element
        keep_trailing_newline=True,
    )


def _bounded_render(template: jinja2.Template, variables: Mapping[str, str], what: str) -> str:
    """The template's output, streamed and stopped past ``limits.MAX_BYTES``."""
    parts: list[str] = []
    size = 0
    for part in template.generate(variables):
        size += len(part.encode("utf-8"))
        if size > limits.MAX_BYTES:
            raise InputError(
                f"{what}: the answer file it renders is larger than {limits.MAX_BYTES} bytes"
                " (1 MiB), the most an answer file may hold"
            )
        parts.append(part)
    return "".join(parts)


# Answer-file templates kept compiled: a profile's changes when its text does.
COMPILED_TEMPLATES = 256


@functools.lru_cache(maxsize=COMPILED_TEMPLATES)
def _compiled(template: str) -> jinja2.Template:
    """``template`` compiled in the sandbox, cached by its text (looked up by the text's
    hash): a profile's template is compiled once, not once per answer file."""
    return _sandbox().from_string(template)


def _compile(template: str, what: str) -> jinja2.Template:
    try:
        return _compiled(template)
    except jinja2.TemplateSyntaxError as error:
        raise InputError(
            f"{what}: the answer-file template has a syntax error"
            f" on line {error.lineno}: {error.message}"
        ) from error


def check_answer_template(profile: Profile) -> None:
    """InputError if ``profile``'s answer-file template does not compile."""
    _compile(profile.template, f"profile {profile.name}")


# The answer files of agent-driven work, next to default_profile.xml.j2: they replace
# the profile's template while the host's work is an upgrade or a restore.
WORK_TEMPLATES = {
    Work.UPGRADE: "upgrade_answerfile.xml.j2",
    Work.RESTORE: "restore_answerfile.xml.j2",
}


@functools.cache
def work_template(work: Work) -> str:
    """The built-in answer-file template of ``work`` (upgrade or restore)."""
    return resources.files("pxe_server").joinpath(WORK_TEMPLATES[work]).read_text("utf-8")


def answer_file(host: Host, profile: Profile, settings: ServerSettings, repo_url: str) -> str:
    """``host``'s answer file, validated with ``answerfile.parse``: ``profile``'s, or
    the built-in one while the host's work is an upgrade or a restore."""
    if host.work in WORK_TEMPLATES:
        work = Work(host.work)
        template, what = work_template(work), f"the built-in {work.value} answer file"
    else:
        template, what = profile.template, f"profile {profile.name}"
    variables = answer_variables(host, settings, repo_url)
    try:
        text = _bounded_render(_compile(template, what), variables, what)
    except jinja2.UndefinedError as error:
        raise InputError(_undefined(what, host, error, variables)) from error
    except jinja2.TemplateError as error:
        raise InputError(
            f"{what}: the answer-file template fails for {host.mac}: {error}"
        ) from error
    try:
        answerfile.parse(text)
    except AnswerFileError as error:
        header = f"{what}: the answer file it renders for {host.mac} is invalid:"
        raise InputError([header, *error.problems]) from error
    return text


def _undefined(
    what: str, host: Host, error: jinja2.UndefinedError, variables: Mapping[str, str]
) -> str:
    message = error.message or str(error)
    match = _UNDEFINED.match(message)
    if match is None:
        return f"{what}: the answer-file template for {host.mac}: {message}"
    name = match[1]
    hint = ""
    if is_password_variable(name) and not name.endswith("_hash"):
        hint = f" (templates get a password only as {hash_name(name)})"
    elif is_password_variable(name):
        hint = f" (set the host variable {name.removesuffix('_hash')})"
    return (
        f"{what}: the answer-file template uses the variable {name},"
        f" which is not defined for {host.mac}{hint}; defined: {', '.join(sorted(variables))}"
    )


# --- paths --------------------------------------------------------------------------

_PXELINUX_MAC = re.compile(r"pxelinux\.cfg/01-([0-9a-fA-F]{2}(?:-[0-9a-fA-F]{2}){5})")
# Dashes as GRUB asks over TFTP; colons as the HTTP chooser names it (${net_default_mac}).
_GRUB_MAC = re.compile(
    r"grub/grub\.cfg-01-([0-9a-fA-F]{2}(?:([:-])[0-9a-fA-F]{2}(?:\2[0-9a-fA-F]{2}){4}))"
)
_XEN_EFI_MAC = re.compile(r"xen-efi/([0-9a-fA-F]{2}(?:[:-][0-9a-fA-F]{2}){5})\.cfg")
_BOOTIF: dict[str, Callable[[str], str]] = {
    "pxelinux": _bootif_dashes,
    "grub": lambda mac: mac,
    "ipxe": _bootif_dashes,
    "xen-efi": lambda mac: mac,
}


@dataclass(frozen=True)
class BootConfig:
    """A rendered boot config, the known host it is for (None: catch-all) and what it does."""

    text: str
    mac: str | None
    action: Action


def config_for_path(
    path: str, lookup: Lookup, settings: ServerSettings, via: Via = "tftp"
) -> BootConfig | None:
    """A TFTP or HTTP path -> its config (the text, the MAC of the known host it is for or
    None, and the decision it carries out: the caller marks an install signalled).

    ``pxelinux.cfg/01-<mac>``, ``grub/grub.cfg-01-<mac>`` (any case) and
    ``ipxe/<mac>`` (colons or dashes) render the host's config; an unknown MAC
    gets the catch-all config with None, as do ``pxelinux.cfg/default`` and
    ``grub/grub.cfg``. Leading slashes are ignored. Any other path (hex-IP and
    UUID configs, boot files) gives None: not a config, look for a file. A path
    holding ``..`` anywhere raises InputError. ``via``: how the loader fetched it
    (``boot_files``: "http" for the configs HTTP serves under ``/boot/``).
    """
    if ".." in path:
        raise InputError(f"path {path!r} refused: it climbs out of the root with '..'")
    relative = path.lstrip("/")
    if relative == "pxelinux.cfg/default":
        return BootConfig(pxelinux_config(None, None, settings, via), None, Action.LOCAL)
    if relative == "grub/grub.cfg":
        text = grub_config(None, None, settings, via)
        if via == "http":  # UEFI HTTP Boot's GRUB: no per-MAC search of its own
            text = _render("grub-http-chooser.cfg.j2") + text
        return BootConfig(text, None, Action.LOCAL)
    loader, mac = _per_host(relative)
    if loader is None or mac is None:
        return None
    host, profile = lookup(mac)
    text, decision = _decided(loader, host, profile, settings, _BOOTIF[loader], via=via)
    return BootConfig(text, None if host is None else host.mac, decision.action)


def _per_host(relative: str) -> tuple[str | None, str | None]:
    for loader, pattern in (
        ("pxelinux", _PXELINUX_MAC),
        ("grub", _GRUB_MAC),
        ("xen-efi", _XEN_EFI_MAC),
    ):
        match = pattern.fullmatch(relative)
        if match:
            return loader, normalise_mac(match[1])
    if relative.startswith(IPXE_PREFIX):
        try:
            return "ipxe", normalise_mac(relative.removeprefix(IPXE_PREFIX))
        except InputError:
            return None, None
    return None, None
