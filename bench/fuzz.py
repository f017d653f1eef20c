"""Fuzz every untrusted input the command line takes: labeling packs, SFT files, preference files
and project files. Goal: 0 tracebacks, 0 hangs, 0 files changed by a refusal.

    .venv/bin/python bench/fuzz.py [--cases 3000] [--seed 1] [--only packs|sft|prefs|projects]
                                   [--timeout 20] [--show-errors]

Valid seed files are made first, from a small project with prompts, batches, rankings, SFT
examples and a run: a pack (with and without labels), SFT files in each format (messages,
prompt-completion, text) and each container (JSONL, a JSON array, CSV, Parquet), preference files
in each format (standard, conversational, K-way, Anthropic HH) and container (JSONL, JSON,
Parquet). Each path gets an equal share of the cases, half of them deterministic mutations of
the seeds picked with --seed (a nasty value of the field's kind or of any kind, an extra list
entry, a deleted field, another type, byte flips, truncations and splices) and half drawn by
hypothesis (JSON values from st.recursive with lone surrogates, huge integers, NaN and
infinities; mutations stacked; byte damage). Imports run into a copy of the seed project or of
an empty one. Project files (.rlhf) get byte flips, truncations and hand edits through sqlite3
(malformed meta, a base_model that is not an object, renamed columns, BLOBs in TEXT columns,
rankings naming missing responses, user_version -1..99, NaN and 1e309 timestamps; and drawn
values in drawn columns), then `info`, `export` or `import` of a valid file runs on them.

Each case runs `workbench.cli.main(argv)` in this process, stdout and stderr captured, under a
per-case alarm (--timeout). It counts as accepted (exit 0), a clear error (non-zero, the last line
"workbench: error: ...", no traceback), an unclear error (non-zero, but that line is not last:
a message with a newline in it), a traceback (an exception escaping main, or one printed), or a
hang. The target project's bytes are hashed before and after: a refusal that changed them, or
left a -wal/-shm beside it that was not there, counts as changed-on-refusal. An accepted import
must leave a project that `info` still opens, else it counts as broken-on-accept (e.g. a NaN
stored where the project's checks want a number). Exit status 1 when any of those is not 0.
tests/core/test_fuzz.py runs a hypothesis slice of this in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import hashlib
import io
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import hypothesis.strategies as st  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402

from workbench.cli import main as cli_main  # noqa: E402

PATHS = ("packs", "sft", "prefs", "projects")
CONTAINERS = {"packs": ("json",), "sft": ("jsonl", "json", "csv", "parquet"), "prefs": ("jsonl", "json", "parquet"),
              "projects": ("flip", "truncate", "edit")}
SUFFIX = {"json": ".json", "jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet"}
KIND = {"packs": "pack", "sft": "sft", "prefs": "prefs"}


# ---------------------------------------------------------------- nasty values


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is: what json.dumps cannot make (1e309, 5,000 digits, deep nesting)."""

    text: str


DEEP = Raw("[" * 50_000 + "]" * 50_000)
# For a number's place, a text's place, an extra list entry; and all of them for anywhere.
NASTY_NUMBERS = [2**63, -2**63 - 1, 2**64, 10**400, Raw("9" * 5000), math.nan, math.inf, -math.inf, Raw("1e309"),
                 Raw("-1e309"), -1, -0.0, 1.5, True, "1", None]
NASTY_TEXTS = ["", " ", "\ud800", "a\udfffb", "\udc00\ud800", "\x00", "\u2028", "line\nbreak", "x" * 70_000, "é🙂",
               5, None, ["x"], DEEP]
NASTY_ENTRIES = [None, 7, "x", "\ud800", [], {}, 2**63, 10**400, math.nan, True, [["x"]]]
NASTY = NASTY_NUMBERS + NASTY_TEXTS + NASTY_ENTRIES + [
    False, 0, [[]], [None], Raw('{"a":' * 50_000 + "1" + "}" * 50_000), {"role": "user"}, "NaN"]


def dumps(value, ascii: bool = True) -> str:
    """json.dumps that writes Raw values as they are, NaN and Infinity as Python does."""
    raws: list[str] = []

    def swap(item):
        if isinstance(item, Raw):
            raws.append(item.text)
            return f"\x00raw{len(raws) - 1}\x00"
        if isinstance(item, list):
            return [swap(x) for x in item]
        if isinstance(item, dict):
            return {k: swap(v) for k, v in item.items()}
        return item

    text = json.dumps(swap(value), ensure_ascii=ascii)
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\x00raw{i}\x00", ensure_ascii=ascii), raw)
    return text


def encode(text: str) -> bytes:
    # Lone surrogates go out as the bytes Python would write for them: not valid UTF-8.
    return text.encode("utf-8", "surrogatepass")


# ---------------------------------------------------------------- seeds


@dataclass
class Seed:
    path: str        # packs, sft, prefs
    container: str
    name: str        # e.g. "kway", "messages"
    value: object    # a pack document, or a list of row records


class Seeds:
    """Where the templates and seeds are (not a dataclass: hypothesis would print it all)."""

    def __init__(self, root: Path, projects: dict[str, Path], files: dict[str, Path],
                 seeds: dict[tuple[str, str], list[Seed]]):
        self.root = root
        self.projects = projects  # lead (labeled data, SFT, a run), empty
        self.files = files        # one valid input per import kind, for project cases
        self.seeds = seeds        # (path, container) -> its seeds

    def __repr__(self) -> str:
        return f"Seeds({self.root})"


