"""The installer boot command line (SPEC §3, §4): tokenizer, parse, errors, render round trip."""

from __future__ import annotations

import ipaddress
import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from answerfile.bootargs import (
    AnswerfileDevice,
    AtExit,
    BootArgs,
    DeviceKind,
    MultibootCmdline,
    MultibootModule,
    NetworkConfig,
    NetworkMode,
    Param,
    parse_cmdline,
    parse_multiboot,
    redact_url,
    render_param,
    tokenize,
)
from common.errors import BootArgsError, InputError

SEED_LINE = (
    "xen.gz dom0_max_vcpus=1-2 dom0_mem=2048M,max:2048M com1=115200,8n1 console=com1,vga"
    " --- vmlinuz xencons=hvc console=tty0 console=hvc0 net.ifnames=0"
    " answerfile=http://192.168.77.1:8080/answerfile/52-54-00-12-34-56?token=abc install"
    " netinstall.server=http://192.168.77.1:8080 netinstall.token=abc --- install.img"
)
MAC = "52:54:00:12:34:56"


def problems_of(text: str) -> tuple[str, ...]:
    with pytest.raises(BootArgsError) as caught:
        parse_cmdline(text)
    return caught.value.problems


# --- tokenizer ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('param="a b"', [Param("param", "a b", 'param="a b"')]),
        ('"param=a b"', [Param("param", "a b", '"param=a b"')]),
        ('"flag with space"', [Param("flag with space", None, '"flag with space"')]),
        ("  a=1\tb \n", [Param("a", "1", "a=1"), Param("b", None, "b")]),
        ("k= x==y", [Param("k", "", "k="), Param("x", "=y", "x==y")]),
        ('a"b c"d', [Param('a"b c"d', None, 'a"b c"d')]),  # a quote mid-word is kept
        ('k=a"b c"', [Param("k", 'a"b c"', 'k=a"b c"')]),  # only a leading quote is stripped
        ('k="unterminated x', [Param("k", "unterminated x", 'k="unterminated x')]),
        ("=x", [Param("=x", None, "=x")]),  # the kernel ignores an "=" in first place
        ("", []),
    ],
)
def test_tokenize_like_the_kernel(text: str, expected: list[Param]) -> None:
    assert list(tokenize(text)) == expected


def test_render_param_quotes_whitespace() -> None:
    assert render_param("param", "a b") == 'param="a b"'
    assert render_param("param", "ab") == "param=ab"
    assert render_param("flag", None) == "flag"
    assert render_param("empty", "") == "empty="


def test_quoted_unknown_parameter_is_kept_and_rendered_back() -> None:
    args = parse_cmdline('param="a b" install')
    assert args.extra == ('param="a b"',)
    assert args.render() == 'install param="a b"'
    assert parse_cmdline(args.render()) == args


def test_quoted_password_round_trips() -> None:
    args = parse_cmdline('sshpassword="two words"')
    assert args.sshpassword == "two words"
    assert 'sshpassword="two words"' in args.render()
    assert parse_cmdline(args.render()) == args


# --- the seed's line --------------------------------------------------------------------


def test_seed_append_line() -> None:
    line = parse_multiboot(SEED_LINE)
    assert line.xen_image == "xen.gz"
    assert line.xen_args == (
        "dom0_max_vcpus=1-2",
        "dom0_mem=2048M,max:2048M",
        "com1=115200,8n1",
        "console=com1,vga",
    )
    assert line.kernel == "vmlinuz"
    assert line.modules == (MultibootModule("install.img"),)
    args = line.args
    assert args.answerfile == "http://192.168.77.1:8080/answerfile/52-54-00-12-34-56?token=abc"
    assert args.install
    assert args.server == "http://192.168.77.1:8080"
    assert args.token == "abc"
    assert args.consoles == ("tty0", "hvc0")  # Xen's console=com1,vga is not dom0's
    assert args.extra == ("xencons=hvc", "net.ifnames=0")
    assert args.answerfile_device == AnswerfileDevice(DeviceKind.ALL, "all", explicit=False)
    assert args.network_config == NetworkConfig()
    assert args.atexit is AtExit.REBOOT
    assert (args.use_ibft, args.device_mapper_multipath, args.disable_gpt) == (False,) * 3
    assert parse_multiboot(line.render()) == line


