"""The project file: one SQLite database plus an artifacts folder beside it.

Every change is committed when it is made (autocommit, WAL journal, synchronous=FULL), so a
killed app loses nothing that was shown as saved. A file is checked before anything is written
to it: a file that is not a project, is damaged, or comes from a newer version of the app is
refused with a message and left exactly as it was. Files from other people are untrusted:
they are opened with SQLite's defensive settings and never allowed to carry triggers or views.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from workbench import project_checks, sqlite_defensive
from workbench.config import ModelSpec
from workbench.errors import ProjectError
from workbench.paths import copy_tree

SUFFIX = ".rlhf"
APPLICATION_ID = 0x524C4846  # "RLHF", stored in the SQLite header to recognise our files
SQLITE_MAGIC = b"SQLite format 3\x00"



def messages_digest(messages_json: str) -> str:
    """Identity of an SFT example's content, for finding exact duplicates with an index."""
    return hashlib.sha1(messages_json.encode("utf-8")).hexdigest()


def _backfill_sft_columns(conn: sqlite3.Connection) -> None:
    """Format 3: the digest is computed in Python (SQLite has no hash); the rest in SQL.

    Messages are rewritten in the store's canonical JSON first, so equal examples written by
    any version get equal digests."""
    rows = conn.execute("SELECT id, messages FROM sft_examples").fetchall()
    canonical = [(json.dumps(json.loads(text), ensure_ascii=False), row_id) for row_id, text in rows]
    conn.executemany("UPDATE sft_examples SET messages = ?, digest = ? WHERE id = ?",
                     [(text, messages_digest(text), row_id) for text, row_id in canonical])