MULTI_TURN = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Where is my parcel?"}]
SFT_CHATS = [[{"role": "user", "content": "Where is my order?"}, {"role": "assistant", "content": "In Lyon, é🙂."}],
             MULTI_TURN + [{"role": "assistant", "content": "On its way."}]]
SFT_TEXTS = [[{"role": "assistant", "content": "Plain text example."}], [{"role": "assistant", "content": "Another."}]]


def build_lead(path: Path) -> None:
    """The project most cases run against: every kind of record, so merges and exports do work."""
    from workbench.config import ModelSpec
    from workbench.data.prompts import PromptStore
    from workbench.data.rankings import RankingStore
    from workbench.data.sft_store import SftStore
    from workbench.project import Project

    project = Project.create(path, name="Lead")
    prompts, rankings = PromptStore(project), RankingStore(project)
    first = prompts.add("Where is my order?", tags=["shipping"])
    second = prompts.add(MULTI_TURN, tags=["chat", "fr"])
    prompts.add("No responses yet")
    batch = rankings.add_batch(first, ["a", "b", "c"], [{"source": "base", "seed": i} for i in range(3)])
    ids = [r.id for r in batch.responses]
    rankings.save_ranking(batch.uid, "lead", [[ids[2]], [ids[0], ids[1]]], seconds_spent=4, at=50.0)
    rankings.save_ranking(batch.uid, "mate", [[ids[0]], [ids[1]], [ids[2]]], seconds_spent=2, at=60.0,
                          shown_order=list(reversed(ids)))
    other = rankings.add_batch(second, ["x", "y"], [{"source": "sft-run-1", "seed": 7}] * 2)
    rankings.save_ranking(other.uid, "lead", [[r.id] for r in other.responses], all_bad=True, at=70.0)
    SftStore(project).add_many(SFT_CHATS + SFT_TEXTS, source="seed")
    project.set_base_model(ModelSpec(kind="folder", location="/models/tiny"))
    with contextlib.suppress(Exception):  # the runs tables may change shape: the bench goes on without a run
        run = project.execute("INSERT INTO runs(kind, status, config, artifact, message, created_at, updated_at) "
                              "VALUES ('sft', 'finished', '{\"max_steps\": 2}', 'runs/1', 'done', 1.0, 2.0)")
        project.execute("INSERT INTO metrics(run_id, key, step, value) VALUES (?, 'loss/train', 1, 0.5)", (run,))
    project.close()


def build_seeds(root: Path) -> Seeds:
    """Template projects and valid seed files of every path and container, under `root`."""
    from workbench.data.packs import export_pack
    from workbench.data.pref_formats import write_preferences
    from workbench.data.sft_formats import write_sft_file
    from workbench.project import Project

    lead, empty = root / "lead.rlhf", root / "empty.rlhf"
    build_lead(lead)
    Project.create(empty).close()
    files = {}
    seeds: dict[tuple[str, str], list[Seed]] = defaultdict(list)
    project = Project.open(lead)
    try:
        for labels in (True, False):
            out = root / f"seed-{labels}.rlhfpack"
            export_pack(project, out, with_labels=labels)
            seeds["packs", "json"].append(Seed("packs", "json", f"labels={labels}", json.loads(out.read_text())))
        files["pack"] = root / "seed-True.rlhfpack"
        for fmt in ("standard", "conversational", "kway"):
            out = root / f"seed-{fmt}.jsonl"
            write_preferences(project, out, fmt)
            rows = [json.loads(line) for line in out.read_text().splitlines()]
            for container in CONTAINERS["prefs"]:
                seeds["prefs", container].append(Seed("prefs", container, fmt, rows))
        files["prefs"] = root / "seed-kway.jsonl"
        hh = [{"chosen": "\n\nHuman: Where?\n\nAssistant: Lyon.", "rejected": "\n\nHuman: Where?\n\nAssistant: No."}]
        for container in CONTAINERS["prefs"]:
            seeds["prefs", container].append(Seed("prefs", container, "hh", hh))
    finally:
        project.close()
    for fmt, examples in (("messages", SFT_CHATS), ("prompt-completion", SFT_CHATS), ("text", SFT_TEXTS)):
        out = root / f"seed-{fmt}.jsonl"
        write_sft_file(examples, out, fmt)
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        for container in CONTAINERS["sft"]:
            seeds["sft", container].append(Seed("sft", container, fmt, rows))
    files["sft"] = root / "seed-messages.jsonl"
    return Seeds(root, {"lead": lead, "empty": empty}, files, dict(seeds))


# ---------------------------------------------------------------- writing mutated files


def file_bytes(seed_path: str, container: str, value, ascii: bool = True) -> bytes:
    """`value` (a pack, or row records) written as `container` would hold it."""
    if seed_path == "packs":
        return encode(dumps(value, ascii))
    rows = value if isinstance(value, list) else [value]
    if container == "jsonl":
        return encode("".join(dumps(row, ascii) + "\n" for row in rows))
    if container == "json":
        return encode("[" + ",\n".join(dumps(row, ascii) for row in rows) + "]")
    if container == "csv":
        return csv_bytes(rows, ascii)
    return parquet_bytes(rows)


def csv_bytes(rows: list, ascii: bool) -> bytes:
    records = [row if isinstance(row, dict) else {"value": row} for row in rows]
    columns = list(dict.fromkeys(key for row in records for key in row)) or ["text"]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in records:
        writer.writerow([cell(row.get(key), ascii) for key in columns])
    return encode(buffer.getvalue())