def test_seed_line_with_ipappend_keeps_bootif_on_the_last_module() -> None:
    # mboot.c32 joins its argv, so pxelinux's ipappend lands after the last module.
    line = parse_multiboot(SEED_LINE + " BOOTIF=01-52-54-00-12-34-56")
    assert line.modules == (MultibootModule("install.img", ("BOOTIF=01-52-54-00-12-34-56",)),)
    assert line.args.bootif is None
    assert parse_multiboot(line.render()) == line


def test_dom0_part_of_seed_line_round_trips_as_proc_cmdline() -> None:
    dom0 = SEED_LINE.split(" --- ")[1].removeprefix("vmlinuz ") + "\n"
    args = parse_cmdline(dom0)
    assert args == parse_multiboot(SEED_LINE).args
    assert parse_cmdline(args.render()) == args


def test_multiboot_with_several_modules_and_module_args() -> None:
    line = parse_multiboot("xen.gz --- vmlinuz --- install.img a=1 b --- extra.img")
    assert line.xen_args == ()
    assert line.args == BootArgs()
    assert line.modules == (
        MultibootModule("install.img", ("a=1", "b")),
        MultibootModule("extra.img"),
    )
    assert line.render() == "xen.gz --- vmlinuz --- install.img a=1 b --- extra.img"


# --- parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize("bootif", [f"01-{MAC.replace(':', '-')}", MAC, MAC.upper()])
def test_bootif_forms_and_default_device(bootif: str) -> None:
    args = parse_cmdline(f"BOOTIF={bootif}")
    assert args.bootif == MAC
    assert args.answerfile_device == AnswerfileDevice(DeviceKind.MAC, MAC, explicit=False)
    assert "answerfile_device" not in args.render()  # a defaulted value is not rendered
    assert parse_cmdline(args.render()) == args


def test_device_defaults_to_all_without_bootif() -> None:
    assert parse_cmdline("").answerfile_device == AnswerfileDevice(
        DeviceKind.ALL, "all", explicit=False
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("eth0", AnswerfileDevice(DeviceKind.INTERFACE, "eth0")),
        ("eth12", AnswerfileDevice(DeviceKind.INTERFACE, "eth12")),
        ("all", AnswerfileDevice(DeviceKind.ALL, "all")),
        ("AA:BB:CC:DD:EE:FF", AnswerfileDevice(DeviceKind.MAC, "aa:bb:cc:dd:ee:ff")),
        ("aa-bb-cc-dd-ee-ff", AnswerfileDevice(DeviceKind.MAC, "aa:bb:cc:dd:ee:ff")),
    ],
)
def test_explicit_answerfile_device(value: str, expected: AnswerfileDevice) -> None:
    args = parse_cmdline(f"answerfile_device={value} BOOTIF={MAC}")
    assert args.answerfile_device == expected
    assert f"answerfile_device={expected.name}" in args.render()
    assert parse_cmdline(args.render()) == args


def test_explicit_all_differs_from_defaulted_all() -> None:
    assert parse_cmdline("answerfile_device=all") != parse_cmdline("")
    assert parse_cmdline("answerfile_device=all").render() == "answerfile_device=all"


@pytest.mark.parametrize(
    "url",
    [
        "http://h/a",
        "https://host.example:8443/x?y=1",
        "ftp://user:pass@ftp.example/pub/a.xml",
        "file:///srv/answer.xml",
        "nfs://server:/export/answer.xml",
        "nfs://server/export/answer.xml",
    ],
)
def test_answerfile_schemes(url: str) -> None:
    args = parse_cmdline(f"answerfile={url} answerfile_generator={url}")
    assert args.answerfile == args.answerfile_generator == url


