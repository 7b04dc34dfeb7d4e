"""The registry: schema, contracts, token lifecycle, locking. On SQLite here; the same
tests run on PostgreSQL from tests/integration/test_registry_postgresql.py
(tests/registry_engines.py: ``registry_dir``, ``reg``, ``sqlite_only``)."""

from __future__ import annotations

import sqlite3
import stat
from dataclasses import replace
from pathlib import Path

import jinja2
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, select, text, update

import answerfile
from common.errors import InputError, NetinstallError
from pxe_server import migrations
from pxe_server import registry as registry_module
from pxe_server.model import BootChain, Profile, RebootPolicy, Repository, State, Work
from pxe_server.passwords import is_sha512_crypt, sha512_crypt
from pxe_server.registry import (
    CHECKIN_INTERVAL,
    KEEP,
    REGISTRY_FILE,
    Registry,
    TransitionRefused,
    UnknownHost,
    default_profile,
)
from pxe_server.secrets import REDACTED, new_token, redact
from pxe_server.store import rows
from pxe_server.store.engine import Store
from pxe_server.store.schema import ALEMBIC_MARK, HEAD
from pxe_server.store.tables import hosts, metadata, schema_version
from tests.registry_engines import execute, sqlite_only, together

MAC = "52:54:00:12:34:56"
OTHER = "52:54:00:ab:cd:ef"
TEMPLATE = "<installation>{{ mac }}</installation>"


def api_token(directory: Path) -> str:
    """The operator's copy of the API token (the registry keeps only its keyed hash)."""
    return (directory / "api-token").read_text("utf-8").strip()


def advance(reg: Registry, *states: State) -> None:
    for state in states:
        reg.record_event(MAC, state)


# -- schema ---------------------------------------------------------------------


def test_open_creates_the_schema_and_reopens_without_migrating_again(
    registry_dir: Path, engine: str
) -> None:
    with Registry.open(registry_dir) as first:
        token = api_token(registry_dir)
        assert first.api_token_matches(token)
        first.set_setting("repo", "/srv/repo")
    with Registry.open(registry_dir) as second:
        assert api_token(registry_dir) == token
        assert second.api_token_matches(token)
        assert not second.api_token_matches(token[:-1])
        assert not second.api_token_matches("")
        assert second.settings() == {"repo": "/srv/repo"}
    versions, alembic = execute(
        registry_dir,
        select(schema_version.c.version),
        text("SELECT version_num FROM alembic_version"),
    )
    assert [tuple(row) for row in versions] == [(ALEMBIC_MARK,)]
    assert [tuple(row) for row in alembic] == [(HEAD,)]
    if engine == "sqlite":
        with sqlite3.connect(registry_dir / REGISTRY_FILE) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@sqlite_only