def cell(value, ascii: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Raw):
        return value.text
    return dumps(value, ascii)


def parquet_bytes(rows: list) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Column names must be valid UTF-8 in Parquet's schema: a lone surrogate in a key becomes U+FFFD.
    records = [{_name(k): v for k, v in row.items()} if isinstance(row, dict) else {} for row in rows]
    columns = list(dict.fromkeys(key for row in records for key in row)) or ["text"]
    table = pa.table({key: arrow_column([row.get(key) for row in records]) for key in columns})
    sink = pa.BufferOutputStream()
    try:
        pq.write_table(table, sink)
    except pa.ArrowException:  # a type Parquet cannot hold (a struct with no fields): JSON text instead
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({key: pa.array([None if row.get(key) is None else dumps(row.get(key))
                                                for row in records]) for key in columns}), sink)
    return sink.getvalue().to_pybytes()


def _name(key: str) -> str:
    return encode(key).decode("utf-8", "replace")


def arrow_column(values: list):
    """Typed when pyarrow can infer a type; strings with lone surrogates as the invalid UTF-8
    bytes they would be; anything else as JSON text, as many writers store nested cells."""
    import pyarrow as pa

    values = [v.text if isinstance(v, Raw) else v for v in values]
    with contextlib.suppress(Exception):
        return pa.array(values)
    if all(isinstance(v, str) or v is None for v in values):
        data = [encode(v) if v is not None else b"" for v in values]
        offsets = [0]
        for item in data:
            offsets.append(offsets[-1] + len(item))
        valid = pa.array([v is not None for v in values]).buffers()[1]
        return pa.Array.from_buffers(pa.string(), len(values), [valid, pa.array(offsets, pa.int32()).buffers()[1],
                                                                 pa.py_buffer(b"".join(data))])
    return pa.array([None if v is None else dumps(v) for v in values])


# ---------------------------------------------------------------- mutations


def paths_of(value, limit: int = 400) -> list[tuple]:
    """Every path into `value` (keys and indices), breadth first, at most `limit`."""
    found, pending = [()], [((), value)]
    while pending and len(found) < limit:
        path, item = pending.pop(0)
        children = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        for key, child in children:
            found.append(path + (key,))
            pending.append((path + (key,), child))
    return found[:limit]


def pick_path(value, rng: random.Random, lists: bool = False) -> tuple:
    """A path into `value`: a list's with `lists`, else two times in three a leaf (a field)."""
    paths = paths_of(value)[1:] or [()]
    wanted = [p for p in paths if isinstance(at(value, p), list) == lists and (lists or not isinstance(at(value, p), dict))]
    return rng.choice(wanted if wanted and (lists or rng.random() < 2 / 3) else paths)


def at(value, path: tuple):
    for key in path:
        value = value[key]
    return value


def swapped(value) -> list:
    """Other types in a value's place: what a hand edit or another tool writes."""
    return [None, str(value)[:100], [value], {"value": value}, 1, "1", True, dumps(value)[:1000]]


def mutate(value, path: tuple, action: str, new=None):
    """A copy of `value` with one change at `path`: replace, delete, insert or duplicate."""
    value = copy.deepcopy(value)
    if not path:
        if action == "insert" and isinstance(value, list):  # one more row
            value.append(new)
        return new if action in ("replace", "swap") else value
    parent, key = at(value, path[:-1]), path[-1]
    if action in ("replace", "swap"):
        parent[key] = new
    elif action == "delete":
        del parent[key]
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(parent[key]))
    elif action == "insert":
        target = parent[key]
        if isinstance(target, list):
            target.append(new)
        elif isinstance(target, dict):
            target[f"extra{len(target)}"] = new
        else:
            parent[key] = [target, new]
    return value


def damaged(data: bytes, rng: random.Random, how: str) -> bytes:
    """Byte-level damage: flipped bytes, a truncation, a splice of junk or a dropped span."""
    if not data:
        return data
    data = bytearray(data)
    if how == "flip":
        for _ in range(rng.choice((1, 1, 2, 4, 16))):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif how == "truncate":
        del data[rng.randrange(len(data)):]
    elif how == "splice":
        at_ = rng.randrange(len(data))
        data[at_:at_] = rng.choice([b"\xff", b"\x00", b"\xed\xa0\x80", b"\xc3", b"\\ud800", b'"', b"[", b"{", b"\n"])
    elif how == "drop":
        start = rng.randrange(len(data))
        del data[start:start + rng.randrange(1, 64)]
    return bytes(data)


# ---------------------------------------------------------------- cases


@dataclass
class Case:
    path: str                 # packs, sft, prefs, projects
    container: str            # a file container, or for projects the kind of damage
    label: str                # what was done, for the examples
    argv: tuple[str, ...]     # with {project}, {input} and {out} filled in when it runs
    data: bytes | None = None           # the input file
    suffix: str = ""
    target: str = "lead"                # which template project
    edit: Callable[[Path], None] | None = None  # damage done to the copied project first


def file_case(seed: Seed, label: str, data: bytes, target: str, valid_only: bool = False) -> Case:
    argv = ("import", "{project}", "{input}", "--kind", KIND[seed.path]) + (("--valid-only",) if valid_only else ())
    suffix = ".rlhfpack" if seed.path == "packs" else SUFFIX[seed.container]
    return Case(seed.path, seed.container, f"{seed.name}: {label}", argv, data, suffix, target)