@pytest.mark.parametrize(
    "url",
    ["gopher://x", "http://", "file://host/x", "file:///", "nfs://server", "http://[::1/", "x"],
)
def test_bad_answerfile_urls(url: str) -> None:
    (problem,) = problems_of(f"answerfile={url}")
    assert problem.startswith(f"answerfile={url}: expected an http://")


def test_static_network_config() -> None:
    args = parse_cmdline(
        "answerfile_device=eth1 network_config=static:dns=1.1.1.1,8.8.8.8;"
        "gateway=10.0.0.1;netmask=255.255.255.0;ip=10.0.0.5"
    )
    addr = ipaddress.IPv4Address
    assert args.network_config == NetworkConfig(
        NetworkMode.STATIC,
        addr("10.0.0.5"),
        24,
        addr("10.0.0.1"),
        (addr("1.1.1.1"), addr("8.8.8.8")),
    )
    assert "network_config=static:ip=10.0.0.5;netmask=24;gateway=10.0.0.1;dns=1.1.1.1,8.8.8.8" in (
        args.render()
    )
    assert parse_cmdline(args.render()) == args


@pytest.mark.parametrize(("mask", "prefix"), [("0", 0), ("32", 32), ("255.255.240.0", 20)])
def test_netmask_forms(mask: str, prefix: int) -> None:
    text = f"BOOTIF={MAC} network_config=static:ip=10.1.2.3;netmask={mask}"
    assert parse_cmdline(text).network_config.prefix_length == prefix


def test_static_without_a_single_nic_is_refused() -> None:
    (problem,) = problems_of("network_config=static:ip=10.1.2.3;netmask=8")
    assert problem.startswith("network_config=static:ip=10.1.2.3;netmask=8: a static address")


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("static:netmask=24", "ip= is missing"),
        ("static:ip=10.0.0.2", "netmask= is missing"),
        ("static:ip=10.0.0.2;netmask=255.0.255.0", "netmask=255.0.255.0 is not a netmask"),
        ("static:ip=10.0.0.2;netmask=0.0.0.255", "netmask=0.0.0.255 is not a netmask"),
        ("static:ip=10.0.0.2;netmask=33", "netmask=33 is not a netmask"),
        ("static:ip=10.0.0.256;netmask=24", "ip=10.0.0.256 is not an IPv4 address"),
        ("static:ip=10.0.0.2;netmask=24;gateway=x", "gateway=x is not an IPv4 address"),
        ("static:ip=10.0.0.2;netmask=24;dns=1.1.1.1,", "dns= is not an IPv4 address"),
        ("static:ip=10.0.0.2;netmask=24;mtu=9000", "mtu=9000 is not one of ip="),
        ("static:ip=10.0.0.2;ip=10.0.0.3;netmask=24", "ip= is given twice"),
        ("dchp", "expected dhcp or static:"),
    ],
)
def test_bad_network_config(value: str, fragment: str) -> None:
    (problem,) = problems_of(f"answerfile_device=eth0 network_config={value}")
    assert problem.startswith(f"network_config={value}: ")
    assert fragment in problem


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[(value, True) for value in ("yes", "Enabled", "TRUE", "1")],
        *[(value, False) for value in ("no", "disabled", "False", "0")],
    ],
)
def test_multipath_values(value: str, expected: bool) -> None:
    args = parse_cmdline(f"device_mapper_multipath={value}")
    assert args.device_mapper_multipath is expected
    assert parse_cmdline(args.render()) == args


def test_flags_atexit_selftest_and_dash_underscore() -> None:
    args = parse_cmdline("use_ibft disable_gpt selftest atexit=PowerOff")
    assert (args.use_ibft, args.disable_gpt, args.selftest) == (True,) * 3
    assert args.atexit is AtExit.POWEROFF
    assert args.render() == "use_ibft disable-gpt atexit=poweroff selftest"