def test_open_migrates_an_empty_file_and_keeps_the_secrets_private(tmp_path: Path) -> None:
    directory = tmp_path / "new" / "dir"
    (tmp_path / "new").mkdir()
    with Registry.open(directory) as reg:
        assert len(api_token(directory)) >= 32
        assert reg.settings() == {}
    assert stat.S_IMODE((directory / REGISTRY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((directory / "api-token").stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    stored = (directory / REGISTRY_FILE).read_bytes()
    assert api_token(directory).encode() not in stored


def test_the_schema_alembic_made_is_the_tables_declared(registry_dir: Path) -> None:
    """Alembic's revisions and tables.py describe one schema, on either engine."""
    Registry.open(registry_dir).close()
    store = Store(registry_dir)
    try:
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        store.dispose()


def test_a_new_api_token_replaces_the_old_one(registry_dir: Path) -> None:
    with Registry.open(registry_dir) as reg:
        old = api_token(registry_dir)
        reg.new_api_token()
        new = api_token(registry_dir)
        assert new != old
        assert reg.api_token_matches(new)
        assert not reg.api_token_matches(old)
    with Registry.open(registry_dir) as again:
        assert again.api_token_matches(new)


def test_a_newer_schema_is_refused(registry_dir: Path) -> None:
    Registry.open(registry_dir).close()
    execute(registry_dir, update(schema_version).values(version=999))
    with pytest.raises(NetinstallError, match="schema version 999, newer than this netinstall"):
        Registry.open(registry_dir)


def test_a_newer_alembic_revision_is_refused(registry_dir: Path) -> None:
    Registry.open(registry_dir).close()
    execute(registry_dir, text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    with pytest.raises(NetinstallError, match="schema revision f00dfeed, newer than this"):
        Registry.open(registry_dir)


@sqlite_only
def test_a_file_that_is_not_sqlite_is_reported(tmp_path: Path) -> None:
    (tmp_path / REGISTRY_FILE).write_bytes(b"not a database, not at all" * 100)
    with pytest.raises(NetinstallError, match="cannot open the registry"):
        Registry.open(tmp_path)


# -- settings and profiles ---------------------------------------------------------


def test_settings_overwrite(reg: Registry) -> None:
    reg.set_setting("unknown_policy", "local")
    reg.set_setting("unknown_policy", "install")
    assert reg.settings() == {"unknown_policy": "install"}


def test_profiles_add_get_list_update(reg: Registry) -> None:
    ipxe = Profile(
        "lab", TEMPLATE, boot_chain=BootChain.IPXE, xen_args="dom0_mem=1G", payload_version="0.2"
    )
    reg.add_profile(ipxe)
    assert reg.get_profile("lab") == ipxe
    assert reg.get_profile("nope") is None
    assert [p.name for p in reg.list_profiles()] == ["default", "lab"]
    with pytest.raises(InputError, match="exists already"):
        reg.add_profile(ipxe)
    changed = Profile("lab", TEMPLATE + "\n", kernel_args="console=hvc0")
    reg.update_profile(changed)
    assert reg.get_profile("lab") == changed
    with pytest.raises(InputError, match="no profile 'ghost'"):
        reg.update_profile(Profile("ghost", TEMPLATE))


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        (Profile("lab", "{% if x %}unclosed"), "does not parse as jinja2: line 1"),
        (Profile("bad name", TEMPLATE), "profile name"),
        (Profile("lab", TEMPLATE, boot_chain="pxe"), "boot chain 'pxe'"),  # type: ignore[arg-type]
    ],
)
def test_bad_profiles_are_refused(reg: Registry, profile: Profile, message: str) -> None:
    with pytest.raises(InputError, match=message):
        reg.add_profile(profile)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, ["<primary-disk>sda</primary-disk>", "<timezone>Etc/UTC</timezone>"]),
        (
            {"name": "xen01", "root_password_hash": "$6$salt$hash", "disk": "nvme0n1"},
            [
                "<hostname>xen01</hostname>",
                '<root-password type="hash">$6$salt$hash</root-password>',
                "<primary-disk>nvme0n1</primary-disk>",
            ],
        ),
    ],
)
def test_the_default_template_renders_a_valid_fresh_install(
    extra: dict[str, str], expected: list[str]
) -> None:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=True)
    values: dict[str, object] = {"mac": MAC, "name": None, "server": "http://10.0.0.1:8080"}
    values["repo_url"] = "http://10.0.0.1:8080/repo/?a=1&b=2"
    text = env.from_string(default_profile().template).render(**(values | extra))
    model = answerfile.parse(text).model
    assert model.mode.value == "fresh"
    assert '<source type="url">http://10.0.0.1:8080/repo/?a=1&amp;b=2</source>' in text
    assert all(line in text for line in expected)
    assert ("<hostname>" in text) == ("name" in extra)


# -- hosts ------------------------------------------------------------------------


