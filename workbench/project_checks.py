"""What a project file must satisfy before the workbench opens it, read-only.

A project may come from someone else or be edited by hand, so every command would otherwise
meet its surprises one by one, as tracebacks, possibly after writing to the file. Instead the
file is checked once, before anything is written: SQLite's own integrity and foreign-key
checks, tables and columns exactly as the app's migrations made them for the file's format,
every cell of the type its column declares (no BLOB where text belongs, no infinite
timestamp), JSON where JSON belongs, and rankings that name responses of their own batch.
Each failure is one sentence; `check` returns the first few.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable

# JSON cells and the JSON type each must have ('' for any valid JSON).
JSON_COLUMNS = {
    ("meta", "value"): "",
    ("sft_examples", "messages"): "array",
    ("prompts", "tags"): "array",
    ("prompts", "messages"): "array",
    ("responses", "generator"): "object",
    ("rankings", "ranking"): "array",
    ("rankings", "shown_order"): "array",
    ("runs", "config"): "object",
}
# JSON records with numbers in them, where a number thousands of digits long can hide.
SMALL_RECORDS = {("meta", "value"), ("responses", "generator"), ("runs", "config")}
RUN_KINDS = ("sft", "rm", "ppo", "dpo", "policy")  # policy: imported from elsewhere
RUN_STATUSES = ("running", "paused", "finished", "stopped", "failed")
LARGEST_FINITE = 1.7976931348623157e308


def columns(conn: sqlite3.Connection) -> dict[str, list[tuple]]:
    """Each table's columns as (name, declared type, not null, default, primary key, hidden)."""
    tables = [name for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return {table: [tuple(row[1:]) for row in conn.execute(f'PRAGMA table_xinfo("{table}")')] for table in tables}


def reference_columns(version: int, migrate: Callable[[sqlite3.Connection, int], None]) -> dict[str, list[tuple]]:
    """The tables of an empty project of format `version`, as the migrations make them."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        migrate(conn, version)
        return columns(conn)
    finally:
        conn.close()


def _has_column(expected: dict[str, list[tuple]], table: str, column: str) -> bool:
    """Whether this format has `table.column` (older formats lack the labeling columns)."""
    return any(c[0] == column for c in expected.get(table, []))


def check(conn: sqlite3.Connection, expected: dict[str, list[tuple]], limit: int = 3) -> list[str]:
    """Problems of the open (read-only) file `conn`, at most `limit`; [] when it is sound."""
    problems: list[str] = []
    try:
        for problem in _all_problems(conn, expected):
            problems.append(" ".join(problem.split())[:300])  # one line, whatever SQLite says
            if len(problems) >= limit:
                break
    except (UnicodeDecodeError, sqlite3.OperationalError) as error:
        if "decode" not in str(error).lower() and not isinstance(error, UnicodeDecodeError):
            raise
        problems.append("it holds text that is not UTF-8")
    return problems


def _all_problems(conn: sqlite3.Connection, expected: dict[str, list[tuple]]) -> Iterable[str]:
    integrity = [row[0] for row in conn.execute("PRAGMA integrity_check(3)")]
    if integrity != ["ok"]:
        yield "; ".join(integrity)
        return  # the other checks read the damaged pages
    code = conn.execute("SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'view')").fetchall()
    if code:
        yield f"it contains triggers or views ({code[0][1]}), which workbench projects never have"
        return
    found = columns(conn)
    for table, wanted in expected.items():
        if table not in found:
            yield f"the table {table} is missing"
        elif found[table] != wanted:
            names, wanted_names = [c[0] for c in found[table]], [c[0] for c in wanted]
            yield (f"the table {table} has columns {', '.join(names)}; this format has {', '.join(wanted_names)}"
                   if names != wanted_names else f"the columns of table {table} are not declared as this format's")
    extra = sorted(set(found) - set(expected))
    if extra:
        yield f"it has tables workbench projects never have ({', '.join(extra)})"
    if any(table not in found or found[table] != wanted for table, wanted in expected.items()):
        return  # the content checks below name these columns
    orphans = conn.execute("PRAGMA foreign_key_check").fetchmany(1)
    if orphans:
        table, rowid, parent, _ = orphans[0]
        yield f"row {rowid} of {table} refers to a {parent} row that does not exist"
    yield from _type_problems(conn, expected)
    yield from _json_problems(conn, expected)
    yield from _python_json_problems(conn, expected)
    yield from _conversation_problems(conn, expected)
    if _has_column(expected, "rankings", "shown_order"):  # labeling came with format 4
        yield from _meaning_problems(conn)


def _type_problems(conn: sqlite3.Connection, expected: dict[str, list[tuple]]) -> Iterable[str]:
    """One scan per table finds whether any cell is off; only then is each column looked at."""
    for table, cols in expected.items():
        tests = [(name, declared, test) for name, declared, not_null, *_ in cols
                 for test in _cell_tests(name, declared, not_null)]
        if not tests or not conn.execute(
                f'SELECT 1 FROM "{table}" WHERE {" OR ".join(test for *_, test in tests)} LIMIT 1').fetchone():
            continue
        for name, declared, test in tests:
            row = conn.execute(f'SELECT typeof("{name}") FROM "{table}" WHERE {test} LIMIT 1').fetchone()
            if row:
                what = "an infinite number" if row[0] == "real" else f"a {row[0]}"
                yield f"{table}.{name} holds {what} where {declared.lower()} belongs"
                break


def _cell_tests(name: str, declared: str, not_null: bool) -> list[str]:
    """SQL conditions true for a cell of column `name` that our code never writes."""
    allowed = {"TEXT": ("text",), "INTEGER": ("integer",), "REAL": ("real", "integer")}.get(declared.upper())
    if allowed is None:
        return []
    kinds = ", ".join(f"'{kind}'" for kind in (allowed if not_null else (*allowed, "null")))
    tests = [f'typeof("{name}") NOT IN ({kinds})']
    if declared.upper() == "REAL":
        tests.append(f'abs("{name}") > {LARGEST_FINITE!r}')
    return tests


def _json_problems(conn: sqlite3.Connection, expected: dict[str, list[tuple]]) -> Iterable[str]:
    for (table, column), kind in JSON_COLUMNS.items():
        if not _has_column(expected, table, column):
            continue  # an older format without this column
        # One scan: json_type would raise on invalid JSON, so it is only asked of valid cells.
        row = conn.execute(
            f'SELECT rowid, CASE WHEN json_valid("{column}") THEN json_type("{column}") END FROM "{table}" '
            f'WHERE CASE WHEN json_valid("{column}") THEN ? != \'\' AND json_type("{column}") != ? ELSE 1 END '
            "LIMIT 1", (kind, kind)).fetchone()
        if row:
            yield (f"{table}.{column} of row {row[0]} is not valid JSON" if row[1] is None
                   else f"{table}.{column} of row {row[0]} is a JSON {row[1]}, not an {kind}")
    row = conn.execute("SELECT json_type(value) FROM meta WHERE key = 'base_model' "
                       "AND json_type(value) NOT IN ('object', 'null')").fetchone()
    if row:
        yield f"its base model setting is a JSON {row[0]}, not an object"


def _python_json_problems(conn: sqlite3.Connection, expected: dict[str, list[tuple]]) -> Iterable[str]:
    """What SQLite's JSON accepts but Python cannot hold: an escaped lone surrogate ("\\ud800")
    and integers of thousands of digits. Only cells that could hold one are parsed here:
    those with a \\u escape (our writers escape little), or long ones in the small records."""
    from workbench.data.untrusted import check_record, parse_json

    for (table, column), _kind in JSON_COLUMNS.items():
        if not _has_column(expected, table, column):
            continue
        long_ = f' OR length("{column}") > 4000' if (table, column) in SMALL_RECORDS else ""
        rows = conn.execute(f'SELECT rowid, "{column}" FROM "{table}" WHERE instr("{column}", \'\\u\') > 0{long_}')
        for row_id, text in rows:
            try:
                check_record(parse_json(text), f"{table}.{column} of row {row_id}")
            except ValueError as error:
                yield str(error)
                return


def _conversation_problems(conn: sqlite3.Connection, expected: dict[str, list[tuple]]) -> Iterable[str]:
    """Conversations are lists of {role, content} objects with text in both; tags are text."""
    for table in ("sft_examples", "prompts"):
        if not _has_column(expected, table, "messages"):
            continue
        row = conn.execute(f"""
            SELECT t.rowid FROM "{table}" t, json_each(t.messages) m
            WHERE t.messages != '' AND (m.type != 'object' OR json_type(m.value, '$.role') IS NOT 'text'
               OR json_extract(m.value, '$.role') NOT IN ('system', 'user', 'assistant')
               OR json_type(m.value, '$.content') IS NOT 'text')
            LIMIT 1""").fetchone()
        if row:
            yield f"{table}.messages of row {row[0]} is not a list of {{role, content}} turns"
    if _has_column(expected, "prompts", "tags"):
        row = conn.execute("SELECT p.id FROM prompts p, json_each(p.tags) t WHERE t.type != 'text' LIMIT 1").fetchone()
        if row:
            yield f"the tags of prompt {row[0]} are not all text"


def _meaning_problems(conn: sqlite3.Connection) -> Iterable[str]:
    row = conn.execute(f"SELECT id, kind, status FROM runs WHERE kind NOT IN {RUN_KINDS} "
                       f"OR status NOT IN {RUN_STATUSES} LIMIT 1").fetchone()
    if row:
        yield f"run {row[0]} has kind {row[1]!r} and status {row[2]!r}, which the workbench never writes"
    # Every id a ranking names (in its groups and its shown order) is a response of its own batch.
    row = conn.execute("""
        SELECT r.id FROM rankings r
        WHERE json_array_length(r.ranking) = 0
           OR EXISTS (SELECT 1 FROM json_each(r.ranking) g WHERE g.type != 'array' OR json_array_length(g.value) = 0)
           OR (SELECT COUNT(*) - COUNT(DISTINCT x.value) FROM json_each(r.ranking) g, json_each(g.value) x) != 0
           OR EXISTS (SELECT 1 FROM json_each(r.ranking) g, json_each(g.value) x
                      WHERE x.type != 'integer'
                         OR NOT EXISTS (SELECT 1 FROM responses s WHERE s.id = x.value AND s.batch = r.batch))
           OR EXISTS (SELECT 1 FROM json_each(r.shown_order) x
                      WHERE x.type != 'integer'
                         OR NOT EXISTS (SELECT 1 FROM responses s WHERE s.id = x.value AND s.batch = r.batch))
        LIMIT 1""").fetchone()
    if row:
        yield f"ranking {row[0]} is not a list of groups of its own batch's responses"