def deterministic_file_cases(seeds: Seeds, path: str, count: int, rng: random.Random) -> Iterator[Case]:
    """`count` cases picked by `rng` from every field x every nasty value, deletions, type swaps
    and byte damage of every seed of `path`, spread evenly over its containers."""
    containers = CONTAINERS[path]
    for i in range(count):
        seed = rng.choice(seeds.seeds[path, containers[i % len(containers)]])
        target = rng.choice(("lead", "empty"))
        how = rng.choice(("typed", "typed", "typed", "nasty", "insert", "delete", "swap", "bytes"))
        if how == "bytes":
            damage = rng.choice(("flip", "truncate", "splice", "drop"))
            data = damaged(file_bytes(path, seed.container, seed.value), rng, damage)
            yield file_case(seed, f"byte damage ({damage})", data, target)
            continue
        where = pick_path(seed.value, rng, lists=how == "insert")
        if how == "insert":  # one more key or list item: an extra entry where a list must be exact
            new = rng.choice(NASTY_ENTRIES)
            value, label = mutate(seed.value, where, "insert", new), f"{list(where)} += {short(new)}"
        elif how == "typed":  # a nasty value of the kind the field holds: where the checks are
            old = at(seed.value, where)
            new = rng.choice(NASTY_TEXTS if isinstance(old, str) else NASTY_NUMBERS
                             if isinstance(old, (int, float)) else NASTY)
            value, label = mutate(seed.value, where, "replace", new), f"{list(where)} = {short(new)}"
        elif how == "delete":
            value, label = mutate(seed.value, where, "delete"), f"deleted {list(where)}"
        elif how == "swap":
            new = rng.choice(swapped(at(seed.value, where)))
            value, label = mutate(seed.value, where, "swap", new), f"{list(where)} -> {short(new)}"
        else:
            new = rng.choice(NASTY)
            value, label = mutate(seed.value, where, "replace", new), f"{list(where)} = {short(new)}"
        yield file_case(seed, label, file_bytes(path, seed.container, value, ascii=rng.random() < 0.8), target,
                        valid_only=path != "packs" and rng.random() < 0.2)


def short(value) -> str:
    text = value.text if isinstance(value, Raw) else repr(value)
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text):,} chars)"


# Hypothesis: JSON values with the leaves that break readers, nested by st.recursive.
NASTY_TEXT = st.one_of(st.text(max_size=20), st.lists(st.sampled_from(
    ["\ud800", "\udfff", "a", " ", "\x00", "\u2028", "é", "🙂", "\n\nHuman: ", "\n\nAssistant: ", '"', "["]),
    max_size=8).map("".join))
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from([2**63, -2**63 - 1, 10**400, 2**64]),
                   st.floats(), NASTY_TEXT, st.sampled_from([DEEP, Raw("9" * 5000), Raw("1e309"), Raw("NaN")]),
                   st.sampled_from(["user", "assistant", "system", "bot"]))


JSON_VALUES = st.recursive(LEAVES, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(NASTY_TEXT | st.sampled_from(
        ["role", "content", "uid", "text", "generator", "groups", "shown_order", "created_at"]), children,
        max_size=4)), max_leaves=8)


def typed_nasty(old) -> list:
    """Nasty values of the kind a field holds (where its checks are), else of any kind."""
    return NASTY_TEXTS if isinstance(old, str) else NASTY_NUMBERS if isinstance(old, (int, float)) else NASTY


@st.composite
def drawn_file_case(draw, seeds: Seeds, path: str) -> Case:
    """One case drawn by hypothesis: 1 or 2 stacked mutations of a seed (a nasty value of the
    field's kind or any JSON value hypothesis makes, an extra list entry, a deletion, a type
    swap, a duplicate), then sometimes byte damage."""
    container = draw(st.sampled_from(CONTAINERS[path]))
    seed = draw(st.sampled_from(seeds.seeds[path, container]))
    value, labels = seed.value, []
    for _ in range(draw(st.integers(1, 2))):
        action = draw(st.sampled_from(("replace", "replace", "replace", "insert", "delete", "duplicate", "swap")))
        paths = paths_of(value)
        lists = [p for p in paths if isinstance(at(value, p), list)]
        leaves = [p for p in paths if not isinstance(at(value, p), (dict, list))]
        choices = lists if action == "insert" else leaves if action == "replace" and draw(st.booleans()) else paths
        where = draw(st.sampled_from(choices or paths))
        old = at(value, where)
        if action == "delete" and not where:
            continue
        new = draw({"replace": st.one_of(st.sampled_from(typed_nasty(old)), JSON_VALUES),
                    "insert": st.one_of(st.sampled_from(NASTY_ENTRIES), JSON_VALUES),
                    "swap": st.sampled_from(swapped(old))}.get(action, st.none()))
        value = mutate(value, where, action, new)
        labels.append(f"{action} {list(where)}" + (f" = {short(new)}" if action in ("replace", "insert", "swap")
                                                   else ""))
    data = file_bytes(path, container, value, ascii=draw(st.booleans()))
    damage = draw(st.sampled_from((None,) * 5 + ("flip", "truncate", "splice", "drop")))
    if damage:
        data = damaged(data, random.Random(draw(st.integers(0, 2**32))), damage)
        labels.append(f"byte damage ({damage})")
    target = draw(st.sampled_from(("lead", "empty")))
    return file_case(seed, "; ".join(labels), data, target, valid_only=path != "packs" and draw(st.booleans()))