def test_add_host_assigns_work(reg: Registry) -> None:
    reg.set_setting("payload_version", "0.1.0")
    host = reg.add_host("52-54-00-12-34-56", name="xen01", variables={"disk": "sdb", "a": "1"})
    assert host.mac == MAC
    assert (host.state, host.netboot_armed, host.profile) == (State.PENDING, True, "default")
    assert host.variables == (("a", "1"), ("disk", "sdb"))
    assert host.assigned_version == "0.1.0"
    assert host.token is not None
    assert len(host.token) >= 32
    assert host.agent_credential_hash is None
    assert reg.get_host(MAC.upper()) == host
    assert reg.list_hosts() == [host]
    assert [e.state for e in reg.events(MAC)] == [State.PENDING]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"profile": "nope"}, "no profile 'nope'"),
        ({"name": "xen01.example.com"}, "not an FQDN"),
        ({"variables": {"bad-key": "x"}}, "variable name 'bad-key'"),
        ({"variables": {"repo_url": "x"}}, "set by the server"),
        ({"variables": [("a", "1"), ("a", "2")]}, "given twice"),
    ],
)
def test_add_host_refuses_bad_input(reg: Registry, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        reg.add_host(MAC, **kwargs)  # type: ignore[arg-type]
    assert reg.get_host(MAC) is None


def test_add_host_twice_and_bad_mac(reg: Registry) -> None:
    reg.add_host(MAC)
    with pytest.raises(InputError, match="exists already"):
        reg.add_host(MAC.replace(":", "-"))
    with pytest.raises(InputError, match="not a MAC address"):
        reg.add_host("52:54:00")


def test_update_host_changes_only_what_is_given(reg: Registry) -> None:
    reg.add_profile(Profile("lab", TEMPLATE, payload_version="0.2.0"))
    host = reg.add_host(MAC, name="xen01", variables={"disk": "sda"})
    renamed = reg.update_host(MAC, name=None)
    assert renamed.name is None
    assert renamed.variables == host.variables
    moved = reg.update_host(MAC, profile="lab", variables={"disk": "sdb"})
    assert (moved.profile, moved.assigned_version, moved.name) == ("lab", "0.2.0", None)
    assert moved.variables == (("disk", "sdb"),)
    assert moved.token == host.token
    assert reg.update_host(MAC, name=KEEP) == moved
    assert reg.get_host(MAC) == moved
    with pytest.raises(UnknownHost):
        reg.update_host(OTHER, name="x")


def test_delete_host_forgets_its_events(reg: Registry) -> None:
    reg.add_host(MAC)
    reg.add_host(OTHER)
    reg.delete_host(MAC)
    assert reg.get_host(MAC) is None
    assert reg.events(MAC) == []
    assert len(reg.events(OTHER)) == 1
    with pytest.raises(UnknownHost, match=f"no host {MAC}"):
        reg.delete_host(MAC)


@sqlite_only
def test_host_by_token_is_one_indexed_lookup_by_keyed_hash(reg: Registry) -> None:
    first = reg.add_host(MAC)
    second = reg.add_host(OTHER)
    assert first.token
    assert second.token
    assert reg.host_by_token(first.token) == first
    assert reg.host_by_token(second.token) == second
    assert reg.host_by_token(first.token[:-1] + "!") is None
    assert reg.host_by_token("") is None
    assert reg.host_by_agent_credential(first.token) is None
    conn = sqlite3.connect(reg.path)
    try:
        for column in ("token_hash", "agent_credential_hash"):
            plan = conn.execute(
                f"EXPLAIN QUERY PLAN SELECT * FROM hosts WHERE {column} = ?",  # noqa: S608
                ("x",),
            ).fetchall()
            assert len(plan) == 1
            assert "USING INDEX" in plan[0][-1], plan  # a search, never a scan of every host
        stored = conn.execute("SELECT token_sealed, token_hash FROM hosts").fetchall()
    finally:
        conn.close()
    text = repr(stored)
    assert first.token not in text
    assert second.token not in text


@sqlite_only
def test_a_lookup_among_many_hosts_reads_one_row(reg: Registry) -> None:
    host = reg.add_host(MAC)
    assert host.token is not None
    with reg._write() as conn:  # 3,000 more hosts, written in one go
        many = []
        for i in range(3000):
            mac = f"52:54:01:00:{i >> 8:02x}:{i & 0xFF:02x}"
            many.append(rows.host_values(replace(host, mac=mac, token=new_token()), reg._keys))
        conn.execute(insert(hosts), many)
    statements: list[str] = []
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    reader = reg._reader().connection.dbapi_connection  # this thread's read connection
    assert isinstance(reader, sqlite3.Connection)
    reader.set_trace_callback(statements.append)
    reader.set_progress_handler(step, 1)  # every SQLite VM instruction
    try:
        assert reg.host_by_token(host.token) == host
    finally:
        reader.set_trace_callback(None)
        reader.set_progress_handler(None, 1)
    assert len(statements) == 1
    assert "WHERE hosts.token_hash = '" in statements[0]  # the keyed hash, never the token
    assert steps[0] < 300  # a search of the index: a scan of 3,001 rows takes far more


# -- states -----------------------------------------------------------------------


def test_forward_moves_skips_and_progress_repeats(reg: Registry) -> None:
    reg.add_host(MAC)
    assert reg.mark_signalled(MAC).state is State.SIGNALLED
    host, reply = reg.record_event(MAC, "installing", step="partition", progress=0.1)
    assert (host.state, host.step, host.progress, reply) == (
        State.INSTALLING,
        "partition",
        0.1,
        {},
    )
    host, _ = reg.record_event(MAC, State.INSTALLING, progress=0.5)
    assert (host.step, host.progress) == ("partition", 0.5)
    host, _ = reg.record_event(MAC, State.INSTALLING, step="copy")
    assert (host.step, host.progress) == ("copy", 0.5)
    host, _ = reg.record_event(MAC, State.INSTALLED)
    assert (host.step, host.progress, host.netboot_armed) == (None, None, False)
    assert [e.state.value for e in reg.events(MAC)] == [
        "pending",
        "signalled",
        "installing",
        "installing",
        "installing",
        "installed",
    ]


def test_skipping_forward_from_pending_to_installed(reg: Registry) -> None:
    reg.add_host(MAC)
    host, _ = reg.record_event(MAC, State.INSTALLED)
    assert host.state is State.INSTALLED
    assert not host.netboot_armed


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        ((State.INSTALLING,), State.SIGNALLED),
        ((State.INSTALLED,), State.INSTALLING),
        ((State.FAILED,), State.INSTALLING),
        ((State.FAILED,), State.FAILED),
        ((State.INSTALLED, State.RUNNING), State.FAILED),
        ((State.INSTALLED, State.RUNNING), State.INSTALLED),
    ],
)
def test_backward_moves_are_refused_naming_both_states(
    reg: Registry, path: tuple[State, ...], refused: State
) -> None:
    reg.add_host(MAC)
    advance(reg, *path)
    before = reg.get_host(MAC)
    with pytest.raises(TransitionRefused, match=f"is {path[-1].value}; it cannot become {refused}"):
        reg.record_event(MAC, refused)
    assert reg.get_host(MAC) == before


