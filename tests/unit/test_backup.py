"""``server backup`` / ``server restore`` / ``server migrate`` on SQLite: the format, the
round trip, every refusal and every bound of ``pxe_server.store.copy`` (the PostgreSQL
side: tests/integration/test_backup_postgresql.py)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import NetinstallError
from netinstall.cli import main
from pxe_server.registry import Registry
from pxe_server.store import copy
from pxe_server.store.schema import HEAD
from tests.fleet_records import (
    MACS,
    alembic_tables,
    as_revision_8,
    check_pools_and_jobs,
    check_secrets,
    make_fleet,
    records,
)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[Path, Path]:
    """A filled registry and its backup file."""
    source = tmp_path / "source"
    make_fleet(source, tmp_path / "repo")
    backup = tmp_path / "fleet.zip"
    code, _, err = run("server", "backup", str(source), "--to", str(backup))
    assert code == 0, err
    return source, backup


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rezip(
    source: Path,
    target: Path,
    change: Callable[[dict[str, bytes]], None],
    *,
    fix_manifest: bool = True,
) -> Path:
    """``source`` with its members changed by ``change``; with ``fix_manifest`` the
    manifest's sizes and sha256s then agree with the changed members (so that what is
    tested is not the checksum)."""
    found = members(source)
    change(found)
    if fix_manifest and copy.MANIFEST in found:
        manifest = json.loads(found[copy.MANIFEST])
        for entry in [*manifest["tables"], *manifest["files"]]:
            data = found.get(entry["member"])
            if data is not None:
                entry["bytes"] = len(data)
                entry["sha256"] = hashlib.sha256(data).hexdigest()
        found[copy.MANIFEST] = json.dumps(manifest).encode()
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in found.items():
            archive.writestr(name, data)
    return target


def edit_manifest(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, bytes]], None]:
    def change(found: dict[str, bytes]) -> None:
        manifest = json.loads(found[copy.MANIFEST])
        edit(manifest)
        found[copy.MANIFEST] = json.dumps(manifest).encode()

    return change


def table_of(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in manifest["tables"] if t["name"] == name)


# -- the round trip -------------------------------------------------------------------


def test_a_backup_restores_every_record_and_every_secret(
    tmp_path: Path, fleet: tuple[Path, Path]
) -> None:
    source, backup = fleet
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    target = tmp_path / "restored"
    code, out, err = run("server", "restore", str(target), "--from", str(backup))
    assert code == 0, err
    assert "hosts 7" in out
    assert "hosts: 7 rows, checksum good" in err  # verified before anything was written
    assert records(target) == records(source)
    assert stat.S_IMODE((target / "api-token").stat().st_mode) == 0o600
    assert (target / "api-token").read_bytes() == (source / "api-token").read_bytes()


def test_the_restored_secrets_verify(tmp_path: Path) -> None:
    source = tmp_path / "source"
    secrets = make_fleet(source, tmp_path / "repo")
    backup = tmp_path / "b.zip"
    assert run("server", "backup", str(source), "--to", str(backup))[0] == 0
    target = tmp_path / "restored"
    assert run("server", "restore", str(target), "--from", str(backup))[0] == 0
    check_secrets(target, secrets)


def test_the_manifest_says_what_the_file_holds(fleet: tuple[Path, Path]) -> None:
    source, backup = fleet
    found = members(backup)
    manifest = json.loads(found[copy.MANIFEST])
    assert manifest["format"] == copy.FORMAT
    assert manifest["revision"] == HEAD
    assert manifest["engine"] == "sqlite"
    assert [t["name"] for t in manifest["tables"]] == [
        t.name for t in copy.metadata.sorted_tables
    ]  # every table, parents first, none named in the code
    for entry in [*manifest["tables"], *manifest["files"]]:
        data = found[entry["member"]]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)
    hosts = table_of(manifest, "hosts")
    assert hosts["rows"] == len(MACS) == found[hosts["member"]].count(b"\n")
    # What the server directory has besides the registry: the API token, nothing else.
    assert sorted(found) == sorted(
        [copy.MANIFEST, "files/api-token", *(t["member"] for t in manifest["tables"])]
    )
    assert found["files/api-token"] == (source / "api-token").read_bytes()


def test_progress_is_reported_every_progress_rows(
    tmp_path: Path, fleet: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, _ = fleet
    monkeypatch.setattr(copy, "PROGRESS_ROWS", 2)
    monkeypatch.setattr(copy, "BATCH_ROWS", 2)
    code, _, err = run("server", "backup", str(source), "--to", str(tmp_path / "p.zip"))
    assert code == 0
    assert "  hosts: 2 of 7 rows" in err
    code, _, err = run("server", "restore", str(tmp_path / "r"), "--from", str(tmp_path / "p.zip"))
    assert code == 0, err
    assert "  hosts: 6 of 7 rows" in err


def test_a_backup_at_revision_8_is_restored_then_upgraded(tmp_path: Path) -> None:
    """A backup made before pools and jobs (Alembic 0008) is loaded at its own revision,
    then upgraded: the registry ends at 0012 with every record and every secret, and its
    pools and jobs work."""
    source = tmp_path / "source"
    secrets = make_fleet(source, tmp_path / "repo")
    assert run("server", "backup", str(source), "--to", str(tmp_path / "b.zip"))[0] == 0
    old = as_revision_8(tmp_path / "b.zip", tmp_path / "at-0008.zip")
    manifest = json.loads(members(old)[copy.MANIFEST])
    # What a registry at 0008 holds: every table of Alembic's 0008, each column of it.
    held = {table["name"]: sorted(table["columns"]) for table in manifest["tables"]}
    assert held == alembic_tables("0008", tmp_path / "at-0008.sqlite")
    assert "pools" not in held

    target = tmp_path / "restored"
    code, out, err = run("server", "restore", str(target), "--from", str(old))
    assert code == 0, err
    assert "revision 0008, from sqlite" in err
    assert "hosts 7" in out
    with sqlite3.connect(target / "registry.sqlite") as conn:  # before any Registry.open
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
    assert HEAD == "0012"
    assert records(target) == records(source)
    check_secrets(target, secrets)
    check_pools_and_jobs(target)


def test_a_backup_that_holds_tables_its_revision_lacks_is_refused(
    tmp_path: Path, fleet: tuple[Path, Path]
) -> None:
    """Loaded at the revision it names: a table that revision has not is one sentence."""
    _, backup = fleet
    bad = rezip(
        backup, tmp_path / "mislabelled.zip", edit_manifest(lambda m: m.update(revision="0008"))
    )
    code, _, err = run("server", "restore", str(tmp_path / "t"), "--from", str(bad))
    assert code == 2
    assert err.splitlines()[-1] == (
        "netinstall: revision 0008 of the registry has no table 'jobs'; nothing was restored: "
        f"{tmp_path / 't'} is as it was"
    )
    assert not (tmp_path / "t").exists()


def test_backup_never_overwrites(fleet: tuple[Path, Path]) -> None:
    source, backup = fleet
    before = backup.read_bytes()
    code, _, err = run("server", "backup", str(source), "--to", str(backup))
    assert code == 2
    assert "exists" in err
    assert backup.read_bytes() == before
    assert [p.name for p in backup.parent.iterdir() if p.name.endswith(".part")] == []


def test_backup_refuses_a_value_the_format_cannot_carry() -> None:
    with pytest.raises(NetinstallError, match="bytes value"):
        copy._json_value(b"\x00", "hosts", "facts")


# -- restore's refusals ---------------------------------------------------------------


def test_a_tampered_backup_is_refused_before_anything_is_written(
    tmp_path: Path, fleet: tuple[Path, Path]
) -> None:
    _, backup = fleet

    def tamper(found: dict[str, bytes]) -> None:
        found["tables/hosts.jsonl"] = found["tables/hosts.jsonl"].replace(b"pending", b"running")

    bad = rezip(backup, tmp_path / "bad.zip", tamper, fix_manifest=False)
    target = tmp_path / "target"
    code, _, err = run("server", "restore", str(target), "--from", str(bad))
    assert code == 2
    assert "fails its checksum: tables/hosts.jsonl" in err
    assert not target.exists()


def test_a_tampered_api_token_is_refused(tmp_path: Path, fleet: tuple[Path, Path]) -> None:
    _, backup = fleet

    def tamper(found: dict[str, bytes]) -> None:
        found["files/api-token"] = b"x" * 32 + b"\n"

    bad = rezip(backup, tmp_path / "bad.zip", tamper, fix_manifest=False)
    code, _, err = run("server", "restore", str(tmp_path / "t"), "--from", str(bad))
    assert code == 2
    assert "fails its checksum: files/api-token" in err


def test_a_newer_revision_is_refused_by_name(tmp_path: Path, fleet: tuple[Path, Path]) -> None:
    _, backup = fleet

    def newer(manifest: dict[str, Any]) -> None:
        manifest["revision"] = "0099"
        manifest["netinstall"] = "9.0"

    bad = rezip(backup, tmp_path / "newer.zip", edit_manifest(newer))
    code, _, err = run("server", "restore", str(tmp_path / "t"), "--from", str(bad))
    assert code == 2
    assert "schema revision 0099 (made by netinstall 9.0), newer than this netinstall" in err
    assert f"knows (its newest: {HEAD}); restore it with netinstall 9.0 or newer" in err
    assert not (tmp_path / "t").exists()


def test_a_newer_format_is_refused(tmp_path: Path, fleet: tuple[Path, Path]) -> None:
    _, backup = fleet
    bad = rezip(backup, tmp_path / "f.zip", edit_manifest(lambda m: m.update(format=2)))
    code, _, err = run("server", "restore", str(tmp_path / "t"), "--from", str(bad))
    assert code == 2
    assert "backup format 2, newer than this netinstall's (1)" in err


def test_a_non_empty_registry_is_replaced_only_with_replace(
    tmp_path: Path, fleet: tuple[Path, Path]
) -> None:
    source, backup = fleet
    other = tmp_path / "other"
    with Registry.open(other) as reg:
        reg.add_profile(copy_profile := _profile("mine"))
        reg.add_host("52:54:00:99:99:99", profile=copy_profile.name)
    before = records(other)
    code, _, err = run("server", "restore", str(other), "--from", str(backup))
    assert code == 2
    assert "is not empty (1 events, 1 profiles, 1 hosts); give --replace" in err
    assert records(other) == before
    code, _, err = run("server", "restore", str(other), "--from", str(backup), "--replace")
    assert code == 0, err
    assert records(other) == records(source)


def test_an_initialised_but_unused_directory_counts_as_not_empty(
    tmp_path: Path, fleet: tuple[Path, Path]
) -> None:
    _, backup = fleet
    fresh = tmp_path / "fresh"
    with Registry.open(fresh):
        pass  # the key and the API token's hash only: bookkeeping, so it is empty
    code, _, err = run("server", "restore", str(fresh), "--from", str(backup))
    assert code == 0, err


def test_a_failed_restore_leaves_the_registry_as_it_was(
    tmp_path: Path, fleet: tuple[Path, Path]
) -> None:
    """One transaction: the last table's bad row takes back the tables before it."""
    source, backup = fleet

    def orphan(found: dict[str, bytes]) -> None:
        lines = found["tables/hosts.jsonl"].splitlines(keepends=True)
        row = json.loads(lines[-1])
        row[2] = "no-such-profile"  # hosts.profile: a foreign key
        lines[-1] = json.dumps(row).encode() + b"\n"
        found["tables/hosts.jsonl"] = b"".join(lines)

    bad = rezip(backup, tmp_path / "orphan.zip", orphan)
    target = tmp_path / "target"
    with Registry.open(target) as reg:
        reg.add_profile(_profile("mine"))
    before = records(target)
    token = (target / "api-token").read_bytes()
    code, _, err = run("server", "restore", str(target), "--from", str(bad), "--replace")
    assert code == 1
    assert "FOREIGN KEY constraint failed; nothing was changed" in err
    assert records(target) == before
    assert (target / "api-token").read_bytes() == token
    # Into a new directory: nothing is left behind.
    code, _, err = run("server", "restore", str(tmp_path / "new"), "--from", str(bad))
    assert code == 1
    assert not (tmp_path / "new").exists()
    assert records(source)["hosts"]  # the source is untouched


