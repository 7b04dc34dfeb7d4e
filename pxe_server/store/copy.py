"""A registry copied whole, the same on both engines: ``server backup`` / ``server
restore`` and ``server migrate --to`` (docs/deployment.md, "Backups").

One place copies rows: ``dump`` reads every table of ``tables.metadata`` (in foreign-key
order, each by its primary key) inside one snapshot (``snapshot``: a read transaction
of SQLite's WAL, or REPEATABLE READ on PostgreSQL); ``load`` writes such tables into a
target registry inside the caller's one write transaction: the target's registry
tables are dropped, Alembic creates the schema at the source's revision, the rows go
in, the counts are checked, and Alembic upgrades it to this netinstall's newest
revision. Nothing names a table: a table a later revision adds comes along.

A backup file is a zip: ``tables/NAME.jsonl`` (one JSON array a row, the columns the
manifest lists, in that order), ``files/NAME`` (server-directory files carried along:
the API token's only copy) and ``manifest.json`` (format, netinstall version, Alembic
revision, source engine, and for every member its row count, size and sha256).
``Backup`` reads one and refuses, in one sentence, a file past any of the ``MAX_``
bounds below, a member whose size, row count or sha256 is not the manifest's, and a
revision this netinstall does not know. JSON values are text, numbers, booleans and
null: what the registry's columns hold on either engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Integer, MetaData, Table, delete, func, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError

from common.errors import InputError, NetinstallError
from common.whole_file import whole_file
from pxe_server.limits import KIB, MIB
from pxe_server.store import schema
from pxe_server.store.engine import Store
from pxe_server.store.tables import metadata

FORMAT = 1  # the backup format this code writes and reads
MANIFEST = "manifest.json"
# Bounds on what a backup file may declare or hold; restore refuses a file past one.
MAX_MANIFEST_BYTES = 1 * MIB  # manifest.json, uncompressed
MAX_MEMBERS = 512  # members of the zip (one per table and carried file, the manifest)
MAX_COLUMNS = 256  # columns of one table
MAX_ROW_BYTES = 16 * MIB  # one row's JSON line (a host's facts are the longest values)
MAX_TABLE_ROWS = 200_000_000  # rows of one table
MAX_BACKUP_BYTES = 256 * 1024 * MIB  # every member uncompressed together (256 GiB)
MAX_CARRIED_FILE = 64 * KIB  # one carried server-directory file (the API token: 33 bytes)
BATCH_ROWS = 1000  # rows fetched and inserted at a time
PROGRESS_ROWS = 100_000  # a table's progress is reported every this many rows
READ_CHUNK = 1 * MIB

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")  # a table's or a column's name
_FILE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")  # a carried file's name
ALEMBIC_TABLE = "alembic_version"
# Bookkeeping a registry has as soon as it exists (its key, its API token's hash, the
# schema mark, the counters): rows there alone do not make a target "not empty".
BOOKKEEPING = frozenset({"schema_version", "secrets", "counters"})

Progress = Callable[[str], None]
_REVISION = text("SELECT version_num FROM alembic_version")


class BackupError(InputError):
    """A backup file that cannot be restored; nothing was written."""


def _quiet(_line: str) -> None:
    pass


@dataclass(frozen=True)
class TableRows:
    """One table's rows on their way from a source to a target."""

    name: str
    columns: tuple[str, ...]
    expected: int  # rows the source has
    rows: Iterable[Sequence[Any]]


# -- reading a registry ---------------------------------------------------------------


@contextmanager
def snapshot(store: Store, *, exclusive: bool = False) -> Iterator[Connection]:
    """A connection inside one read transaction: every read sees the same registry.
    SQLite: a read transaction of the WAL (a running server goes on writing), or with
    ``exclusive`` the write lock (no other process commits until it ends; the busy
    timeout applies); PostgreSQL: REPEATABLE READ, READ ONLY."""
    try:
        conn = store.engine.connect()
    except SQLAlchemyError as exc:
        raise store.error(exc) from None
    try:
        if store.sqlite:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if exclusive else "BEGIN")
            conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").all()  # the snapshot
        else:
            conn.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            conn.exec_driver_sql("SELECT 1").all()  # the snapshot is taken at the first query
        yield conn
    except SQLAlchemyError as exc:
        raise store.error(exc) from None
    finally:
        with suppress(SQLAlchemyError):
            conn.exec_driver_sql("ROLLBACK")
        with suppress(SQLAlchemyError):
            conn.close()