# Each entry brings a file from the previous version to this one, inside one transaction.
# An entry is SQL, or a function of the connection for what SQL cannot compute.
MIGRATIONS: dict[int, list[str | Callable[[sqlite3.Connection], None]]] = {
    1: [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE sft_examples (
            id INTEGER PRIMARY KEY,
            messages TEXT NOT NULL,          -- JSON list of {role, content}
            source TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL)""",
        """CREATE TABLE prompts (
            id INTEGER PRIMARY KEY,
            text TEXT NOT NULL,
            created_at REAL NOT NULL)""",
        """CREATE TABLE responses (
            id INTEGER PRIMARY KEY,
            prompt_id INTEGER NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
            text TEXT NOT NULL,
            generator TEXT NOT NULL,         -- JSON: base or adapter, sampling settings, seed
            created_at REAL NOT NULL)""",
        """CREATE TABLE rankings (
            id INTEGER PRIMARY KEY,
            prompt_id INTEGER NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
            annotator TEXT NOT NULL,
            ranking TEXT NOT NULL,           -- JSON: ordered groups of response ids (ties share a group)
            all_bad INTEGER NOT NULL DEFAULT 0,
            seconds_spent REAL,
            created_at REAL NOT NULL)""",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,              -- sft, rm, ppo
            status TEXT NOT NULL,            -- running, paused, finished, stopped, failed
            config TEXT NOT NULL,            -- JSON
            artifact TEXT,
            message TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL)""",
        """CREATE TABLE metrics (
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            key TEXT NOT NULL,
            step INTEGER NOT NULL,
            value REAL NOT NULL,
            PRIMARY KEY (run_id, key, step)) WITHOUT ROWID""",
    ],
    2: [
        # Prompts get tags; runs get a log and a list of their checkpoints.
        "ALTER TABLE prompts ADD COLUMN tags TEXT NOT NULL DEFAULT '[]'",
        """CREATE TABLE run_logs (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            at REAL NOT NULL,
            level TEXT NOT NULL,
            message TEXT NOT NULL)""",
        """CREATE TABLE checkpoints (
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            step INTEGER NOT NULL,
            path TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (run_id, step))""",
        "CREATE INDEX responses_by_prompt ON responses(prompt_id)",
        "CREATE INDEX rankings_by_prompt ON rankings(prompt_id)",
    ],
    3: [
        # SFT examples get the columns the data table shows, sorts and searches without parsing
        # JSON for 100,000 rows: first user message, last assistant message, turns, a digest.
        "ALTER TABLE sft_examples ADD COLUMN prompt TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE sft_examples ADD COLUMN response TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE sft_examples ADD COLUMN turns INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE sft_examples ADD COLUMN has_empty INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE sft_examples ADD COLUMN digest TEXT NOT NULL DEFAULT ''",
        """UPDATE sft_examples SET
            prompt = coalesce((SELECT json_extract(value, '$.content') FROM json_each(messages)
                               WHERE json_extract(value, '$.role') = 'user' ORDER BY key LIMIT 1), ''),
            response = coalesce((SELECT json_extract(value, '$.content') FROM json_each(messages)
                                 WHERE json_extract(value, '$.role') = 'assistant' ORDER BY key DESC LIMIT 1), ''),
            turns = json_array_length(messages),
            has_empty = EXISTS (SELECT 1 FROM json_each(messages)
                                WHERE trim(coalesce(json_extract(value, '$.content'), '')) = '')""",
        _backfill_sft_columns,
        "CREATE INDEX sft_by_digest ON sft_examples(digest)",
        "CREATE INDEX metrics_by_run ON metrics(run_id, step)",
    ],
    4: [
        # Labeling (issue 4). Prompts and responses get ids that survive a trip through a
        # teammate's workbench (uid). A prompt keeps its whole conversation so far (messages:
        # JSON, the last turn is the user's). Responses come in batches: the K responses made in
        # one call and ranked together. A ranking ranks one batch; each annotator has at most
        # one ranking per batch, and remembers the order the responses were shown in.
        "ALTER TABLE prompts ADD COLUMN uid TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE prompts ADD COLUMN messages TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE prompts ADD COLUMN source TEXT NOT NULL DEFAULT ''",
        "UPDATE prompts SET uid = lower(hex(randomblob(16))), "
        "messages = json_array(json_object('role', 'user', 'content', text))",
        "CREATE UNIQUE INDEX prompts_by_uid ON prompts(uid)",
        "ALTER TABLE responses ADD COLUMN uid TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE responses ADD COLUMN batch TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE responses ADD COLUMN position INTEGER NOT NULL DEFAULT 0",
        "UPDATE responses SET uid = lower(hex(randomblob(16))), batch = 'legacy-' || prompt_id",
        "CREATE UNIQUE INDEX responses_by_uid ON responses(uid)",
        "CREATE INDEX responses_by_batch ON responses(batch, position)",
        "ALTER TABLE rankings ADD COLUMN batch TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE rankings ADD COLUMN shown_order TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE rankings ADD COLUMN source TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE rankings ADD COLUMN updated_at REAL NOT NULL DEFAULT 0",
        "UPDATE rankings SET batch = 'legacy-' || prompt_id, updated_at = created_at",
        "DELETE FROM rankings WHERE id NOT IN (SELECT MAX(id) FROM rankings GROUP BY batch, annotator)",
        "CREATE UNIQUE INDEX rankings_by_batch_annotator ON rankings(batch, annotator)",
    ],
}
SCHEMA_VERSION = max(MIGRATIONS)


def migrate(conn: sqlite3.Connection, to_version: int, from_version: int = 0) -> None:
    """Bring the database on `conn` from `from_version` to `to_version`, one transaction per step."""
    for version in range(from_version + 1, to_version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version]:
                if callable(statement):
                    statement(conn)
                else:
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


@functools.cache
def expected_columns(version: int) -> dict[str, list[tuple]]:
    return project_checks.reference_columns(version, migrate)
COUNTED_TABLES = ("sft_examples", "prompts", "responses", "rankings", "runs")

# What kind of record a write to each table changes: the words pages listen for (see
# Project.on_change). A run's metrics and log lines are kinds of their own: they are written
# every step, and the live views get them from the run itself rather than by re-reading.
KIND_OF_TABLE = {"sft_examples": "sft", "prompts": "prompts", "responses": "responses",
                 "rankings": "rankings", "runs": "runs", "checkpoints": "runs",
                 "metrics": "metrics", "run_logs": "logs", "meta": "settings"}