def test_last_one_wins_and_consoles_accumulate() -> None:
    args = parse_cmdline("atexit=explode console=ttyS0,115200 atexit=shell console=hvc0")
    assert args.atexit is AtExit.SHELL
    assert args.consoles == ("ttyS0,115200", "hvc0")
    assert args.render().endswith("console=ttyS0,115200 console=hvc0")


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("answerfile_device=eth", "answerfile_device=eth: expected ethN (e.g. eth0), a MAC"),
        ("answerfile_device=aa:bb:cc:dd:ee", "answerfile_device=aa:bb:cc:dd:ee: expected ethN"),
        (
            "device_mapper_multipath=maybe",
            "device_mapper_multipath=maybe: expected one of yes, enabled, true, 1, no, "
            "disabled, false, 0",
        ),
        ("atexit=explode", "atexit=explode: expected one of reboot, poweroff, shell"),
        ("BOOTIF=01-aa-bb-cc", "BOOTIF=01-aa-bb-cc: expected 01-aa-bb-cc-dd-ee-ff"),
        ("BOOTIF=aa-bb-cc-dd-ee-ff", "BOOTIF=aa-bb-cc-dd-ee-ff: expected 01-"),
        ("BOOTIF=20-aa:bb:cc:dd:ee:ff", "BOOTIF=20-aa:bb:cc:dd:ee:ff: expected 01-"),
        ("answerfile=gopher://x", "answerfile=gopher://x: expected an http://"),
        ("answerfile", "answerfile: answerfile needs a value"),
        ("install=1", "install=1: install is a flag and takes no value"),
        ("install=", "install=: install is a flag"),
        ("netinstall.token=a/b", "netinstall.token: expected a non-empty token"),
        ("netinstall.token=", "netinstall.token: expected a non-empty token"),
        ("netinstall.server=ftp://h/", "netinstall.server=ftp://h/: expected an http:// or"),
        ("netinstall.server=http://", "netinstall.server=http://: expected an http:// or"),
        ("console=", "console=: expected a console"),
        ('answerfile=http://h/a"b', 'answerfile=http://h/a"b: a double quote cannot'),
        ("xen.gz --- vmlinuz", "---: a multiboot (mboot.c32) line needs parse_multiboot"),
    ],
)
def test_error_messages(text: str, message: str) -> None:
    (problem,) = problems_of(text)
    assert problem.startswith(message)


def test_all_problems_at_once() -> None:
    problems = problems_of(
        "answerfile_device=eth device_mapper_multipath=maybe install=1 atexit=explode ok=1"
    )
    assert [p.split(":")[0] for p in problems] == [
        "answerfile_device=eth",
        "device_mapper_multipath=maybe",
        "install=1",
        "atexit=explode",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "answerfile=http://h:99999/",
        "answerfile=http://[x/",
        "answerfile=http://h/\x00",
        "BOOTIF=",
        "answerfile_device=eth0 network_config=static:ip=1.2.3.4;netmask=x;dns=::1",
    ],
)
def test_bad_input_raises_an_input_error_never_a_bare_exception(text: str) -> None:
    with pytest.raises(InputError):
        parse_cmdline(text)


def test_secrets_are_never_echoed_in_errors() -> None:
    problems = problems_of("netinstall.token=s3cret! sshpassword= answerfile=gopher://u:pw1@h/")
    text = "\n".join(problems)
    assert "s3cret" not in text
    assert "pw1" not in text
    assert "sshpassword: expected a non-empty password" in text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("xen.gz dom0_mem=1G", "has no ---"),
        ("xen.gz --- vmlinuz", "has no module"),
        ("--- vmlinuz --- initrd", "The hypervisor part of the multiboot line is empty"),
        ("xen.gz --- --- initrd", "The dom0 kernel part of the multiboot line is empty"),
        ("xen.gz --- vmlinuz --- initrd ---", "The module part of the multiboot line is empty"),
        ("xen.gz --- vmlinuz atexit=explode --- initrd", "atexit=explode: expected one of"),
    ],
)
def test_bad_multiboot_lines(text: str, fragment: str) -> None:
    with pytest.raises(BootArgsError) as caught:
        parse_multiboot(text)
    assert any(fragment in problem for problem in caught.value.problems)