def revision(conn: Connection) -> str:
    """The registry's Alembic revision (one: the registry has no branches)."""
    found = conn.execute(_REVISION).scalars().all()
    if len(found) != 1:
        raise NetinstallError(f"the registry has {len(found)} Alembic revisions, not one")
    return str(found[0])


def counts(conn: Connection) -> dict[str, int]:
    """Every table's row count, in foreign-key order."""
    return {
        table.name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        for table in metadata.sorted_tables
    }


def dump(conn: Connection, expected: Mapping[str, int]) -> Iterator[TableRows]:
    """Every table of the registry on ``conn`` (inside ``snapshot``), parents first, each
    in primary-key order; ``expected``: ``counts`` taken in the same snapshot."""
    for table in metadata.sorted_tables:
        order = list(table.primary_key.columns) or list(table.c)
        statement = select(table).order_by(*order)
        yield TableRows(
            table.name,
            tuple(c.name for c in table.c),
            expected[table.name],
            _stream(conn, statement),
        )


def _stream(conn: Connection, statement: Any) -> Iterator[Sequence[Any]]:
    result = conn.execution_options(stream_results=True, yield_per=BATCH_ROWS).execute(statement)
    with contextlib.closing(result):
        for row in result:
            yield tuple(row)


# -- writing a registry ---------------------------------------------------------------


def _foreign_tables(conn: Connection) -> list[str]:
    ours = set(metadata.tables) | {ALEMBIC_TABLE}
    return sorted(set(inspect(conn).get_table_names()) - ours)


def content(conn: Connection) -> dict[str, int]:
    """The registry tables on ``conn`` that hold rows besides ``BOOKKEEPING``'s, and how
    many: an empty dict for a new or empty database (a target that needs no
    ``--replace``). A database with tables of another program is refused."""
    foreign = _foreign_tables(conn)
    if foreign:
        raise InputError(
            f"the target database holds tables that are not a netinstall registry's "
            f"({', '.join(foreign[:5])}); use an empty database"
        )
    present = set(inspect(conn).get_table_names())
    found: dict[str, int] = {}
    for table in metadata.sorted_tables:
        if table.name in BOOKKEEPING or table.name not in present:
            continue
        count = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
        if count:
            found[table.name] = count
    return found


def describe(found: Mapping[str, int]) -> str:
    return ", ".join(f"{count} {name}" for name, count in found.items())


def _alembic(conn: Connection, target: str) -> None:
    """Alembic's upgrade to ``target`` on ``conn``, inside its transaction."""
    from alembic import command  # noqa: PLC0415 - as in schema: only when needed
    from alembic.config import Config  # noqa: PLC0415

    config = Config(attributes={"connection": conn})
    config.set_main_option("script_location", str(schema.SCRIPTS))
    command.upgrade(config, target)