KINDS = frozenset(KIND_OF_TABLE.values())
# Deleting a prompt deletes its responses and their rankings too (ON DELETE CASCADE).
CASCADES = {"prompts": ("responses", "rankings"), "runs": ("metrics", "logs")}
_WRITE_TARGET = re.compile(r"^\s*(INSERT(?:\s+OR\s+\w+)?\s+INTO|REPLACE\s+INTO|UPDATE(?:\s+OR\s+\w+)?"
                           r"|DELETE\s+FROM)\s+(\w+)", re.IGNORECASE)


def kinds_written(sql: str) -> frozenset[str]:
    """The kinds of record `sql` changes, from the table it writes (none: it writes nothing)."""
    match = _WRITE_TARGET.match(sql)
    if match is None:
        return frozenset()
    verb, table = match.group(1).split()[0].upper(), match.group(2).lower()
    if table not in KIND_OF_TABLE:
        raise ValueError(f"a write to {table!r}, which has no kind in KIND_OF_TABLE")
    cascaded = CASCADES.get(table, ()) if verb == "DELETE" else ()
    return frozenset({KIND_OF_TABLE[table], *cascaded})


def with_project_suffix(path: Path | str) -> Path:
    path = Path(path)
    return path if path.suffix == SUFFIX else path.with_name(path.name + SUFFIX)


def artifacts_dir_for(path: Path) -> Path:
    return path.with_name(path.stem + ".artifacts")


def read_header(path: Path) -> tuple[int, int]:
    """(application_id, schema version) from the file's first 100 bytes, without opening it in SQLite."""
    if not path.exists():
        raise ProjectError(f"{path} does not exist.")
    if not path.is_file():  # a folder, or a pipe or device, which would block a read forever
        raise ProjectError(f"{path.name} is not a regular file, so it cannot be a workbench project.")
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError as error:
        raise ProjectError(f"{path} cannot be read: {error.strerror}.") from None
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise ProjectError(f"{path.name} is not a workbench project (it is not an SQLite file).")
    return int.from_bytes(header[68:72], "big"), int.from_bytes(header[60:64], "big", signed=True)


# SQLite's primary result codes that say the file is fine but this machine cannot read or write
# it now (a full disk, an I/O error, permissions, a lock), as opposed to a damaged file.
NOT_THE_FILES_FAULT = {3: "permission denied", 5: "the file is locked by another program",
                       6: "the file is locked", 7: "out of memory", 8: "the file is read-only",
                       10: "a disk I/O error", 13: "the disk is full", 14: "it cannot be opened"}
DAMAGED_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


def explain_sqlite_error(error: sqlite3.Error, path: Path, doing: str) -> ProjectError:
    """One sentence for `error`, met while `doing` ("open", "save to") the project at `path`,
    that blames the file only when the file is at fault."""
    code = getattr(error, "sqlite_errorcode", None)
    error = " ".join(str(error).split())[:300]  # SQLite may quote a multi-line schema
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in NOT_THE_FILES_FAULT:
        reason = NOT_THE_FILES_FAULT[primary]
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        if free is not None and free < 1 << 20 and primary in (10, 13, 14):
            reason = f"the disk is full ({free // 1024} KB free)"
        tail = ("Free space or fix the cause and try again." if doing == "create" else
                "The file itself was not changed by this; free space or fix the cause and try again.")
        explained = ProjectError(f"could not {doing} {path.name}: {reason} ({error}). {tail}")
        explained.machine_side = True  # the file is fine: a read-only open may still work
        return explained
    if primary in DAMAGED_CODES:
        return ProjectError(f"{path.name} is damaged ({error}). It was left unchanged; restore it from a backup.")
    return ProjectError(f"could not {doing} {path.name}: {error}.")


def _harden(conn: sqlite3.Connection) -> None:
    """SQLite's settings for untrusted files: defensive mode (no writable schema, no direct edits
    of its internal tables), no functions from the schema, checked cells."""
    sqlite_defensive.switch_on(conn)
    conn.execute("PRAGMA trusted_schema = OFF")
    conn.execute("PRAGMA cell_size_check = ON")