def test_restore_refuses_a_registry_in_use(
    tmp_path: Path, fleet: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, backup = fleet
    seen: list[set[Path]] = []

    def users(paths: Any) -> list[tuple[int, str]]:
        seen.append(set(paths))
        return [(4242, "netinstall server run /srv")]

    monkeypatch.setattr(copy, "users_of", users)
    code, _, err = run("server", "restore", str(source), "--from", str(backup), "--replace")
    assert code == 2
    assert "process 4242 (netinstall server run /srv) has the registry" in err
    assert source / "registry.sqlite" in seen[0]


def test_users_of_finds_this_process_never(tmp_path: Path) -> None:
    held = tmp_path / "held"
    with held.open("w"):
        assert copy.users_of([held]) == []  # our own process is not "another"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.pop(copy.MANIFEST), "no manifest.json"),
        (lambda f: f.update({copy.MANIFEST: b"not json"}), "manifest.json is not JSON"),
        (lambda f: f.update({copy.MANIFEST: b"[]"}), "is not a JSON object"),
        (
            lambda f: f.update({"tables/extra.jsonl": b""}),
            "tables/extra.jsonl is not in the manifest",
        ),
        (lambda f: f.pop("tables/events.jsonl"), "tables/events.jsonl is missing"),
        (
            edit_manifest(lambda m: table_of(m, "hosts").update(rows=6)),
            "tables/hosts.jsonl has more rows than its manifest says",
        ),
        (
            edit_manifest(lambda m: table_of(m, "hosts").update(rows=8)),
            "tables/hosts.jsonl has 7 rows, its manifest says 8",
        ),
        (
            edit_manifest(lambda m: table_of(m, "hosts").update(member="../etc/passwd")),
            "unexpected member '../etc/passwd'",
        ),
        (
            edit_manifest(lambda m: table_of(m, "hosts")["columns"].append("mac")),
            "its columns are not distinct names",
        ),
        (
            edit_manifest(lambda m: m.pop("revision")),
            "the manifest's 'revision' is not a short text",
        ),
    ],
)
def test_a_malformed_backup_is_one_sentence(
    tmp_path: Path,
    fleet: tuple[Path, Path],
    change: Callable[[dict[str, bytes]], None],
    message: str,
) -> None:
    _, backup = fleet
    bad = rezip(backup, tmp_path / "bad.zip", change, fix_manifest=False)
    code, _, err = run("server", "restore", str(tmp_path / "t"), "--from", str(bad))
    assert code == 2, err
    assert message in err
    assert not (tmp_path / "t").exists()