@pytest.mark.parametrize(
    ("state", "kwargs", "message"),
    [
        ("pending", {}, "cannot be reported"),
        ("rebooting", {}, "unknown state 'rebooting'"),
        ("installing", {"progress": 1.5}, "from 0 to 1"),
        ("installing", {"progress": float("nan")}, "from 0 to 1"),
    ],
)
def test_bad_events_are_refused(
    reg: Registry, state: str, kwargs: dict[str, object], message: str
) -> None:
    reg.add_host(MAC)
    with pytest.raises(InputError, match=message):
        reg.record_event(MAC, state, **kwargs)  # type: ignore[arg-type]


def test_events_for_an_unknown_host(reg: Registry) -> None:
    with pytest.raises(UnknownHost):
        reg.record_event(MAC, State.INSTALLING)
    with pytest.raises(UnknownHost):
        reg.mark_signalled(MAC)
    with pytest.raises(UnknownHost):
        reg.rearm(MAC)
    assert reg.last_event(MAC) is None


def test_failed_disarms_and_is_terminal_until_rearmed(reg: Registry) -> None:
    reg.add_host(MAC)
    host, _ = reg.record_event(MAC, State.FAILED, step="download", message="sha256 mismatch")
    assert (host.state, host.step, host.netboot_armed) == (State.FAILED, "download", False)
    assert host.token is not None  # the installer may still upload its log bundle
    assert reg.mark_signalled(MAC) == host  # a boot-config fetch changes nothing
    last = reg.last_event(MAC)
    assert last is not None
    assert last.message == "sha256 mismatch"


def test_running_kills_the_token_and_hands_out_a_credential(reg: Registry) -> None:
    token = reg.add_host(MAC).token
    assert token is not None
    advance(reg, State.INSTALLED)
    host, reply = reg.record_event(
        MAC, "running", facts={"payload_version": "0.1.0", "xen_version": "4.17"}
    )
    assert host.token is None
    assert host.running_version == "0.1.0"
    assert set(reply) == {"agent_credential", "checkin_interval"}
    assert reply["checkin_interval"] == CHECKIN_INTERVAL
    assert isinstance(reply["agent_credential"], str)
    assert host.agent_credential_hash is not None
    assert reply["agent_credential"] not in host.agent_credential_hash
    assert len(reply["agent_credential"]) >= 32
    assert reg.host_by_token(token) is None
    assert reg.host_by_agent_credential(reply["agent_credential"]) == host
    # A later running report updates the version but issues no second credential.
    again, reply2 = reg.record_event(MAC, State.RUNNING, facts={"payload_version": "0.2.0"})
    assert reply2 == {}
    assert again.agent_credential_hash == host.agent_credential_hash
    assert reg.host_by_agent_credential(reply["agent_credential"]) == again
    assert again.running_version == "0.2.0"
    assert reg.get_host(MAC).facts == {"payload_version": "0.2.0"}  # type: ignore[union-attr]


def test_facts_are_kept_from_the_last_running_report(reg: Registry) -> None:
    reg.add_host(MAC)
    advance(reg, State.INSTALLED)
    facts = {
        "payload_version": "0.1.0",
        "addresses": [{"interface": "xenbr0", "address": "10.0.0.5/24"}],
    }
    reg.record_event(MAC, State.RUNNING, facts=facts)
    reg.record_event(MAC, State.RUNNING)  # a report without facts keeps the last ones
    host = reg.get_host(MAC)
    assert host is not None
    assert host.facts == facts