# ---------------------------------------------------------------- project-file cases


PROJECT_COMMANDS = [
    ("info", "{project}"),
    ("export", "{project}", "{out}/sft.jsonl"),
    ("export", "{project}", "{out}/prefs.jsonl", "--kind", "prefs"),
    ("export", "{project}", "{out}/prefs.parquet", "--kind", "prefs", "--format", "kway"),
    ("export", "{project}", "{out}/team.rlhfpack", "--kind", "pack", "--labels"),
    ("import", "{project}", "{file:sft}"),
    ("import", "{project}", "{file:prefs}", "--kind", "prefs"),
    ("import", "{project}", "{file:pack}", "--kind", "pack"),
]

def killed_mid_write(path: Path, damage: bool = False) -> None:
    """What an app killed after a commit leaves: the change still in a -wal beside the file
    (with `damage`, a -wal whose frames were cut short)."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("UPDATE prompts SET tags = '[\"edited\"]'")
    conn.commit()
    wal = Path(f"{path}-wal")
    kept = {p: p.read_bytes() for p in (path, wal)}
    conn.close()  # checkpoints and removes the -wal: put both back as they were before it
    for name, data in kept.items():
        name.write_bytes(data[:len(data) - 100] if damage and name == wal else data)


# Hand edits: what a user with a SQLite browser, another tool or a bug could leave in a file
# (SQL, or a function of the file's path).
EDITS = {
    "a -wal left by a killed app": killed_mid_write,
    "a damaged -wal left by a killed app": lambda path: killed_mid_write(path, damage=True),
    "meta name not JSON": "UPDATE meta SET value = '{oops' WHERE key = 'name'",
    "meta name a list": "UPDATE meta SET value = '[1, 2]' WHERE key = 'name'",
    "meta name a BLOB": "UPDATE meta SET value = x'00ff' WHERE key = 'name'",
    "meta emptied": "DELETE FROM meta",
    "base_model not JSON": "UPDATE meta SET value = '{\"kind\":' WHERE key = 'base_model'",
    "base_model a string": "UPDATE meta SET value = '\"gpt2\"' WHERE key = 'base_model'",
    "base_model a list": "UPDATE meta SET value = '[1, 2]' WHERE key = 'base_model'",
    "base_model a number": "UPDATE meta SET value = '5' WHERE key = 'base_model'",
    "base_model wrong types": "UPDATE meta SET value = '{\"kind\": 7, \"location\": null}' WHERE key = 'base_model'",
    "base_model unknown kind": "UPDATE meta SET value = '{\"kind\": \"ftp\", \"location\": \"x\"}' "
                               "WHERE key = 'base_model'",
    "base_model NaN field": "UPDATE meta SET value = '{\"kind\": \"folder\", \"location\": NaN}' "
                            "WHERE key = 'base_model'",
    "renamed column prompts.text": "ALTER TABLE prompts RENAME COLUMN text TO text_old",
    "renamed column responses.batch": "ALTER TABLE responses RENAME COLUMN batch TO batch_old",
    "renamed column rankings.ranking": "ALTER TABLE rankings RENAME COLUMN ranking TO ranking_old",
    "renamed column sft_examples.messages": "ALTER TABLE sft_examples RENAME COLUMN messages TO m",
    "renamed column meta.value": "ALTER TABLE meta RENAME COLUMN value TO v",
    "renamed column runs.status": "ALTER TABLE runs RENAME COLUMN status TO s",
    "dropped table runs": "DROP TABLE metrics; DROP TABLE run_logs; DROP TABLE checkpoints; DROP TABLE runs",
    "dropped table rankings": "DROP TABLE rankings",
    "dropped index": "DROP INDEX rankings_by_batch_annotator",
    "BLOB in prompts.messages": "UPDATE prompts SET messages = x'ff00'",
    "BLOB in prompts.tags": "UPDATE prompts SET tags = x'5b5d'",
    "BLOB in responses.text": "UPDATE responses SET text = x'c328'",
    "BLOB in responses.generator": "UPDATE responses SET generator = x'7b7d'",
    "BLOB in sft_examples.messages": "UPDATE sft_examples SET messages = x'ff'",
    "BLOB in rankings.ranking": "UPDATE rankings SET ranking = x'5b5b315d5d'",
    "text not UTF-8 in prompts.text": "UPDATE prompts SET text = CAST(x'ff' AS TEXT)",
    "text not UTF-8 in sft messages": "UPDATE sft_examples SET messages = CAST(x'5bff5d' AS TEXT)",
    "ranking names a missing response": "UPDATE rankings SET ranking = '[[999999]]'",
    "ranking not JSON": "UPDATE rankings SET ranking = 'oops'",
    "ranking an object": "UPDATE rankings SET ranking = '{}'",
    "ranking of strings": "UPDATE rankings SET ranking = '[[\"a\"]]'",
    "ranking nested deep": "UPDATE rankings SET ranking = '" + "[" * 5000 + "]" * 5000 + "'",
    "shown_order names a missing response": "UPDATE rankings SET shown_order = '[424242]'",
    "shown_order a number": "UPDATE rankings SET shown_order = '7'",
    "prompt messages an object": "UPDATE prompts SET messages = '{}'",
    "prompt messages empty": "UPDATE prompts SET messages = '[]'",
    "prompt tags a string": "UPDATE prompts SET tags = '\"x\"'",
    "sft messages with bad roles": "UPDATE sft_examples SET messages = '[{\"role\": 5}]'",
    "sft messages null": "UPDATE sft_examples SET messages = 'null'",
    "generator not JSON": "UPDATE responses SET generator = 'oops'",
    "generator a list": "UPDATE responses SET generator = '[1]'",
    "response of a missing prompt": "UPDATE responses SET prompt_id = 999",
    "ranking of a missing batch": "UPDATE rankings SET batch = 'nowhere' WHERE id = (SELECT min(id) FROM rankings)",
    "user_version -1": "PRAGMA user_version = -1",
    "user_version 0": "PRAGMA user_version = 0",
    "user_version 1": "PRAGMA user_version = 1",
    "user_version 2": "PRAGMA user_version = 2",
    "user_version 3": "PRAGMA user_version = 3",
    "user_version 99": "PRAGMA user_version = 99",
    "application_id 0": "PRAGMA application_id = 0",
    "timestamps 'NaN' text": "UPDATE rankings SET created_at = 'NaN', updated_at = 'NaN', seconds_spent = 'NaN'",
    "timestamps 1e309": "UPDATE rankings SET created_at = 1e309, updated_at = -1e309, seconds_spent = 1e309",
    "timestamps NULL": "UPDATE rankings SET seconds_spent = NULL",
    "prompt created_at text": "UPDATE prompts SET created_at = 'yesterday'",
    "sft updated_at 1e309": "UPDATE sft_examples SET created_at = 1e309, updated_at = 'x'",
    "runs config not JSON": "UPDATE runs SET config = '{'",
    "runs status unknown": "UPDATE runs SET status = 'exploded', kind = 'zzz'",
    "metrics value text": "UPDATE metrics SET value = 'NaN', step = 'x'",
    "trigger added": "CREATE TRIGGER t AFTER INSERT ON prompts BEGIN SELECT 1; END",
    "view added": "CREATE VIEW v AS SELECT 1",
    "duplicate response uid": "DROP INDEX responses_by_uid; UPDATE responses SET uid = 'same'",
}


EDITS_REFUSED: Counter = Counter()  # hand edits SQLite would not make: those cases ran on an intact file


def sql_edit(name: str) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        if callable(EDITS[name]):
            EDITS[name](path)
            return
        conn = sqlite3.connect(path)
        try:
            conn.executescript(EDITS[name])
            conn.commit()
        except sqlite3.Error as error:
            EDITS_REFUSED[f"{name} ({error})"] += 1
        finally:
            conn.close()
    return edit


def value_edit(table: str, column: str, value, every_row: bool) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        conn = sqlite3.connect(path)
        try:
            where = "" if every_row else f" WHERE rowid = (SELECT min(rowid) FROM {table})"
            conn.execute(f'UPDATE {table} SET "{column}" = ?{where}', (value,))
            conn.commit()
        except sqlite3.Error:
            pass  # a constraint refused it: the case runs on the file as it is
        finally:
            conn.close()
    return edit


def bytes_edit(how: str, rng_seed: int) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        rng = random.Random(rng_seed)
        data = path.read_bytes()
        if how == "truncate":
            cut = rng.choice([0, 50, 99, 100, 4096, len(data) - 1, rng.randrange(len(data)),
                              4096 * rng.randrange(1, max(2, len(data) // 4096))])
            path.write_bytes(data[:cut])
        else:
            data = bytearray(data)
            region = rng.choice(["anywhere", "anywhere", "header", "schema page"])
            span = {"anywhere": (0, len(data)), "header": (0, 100), "schema page": (100, 4096)}[region]
            for _ in range(rng.choice((1, 2, 4, 8))):
                data[rng.randrange(*span)] ^= 1 << rng.randrange(8)
            path.write_bytes(bytes(data))
    return edit


def project_case(container: str, label: str, edit: Callable[[Path], None], command: tuple[str, ...]) -> Case:
    return Case("projects", container, f"{label}; {command[0]} {' '.join(command[2:])}".strip(), command, edit=edit)


def deterministic_project_cases(count: int, rng: random.Random) -> Iterator[Case]:
    """Every hand edit with every command first (in an order `rng` picks), then byte damage."""
    edits = [(name, command) for name in EDITS for command in PROJECT_COMMANDS]
    rng.shuffle(edits)
    for i in range(count):
        kind = CONTAINERS["projects"][i % 3]
        command = rng.choice(PROJECT_COMMANDS)
        if kind == "edit" and edits:
            name, command = edits.pop()
            yield project_case("edit", name, sql_edit(name), command)
        else:
            kind = kind if kind != "edit" else "flip"
            seed = rng.randrange(2**32)
            yield project_case(kind, f"{kind} (seed {seed})", bytes_edit(kind, seed), command)


PROJECT_COLUMNS = {
    "meta": ["key", "value"], "prompts": ["text", "messages", "tags", "uid", "created_at"],
    "responses": ["text", "generator", "batch", "position", "uid", "prompt_id"],
    "rankings": ["ranking", "shown_order", "all_bad", "seconds_spent", "created_at", "updated_at", "annotator"],
    "sft_examples": ["messages", "prompt", "turns", "created_at"], "runs": ["config", "status", "created_at"],
}
SQL_VALUES = st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.floats(), st.binary(max_size=16),
                       JSON_VALUES.map(dumps), st.text(max_size=10))


@st.composite
def drawn_project_case(draw) -> Case:
    command = draw(st.sampled_from(PROJECT_COMMANDS))
    kind = draw(st.sampled_from(CONTAINERS["projects"]))
    if kind == "edit":
        table = draw(st.sampled_from(sorted(PROJECT_COLUMNS)))
        column = draw(st.sampled_from(PROJECT_COLUMNS[table]))
        value, every = draw(SQL_VALUES), draw(st.booleans())
        label = f"{table}.{column} = {short(value)}{' (every row)' if every else ''}"
        return project_case("edit", label, value_edit(table, column, value, every), command)
    seed = draw(st.integers(0, 2**32))
    return project_case(kind, f"{kind} (seed {seed})", bytes_edit(kind, seed), command)


# ---------------------------------------------------------------- running a case


class CaseTimeout(BaseException):
    """Raised by the alarm: not an Exception, so nothing in the app can swallow it."""


@dataclass
class Outcome:
    kind: str           # accepted, clear, unclear (an error, not on one line), traceback, hang
    changed: bool       # a refusal that changed the project or left a -wal/-shm
    detail: str         # the exception class and where, or the error line
    message: str        # the last line of stderr, or the exception's message
    first_row: str = "" # for row errors, the first bad row listed
    broken: bool = False  # an accepted import after which the project no longer opens


def state(project: Path) -> tuple:
    digest = hashlib.sha256(project.read_bytes()).hexdigest() if project.exists() else None
    return digest, tuple(Path(f"{project}{s}").exists() for s in ("-wal", "-shm"))


def where_raised(error: BaseException) -> str:
    """The innermost frame in the app's code (not this bench, not a library)."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if f.filename.startswith(str(REPO / "workbench")) or f.filename.startswith(str(REPO / "ui"))]
    frame = (ours or frames or [None])[-1]
    if frame is None:
        return type(error).__name__
    return f"{type(error).__name__} in {Path(frame.filename).relative_to(REPO) if ours else frame.filename}:" \
           f"{frame.name}"