def test_a_row_of_the_wrong_shape_is_refused(tmp_path: Path, fleet: tuple[Path, Path]) -> None:
    _, backup = fleet

    def short(found: dict[str, bytes]) -> None:
        rows = found["tables/settings.jsonl"].count(b"\n")
        found["tables/settings.jsonl"] = b'["repo"]\n' * rows

    bad = rezip(backup, tmp_path / "short.zip", short)
    code, _, err = run("server", "restore", str(tmp_path / "t"), "--from", str(bad))
    assert code == 2
    assert "a row is not a list of 2 values" in err
    assert not (tmp_path / "t" / "registry.sqlite").exists()


def test_not_a_zip_is_one_sentence(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello")
    code, _, err = run("server", "restore", str(tmp_path / "t"), "--from", str(junk))
    assert code == 2
    assert "is not a netinstall backup (not a zip" in err
    code, _, err = run("server", "restore", str(tmp_path / "t"), "--from", str(tmp_path / "none"))
    assert code == 2
    assert "no such file" in err


# -- every bound ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bound", "value", "message"),
    [
        ("MAX_MANIFEST_BYTES", 100, "manifest.json has more than MAX_MANIFEST_BYTES (100) bytes"),
        ("MAX_MEMBERS", 5, "more than MAX_MEMBERS (5)"),
        ("MAX_COLUMNS", 3, "more than MAX_COLUMNS"),
        ("MAX_ROW_BYTES", 64, "a row longer than MAX_ROW_BYTES (64)"),
        ("MAX_TABLE_ROWS", 5, "18 rows, more than MAX_TABLE_ROWS (5)"),
        ("MAX_BACKUP_BYTES", 1000, "more than MAX_BACKUP_BYTES (1000)"),
        ("MAX_CARRIED_FILE", 8, "more than MAX_CARRIED_FILE (8)"),
    ],
)
def test_every_bound_is_enforced(  # noqa: PLR0917 - the fixtures and the parameters
    tmp_path: Path,
    fleet: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    bound: str,
    value: int,
    message: str,
) -> None:
    _, backup = fleet
    code, _, err = run("server", "restore", str(tmp_path / "ok"), "--from", str(backup))
    assert code == 0, err  # under the default bounds it restores
    monkeypatch.setattr(copy, bound, value)
    code, _, err = run("server", "restore", str(tmp_path / "t"), "--from", str(backup))
    assert code == 2, err
    assert message in err
    assert not (tmp_path / "t").exists()