@sqlite_only
def test_a_version_1_registry_gains_the_facts_column(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / REGISTRY_FILE)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    first = migrations.MIGRATIONS[0]
    assert isinstance(first, tuple)
    for statement in first:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    conn.execute("INSERT INTO profiles VALUES ('default', 't', 'seed', '', '', NULL)")
    conn.execute(
        "INSERT INTO hosts (mac, profile, netboot_armed, state) "
        "VALUES (?, 'default', 1, 'pending')",
        (MAC,),
    )
    conn.commit()
    conn.close()
    with Registry.open(tmp_path) as registry:
        host = registry.get_host(MAC)
        assert host is not None
        assert host.facts == {}
    check = sqlite3.connect(tmp_path / REGISTRY_FILE)
    assert check.execute("SELECT version FROM schema_version").fetchone() == (ALEMBIC_MARK,)


def test_rearm_is_new_work_with_a_new_token(reg: Registry) -> None:
    first = reg.add_host(MAC)
    advance(reg, State.INSTALLING)
    reg.record_event(MAC, State.FAILED, step="partition", progress=0.2)
    host = reg.rearm(MAC)
    assert (host.state, host.netboot_armed, host.step, host.progress) == (
        State.PENDING,
        True,
        None,
        None,
    )
    assert host.token is not None
    assert host.token != first.token
    assert reg.host_by_token(host.token) == host
    assert first.token is not None
    assert reg.host_by_token(first.token) is None
    last = reg.last_event(MAC)
    assert last is not None
    assert last.state is State.PENDING
    assert "rearmed" in (last.message or "")
    host, _ = reg.record_event(MAC, State.INSTALLING)
    assert host.state is State.INSTALLING


def test_stored_messages_have_secrets_redacted(reg: Registry, registry_dir: Path) -> None:
    host = reg.add_host(MAC, variables={"root_password": "hunter2-secret"})
    token = host.token
    assert token is not None
    stored_hash = dict(host.variables)["root_password"]
    api = api_token(registry_dir)
    message = f"GET /answerfile?token={token} pw={stored_hash} api={api}"
    reg.record_event(MAC, State.INSTALLING, message=message)
    advance(reg, State.INSTALLED)
    running, reply = reg.record_event(MAC, State.RUNNING, message=f"was {token}")
    credential = str(reply["agent_credential"])
    reg.record_event(MAC, State.RUNNING, message=f"agent {credential}, not {credential[1:]}x")
    stored = [e.message or "" for e in reg.events(MAC)]
    text = "\n".join(stored)
    for secret in (token, credential, stored_hash, api):
        assert secret not in text
    assert stored[1] == f"GET /answerfile?token={REDACTED} pw={REDACTED} api={REDACTED}"
    assert stored[3:] == [f"was {REDACTED}", f"agent {REDACTED}, not {credential[1:]}x"]
    assert running.token is None


@pytest.mark.parametrize("password", ["hunter2-secret", "pässwörd with spaces"])
def test_a_password_is_stored_only_as_its_sha512_crypt_hash(reg: Registry, password: str) -> None:
    host = reg.add_host(MAC, variables={"root_password": password, "disk": "sda"})
    stored = dict(host.variables)
    assert is_sha512_crypt(stored["root_password"])
    salt = stored["root_password"].split("$")[2]
    assert sha512_crypt(password, salt) == stored["root_password"]
    assert stored["disk"] == "sda"
    assert reg.get_host(MAC) == host
    assert password.encode() not in reg.path.read_bytes()
    # A hash given is kept as it is; <redacted> (how listings show it) keeps the stored one.
    given = sha512_crypt("other", "saltsalt")
    assert dict(reg.update_host(MAC, variables={"root_password": given}).variables) == {
        "root_password": given
    }
    kept = reg.update_host(MAC, variables={"root_password": "<redacted>", "disk": "sdb"})
    assert dict(kept.variables) == {"root_password": given, "disk": "sdb"}
    with pytest.raises(InputError, match="stands for the stored password, and there is none"):
        reg.add_host(OTHER, variables={"admin_password": "<redacted>"})
    with pytest.raises(InputError, match="'admin_password_hash' is set by the server"):
        reg.add_host(OTHER, variables={"admin_password_hash": "x"})


def test_a_profile_is_stored_without_a_plaintext_password(reg: Registry) -> None:
    template = (
        "<installation>{{ mac }}<root-password>s3cret &amp; more</root-password>"
        '<root-password type="hash">{{ root_password_hash }}</root-password></installation>'
    )
    reg.add_profile(Profile("lab", template))
    stored = reg.get_profile("lab")
    assert stored is not None
    assert "s3cret" not in stored.template
    hashed = stored.template.split('<root-password type="hash">')[1].split("<")[0]
    assert sha512_crypt("s3cret & more", hashed.split("$")[2]) == hashed
    assert stored.template.endswith(
        '<root-password type="hash">{{ root_password_hash }}</root-password></installation>'
    )
    with pytest.raises(InputError) as refused:
        reg.update_profile(Profile("lab", TEMPLATE, kernel_args="console=hvc0 sshpassword=pw1"))
    assert "may not carry sshpassword=" in str(refused.value)
    assert "host variable root_password" in str(refused.value)
    assert "pw1" not in str(refused.value)