def call(argv: list[str], timeout: float) -> tuple[int | None, str, BaseException | None]:
    """main(argv) with its output captured and an alarm; (exit code, stderr, escaped exception)."""
    err, out = io.StringIO(), io.StringIO()

    def alarm(*_):
        raise CaseTimeout()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                return cli_main(argv), err.getvalue(), None
            except SystemExit as exit_:  # argparse exits on bad arguments
                return exit_.code if isinstance(exit_.code, int) else 1, err.getvalue(), None
    except BaseException as error:  # noqa: BLE001 - everything escaping main is what we count
        return None, err.getvalue(), error
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_case(case: Case, seeds: Seeds, timeout: float = 20.0) -> Outcome:
    folder = Path(tempfile.mkdtemp(dir=seeds.root))
    try:
        project = folder / "target.rlhf"
        shutil.copyfile(seeds.projects[case.target], project)
        if case.edit is not None:
            case.edit(project)
        names = {"project": str(project), "out": str(folder), "input": str(folder / f"input{case.suffix}"),
                 **{f"file:{k}": str(v) for k, v in seeds.files.items()}}
        if case.data is not None:
            Path(names["input"]).write_bytes(case.data)
        argv = [_fill(arg, names) for arg in case.argv]
        before = state(project)
        code, stderr, error = call(argv, timeout)
        after = state(project)
        # What an import accepted must leave a project that opens: `info` checks it whole.
        broken = None
        if code == 0 and case.data is not None:
            info_code, info_err, info_error = call(["info", str(project)], timeout)
            if info_code != 0:
                broken = (where_raised(info_error) if info_error else
                          (info_err.strip().splitlines() or ["no message"])[-1][:300])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    changed = code != 0 and (after[0] != before[0] or any(a and not b for a, b in zip(after[1], before[1])))
    if isinstance(error, CaseTimeout):
        return Outcome("hang", changed, "no answer within the timeout", "")
    if error is not None:
        return Outcome("traceback", changed, where_raised(error), f"{type(error).__name__}: {str(error)[:300]}")
    if code == 0:
        return Outcome("accepted", False, "accepted, then `info` refused the project" if broken else "",
                       broken or "", broken=bool(broken))
    if "Traceback (most recent call last)" in stderr:
        return Outcome("traceback", changed, "a traceback printed", last[:300])
    if not last.startswith("workbench: error:"):  # e.g. a message with a newline in it
        return Outcome("unclear", changed, "the error is not one 'workbench: error:' line",
                       " | ".join(lines[-3:])[:300])
    rows = [line.strip() for line in lines[:-1] if line.startswith("  ")]
    return Outcome("clear", changed, "", last[:300], rows[0][:300] if rows else "")