def test_a_member_declared_small_but_large_is_cut_off(
    tmp_path: Path, fleet: tuple[Path, Path]
) -> None:
    """The reader counts what it decompresses: a member longer than its manifest's size
    (a zip bomb's way) is refused at that size, not read to its end."""
    _, backup = fleet

    def bomb(found: dict[str, bytes]) -> None:
        found["tables/settings.jsonl"] += b"[" + b" " * 5_000_000 + b"]\n"

    bad = rezip(backup, tmp_path / "bomb.zip", bomb, fix_manifest=False)
    with (
        copy.Backup(bad) as opened,
        pytest.raises(copy.BackupError, match="longer than its manifest"),
    ):
        opened.verify()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=400) | st.text(max_size=200).map(str.encode))
def test_any_manifest_is_a_backup_error_or_good(tmp_path: Path, manifest: bytes) -> None:
    path = tmp_path / "fuzz.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(copy.MANIFEST, manifest)
    try:
        with copy.Backup(path) as opened:
            opened.verify()
    except copy.BackupError:
        pass


# -- migrate's refusals (its copy: tests/integration/test_backup_postgresql.py) --------


def test_migrate_refuses_a_directory_on_postgresql_already(tmp_path: Path) -> None:
    (tmp_path / "database-url").write_text("postgresql://u@/fleet?host=/run/postgresql\n")
    code, _, err = run("server", "migrate", str(tmp_path), "--to", "postgresql://u@/other")
    assert code == 2
    assert "on PostgreSQL already (postgresql://u@/fleet?host=/run/postgresql)" in err