def test_redact_replaces_longer_secrets_first() -> None:
    assert redact("abcdef abc", ["abc", "abcdef", None, ""]) == f"{REDACTED} {REDACTED}"


def test_events_limit_keeps_the_latest_oldest_first(reg: Registry) -> None:
    reg.add_host(MAC)
    for step in ("a", "b", "c"):
        reg.record_event(MAC, State.INSTALLING, step=step)
    assert [e.step for e in reg.events(MAC, limit=2)] == ["b", "c"]
    assert [e.step for e in reg.events(MAC)] == [None, "a", "b", "c"]
    last = reg.last_event(MAC)
    assert last is not None
    assert last.step == "c"
    assert last.mac == MAC


# -- concurrency ------------------------------------------------------------------


def test_two_registries_on_one_file_write_alternately_without_locking_errors(
    registry_dir: Path,
) -> None:
    with Registry.open(registry_dir) as setup:
        setup.add_profile(default_profile())
        macs = [f"52:54:00:00:00:{i:02x}" for i in range(2)]
        for mac in macs:
            setup.add_host(mac)
    rounds = 60

    def worker(mac: str) -> None:
        with Registry.open(registry_dir) as own:
            for i in range(rounds):
                own.record_event(mac, State.INSTALLING, step=str(i), progress=i / rounds)
                own.set_setting(f"last-{mac}", str(i))
                own.list_hosts()

    together(worker, macs)
    with Registry.open(registry_dir) as check:
        for mac in macs:
            assert len(check.events(mac)) == rounds + 1
            host = check.get_host(mac)
            assert host is not None
            assert host.step == str(rounds - 1)
        assert check.settings() == {f"last-{mac}": str(rounds - 1) for mac in macs}


def test_one_registry_shared_by_threads(reg: Registry) -> None:
    reg.add_host(MAC)

    def worker(n: int) -> None:
        for i in range(30):
            reg.record_event(MAC, State.INSTALLING, step=f"{n}-{i}")
            reg.get_host(MAC)

    together(worker, range(4))
    assert len(reg.events(MAC)) == 1 + 4 * 30


# -- repositories, agent work, check-ins (schema 3) ---------------------------------


def version_2_registry(directory: Path) -> None:
    """A registry as netinstall wrote it before schema 3: a default repository in the
    settings, one running host and one pending."""
    conn = sqlite3.connect(directory / REGISTRY_FILE)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statements in migrations.MIGRATIONS[:2]:
        assert isinstance(statements, tuple)
        for statement in statements:
            conn.execute(statement)
    conn.execute("INSERT INTO schema_version (version) VALUES (2)")
    conn.execute("INSERT INTO settings VALUES ('repo', '/srv/repo-0.1.0')")
    conn.execute("INSERT INTO settings VALUES ('payload_version', '0.1.0')")
    conn.execute("INSERT INTO profiles VALUES ('default', 't', 'seed', '', '', NULL)")
    for mac, state, credential in ((MAC, "running", "cred"), (OTHER, "pending", None)):
        conn.execute(
            "INSERT INTO hosts (mac, profile, netboot_armed, state, agent_credential) "
            "VALUES (?, 'default', 0, ?, ?)",
            (mac, state, credential),
        )
    conn.commit()
    conn.close()


@sqlite_only
def test_a_version_2_registry_gains_repositories_and_work(tmp_path: Path) -> None:
    version_2_registry(tmp_path)
    with Registry.open(tmp_path) as registry:
        running, pending = registry.get_host(MAC), registry.get_host(OTHER)
        assert running is not None
        assert pending is not None
        assert (running.work, running.reboot_policy, running.last_checkin) == (
            None,
            RebootPolicy.AUTO,
            None,
        )
        assert pending.work is Work.INSTALL
        assert registry.repositories() == [Repository("0.1.0", "/srv/repo-0.1.0")]
        # A migrated host can be given agent work at once.
        registry.add_repository("0.2.0", "/srv/repo-0.2.0")
        assert registry.assign_work(MAC, Work.UPGRADE, version="0.2.0").work is Work.UPGRADE
    check = sqlite3.connect(tmp_path / REGISTRY_FILE)
    assert check.execute("SELECT version FROM schema_version").fetchone() == (ALEMBIC_MARK,)


