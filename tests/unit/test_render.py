"""Boot configs, iPXE scripts and answer files (SPEC §3, §9): golden files and facts.

Every output is rendered for fixed hosts, profiles and settings and compared with
``tests/data/golden/*.txt``. After an intended change of a template, rewrite the
golden files with::

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/unit/test_render.py

and review the diff. The other tests check what the outputs mean, whatever their
layout: the pxelinux append line and the GRUB and iPXE module lines parse as the
installer will parse them (``answerfile.bootargs``), ``console=hvc0`` stays last,
local boot never wipes and never uses GRUB's ``exit``, answer files validate and
carry only a hash of the root password.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

import answerfile
from answerfile.bootargs import BootArgs, parse_cmdline, parse_multiboot
from answerfile.model import Mode, PasswordType
from common.errors import InputError
from common.firmware import Firmware
from pxe_server import render
from pxe_server.decide import (
    Action,
    ClientFacts,
    boot_file,
    decide,
    firmware_of,
    payload_version,
    repository_url,
)
from pxe_server.model import (
    BootChain,
    Host,
    Profile,
    ServerSettings,
    State,
    UnknownPolicy,
    Work,
)
from pxe_server.passwords import sha512_crypt

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

BASE = "http://192.168.77.1:8080"
SETTINGS = ServerSettings(http_base=BASE, tftp_address="192.168.77.1")
TFTP_ONLY = replace(SETTINGS, boot_transport="tftp")  # server run --boot-transport tftp
GRUB_FILES = "(http,192.168.77.1:8080)/boot"  # GRUB's http device for BASE, and /boot/
MAC = "52:54:00:ab:cd:ef"
TOKEN = "tok3n-Abc_123.x~y"
PASSWORD = "Secr3t-Pa55word"
SALT = "0123456789abcdef"
HASHED = sha512_crypt(PASSWORD, SALT)  # what the registry stores for root_password=PASSWORD
REPO = f"{BASE}/repo/"
ANSWERFILE_URL = f"{BASE}/answerfile/{MAC}"

TEMPLATE = """\
<?xml version="1.0" encoding="UTF-8"?>
<installation mode="fresh">
  <primary-disk>{{ disk }}</primary-disk>
  <keymap>us</keymap>
  <root-password type="hash">{{ root_password_hash }}</root-password>
  <source type="url">{{ repo_url }}</source>
  <admin-interface hwaddr="{{ mac }}" proto="dhcp"/>
  <hostname>{{ name }}</hostname>
  <timezone>{{ timezone }}</timezone>