def known_revision(rev: str) -> bool:
    """Whether ``rev`` is one of this netinstall's Alembic revisions."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415
    from alembic.util.exc import CommandError  # noqa: PLC0415

    try:
        return ScriptDirectory(str(schema.SCRIPTS)).get_revision(rev) is not None
    except CommandError:
        return False


def load(
    conn: Connection,
    store: Store,
    rev: str,
    tables: Iterable[TableRows],
    progress: Progress = _quiet,
) -> dict[str, int]:
    """Make the registry on ``conn`` (inside the caller's write transaction on
    ``store``) a copy of ``tables``, a registry at Alembic revision ``rev``: its registry
    tables dropped, the schema of ``rev`` created, the rows inserted and counted, the
    schema upgraded to this netinstall's. The rows each table got."""
    store.lock_schema(conn)
    foreign = _foreign_tables(conn)
    if foreign:  # checked by content() already; here for a caller that did not
        raise InputError(f"the target database holds other tables ({', '.join(foreign[:5])})")
    present = MetaData()
    present.reflect(conn)
    present.drop_all(conn)
    _alembic(conn, rev)
    target = MetaData()
    target.reflect(conn)
    for table in reversed(target.sorted_tables):  # what the revisions seeded
        if table.name != ALEMBIC_TABLE:
            conn.execute(delete(table))
    done: dict[str, int] = {}
    for given in tables:
        table = target.tables.get(given.name)
        if table is None or given.name == ALEMBIC_TABLE:
            raise BackupError(f"revision {rev} of the registry has no table {given.name!r}")
        unknown = [c for c in given.columns if c not in table.c]
        if unknown:
            raise BackupError(
                f"revision {rev} of the registry's table {given.name} has no column {unknown[0]!r}"
            )
        done[given.name] = _insert(conn, table, given, progress)
        progress(f"{given.name}: {done[given.name]} rows copied")
        if done[given.name] != given.expected:
            raise BackupError(
                f"table {given.name}: {done[given.name]} rows read, the source has {given.expected}"
            )
    if not store.sqlite:
        _set_sequences(conn, target)
    for name, count in done.items():
        stored = conn.execute(select(func.count()).select_from(target.tables[name])).scalar_one()
        if stored != count:
            raise NetinstallError(f"table {name}: {stored} rows stored, {count} copied")
    schema.migrate(conn, store)  # the schema of ``rev`` up to this netinstall's
    return done


def _insert(conn: Connection, table: Table, given: TableRows, progress: Progress) -> int:
    statement = table.insert()
    count = 0
    batch: list[dict[str, Any]] = []
    for row in given.rows:
        batch.append(dict(zip(given.columns, row, strict=True)))
        if len(batch) >= BATCH_ROWS:
            conn.execute(statement, batch)
            count += len(batch)
            batch = []
            if count % PROGRESS_ROWS == 0:
                progress(f"  {given.name}: {count} of {given.expected} rows")
    if batch:
        conn.execute(statement, batch)
        count += len(batch)
    return count


def _set_sequences(conn: Connection, target: MetaData) -> None:
    """PostgreSQL: each serial primary key's sequence past the rows inserted with their
    own ids (the events' ids go on from the source's last)."""
    for table in target.sorted_tables:
        keys = list(table.primary_key.columns)
        if len(keys) != 1 or not isinstance(keys[0].type, Integer):
            continue
        sequence = conn.execute(
            text("SELECT pg_get_serial_sequence(:table, :column)"),
            {"table": table.name, "column": keys[0].name},
        ).scalar()
        if sequence is None:
            continue
        last = conn.execute(select(func.max(keys[0]))).scalar()
        conn.execute(
            text("SELECT setval(:sequence, :value, :called)"),
            {"sequence": sequence, "value": last or 1, "called": last is not None},
        )


def others_connected(conn: Connection, store: Store) -> int:
    """PostgreSQL: how many other netinstall connections (a server, a command) the
    registry's database has (SQLite: 0; the caller checks the file's users)."""
    if store.sqlite:
        return 0
    return int(
        conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'netinstall' AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    )


def users_of(paths: Iterable[Path]) -> list[tuple[int, str]]:
    """Other processes that have one of ``paths`` open (their pid and command line),
    as far as /proc lets us see: all of them as root, our own user's otherwise."""
    wanted = {str(p.resolve()) for p in paths}
    found: list[tuple[int, str]] = []
    proc = Path("/proc")
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # gone, or not ours to look at
            continue
        links = set()
        for fd in fds:
            with suppress(OSError):  # closed meanwhile
                links.add(os.readlink(fd))
        if links & wanted:
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                command = " ".join(a.decode("utf-8", "replace") for a in argv if a)
            except OSError:
                command = "?"
            found.append((int(entry.name), command))
    return sorted(found)


# -- the backup file ------------------------------------------------------------------