# --- secrets and views -------------------------------------------------------------------


def test_secrets_absent_from_repr_str_and_dict() -> None:
    args = parse_cmdline(
        "netinstall.token=tok-SECRET sshpassword=pw-SECRET "
        "answerfile=ftp://user:url-SECRET@h/a?token=q-SECRET"
    )
    line = parse_multiboot(f"xen.gz --- vmlinuz {args.render()} --- install.img")
    views = [repr(args), str(args), repr(line), json.dumps(args.to_dict()), str(line.to_dict())]
    for view in views:
        assert "SECRET" not in view
        assert "<redacted>" in view
    assert args.token == "tok-SECRET"
    assert args.sshpassword == "pw-SECRET"


def test_to_dict_is_json_friendly() -> None:
    args = parse_cmdline(
        f"BOOTIF={MAC} atexit=shell network_config=static:ip=10.0.0.2;netmask=24;dns=9.9.9.9"
    )
    view = json.loads(json.dumps(args.to_dict()))
    assert view["atexit"] == "shell"
    assert view["token"] is None
    assert view["answerfile_device"] == {"kind": "mac", "name": MAC, "explicit": False}
    assert view["network_config"] == {
        "mode": "static",
        "ip": "10.0.0.2",
        "prefix_length": 24,
        "gateway": None,
        "dns": ["9.9.9.9"],
    }


def test_redact_url() -> None:
    assert (
        redact_url("ftp://u:p@h/x?a=1&token=t#f") == "ftp://u:<redacted>@h/x?a=1&token=<redacted>#f"
    )
    assert redact_url("http://h/x") == "http://h/x"


# --- round trip, for every valid value -----------------------------------------------------

word = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=8)
host = st.one_of(word.filter(lambda w: w[0].isalnum()), st.ip_addresses(v=4).map(str))
path = st.lists(word, max_size=3).map(lambda parts: "/" + "/".join(parts))
secret_text = st.text(string.ascii_letters + string.digits + string.punctuation.replace('"', ""))
spaced_text = st.text(
    string.ascii_letters + string.digits + string.punctuation.replace('"', "") + " \t", min_size=1
).filter(lambda s: "---" not in s.split())


def _web_url(schemes: list[str]) -> st.SearchStrategy[str]:
    userinfo = st.none() | st.tuples(word, word).map(lambda u: f"{u[0]}:{u[1]}@")
    query = st.none() | word.map(lambda t: f"?token={t}")
    port = st.none() | st.integers(1, 65535).map(lambda p: f":{p}")
    return st.builds(
        lambda s, u, h, p, pa, q: f"{s}://{u or ''}{h}{p or ''}{pa}{q or ''}",
        st.sampled_from(schemes),
        userinfo,
        host,
        port,
        path,
        query,
    )