def _fill(arg: str, names: dict[str, str]) -> str:
    for key, value in names.items():
        arg = arg.replace("{" + key + "}", value)
    return arg


# ---------------------------------------------------------------- the run and its table


@dataclass
class Tally:
    counts: dict[tuple[str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))
    first: dict[tuple[str, str, str], tuple[Case, Outcome, int]] = field(default_factory=dict)  # by class
    messages: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # clear errors, by gist

    def add(self, case: Case, outcome: Outcome) -> None:
        row = self.counts[case.path, case.container]
        row["cases"] += 1
        row[outcome.kind] += 1
        row["changed"] += outcome.changed
        row["broken"] += outcome.broken
        if outcome.broken:
            self._remember((case.path, "broken on accept", _gist(outcome.message)), case, outcome)
        self.messages[case.path][_gist(outcome.first_row or outcome.message)] += outcome.kind == "clear"
        if outcome.kind in ("traceback", "hang", "unclear"):
            self._remember((case.path, outcome.kind, outcome.detail), case, outcome)
        if outcome.changed:  # classed by what was refused, and how it said so
            self._remember((case.path, "changed", f"{case.container}: {outcome.message[:70]}"), case, outcome)

    def _remember(self, key: tuple[str, str, str], case: Case, outcome: Outcome) -> None:
        first = self.first.get(key)
        self.first[key] = (first[0], first[1], first[2] + 1) if first else (case, outcome, 1)