def _sidecars(path: Path) -> list[Path]:
    return [Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")]


def _read_only_uri(path: Path) -> str:
    """The URI that reads `path` without writing beside it. With no write-ahead log there the
    file alone is the whole database: immutable, which creates no -shm. A log left by a killed
    app must be read through."""
    immutable = "&immutable=1" if not Path(f"{path}-wal").exists() else ""
    return f"{path.resolve().as_uri()}?mode=ro{immutable}"


def _check_existing(path: Path) -> int:
    """Refuse anything but an intact project this app can read; return its schema version.

    Read-only, and leaving no -wal or -shm file that was not there before, so a refused file
    and its folder stay exactly as they were."""
    app_id, _ = read_header(path)
    if app_id != APPLICATION_ID:
        raise ProjectError(f"{path.name} is an SQLite database but not a workbench project.")
    present = {sidecar for sidecar in _sidecars(path) if sidecar.exists()}
    conn = None
    try:
        conn = sqlite3.connect(_read_only_uri(path), uri=True)
        _harden(conn)
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # the WAL may be newer than the header
        if version > SCHEMA_VERSION:
            raise ProjectError(
                f"{path.name} was saved by a newer version of RLHF Workbench (project format "
                f"{version}; this version reads up to {SCHEMA_VERSION}). Update the app to open it.")
        if version < 1:
            raise ProjectError(f"{path.name} is damaged (its project format is {version}, which no version of "
                               "RLHF Workbench writes). It was left unchanged; restore it from a backup.")
        problems = project_checks.check(conn, expected_columns(version))
        if problems:
            raise ProjectError(f"{path.name} is damaged or was edited by hand ({'; '.join(problems)}). It was "
                               "left unchanged; restore it from a backup.")
    except sqlite3.Error as error:
        raise explain_sqlite_error(error, path, "open") from None
    finally:
        if conn is not None:
            conn.close()
        for sidecar in set(_sidecars(path)) - present:
            sidecar.unlink(missing_ok=True)
    return version


class Project:
    """An open project. Methods commit before they return; the connection is shared by threads."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path.resolve()
        self.artifacts_dir = artifacts_dir_for(path)
        self._conn = conn
        self._lock = threading.RLock()
        self.read_only = False
        # Called with the kinds of record each commit changed, on the thread that committed
        # (the GUI's session turns them into one queued signal). One direction only: stores
        # write, the project announces, views re-read.
        self.on_change: list[Callable[[frozenset[str]], None]] = []
        self._revisions: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._uncommitted: set[str] = set()  # kinds written inside the open transaction

    # ---- opening and creating -------------------------------------------------------------

    @classmethod
    def create(cls, path: Path | str, name: str | None = None) -> "Project":
        path = with_project_suffix(path)
        if path.exists():
            raise ProjectError(f"{path} already exists; choose another name or open it.")
        if not path.parent.is_dir():
            raise ProjectError(f"the folder {path.parent} does not exist.")
        project = None
        had_artifacts = artifacts_dir_for(path).exists()
        try:
            project = cls._connect(path, "create")
            project._migrate(from_version=0)
            project.set_meta("name", name or path.stem)
            project.set_meta("created_at", time.time())
            project.artifacts_dir.mkdir(exist_ok=True)
        except BaseException as error:
            # Nothing half-made stays behind: no empty file, no sidecars, no folder (disk full).
            if project is not None:
                project._conn.close()
            for made in (path, *_sidecars(path)):
                made.unlink(missing_ok=True)
            if not had_artifacts:
                shutil.rmtree(artifacts_dir_for(path), ignore_errors=True)
            if isinstance(error, sqlite3.Error):
                raise explain_sqlite_error(error, path, "create") from None
            if isinstance(error, OSError):
                raise ProjectError(f"could not create {path.name}: {error.strerror or error}.") from None
            raise
        return project

    @classmethod
    def open(cls, path: Path | str, read_only: bool = False) -> "Project":
        """Open an existing project. `read_only` opens it for reading alone (no -shm is made, so
        it works where the disk is full); any write then raises ProjectError."""
        path = Path(path)
        version = _check_existing(path)
        if read_only:
            return cls._connect_read_only(path, version)
        project = cls._connect(path, "open")
        try:
            if version < SCHEMA_VERSION:
                project._backup_before_migration(version)
                project._migrate(from_version=version)
            project.artifacts_dir.mkdir(exist_ok=True)
        except (sqlite3.Error, OSError) as error:
            project._conn.close()
            if isinstance(error, sqlite3.Error):
                raise explain_sqlite_error(error, path, "open") from None
            raise ProjectError(f"could not open {path.name}: {error.strerror or error}.") from None
        return project

    @classmethod
    def _connect(cls, path: Path, doing: str) -> "Project":
        present = {sidecar for sidecar in _sidecars(path) if sidecar.exists()}
        conn = None
        try:
            # isolation_level=None: each statement commits on its own unless we open a transaction.
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
            _harden(conn)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as error:
            if conn is not None:
                conn.close()
            for sidecar in set(_sidecars(path)) - present:  # e.g. a -shm begun on a full disk
                sidecar.unlink(missing_ok=True)
            raise explain_sqlite_error(error, path, doing) from None
        return cls(path, conn)

    @classmethod
    def _connect_read_only(cls, path: Path, version: int) -> "Project":
        if version < SCHEMA_VERSION:
            raise ProjectError(f"{path.name} is in project format {version} and must be upgraded before it is "
                               "read, which needs room to write; free some space and try again.")
        try:
            conn = sqlite3.connect(_read_only_uri(path), uri=True, isolation_level=None,
                                   check_same_thread=False, timeout=10)
            _harden(conn)
        except sqlite3.Error as error:
            raise explain_sqlite_error(error, path, "read") from None
        project = cls(path, conn)
        project.read_only = True
        return project

    def _migrate(self, from_version: int) -> None:
        with self._lock:
            migrate(self._conn, SCHEMA_VERSION, from_version)

    def _backup_before_migration(self, version: int) -> None:
        backup = self.path.with_name(f"{self.path.name}.format{version}.bak")
        if not backup.exists():
            self._copy_database_to(backup)

    def _copy_database_to(self, target: Path) -> None:
        with self._lock:
            dest = sqlite3.connect(target)
            try:
                self._conn.backup(dest)
            finally:
                dest.close()

    def save_as(self, target: Path | str) -> "Project":
        """Copy the database and artifacts to `target` and return it opened; this one stays open."""
        target = with_project_suffix(target)
        if target.resolve() == self.path.resolve():
            return self
        tmp = target.with_name(f".{target.name}.saving")
        tmp.unlink(missing_ok=True)
        try:
            self._copy_database_to(tmp)
        except (sqlite3.Error, OSError) as error:
            tmp.unlink(missing_ok=True)
            raise ProjectError(f"could not save to {target}: {error}.") from None
        for stale in (target, Path(f"{target}-wal"), Path(f"{target}-shm")):
            stale.unlink(missing_ok=True)
        tmp.replace(target)
        target_artifacts = artifacts_dir_for(target)
        if self.artifacts_dir.is_dir():
            copy_tree(self.artifacts_dir, target_artifacts, dirs_exist_ok=True)
        return Project.open(target)  # a copy keeps its name (rename it on the Project page)

    def inside_artifacts(self, relative: str | Path) -> Path:
        """`relative`, a path stored in the project, as a path inside its artifacts folder.

        A shared project is untrusted: a stored path that is absolute, climbs out with '..' or
        leads out through a link is refused, so no command reads, copies or deletes anything
        outside the artifacts folder. (The folder itself may be a link, e.g. to a bigger disk.)"""
        root = self.artifacts_dir.resolve()
        candidate = self.artifacts_dir / relative
        if Path(relative).is_absolute() or not candidate.resolve().is_relative_to(root):
            raise ProjectError(f"{self.path.name} names {str(relative)!r}, which is outside its artifacts "
                               f"folder {self.artifacts_dir.name}; it was not used.")
        return candidate

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # a checkpoint is housekeeping; the data is already committed
            self._conn.close()

    # ---- small key/value settings ---------------------------------------------------------

    def get_meta(self, key: str, default=None):
        row = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(row[0][0]) if row else default

    def set_meta(self, key: str, value) -> None:
        self.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, json.dumps(value)))

    @property
    def name(self) -> str:
        return self.get_meta("name", self.path.stem)

    def rename(self, name: str) -> None:
        name = " ".join(name.split())
        if not name:
            raise ProjectError("a project needs a name.")
        self.set_meta("name", name[:200])

    @property
    def description(self) -> str:
        return self.get_meta("description", "")

    def set_description(self, text: str) -> None:
        self.set_meta("description", text.strip()[:10_000])

    @property
    def schema_version(self) -> int:
        return self.query("PRAGMA user_version")[0][0]

    @property
    def base_model(self) -> ModelSpec | None:
        data = self.get_meta("base_model")
        if not data:
            return None
        try:
            return ModelSpec.from_dict(data)
        except (TypeError, ValueError):
            return None  # a hand-edited or foreign entry: behave as if none was chosen

    def set_base_model(self, spec: ModelSpec) -> None:
        self.set_meta("base_model", spec.to_dict())

    # ---- records (SFT examples, prompts and rankings live in workbench.data; runs in workbench.train)

    def counts(self) -> dict[str, int]:
        return {table: self.query(f"SELECT COUNT(*) FROM {table}")[0][0] for table in COUNTED_TABLES}

    def runs(self) -> list[dict]:
        rows = self.query(
            "SELECT id, kind, status, created_at, updated_at, artifact, message, "
            "(SELECT MAX(step) FROM metrics WHERE run_id = runs.id) FROM runs ORDER BY id")
        keys = ("id", "kind", "status", "created_at", "updated_at", "artifact", "message", "last_step")
        return [dict(zip(keys, row)) for row in rows]

    def summary(self) -> dict:
        """Everything `workbench info` prints: plain JSON-ready data."""
        spec = self.base_model
        return {
            "path": str(self.path),
            "name": self.name,
            "format_version": self.schema_version,
            "base_model": spec.to_dict() if spec else None,
            "counts": self.counts(),
            "runs": self.runs(),
        }

    # ---- plumbing for the stores (workbench.data, workbench.train) ------------------------

    def query(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as error:
                # Text that is not UTF-8 (the checks at opening read only what they check).
                if "decode" not in str(error).lower():
                    raise
                raise ProjectError(f"{self.path.name} is damaged ({error}); restore it from a backup.") from None

    def execute(self, sql: str, params: tuple | dict = ()) -> int:
        """Run one write; it is committed when this returns (unless inside `transaction()`)."""
        with self._lock:
            try:
                cursor = self._conn.execute(sql, params)
            except sqlite3.Error as error:
                raise explain_sqlite_error(error, self.path, "save to") from None
            committed = self._wrote(sql, cursor.rowcount)
        self._announce(committed)
        return cursor.lastrowid

    def execute_many(self, sql: str, rows) -> None:
        with self._lock:
            try:
                cursor = self._conn.executemany(sql, rows)
            except sqlite3.Error as error:
                raise explain_sqlite_error(error, self.path, "save to") from None
            committed = self._wrote(sql, cursor.rowcount)
        self._announce(committed)

    # ---- what changed: revisions and listeners ------------------------------------------

    def revision(self, *kinds: str) -> int:
        """A number that grows with every commit changing any of `kinds`: a view that remembers
        it can tell whether what it shows is still current (e.g. after its own write)."""
        with self._lock:
            return sum(self._revisions[kind] for kind in kinds)

    def _wrote(self, sql: str, rowcount: int) -> frozenset[str]:
        """Note the kinds `sql` changed; those it committed (none while a transaction is open)."""
        kinds = kinds_written(sql)
        if not kinds or rowcount == 0:
            return frozenset()
        if self._conn.in_transaction:
            self._uncommitted |= kinds
            return frozenset()
        for kind in kinds:
            self._revisions[kind] += 1
        return kinds

    def _announce(self, kinds: frozenset[str]) -> None:
        if kinds:
            for listener in list(self.on_change):
                listener(kinds)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes so they land together or not at all (an import, a multi-row delete)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:  # e.g. another process holds the file for too long
                raise explain_sqlite_error(error, self.path, "save to") from None
            try:
                yield
                self._conn.execute("COMMIT")
            except BaseException as error:
                self._uncommitted.clear()
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(error, sqlite3.Error):
                    raise explain_sqlite_error(error, self.path, "save to") from None
                raise
            committed, self._uncommitted = frozenset(self._uncommitted), set()
            for kind in committed:
                self._revisions[kind] += 1
        self._announce(committed)