class _Hashing(io.RawIOBase):
    """A writable stream that counts and hashes what passes through to ``out``."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.out.write(chunk)
        self.sha256.update(chunk)
        self.size += len(chunk)
        return len(chunk)


def _json_value(value: Any, table: str, column: str) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise NetinstallError(
        f"table {table}, column {column}: a {type(value).__name__} value, which the backup "
        "format does not carry"
    )


def write_backup(
    path: Path,
    store: Store,
    version: str,
    files: Mapping[str, bytes],
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """Write the registry of ``store`` (one snapshot) and ``files`` into the backup file
    ``path`` (0600; refused if it exists); its manifest."""
    path = Path(path)
    exists = f"{path} exists; give a new file name (a backup never overwrites)"
    if path.exists() or path.is_symlink():
        raise InputError(exists)
    with whole_file(path, exists) as raw:  # never over a file made meanwhile either
        return _write_zip(raw, store, version, files, progress)


def _write_zip(
    raw: IO[bytes], store: Store, version: str, files: Mapping[str, bytes], progress: Progress
) -> dict[str, Any]:
    tables: list[dict[str, Any]] = []
    carried: list[dict[str, Any]] = []
    with (
        zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive,
        snapshot(store) as conn,
    ):
        rev = revision(conn)
        expected = counts(conn)
        for given in dump(conn, expected):
            member = f"tables/{given.name}.jsonl"
            rows = 0
            info = zipfile.ZipInfo(member, time.localtime()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as out:
                hashing = _Hashing(out)
                buffer = io.BufferedWriter(hashing, READ_CHUNK)
                for row in given.rows:
                    values = [
                        _json_value(v, given.name, c)
                        for v, c in zip(row, given.columns, strict=True)
                    ]
                    line = json.dumps(values, ensure_ascii=False, separators=(",", ":"))
                    buffer.write(line.encode("utf-8") + b"\n")
                    rows += 1
                    if rows % PROGRESS_ROWS == 0:
                        progress(f"  {given.name}: {rows} of {given.expected} rows")
                buffer.flush()
            if rows != given.expected:
                raise NetinstallError(
                    f"table {given.name}: {rows} rows read, {given.expected} counted"
                )
            progress(f"{given.name}: {rows} rows")
            tables.append(
                {
                    "name": given.name,
                    "member": member,
                    "columns": list(given.columns),
                    "rows": rows,
                    "bytes": hashing.size,
                    "sha256": hashing.sha256.hexdigest(),
                }
            )
        for name, data in sorted(files.items()):
            member = f"files/{name}"
            archive.writestr(member, data)
            carried.append(
                {
                    "name": name,
                    "member": member,
                    "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
        manifest = {
            "format": FORMAT,
            "netinstall": version,
            "revision": rev,
            "engine": "sqlite" if store.sqlite else "postgresql",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tables": tables,
            "files": carried,
        }
        archive.writestr(MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return manifest


@dataclass(frozen=True)
class Member:
    name: str  # a table's or a carried file's
    member: str  # its path in the zip
    size: int
    sha256: str
    columns: tuple[str, ...] = ()
    rows: int = 0


class Backup:
    """A backup file, opened for restoring: its manifest read and checked against the
    bounds; ``verify`` reads every member against it, ``tables`` yields the rows
    (checking them again as they go: the file is read twice)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except FileNotFoundError:
            raise BackupError(f"{self.path}: no such file") from None
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise BackupError(
                f"{self.path} is not a netinstall backup (not a zip: {exc})"
            ) from None
        try:
            self._read_manifest()
        except BaseException:
            self._zip.close()
            raise

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> Backup:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _bad(self, why: str) -> BackupError:
        return BackupError(f"{self.path} is not a usable netinstall backup: {why}")

    def _read_manifest(self) -> None:
        infos = self._zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise self._bad(f"{len(infos)} members, more than MAX_MEMBERS ({MAX_MEMBERS})")
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise self._bad("a member appears twice")
        if MANIFEST not in names:
            raise self._bad(f"no {MANIFEST}")
        raw = self._read_bounded(MANIFEST, MAX_MANIFEST_BYTES, "MAX_MANIFEST_BYTES")
        try:
            manifest = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise self._bad(f"{MANIFEST} is not JSON") from None
        if not isinstance(manifest, dict):
            raise self._bad(f"{MANIFEST} is not a JSON object")
        fmt = manifest.get("format")
        if not isinstance(fmt, int) or isinstance(fmt, bool):
            raise self._bad("no format number")
        if fmt > FORMAT:
            raise BackupError(
                f"{self.path} is in backup format {fmt}, newer than this netinstall's "
                f"({FORMAT}); restore it with netinstall {manifest.get('netinstall', '?')} "
                "or newer"
            )
        if fmt != FORMAT:
            raise self._bad(f"unknown format {fmt}")
        self.version = self._text(manifest, "netinstall")
        self.revision = self._text(manifest, "revision")
        self.engine = self._text(manifest, "engine")
        self.created = self._text(manifest, "created")
        if not known_revision(self.revision):
            raise BackupError(
                f"{self.path} holds a registry at schema revision {self.revision} (made by "
                f"netinstall {self.version}), newer than this netinstall knows (its newest: "
                f"{schema.HEAD}); restore it with netinstall {self.version} or newer"
            )
        self.tables = [self._table(entry) for entry in self._list(manifest, "tables")]
        self.files = [self._file(entry) for entry in self._list(manifest, "files")]
        listed = [m.member for m in [*self.tables, *self.files]]
        if len(set(listed)) != len(listed) or len({m.name for m in self.tables}) != len(
            self.tables
        ):
            raise self._bad("the manifest lists a member twice")
        unlisted = sorted(set(names) - set(listed) - {MANIFEST})
        if unlisted:
            raise self._bad(f"{unlisted[0]} is not in the manifest")
        missing = sorted(set(listed) - set(names))
        if missing:
            raise self._bad(f"{missing[0]} is missing")
        total = sum(m.size for m in [*self.tables, *self.files])
        if total > MAX_BACKUP_BYTES:
            raise self._bad(f"{total} bytes, more than MAX_BACKUP_BYTES ({MAX_BACKUP_BYTES})")

    def _read_bounded(self, member: str, bound: int, name: str) -> bytes:
        try:
            with self._zip.open(member) as stream:
                data = stream.read(bound + 1)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise self._bad(f"{member} cannot be read ({exc})") from None
        if len(data) > bound:
            raise self._bad(f"{member} has more than {name} ({bound}) bytes")
        return data

    def _text(self, manifest: Mapping[str, Any], key: str) -> str:
        value = manifest.get(key)
        if not isinstance(value, str) or not value or len(value) > 200:
            raise self._bad(f"the manifest's {key!r} is not a short text")
        return value

    def _list(self, manifest: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
        value = manifest.get(key)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self._bad(f"the manifest's {key!r} is not a list of objects")
        return value

    def _count(self, entry: Mapping[str, Any], key: str, bound: int, name: str) -> int:
        value = entry.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self._bad(f"{entry.get('member')!r}: {key} is not a count")
        if value > bound:
            raise self._bad(f"{entry.get('member')}: {value} {key}, more than {name} ({bound})")
        return value

    def _member(self, entry: Mapping[str, Any], pattern: re.Pattern[str], folder: str) -> Member:
        name = self._text(entry, "name")
        if not pattern.match(name) or entry.get("member") != f"{folder}{name}":
            raise self._bad(f"the manifest names an unexpected member {entry.get('member')!r}")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise self._bad(f"{entry['member']}: no sha256")
        size = self._count(entry, "bytes", MAX_BACKUP_BYTES, "MAX_BACKUP_BYTES")
        return Member(name, str(entry["member"]), size, digest)

    def _table(self, entry: Mapping[str, Any]) -> Member:
        name = self._text(entry, "name")
        found = self._member({**entry, "name": name + ".jsonl"}, _NAME_JSONL, "tables/")
        columns = entry.get("columns")
        if not isinstance(columns, list):
            raise self._bad(f"{found.member}: no column list")
        if len(columns) > MAX_COLUMNS:
            raise self._bad(f"{found.member}: {len(columns)} columns, more than MAX_COLUMNS")
        if not all(isinstance(c, str) and _NAME.match(c) for c in columns) or len(
            set(columns)
        ) != len(columns):
            raise self._bad(f"{found.member}: its columns are not distinct names")
        rows = self._count(entry, "rows", MAX_TABLE_ROWS, "MAX_TABLE_ROWS")
        return Member(name, found.member, found.size, found.sha256, tuple(columns), rows)

    def _file(self, entry: Mapping[str, Any]) -> Member:
        found = self._member(entry, _FILE, "files/")
        if found.size > MAX_CARRIED_FILE:
            raise self._bad(
                f"{found.member}: {found.size} bytes, more than MAX_CARRIED_FILE "
                f"({MAX_CARRIED_FILE})"
            )
        return found

    # -- reading members ---------------------------------------------------------------

    def _lines(self, member: Member) -> Iterator[bytes]:
        """``member``'s lines, each at most ``MAX_ROW_BYTES``; its size and sha256 checked
        against the manifest when its end is reached (BackupError)."""
        digest = hashlib.sha256()
        size = 0
        lines = 0
        try:
            with self._zip.open(member.member) as stream:
                while True:
                    line = stream.readline(MAX_ROW_BYTES + 1)
                    if not line:
                        break
                    size += len(line)
                    if size > member.size:
                        raise self._bad(f"{member.member} is longer than its manifest says")
                    if len(line) > MAX_ROW_BYTES or not line.endswith(b"\n"):
                        raise self._bad(
                            f"{member.member}: a row longer than MAX_ROW_BYTES ({MAX_ROW_BYTES})"
                            if len(line) > MAX_ROW_BYTES
                            else f"{member.member} does not end with a whole row"
                        )
                    lines += 1
                    if lines > member.rows:
                        raise self._bad(f"{member.member} has more rows than its manifest says")
                    digest.update(line)
                    yield line
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise self._bad(f"{member.member} is damaged ({exc})") from None
        self._check(member, size, digest.hexdigest())
        if lines != member.rows:
            raise self._bad(f"{member.member} has {lines} rows, its manifest says {member.rows}")

    def _check(self, member: Member, size: int, sha256: str) -> None:
        if size != member.size or sha256 != member.sha256:
            raise BackupError(
                f"{self.path} fails its checksum: {member.member} is not what its manifest "
                "says (damaged or changed); nothing was restored"
            )

    def file(self, member: Member) -> bytes:
        data = self._read_bounded(member.member, MAX_CARRIED_FILE, "MAX_CARRIED_FILE")
        self._check(member, len(data), hashlib.sha256(data).hexdigest())
        return data

    def verify(self, progress: Progress = _quiet) -> None:
        """Read every member: its size, rows and sha256 as the manifest says."""
        for table in self.tables:
            for _line in self._lines(table):
                pass
            progress(f"{table.name}: {table.rows} rows, checksum good")
        for carried in self.files:
            self.file(carried)

    def rows(self) -> Iterator[TableRows]:
        """Every table's rows, in the manifest's order (the source's foreign-key order)."""
        for table in self.tables:
            yield TableRows(table.name, table.columns, table.rows, self._values(table))

    def _values(self, table: Member) -> Iterator[Sequence[Any]]:
        width = len(table.columns)
        for line in self._lines(table):
            try:
                row = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise self._bad(f"{table.member}: a row is not JSON") from None
            if not isinstance(row, list) or len(row) != width:
                raise self._bad(f"{table.member}: a row is not a list of {width} values")
            if not all(v is None or isinstance(v, str | bool | int | float) for v in row):
                raise self._bad(f"{table.member}: a row holds a value that is not a scalar")
            yield row


_NAME_JSONL = re.compile(r"^[a-z_][a-z0-9_]{0,62}\.jsonl$")