def test_migrate_refuses_a_directory_without_a_registry(tmp_path: Path) -> None:
    code, _, err = run("server", "migrate", str(tmp_path), "--to", "postgresql://u@/fleet")
    assert code == 2
    assert "holds no SQLite registry" in err


def test_migrate_refuses_a_url_that_is_not_postgresql(fleet: tuple[Path, Path]) -> None:
    source, _ = fleet
    code, _, err = run("server", "migrate", str(source), "--to", "mysql://u@/fleet")
    assert code == 2
    assert "only PostgreSQL URLs" in err


def test_migrate_refuses_a_running_server(
    fleet: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, _ = fleet
    monkeypatch.setattr(copy, "users_of", lambda paths: [(77, "netinstall server run")])
    code, _, err = run("server", "migrate", str(source), "--to", "postgresql://u@/fleet")
    assert code == 2
    assert "cannot migrate: process 77 (netinstall server run) has the registry" in err


def _profile(name: str) -> Any:
    from dataclasses import replace

    from pxe_server.registry import default_profile

    return replace(default_profile(), name=name)


def test_remote_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["--server", "https://x:8443", "server", "backup", "--to", str(tmp_path / "b")]
    )
    assert result.exit_code == 2
    assert "works on the server's own directory only" in result.stderr


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def good_backup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("fuzz")
    make_fleet(where / "source", where / "repo")
    code, _, err = run("server", "backup", str(where / "source"), "--to", str(where / "b.zip"))
    assert code == 0, err
    return where / "b.zip"


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_changed_manifest_field_is_a_backup_error_or_good(
    tmp_path: Path, good_backup: Path, data: st.DataObject
) -> None:
    """A valid manifest with one field, anywhere in it, replaced by any JSON value."""
    found = members(good_backup)
    manifest = json.loads(found[copy.MANIFEST])
    parent: Any = manifest
    while True:
        keys = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        if isinstance(parent[key], dict | list) and data.draw(st.booleans()):
            parent = parent[key]
            continue
        parent[key] = data.draw(_JSON)
        break
    found[copy.MANIFEST] = json.dumps(manifest).encode()
    path = tmp_path / f"m{data.draw(st.integers(0, 10**9))}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in found.items():
            archive.writestr(name, content)
    try:
        with copy.Backup(path) as opened:
            opened.verify()
            for table in opened.rows():
                for _row in table.rows:
                    pass
    except copy.BackupError:
        pass