@sqlite_only
def test_a_version_2_registry_with_a_repository_url_registers_none(tmp_path: Path) -> None:
    version_2_registry(tmp_path)
    conn = sqlite3.connect(tmp_path / REGISTRY_FILE)
    conn.execute("UPDATE settings SET value = 'http://mirror.test/repo/' WHERE key = 'repo'")
    conn.commit()
    conn.close()
    with Registry.open(tmp_path) as registry:
        assert registry.repositories() == []


def test_repositories_are_added_kept_and_replaced_only_when_asked(reg: Registry) -> None:
    assert reg.add_repository("0.1.0", "/srv/a") == "added"
    assert reg.add_repository("0.1.0", "/srv/a") == "unchanged"
    with pytest.raises(InputError, match=r"0.1.0 is registered to /srv/a already; give --replace"):
        reg.add_repository("0.1.0", "/srv/b")
    assert reg.add_repository("0.2.0", "/srv/c") == "added"
    assert reg.add_repository("0.1.0", "/srv/b", replace=True) == "replaced"
    assert [(r.version, r.directory) for r in reg.repositories()] == [
        ("0.1.0", "/srv/b"),
        ("0.2.0", "/srv/c"),
    ]
    assert reg.repository("0.2.0") == Repository("0.2.0", "/srv/c")
    assert reg.repository("0.3.0") is None
    with pytest.raises(InputError, match=r"version '\.\./x' must be letters"):
        reg.add_repository("../x", "/srv/x")


def running_host(reg: Registry, mac: str = MAC) -> str:
    """A host installed and running: it has an agent credential. Returns the credential."""
    reg.add_host(mac)
    reg.record_event(mac, State.INSTALLED)
    _, reply = reg.record_event(mac, State.RUNNING, facts={"payload_version": "0.1.0"})
    return str(reply["agent_credential"])


def test_new_and_rearmed_hosts_have_install_work_until_running(reg: Registry) -> None:
    assert reg.add_host(MAC).work is Work.INSTALL
    reg.record_event(MAC, State.INSTALLED)
    host, _ = reg.record_event(MAC, State.RUNNING)
    assert host.work is None
    assert reg.rearm(MAC).work is Work.INSTALL


def test_assign_upgrade_never_arms_netboot_and_keeps_the_credential(reg: Registry) -> None:
    credential = running_host(reg)
    reg.add_repository("0.2.0", "/srv/repo-0.2.0")
    before = reg.get_host(MAC)
    assert before is not None
    reg.rearm(MAC)  # armed: an upgrade assigned now replaces that work and disarms
    host = reg.assign_work(MAC, Work.UPGRADE, version="0.2.0", reboot="manual")
    assert (host.state, host.work, host.assigned_version, host.reboot_policy) == (
        State.PENDING,
        Work.UPGRADE,
        "0.2.0",
        RebootPolicy.MANUAL,
    )
    assert host.netboot_armed is False
    assert host.token is not None
    assert host.token != before.token
    assert host.agent_credential_hash == before.agent_credential_hash
    assert reg.host_by_agent_credential(credential) == host
    last = reg.last_event(MAC)
    assert last is not None
    assert last.message == "assigned: upgrade to 0.2.0 (reboot manual)"


def test_assign_restore_keeps_the_assigned_version(reg: Registry) -> None:
    running_host(reg)
    before = reg.get_host(MAC)
    assert before is not None
    host = reg.assign_work(MAC, "restore")
    assert (host.work, host.assigned_version, host.reboot_policy) == (
        Work.RESTORE,
        before.assigned_version,
        RebootPolicy.AUTO,
    )
    assert host.netboot_armed is False


def test_assign_work_refusals(reg: Registry) -> None:
    with pytest.raises(UnknownHost, match="no host"):
        reg.assign_work(MAC, Work.RESTORE)
    reg.add_host(MAC)
    with pytest.raises(InputError, match="has never reported running, so it has no agent"):
        reg.assign_work(MAC, Work.RESTORE)
    running_host(reg, OTHER)
    with pytest.raises(InputError, match=r"version 0\.9\.0 is not registered"):
        reg.assign_work(OTHER, Work.UPGRADE, version="0.9.0")
    with pytest.raises(InputError, match="needs the version"):
        reg.assign_work(OTHER, Work.UPGRADE)
    with pytest.raises(InputError, match="work 'install' must be one of upgrade, restore"):
        reg.assign_work(OTHER, Work.INSTALL)
    with pytest.raises(InputError, match="reboot policy 'soon' must be one of auto, manual"):
        reg.assign_work(OTHER, Work.RESTORE, reboot="soon")
    host = reg.get_host(OTHER)
    assert host is not None
    assert host.work is None  # nothing changed by the refusals