def _gist(message: str) -> str:
    """An error line without its particulars (file names, numbers, quoted values): its class."""
    import re

    message = re.sub(r"^(workbench: error: |(line|row) \d+: )", "", message)
    message = re.sub(r"\S+\.(rlhf|rlhfpack|jsonl|json|csv|parquet)\b", "FILE", message)
    message = re.sub(r'"[^"]*"|\d+', "_", message)
    return message[:90]


def run_cases(cases: Iterator[Case], seeds: Seeds, tally: Tally, timeout: float) -> None:
    for case in cases:
        tally.add(case, run_case(case, seeds, timeout))


def run_drawn(strategy: st.SearchStrategy, count: int, seed: int, seeds: Seeds, tally: Tally, timeout: float) -> None:
    """`count` cases drawn by hypothesis from `strategy` (generation only: nothing here fails,
    so there is nothing to shrink; the tally keeps every outcome)."""
    if count <= 0:
        return

    @hypothesis_seed(seed)
    @settings(max_examples=count, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(case: Case) -> None:
        tally.add(case, run_case(case, seeds, timeout))

    one()


def fuzz(paths: list[str], cases: int, seed: int, timeout: float, root: Path) -> Tally:
    seeds = build_seeds(root)
    tally = Tally()
    share = [cases // len(paths) + (i < cases % len(paths)) for i in range(len(paths))]
    for path, count in zip(paths, share):
        rng = random.Random(f"{seed}:{path}")
        fixed = count // 2
        if path == "projects":
            run_cases(deterministic_project_cases(fixed, rng), seeds, tally, timeout)
            run_drawn(drawn_project_case(), count - fixed, seed, seeds, tally, timeout)
        else:
            run_cases(deterministic_file_cases(seeds, path, fixed, rng), seeds, tally, timeout)
            run_drawn(drawn_file_case(seeds, path), count - fixed, seed, seeds, tally, timeout)
    return tally


def report(tally: Tally, elapsed: float, show_errors: bool = False) -> str:
    columns = ("cases", "accepted", "clear", "unclear", "traceback", "hang", "changed", "broken")
    heads = ("path/container", "cases", "accepted", "clear errors", "unclear errors", "tracebacks", "hangs",
             "changed-on-refusal", "broken-on-accept")
    rows = [(f"{p}/{c}", *(tally.counts[p, c][k] for k in columns)) for p, c in sorted(tally.counts)]
    rows.append(("total", *(sum(r[i] for r in rows) for i in range(1, len(columns) + 1))))
    widths = [max(len(str(r[i])) for r in rows + [heads]) for i in range(len(heads))]
    lines = ["  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
             for r in [heads] + rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    lines.append(f"\n{elapsed:.0f} s for {rows[-1][1]} cases ({elapsed / max(rows[-1][1], 1) * 1000:.0f} ms each)")
    if tally.first:
        lines.append("\nFirst example of each failure class (count):")
    for (path, kind, detail), (case, outcome, count) in sorted(tally.first.items(), key=lambda item: item[0]):
        lines.append(f"- [{path}/{case.container}] {kind}: {detail or outcome.message} x{count}")
        lines.append(f"    case: {case.label[:300]}")
        lines.append(f"    argv: {' '.join(case.argv)}  (project: {case.target})")
        if outcome.message and outcome.message != detail:
            lines.append(f"    said: {outcome.message}")
    if show_errors:
        for path, counter in sorted(tally.messages.items()):
            lines.append(f"\nClear errors of {path}, by kind:")
            lines += [f"  {count:5} {gist}" for gist, count in counter.most_common() if count]
    if EDITS_REFUSED:
        lines.append("\nHand edits SQLite refused (those cases ran on the intact file):")
        lines += [f"- {name} x{count}" for name, count in sorted(EDITS_REFUSED.items())]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=3000, help="cases in all, shared evenly by the paths")
    parser.add_argument("--seed", type=int, default=0, help="picks the deterministic mutations and hypothesis' draws")
    parser.add_argument("--only", choices=PATHS, help="fuzz one path only")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds a case may take before it is a hang")
    parser.add_argument("--show-errors", action="store_true", help="also list the clear errors by kind, to see "
                        "which checks the cases reach")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    paths = [args.only] if args.only else list(PATHS)
    # Cases write many small files: a RAM disk where there is one.
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="workbench-fuzz-", dir=base) as root:
        tally = fuzz(paths, args.cases, args.seed, args.timeout, Path(root))
    print(report(tally, time.monotonic() - started, args.show_errors))
    total = Counter()
    for row in tally.counts.values():
        total.update(row)
    return 1 if any(total[k] for k in ("traceback", "hang", "changed", "unclear", "broken")) else 0


if __name__ == "__main__":
    sys.exit(main())