</installation>
"""
PROFILE = Profile(name="lab", template=TEMPLATE)
IPXE_PROFILE = replace(PROFILE, name="fast", boot_chain=BootChain.IPXE)
HOST = Host(
    mac=MAC,
    name="xenhost01",
    profile="lab",
    variables=(("disk", "sda"), ("root_password", HASHED), ("timezone", "Europe/London")),
    token=TOKEN,
)
INSTALLED = replace(HOST, netboot_armed=False, state=State.INSTALLED, token=None)
IPXE_HOST = replace(HOST, profile="fast")

Renderer = Callable[[Host | None, Profile | None, ServerSettings], str]
RENDERERS: dict[str, Renderer] = {
    "pxelinux": render.pxelinux_config,
    "grub": render.grub_config,
    "ipxe": render.ipxe_script,
}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == path.read_text(), f"{name} differs from its golden file (UPDATE_GOLDEN=1)"


# --- golden files -------------------------------------------------------------------


@pytest.mark.parametrize("loader", sorted(RENDERERS))
def test_golden_install(loader: str) -> None:
    check_golden(f"{loader}-install.txt", RENDERERS[loader](HOST, PROFILE, SETTINGS))


@pytest.mark.parametrize("loader", sorted(RENDERERS))
def test_golden_local(loader: str) -> None:
    check_golden(f"{loader}-local.txt", RENDERERS[loader](INSTALLED, PROFILE, SETTINGS))


@pytest.mark.parametrize("loader", ["pxelinux", "grub"])
def test_golden_default(loader: str) -> None:
    check_golden(f"{loader}-default.txt", RENDERERS[loader](None, None, SETTINGS))


def test_golden_answer_file() -> None:
    check_golden("answerfile.txt", render.answer_file(HOST, PROFILE, SETTINGS, REPO))


# --- what the install configs mean --------------------------------------------------


def only_line(text: str, start: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith(start)]
    assert len(lines) == 1, f"expected one line starting with {start!r}: {lines}"
    return lines[0]


def check_installer_args(args: BootArgs, bootif: str = MAC) -> None:
    assert args.answerfile == ANSWERFILE_URL
    assert args.install
    assert args.server == BASE
    assert args.token == TOKEN
    assert args.bootif == bootif
    assert args.consoles[-1] == "hvc0"  # the last console owns /dev/console
    assert "net.ifnames=0" in args.extra


def test_pxelinux_install_is_the_seed_mboot_entry() -> None:
    text = render.pxelinux_config(HOST, PROFILE, SETTINGS)
    assert only_line(text, "default") == "default netinstall"
    assert only_line(text, "kernel") == "kernel mboot.c32"
    assert only_line(text, "ipappend") == "ipappend 2"
    line = parse_multiboot(only_line(text, "append").removeprefix("append "))
    assert line.xen_image == "xen.gz"
    assert line.xen_args == tuple(PROFILE.xen_args.split())
    assert line.kernel == "vmlinuz"
    assert [m.path for m in line.modules] == ["install.img"]
    check_installer_args(line.args)


def grub_words(line: str) -> list[str]:
    """A GRUB command line as GRUB splits it (single quotes are literal, as in sh)."""
    return shlex.split(line)


def test_grub_install_is_multiboot2_with_two_modules() -> None:
    text = render.grub_config(HOST, PROFILE, SETTINGS)
    assert only_line(text, "set timeout") == "set timeout=0"
    assert only_line(text, "serial") == "serial --unit=0 --speed=115200"
    multiboot = grub_words(only_line(text, "multiboot2"))
    assert multiboot == ["multiboot2", f"{GRUB_FILES}/xen.gz", *PROFILE.xen_args.split()]
    modules = [grub_words(line) for line in text.splitlines() if line.strip().startswith("module2")]
    assert len(modules) == 2
    kernel, initrd = modules
    assert kernel[:3] == ["module2", f"{GRUB_FILES}/vmlinuz", "vmlinuz"]
    args = parse_cmdline(" ".join(kernel[3:]))
    check_installer_args(args)  # BOOTIF in GRUB's colon form
    assert initrd == ["module2", "--nounzip", f"{GRUB_FILES}/install.img"]
    assert f"answerfile={ANSWERFILE_URL}" in text


# --- boot transport: big files over HTTP where the loader can, TFTP where it cannot ------


def test_golden_transports() -> None:
    check_golden("grub-install-tftp.txt", render.grub_config(HOST, PROFILE, TFTP_ONLY))
    http = render.pxelinux_config(HOST, PROFILE, SETTINGS, via="http")
    check_golden("pxelinux-install-http.txt", http)


def test_grub_with_tftp_transport_loads_from_its_tftp_root() -> None:
    text = render.grub_config(HOST, PROFILE, TFTP_ONLY)
    assert grub_words(only_line(text, "multiboot2"))[1] == "/xen.gz"
    modules = [grub_words(line) for line in text.splitlines() if line.strip().startswith("module2")]
    assert [modules[0][1], modules[1][2]] == ["/vmlinuz", "/install.img"]
    assert "(http," not in text
    # A GRUB that came over HTTP (UEFI HTTP Boot) has no TFTP server: HTTP whatever the setting.
    over_http = render.grub_config(HOST, PROFILE, TFTP_ONLY, via="http")
    assert grub_words(only_line(over_http, "multiboot2"))[1] == f"{GRUB_FILES}/xen.gz"


def test_pxelinux_fetched_over_http_loads_by_url_and_over_tftp_by_name() -> None:
    over_http = render.pxelinux_config(HOST, PROFILE, SETTINGS, via="http")
    line = parse_multiboot(only_line(over_http, "append").removeprefix("append "))
    assert line.xen_image == f"{BASE}/boot/xen.gz"
    assert line.kernel == f"{BASE}/boot/vmlinuz"
    assert [m.path for m in line.modules] == [f"{BASE}/boot/install.img"]
    check_installer_args(line.args)
    assert only_line(over_http, "kernel") == "kernel mboot.c32"  # beside pxelinux.0, by HTTP
    # Over TFTP (a plain PXE ROM, or no iPXE): TFTP names, whatever the server's transport.
    for settings in (SETTINGS, TFTP_ONLY):
        text = render.pxelinux_config(HOST, PROFILE, settings)
        assert "http://" not in only_line(text, "append").split(" --- ")[0]
        assert (
            parse_multiboot(only_line(text, "append").removeprefix("append ")).kernel == "vmlinuz"
        )


def test_config_for_path_renders_by_the_transport_it_came_by() -> None:
    def lookup(mac: str) -> tuple[Host | None, Profile | None]:
        return (HOST, PROFILE) if mac == MAC else (None, None)

    path = f"pxelinux.cfg/01-{MAC.replace(':', '-')}"
    by_tftp = render.config_for_path(path, lookup, SETTINGS)
    by_http = render.config_for_path(path, lookup, SETTINGS, via="http")
    assert by_tftp is not None
    assert by_http is not None
    assert f"{BASE}/boot/install.img" in by_http.text
    assert f"{BASE}/boot/" not in by_tftp.text
    assert by_http.action is by_tftp.action is Action.INSTALL


def test_http_boot_grub_cfg_names_the_per_mac_config() -> None:
    def lookup(mac: str) -> tuple[Host | None, Profile | None]:
        return (HOST, PROFILE) if mac == MAC else (None, None)

    chooser = render.config_for_path("grub/grub.cfg", lookup, SETTINGS, via="http")
    assert chooser is not None
    assert chooser.text.startswith("# netinstall: the grub.cfg of a GRUB that came over HTTP")
    assert "configfile ${prefix}/grub.cfg-01-${net_default_mac}\n" in chooser.text
    assert chooser.text.endswith(render.grub_config(None, None, SETTINGS))  # then: local
    over_tftp = render.config_for_path("grub/grub.cfg", lookup, SETTINGS)
    assert over_tftp is not None
    assert "configfile" not in over_tftp.text  # GRUB over TFTP searches per MAC itself
    by_colons = render.config_for_path(f"grub/grub.cfg-01-{MAC}", lookup, SETTINGS, via="http")
    assert by_colons is not None
    assert by_colons.mac == MAC
    assert by_colons.action is Action.INSTALL
    mixed = "grub/grub.cfg-01-52:54-00:ab:cd:ef"
    assert render.config_for_path(mixed, lookup, SETTINGS, via="http") is None


@pytest.mark.parametrize(
    ("base", "device"),
    [
        ("http://192.168.77.1:8080", "(http,192.168.77.1:8080)"),
        ("http://netinstall.example", "(http,netinstall.example:80)"),
        ("http://10.0.0.1:81/", "(http,10.0.0.1:81)"),
    ],
)
def test_grub_http_device(base: str, device: str) -> None:
    assert render.grub_http_device(base) == device


@pytest.mark.parametrize(
    "base",
    ["https://10.0.0.1", "http://10.0.0.1:8080 rescue=1", "http://a)b", "http://[fd77::1]:80"],
)
def test_grub_http_device_refuses_what_grub_would_misread(base: str) -> None:
    with pytest.raises(InputError, match="cannot be written in a GRUB config"):
        render.grub_http_device(base)


def test_grub_quotes_what_it_would_misread() -> None:
    profile = replace(PROFILE, kernel_args="a=x;y b=p&q c=x{1} d=$v e=x*y console=hvc0")
    text = render.grub_config(HOST, profile, SETTINGS)
    kernel = grub_words(only_line(text, f"module2 {GRUB_FILES}/vmlinuz"))
    assert kernel[3:8] == ["a=x;y", "b=p&q", "c=x{1}", "d=$v", "e=x*y"]
    assert "'a=x;y' 'b=p&q' 'c=x{1}' 'd=$v' 'e=x*y'" in text
    assert parse_cmdline(" ".join(kernel[3:])).consoles == ("hvc0",)


def test_ipxe_install_branches_on_platform() -> None:
    text = render.ipxe_script(IPXE_HOST, IPXE_PROFILE, SETTINGS)
    assert text.startswith("#!ipxe\n")
    assert "iseq ${platform} efi && goto uefi ||" in text
    bios, uefi = text.split("\n:uefi\n")
    kernel = only_line(bios, "kernel").split()
    assert kernel == ["kernel", f"{BASE}/boot/xen", *IPXE_PROFILE.xen_args.split()]
    vmlinuz, initrd = (line.split() for line in bios.splitlines() if line.startswith("module"))
    assert vmlinuz[1] == f"{BASE}/boot/vmlinuz"
    check_installer_args(parse_cmdline(" ".join(vmlinuz[2:])))
    assert initrd == ["module", f"{BASE}/boot/install.img"]
    assert bios.rstrip().endswith("\nboot")
    assert only_line(uefi, "chain") == f"chain {BASE}/boot/grubx64.efi"


def test_profile_consoles_are_kept_as_given() -> None:
    # The operator's choice: another console last is rendered as written.
    profile = replace(PROFILE, kernel_args="console=hvc0 console=ttyS0")
    text = render.pxelinux_config(HOST, profile, SETTINGS)
    line = parse_multiboot(only_line(text, "append").removeprefix("append "))
    assert line.args.consoles == ("hvc0", "ttyS0")


# --- local boot ---------------------------------------------------------------------

LOCAL_CASES = {
    "installed": (INSTALLED, PROFILE),
    "failed": (replace(HOST, netboot_armed=False, state=State.FAILED), PROFILE),
    "armed without a token": (replace(HOST, token=None), PROFILE),
    "profile missing": (HOST, None),
    "another profile": (HOST, IPXE_PROFILE),
    "unknown": (None, None),
}


@pytest.mark.parametrize("case", sorted(LOCAL_CASES))
def test_local_configs_never_install(case: str) -> None:
    host, profile = LOCAL_CASES[case]
    pxelinux = render.pxelinux_config(host, profile, SETTINGS)
    assert only_line(pxelinux, "localboot") == "localboot 0"
    assert only_line(pxelinux, "default") == "default local"
    grub = render.grub_config(host, profile, SETTINGS)
    lines = [line.strip() for line in grub.splitlines()]
    assert "chainloader /EFI/BOOT/BOOTX64.EFI" in lines
    assert "search --no-floppy --file --set=root /EFI/BOOT/BOOTX64.EFI" in lines
    assert lines[-1] == "boot"
    assert not any(line.startswith("exit") for line in lines)  # exit strands OVMF
    ipxe = render.ipxe_script(host, profile, SETTINGS)
    bios = ipxe.split("\n:uefi\n")[0]
    assert only_line(bios, "exit") == "exit"
    for text in (pxelinux, grub, ipxe):
        assert "install.img" not in text
        assert TOKEN not in text
        assert "answerfile=" not in text


def test_catch_all_is_local_even_when_unknown_machines_install() -> None:
    settings = replace(SETTINGS, unknown_policy=UnknownPolicy.INSTALL)
    assert "localboot 0" in render.pxelinux_config(None, None, settings)
    assert "chainloader" in render.grub_config(None, None, settings)


# --- answer files -------------------------------------------------------------------


def test_answer_file_validates_and_hashes_the_password() -> None:
    text = render.answer_file(HOST, PROFILE, SETTINGS, REPO)
    model = answerfile.parse(text).model
    assert PASSWORD not in text
    assert model.root_password is not None
    assert model.root_password.type is PasswordType.HASH
    assert model.root_password.value == sha512_crypt(PASSWORD, SALT)
    assert model.admin_interface is not None
    assert model.admin_interface.hwaddr == MAC
    assert model.hostname == "xenhost01"
    assert model.timezone == "Europe/London"
    assert [s.location for s in model.sources] == [REPO]


def test_the_stored_hash_is_used_as_it_is() -> None:
    first = render.answer_file(HOST, PROFILE, SETTINGS, REPO)
    assert first == render.answer_file(HOST, PROFILE, SETTINGS, REPO)  # no hashing per request
    assert f'<root-password type="hash">{HASHED}</root-password>' in first


def test_a_plaintext_password_of_a_host_made_in_memory_is_hashed_with_a_random_salt() -> None:
    plain = replace(HOST, variables=(("disk", "sda"), ("root_password", PASSWORD)))
    template = PROFILE.template.replace("{{ timezone }}", "UTC")
    first = render.answer_file(plain, replace(PROFILE, template=template), SETTINGS, REPO)
    second = render.answer_file(plain, replace(PROFILE, template=template), SETTINGS, REPO)
    assert '<root-password type="hash">$6$' in first
    assert first != second
    assert PASSWORD not in first


def test_every_password_variable_reaches_templates_only_as_its_hash() -> None:
    host = replace(HOST, variables=(*HOST.variables, ("bmc_password", HASHED)))
    variables = render.answer_variables(host, SETTINGS, REPO)
    assert "bmc_password" not in variables
    assert variables["bmc_password_hash"] == HASHED
    message = answer_error(host, TEMPLATE.replace("{{ disk }}", "{{ bmc_password }}"))
    assert "only as bmc_password_hash" in message


def test_answer_variables_drop_the_plaintext() -> None:
    variables = render.answer_variables(HOST, SETTINGS, REPO)
    assert "root_password" not in variables
    assert variables["root_password_hash"] == HASHED
    assert variables["server"] == BASE
    assert variables["name"] == "xenhost01"
    assert render.answer_variables(replace(HOST, name=None), SETTINGS, REPO)["name"] == ""


def answer_error(host: Host, template: str) -> str:
    with pytest.raises(InputError) as caught:
        render.answer_file(host, replace(PROFILE, template=template), SETTINGS, REPO)
    return str(caught.value)


def test_undefined_variable_names_profile_and_variable() -> None:
    message = answer_error(HOST, TEMPLATE.replace("{{ disk }}", "{{ disc }}"))
    assert message.startswith("profile lab: the answer-file template uses the variable disc,")
    assert MAC in message
    assert "defined: disk, mac, name" in message


def test_the_plaintext_password_is_not_a_template_variable() -> None:
    message = answer_error(
        HOST, TEMPLATE.replace("{{ root_password_hash }}", "{{ root_password }}")
    )
    assert "variable root_password," in message
    assert "only as root_password_hash" in message
    assert PASSWORD not in message


def test_hash_undefined_without_a_password_variable() -> None:
    host = replace(HOST, variables=(("disk", "sda"), ("timezone", "UTC")))
    assert "set the host variable root_password" in answer_error(host, TEMPLATE)


def test_syntax_error_names_profile_and_line() -> None:
    message = answer_error(HOST, TEMPLATE.replace("{{ disk }}", "{{ disk "))
    assert message.startswith("profile lab: the answer-file template has a syntax error on line 3")
    with pytest.raises(InputError, match="profile lab"):
        render.check_answer_template(replace(PROFILE, template="{% if %}"))
    render.check_answer_template(PROFILE)


def test_invalid_answer_file_lists_the_validators_problems() -> None:
    host = replace(HOST, variables=(*HOST.variables[:2], ("timezone", "Mars/Olympus")))
    with pytest.raises(InputError) as caught:
        render.answer_file(host, PROFILE, SETTINGS, REPO)
    problems = caught.value.problems
    header = f"profile lab: the answer file it renders for {MAC} is invalid:"
    assert str(caught.value).startswith(header)
    assert problems[0] == header
    assert len(problems) > 1
    assert any("Mars/Olympus" in p for p in problems[1:])


def test_unescaped_ampersand_is_caught_by_validation() -> None:
    host = replace(HOST, name="a&b")
    assert "is invalid:" in answer_error(host, TEMPLATE)
    text = render.answer_file(
        replace(HOST, variables=(*HOST.variables, ("note", "a&b"))),
        replace(
            PROFILE,
            template=TEMPLATE.replace("</installation>", "<!-- {{ note|e }} -->\n</installation>"),
        ),
        SETTINGS,
        REPO,
    )
    assert "a&amp;b" in text


def test_template_runs_in_a_sandbox() -> None:
    message = answer_error(HOST, TEMPLATE.replace("{{ disk }}", "{{ disk.__class__.__mro__ }}"))
    assert message.startswith("profile lab: the answer-file template fails for")


def test_host_variable_may_not_shadow_ours() -> None:
    host = replace(HOST, variables=(*HOST.variables, ("mac", "x")))
    with pytest.raises(InputError, match="mac are set by the server"):
        render.answer_file(host, PROFILE, SETTINGS, REPO)


def test_the_servers_default_profile_renders() -> None:
    path = Path(render.__file__).parent / "default_profile.xml.j2"
    if not path.exists():
        pytest.skip("pxe_server/default_profile.xml.j2 (the registry's) is not there")
    profile = Profile(name="default", template=path.read_text())
    text = render.answer_file(replace(HOST, profile="default"), profile, SETTINGS, REPO)
    assert answerfile.parse(text).model.root_password is not None
    assert PASSWORD not in text


# --- answer files of agent work (upgrade, restore) ---------------------------------

UPGRADE_ANSWER = """\
<?xml version="1.0" encoding="UTF-8"?>
<installation mode="upgrade">
  <existing-installation>nvme0n1</existing-installation>
  <source type="url">http://192.168.77.1:8080/repo/0.2.0/</source>