def test_manual_upgrade_runs_through_the_agent_and_the_installer(reg: Registry) -> None:
    running_host(reg)
    reg.add_repository("0.2.0", "/srv/repo-0.2.0")
    reg.assign_work(MAC, Work.UPGRADE, version="0.2.0", reboot="manual")
    host = reg.check_in(MAC, "0.1.0", "signalled")
    assert host.state is State.SIGNALLED
    host = reg.check_in(MAC, "0.1.0", "installed-reboot-required")
    assert (host.state, host.step, host.netboot_armed) == (
        State.INSTALLED,
        "reboot-required",
        False,
    )
    # The operator reboots: the installer reports from "installed (reboot required)" on.
    host, _ = reg.record_event(MAC, State.INSTALLING, step="partition")
    assert host.state is State.INSTALLING
    host, _ = reg.record_event(MAC, State.INSTALLED)
    assert (host.state, host.step) == (State.INSTALLED, None)
    with pytest.raises(TransitionRefused):
        reg.record_event(MAC, State.INSTALLING)  # a real installed does not go back
    host, reply = reg.record_event(MAC, State.RUNNING, facts={"payload_version": "0.2.0"})
    assert (host.work, host.running_version, host.token) == (None, "0.2.0", None)
    assert "agent_credential" in reply
    messages = [e.message for e in reg.events(MAC)][-5:]
    assert messages[:2] == [
        "signalled: the agent fetched the installer",
        "installed (reboot required)",
    ]


def test_check_in_records_time_and_logs_only_news(reg: Registry) -> None:
    running_host(reg)
    count = len(reg.events(MAC))
    host = reg.check_in(MAC, "0.1.0", "running")
    assert host.last_checkin is not None
    reg.check_in(MAC, "0.1.0", "running")
    reg.check_in(MAC, "0.1.1", "running")
    assert [e.message for e in reg.events(MAC)][count:] == [
        "first check-in: running 0.1.0",
        "checked in: running 0.1.1",
    ]
    with pytest.raises(UnknownHost):
        reg.check_in(OTHER, "0.1.0", "running")


# -- a bound on each host's events (schema 8) -----------------------------------------


def test_a_host_that_floods_its_reports_keeps_only_its_newest_events(
    reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "MAX_EVENTS_PER_HOST", 20)
    monkeypatch.setattr(registry_module, "EVENTS_PRUNE_SLACK", 5)
    reg.add_host(MAC)
    reg.add_host(OTHER)
    reg.record_event(OTHER, State.INSTALLING, message="other's")
    host, _ = reg.record_event(MAC, State.INSTALLING, message="first")
    counts = []
    for n in range(60):  # committed reports and queued progress, both counted
        if n % 2:
            reg.record_event(MAC, State.INSTALLING, message=f"report {n}")
        else:
            reg.queue_progress(host, message=f"progress {n}")
            reg.flush_progress()
        counts.append(len(reg.events(MAC)))
    assert max(counts) <= 25
    assert counts[-1] >= 20
    messages = [event.message for event in reg.events(MAC)]
    assert messages[-1] == "report 59"  # the newest kept, the oldest gone
    assert "first" not in messages
    assert [event.message for event in reg.events(OTHER)][-1] == "other's"  # others untouched


@sqlite_only
def test_an_older_registry_counts_the_events_it_has(tmp_path: Path) -> None:
    with Registry.open(tmp_path) as registry:
        registry.add_profile(default_profile())
        registry.add_host(MAC)
        for _ in range(3):
            registry.record_event(MAC, State.INSTALLING)
        kept = len(registry.events(MAC))
    conn = sqlite3.connect(tmp_path / REGISTRY_FILE)  # as schema 7 left it
    conn.execute("ALTER TABLE hosts DROP COLUMN event_count")
    conn.execute("UPDATE schema_version SET version = 7")
    conn.execute("DROP TABLE alembic_version")  # as the release before Alembic left it
    # revisions 0011's, 0010's and 0009's
    for table in ("host_updates", "update_facts", "updates", "power_requests", "host_segments",
                  "servers", "bmcs", "pool_hosts", "pools", "jobs"):  # fmt: skip
        conn.execute(f"DROP TABLE {table}")
    conn.commit()
    conn.close()
    with Registry.open(tmp_path):
        pass
    check = sqlite3.connect(tmp_path / REGISTRY_FILE)
    assert check.execute("SELECT event_count FROM hosts").fetchall() == [(kept,)]