deep_path = st.lists(word, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
urls = st.one_of(
    _web_url(["http", "https", "ftp"]),
    deep_path.map(lambda p: f"file://{p}"),
    st.builds(lambda h, sep, p: f"nfs://{h}{sep}{p}", host, st.sampled_from([":", ""]), deep_path),
)
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
devices = st.one_of(
    st.just(AnswerfileDevice(DeviceKind.ALL, "all")),
    st.just(AnswerfileDevice(DeviceKind.ALL, "all", explicit=False)),  # recomputed from bootif
    st.integers(0, 99).map(lambda n: AnswerfileDevice(DeviceKind.INTERFACE, f"eth{n}")),
    macs.map(lambda mac: AnswerfileDevice(DeviceKind.MAC, mac)),
)
ipv4 = st.ip_addresses(v=4)
network_configs = st.one_of(
    st.just(NetworkConfig()),
    st.builds(
        NetworkConfig,
        st.just(NetworkMode.STATIC),
        ipv4,
        st.integers(0, 32),
        st.none() | ipv4,
        st.lists(ipv4, max_size=3).map(tuple),
    ),
)
our_names = {
    "answerfile", "install", "answerfile_generator", "answerfile_device", "network_config",
    "use_ibft", "device_mapper_multipath", "disable_gpt", "atexit", "netinstall.server",
    "netinstall.token", "BOOTIF", "selftest", "console", "sshpassword",
}  # fmt: skip
extra_words = st.builds(
    render_param,
    word.filter(lambda k: k.replace("-", "_") not in our_names and k != "---"),
    st.none() | spaced_text | st.just(""),
)
boot_args = st.builds(
    BootArgs,
    answerfile=st.none() | urls,
    install=st.booleans(),
    answerfile_generator=st.none() | urls,
    answerfile_device=devices,
    network_config=network_configs,
    use_ibft=st.booleans(),
    device_mapper_multipath=st.booleans(),
    disable_gpt=st.booleans(),
    atexit=st.sampled_from(AtExit),
    server=st.none() | _web_url(["http", "https"]),
    token=st.none() | st.from_regex(r"\A[A-Za-z0-9._~-]+\Z"),
    bootif=st.none() | macs,
    selftest=st.booleans(),
    consoles=st.lists(spaced_text, max_size=3).map(tuple),
    sshpassword=st.none() | spaced_text,
    extra=st.lists(extra_words, max_size=4).map(tuple),
).filter(
    lambda a: (
        a.network_config.mode is NetworkMode.DHCP or a.answerfile_device.kind is not DeviceKind.ALL
    )
)
xen_word = st.text(string.printable.strip(), min_size=1, max_size=10).filter(
    lambda w: w != "---" and not any(c.isspace() for c in w)
)
multiboot_lines = st.builds(
    MultibootCmdline,
    xen_image=xen_word,
    xen_args=st.lists(xen_word, max_size=4).map(tuple),
    kernel=xen_word,
    args=boot_args,
    modules=st.lists(
        st.builds(MultibootModule, xen_word, st.lists(xen_word, max_size=3).map(tuple)),
        min_size=1,
        max_size=3,
    ).map(tuple),
)


@settings(max_examples=300)
@given(boot_args)
def test_cmdline_round_trip(args: BootArgs) -> None:
    assert parse_cmdline(args.render()) == args


@settings(max_examples=200)
@given(multiboot_lines)
def test_multiboot_round_trip(line: MultibootCmdline) -> None:
    assert parse_multiboot(line.render()) == line


@given(secret_text.filter(bool), secret_text.filter(bool))
def test_secrets_never_in_repr(token: str, password: str) -> None:
    args = BootArgs(token=token, sshpassword=password)
    assert "token='<redacted>'" in repr(args)
    assert "sshpassword='<redacted>'" in repr(args)
    assert args.to_dict()["token"] == args.to_dict()["sshpassword"] == "<redacted>"


fragments = st.sampled_from(
    ["a", "=", '"', " ", "\t", "\n", "---", "x=1", "console", "install", "disable_gpt",
     "disable-gpt", "sshpassword", "BOOTIF=aa:bb:cc:dd:ee:ff", "answerfile=http://h/"]
)  # fmt: skip
any_text = st.lists(fragments, max_size=25).map("".join)


@settings(max_examples=500)
@given(any_text)
def test_every_accepted_line_round_trips(text: str) -> None:
    try:
        args = parse_cmdline(text)
    except BootArgsError:
        return
    assert parse_cmdline(args.render()) == args


@settings(max_examples=500)
@given(any_text)
def test_every_accepted_multiboot_line_round_trips(text: str) -> None:
    try:
        line = parse_multiboot(text)
    except BootArgsError:
        return
    assert parse_multiboot(line.render()) == line


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": NetworkMode.STATIC},
        {"gateway": ipaddress.IPv4Address("10.0.0.1")},
        {"mode": NetworkMode.STATIC, "ip": ipaddress.IPv4Address("10.0.0.2"), "prefix_length": 33},
    ],
)
def test_inconsistent_network_config_is_a_programming_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        NetworkConfig(**kwargs)  # type: ignore[arg-type]