</installation>
"""
RESTORE_ANSWER = """\
<?xml version="1.0" encoding="UTF-8"?>
<restore>
  <backup-disk>nvme0n1</backup-disk>
</restore>
"""


@pytest.mark.parametrize(
    ("work", "expected"), [(Work.UPGRADE, UPGRADE_ANSWER), (Work.RESTORE, RESTORE_ANSWER)]
)
def test_agent_work_renders_the_built_in_answer_file(work: Work, expected: str) -> None:
    host = replace(HOST, work=work, variables=(("disk", "nvme0n1"),))
    text = render.answer_file(host, PROFILE, SETTINGS, f"{BASE}/repo/0.2.0/")
    assert text == expected  # the profile's template is not used
    model = answerfile.parse(text).model
    if work is Work.UPGRADE:
        assert model.mode is Mode.UPGRADE
        assert model.existing_installation.spec == "nvme0n1"
        assert [s.location for s in model.sources] == [f"{BASE}/repo/0.2.0/"]
    else:
        assert model.mode is Mode.RESTORE
        assert model.backup_disk.spec == "nvme0n1"


def test_agent_work_defaults_to_sda_and_escapes_the_disk() -> None:
    host = replace(HOST, work=Work.UPGRADE, variables=())
    text = render.answer_file(host, PROFILE, SETTINGS, REPO)
    assert "<existing-installation>sda</existing-installation>" in text
    bad = replace(host, variables=(("disk", "sda</existing-installation><x>"),))
    with pytest.raises(InputError, match="the built-in upgrade answer file: the answer file it"):
        render.answer_file(bad, PROFILE, SETTINGS, REPO)


def test_install_work_uses_the_profile() -> None:
    host = replace(HOST, work=Work.INSTALL)
    assert render.answer_file(host, PROFILE, SETTINGS, REPO) == render.answer_file(
        HOST, PROFILE, SETTINGS, REPO
    )


# --- which repository -------------------------------------------------------------


def test_payload_version_assigned_then_profile_then_default() -> None:
    pinned = replace(PROFILE, payload_version="0.3.0")
    assert payload_version(replace(HOST, assigned_version="0.2.0"), pinned, "0.1.0") == "0.2.0"
    assert payload_version(HOST, pinned, "0.1.0") == "0.3.0"
    assert payload_version(HOST, PROFILE, "0.1.0") == "0.1.0"
    assert payload_version(HOST, None, None) is None


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("0.2.0", f"{BASE}/repo/0.2.0/"),  # registered: its own path
        ("0.1.0", f"{BASE}/repo/0.1.0/"),
        (None, "DEFAULT"),  # nothing known: the default repository
    ],
)
def test_repository_url_per_version(version: str | None, expected: str) -> None:
    url = repository_url(version, ["0.1.0", "0.2.0"], "0.1.0", BASE, "DEFAULT")
    assert url == expected


def test_repository_url_of_the_unregistered_default_is_the_default() -> None:
    # A registry from before versions, or a repository given as a URL.
    assert repository_url("0.1.0", [], "0.1.0", BASE, "http://mirror/repo/") == (
        "http://mirror/repo/"
    )


def test_repository_url_refuses_an_unregistered_version() -> None:
    with pytest.raises(InputError, match=r"payload version 0\.9\.0 is not registered"):
        repository_url("0.9.0", ["0.1.0"], "0.1.0", BASE, "DEFAULT")


# --- profile arguments --------------------------------------------------------------


@pytest.mark.parametrize(
    ("xen_args", "kernel_args", "expected"),
    [
        ("", "console=hvc0 ---", "is mboot.c32's module separator"),
        ("", 'a="x y"', "cannot be passed through"),
        ("x=${net0/mac}", "", "cannot be passed through"),
        ("#comment", "", "cannot be passed through"),
        ("", "a=\\x", "cannot be passed through"),
        ("", "answerfile=http://x/a.xml", "written by the server itself"),
        ("", "install", "written by the server itself"),
        ("", "BOOTIF=01-aa-bb-cc-dd-ee-ff", "written by the server itself"),
        ("\x00", "", "not printable ASCII"),
    ],
)
def test_profile_args_that_a_loader_would_misread(
    xen_args: str, kernel_args: str, expected: str
) -> None:
    profile = replace(PROFILE, xen_args=xen_args, kernel_args=kernel_args)
    with pytest.raises(InputError, match=expected):
        render.check_profile_args(profile)
    with pytest.raises(InputError, match=expected):
        render.pxelinux_config(HOST, profile, SETTINGS)


def test_newlines_in_profile_args_cannot_inject_config_lines() -> None:
    profile = replace(PROFILE, kernel_args="console=hvc0\nlabel evil\n  kernel evil.c32")
    text = render.pxelinux_config(HOST, profile, SETTINGS)
    assert only_line(text, "label") == "label netinstall"
    render.check_profile_args(PROFILE)  # the defaults pass


# --- paths --------------------------------------------------------------------------


class Registry:
    """A lookup over a dict, remembering what was asked."""

    def __init__(self, *hosts: tuple[Host, Profile]) -> None:
        self.hosts = {host.mac: (host, profile) for host, profile in hosts}
        self.asked: list[str] = []

    def __call__(self, mac: str) -> tuple[Host | None, Profile | None]:
        self.asked.append(mac)
        return self.hosts.get(mac, (None, None))


@pytest.mark.parametrize(
    ("path", "loader"),
    [
        ("pxelinux.cfg/01-52-54-00-ab-cd-ef", "pxelinux"),
        ("/pxelinux.cfg/01-52-54-00-ab-cd-ef", "pxelinux"),
        ("pxelinux.cfg/01-52-54-00-AB-CD-EF", "pxelinux"),
        ("grub/grub.cfg-01-52-54-00-ab-cd-ef", "grub"),
        ("/grub/grub.cfg-01-52-54-00-ab-cd-ef", "grub"),
        ("ipxe/52:54:00:ab:cd:ef", "ipxe"),
        ("/ipxe/52-54-00-AB-CD-EF", "ipxe"),
    ],
)
def test_config_for_path_per_host(path: str, loader: str) -> None:
    lookup = Registry((HOST, PROFILE))
    assert render.config_for_path(path, lookup, SETTINGS) == render.BootConfig(
        RENDERERS[loader](HOST, PROFILE, SETTINGS), MAC, Action.INSTALL
    )
    assert lookup.asked == [MAC]  # the host looked up once, the decision made once


@pytest.mark.parametrize(
    ("path", "loader"),
    [
        ("pxelinux.cfg/default", "pxelinux"),
        ("/pxelinux.cfg/default", "pxelinux"),
        ("grub/grub.cfg", "grub"),
        ("/grub/grub.cfg", "grub"),
        ("pxelinux.cfg/01-aa-bb-cc-dd-ee-ff", "pxelinux"),  # unknown MAC: the catch-all
        ("grub/grub.cfg-01-aa-bb-cc-dd-ee-ff", "grub"),
        ("ipxe/aa:bb:cc:dd:ee:ff", "ipxe"),
    ],
)
def test_config_for_path_catch_all(path: str, loader: str) -> None:
    result = render.config_for_path(path, Registry((HOST, PROFILE)), SETTINGS)
    assert result == render.BootConfig(RENDERERS[loader](None, None, SETTINGS), None, Action.LOCAL)


@pytest.mark.parametrize(
    "path",
    [
        "pxelinux.cfg/C0A84D0A",  # hex IP: pxelinux walks these down to default
        "pxelinux.cfg/C0A8",
        "pxelinux.cfg/564d1234-5678-90ab-cdef-1234567890ab",
        "pxelinux.cfg/02-52-54-00-ab-cd-ef",  # not Ethernet
        "grub/grub.cfg-C0A84D0A",
        "grub/x86_64-efi/command.lst",
        "pxelinux.0",
        "grubx64.efi",
        "ipxe/not-a-mac",
        "ipxe/",
        "answerfile/52:54:00:ab:cd:ef",
        "",
    ],
)
def test_config_for_path_not_a_config(path: str) -> None:
    lookup = Registry((HOST, PROFILE))
    assert render.config_for_path(path, lookup, SETTINGS) is None
    assert lookup.asked == []


@pytest.mark.parametrize(
    "path",
    ["../etc/passwd", "/pxelinux.cfg/../../etc/shadow", "grub/..", "ipxe/..\\x", "a..b"],
)
def test_config_for_path_refuses_dot_dot(path: str) -> None:
    lookup = Registry((HOST, PROFILE))
    with pytest.raises(InputError, match=r"refused"):
        render.config_for_path(path, lookup, SETTINGS)
    assert lookup.asked == []


def test_config_for_path_of_an_installed_host_is_local() -> None:
    result = render.config_for_path(
        "grub/grub.cfg-01-52-54-00-ab-cd-ef", Registry((INSTALLED, PROFILE)), SETTINGS
    )
    assert result is not None
    assert "chainloader /EFI/BOOT/BOOTX64.EFI" in result.text
    assert (result.mac, result.action) == (MAC, Action.LOCAL)


# --- decide -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "firmware"),
    [(None, Firmware.BIOS), (0, Firmware.BIOS), (7, Firmware.UEFI), (9, Firmware.UEFI)],
)
def test_firmware_of(arch: int | None, firmware: Firmware) -> None:
    assert firmware_of(arch) is firmware


@pytest.mark.parametrize("arch", [6, 10, 11, 16])
def test_firmware_of_unsupported(arch: int) -> None:
    with pytest.raises(InputError, match=f"client-arch {arch} is not supported"):
        firmware_of(arch)


def test_decide() -> None:
    install = replace(SETTINGS, unknown_policy=UnknownPolicy.INSTALL)
    assert decide(None, None, SETTINGS) is Action.LOCAL
    assert decide(None, None, install) is Action.INSTALL
    assert decide(HOST, PROFILE, SETTINGS) is Action.INSTALL
    assert decide(HOST, PROFILE, install) is Action.INSTALL
    for host, profile in LOCAL_CASES.values():
        if host is not None:
            assert decide(host, profile, install) is Action.LOCAL


@pytest.mark.parametrize(
    ("arch", "ipxe", "profile", "expected"),
    [
        (0, False, PROFILE, "pxelinux.0"),
        (0, True, PROFILE, "pxelinux.0"),  # the iPXE NIC ROM still gets the seed's chain
        (7, False, PROFILE, "grubx64.efi"),
        (9, True, PROFILE, "grubx64.efi"),
        (0, True, IPXE_PROFILE, f"ipxe/{MAC}"),  # the host's profile chose the iPXE chain
        (7, True, IPXE_PROFILE, f"ipxe/{MAC}"),
        (0, False, IPXE_PROFILE, "pxelinux.0"),  # not iPXE yet: pxelinux (or chain iPXE)
        (7, False, IPXE_PROFILE, "grubx64.efi"),
    ],
)
def test_boot_file(arch: int, ipxe: bool, profile: Profile, expected: str) -> None:
    assert boot_file(ClientFacts(MAC, arch, ipxe), HOST, profile) == expected


def test_boot_file_unknown_machine_and_bad_arch() -> None:
    assert boot_file(ClientFacts(MAC, 7, ipxe=True), None, None) == "grubx64.efi"
    with pytest.raises(InputError, match="client-arch 2"):
        boot_file(ClientFacts(MAC, 2, ipxe=False), HOST, PROFILE)
