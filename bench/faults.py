"""Faults: kill -9 at random moments, a full disk, and running out of memory in each trainer.

    .venv/bin/python bench/faults.py [--kills 1000] [--train-kills 5] [--seed 1] [--quick]
                                     [--only kills|disk|oom] [--keep DIR]

1. kill -9. Child processes are killed with SIGKILL at a random moment while they write:
   - labeling: a child applies a list of edits made here (new prompts, batches of responses,
     rankings saved and replaced, rankings deleted, tags) through PromptStore/RankingStore and
     prints an acknowledgement after each call returns (so after its commit);
   - SFT edits: likewise through SftStore (add, add_many, update, delete, and undo of a delete);
   - imports: `python -m workbench.cli import P data.jsonl` of a few thousand rows, killed either
     at a uniform moment of the process's life or aimed (after the project's -wal starts to grow,
     i.e. inside the import's transaction or right after it);
   - training: `python -m workbench.cli train sft|rm|ppo P --max-steps N --set checkpoint_every=2`
     on the tiny random Llama, killed after a random step plus a random fraction of a step.
   After every kill the project must pass `Project.open`, `PRAGMA integrity_check` and
   `PRAGMA foreign_key_check` (SFT rows also their derived columns). Labeling and SFT edits keep
   one project each across all their kills; the state found must equal the edits acknowledged,
   optionally plus the one in flight, exactly (0 acknowledged writes lost, nothing half-applied).
   An import must leave all of its rows or none. A killed run is resumed with
   `train KIND P --resume RUN` (run in this process through workbench.cli.main, to save the
   ~9 s start of torch per kill; the killed process is a real child): it must resume from its
   last complete checkpoint (step 0 when none) and its per-step curves (every metric except
   time/ and perf/) must equal an uninterrupted run with the same settings (rel 1e-4).
   Training kills are slow (each killed child loads torch and the model), so most kills go to
   writes: --train-kills per kind (default 5), imports 15% of the rest, labeling and SFT edits
   share what remains.
2. Disk full, on real tmpfs mounts (needs root; otherwise the section says it was skipped): an SFT
   checkpoint that does not fit, an import, an export onto the full disk, `new` on a full disk,
   `info` on a healthy project on a full disk. Each row: exit code, the message, whether the
   project opens while the disk is full and after space is freed (with integrity_check), what is
   left behind, and the run's status.
3. Out of memory in each trainer, in this process: the tiny model loaded once in a ModelSession;
   the backbone's forward is monkeypatched to allocate a 512 MiB ballast tensor and raise
   torch.OutOfMemoryError at step 2 (a simulation: this machine has no GPU, and a real RLIMIT_AS
   OOM would hit wherever the allocator happens to be). Checked: a TrainingError with advice, the
   run failed with that message, the model free (busy_with None, adapter removed), RSS back to
   where it was, and the next short run in the same process finishing.

Exit status 0 when every goal is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
PY = sys.executable
ANNOTATORS = ("ana", "bo", "chen", "dara")
WORDS = ("order", "parcel", "refund", "late", "tracking", "shoes", "colis", "Lieferung", "返品", "🙂",
         "quote\"s", "back\\slash", "new\nline", "tab\there", "café", "naïve", "  spaced  ")
SKIP_METRICS = ("time/", "perf/")


# ---- small helpers -------------------------------------------------------------------------------

def sentence(rng: random.Random, words: int = 6) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, words))) + f" {rng.randint(0, 10**6)}?"


def hexid(rng: random.Random) -> str:
    return "%032x" % rng.getrandbits(128)


def child_env(work: Path) -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", WORKBENCH_CONFIG=str(work / "config"), PYTHONUNBUFFERED="1",
                TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT))


def sidecars(path: Path) -> list[Path]:
    return [Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")]


def remove_project(path: Path) -> None:
    for file in (path, *sidecars(path)):
        file.unlink(missing_ok=True)
    shutil.rmtree(path.with_name(path.stem + ".artifacts"), ignore_errors=True)


def copy_project(src: Path, dst: Path) -> Path:
    """A closed project (file and artifacts) copied to `dst`."""
    remove_project(dst)
    shutil.copyfile(src, dst)
    artifacts = src.with_name(src.stem + ".artifacts")
    if artifacts.is_dir():
        shutil.copytree(artifacts, dst.with_name(dst.stem + ".artifacts"))
    return dst


def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def table(title: str, headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(line.split("\n")[0]) for line in column) for column in zip(*cells)]
    out = [title]
    for index, row in enumerate(cells):
        out.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if index == 0:
            out.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(out)


def say(text: str = "") -> None:
    print(text, flush=True)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def checked_open(path: Path):
    """(problem or None, open Project or None): Project.open, then integrity and foreign keys."""
    from workbench.project import Project

    try:
        project = Project.open(path)
    except Exception as error:  # noqa: BLE001 - any failure to open is what we count
        return f"Project.open failed: {type(error).__name__}: {error}", None
    try:
        integrity = [row[0] for row in project.query("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            project.close()
            return f"integrity_check: {integrity[:3]}", None
        keys = project.query("PRAGMA foreign_key_check")
        if keys:
            project.close()
            return f"foreign_key_check: {keys[:3]}", None
    except sqlite3.Error as error:
        project.close()
        return f"check failed: {error}", None
    return None, project


def integrity_of(path: Path) -> str:
    problem, project = checked_open(path)
    if project is not None:
        project.close()
    return problem or "ok"


# ---- labeling: edits, their effect on a plain model of the tables, the child that applies them ---

def empty_labels() -> dict:
    return {"prompts": {}, "batches": {}, "rankings": {}}


def labeling_ops(state: dict, rng: random.Random, n: int) -> list[dict]:
    """`n` edits that are valid one after the other from `state`."""
    prompts = list(state["prompts"])
    batches = {uid: len(texts) for uid, (_, texts) in state["batches"].items()}
    batch_list = list(batches)
    ranked = set(state["rankings"])
    ops = []
    for _ in range(n):
        r = rng.random()
        if r < 0.03 or not prompts:
            uid = hexid(rng)
            ops.append({"op": "prompt", "uid": uid, "text": sentence(rng),
                        "tags": sorted({rng.choice(("shipping", "returns", "billing", "é"))
                                        for _ in range(rng.randint(0, 2))})})
            prompts.append(uid)
        elif r < 0.08 or not batch_list:
            uid, k = hexid(rng), rng.randint(2, 4)
            ops.append({"op": "batch", "prompt": rng.choice(prompts), "batch": uid,
                        "texts": [sentence(rng, 12) for _ in range(k)], "ruids": [hexid(rng) for _ in range(k)]})
            batches[uid] = k
            batch_list.append(uid)
        elif r < 0.14:
            ops.append({"op": "tags", "prompt": rng.choice(prompts),
                        "tags": sorted({rng.choice(("a", "b", "urgent", "ß")) for _ in range(rng.randint(0, 3))})})
        else:
            batch, annotator = rng.choice(batch_list), rng.choice(ANNOTATORS)
            if (batch, annotator) in ranked and rng.random() < 0.1:
                ops.append({"op": "unrank", "batch": batch, "annotator": annotator})
                ranked.discard((batch, annotator))
                continue
            order = list(range(batches[batch]))
            rng.shuffle(order)
            groups, current = [], []
            for position in order:  # random ties
                current.append(position)
                if rng.random() < 0.7:
                    groups.append(current)
                    current = []
            if current:
                groups.append(current)
            ops.append({"op": "rank", "batch": batch, "annotator": annotator, "groups": groups,
                        "all_bad": rng.random() < 0.1, "seconds": rng.randint(1, 40) / 4})
            ranked.add((batch, annotator))
    return ops


def apply_labeling(state: dict, op: dict) -> None:
    """The effect of one edit on the model of the tables (mutates `state`)."""
    kind = op["op"]
    if kind == "prompt":
        state["prompts"][op["uid"]] = (op["text"], tuple(op["tags"]))
    elif kind == "batch":
        state["batches"][op["batch"]] = (op["prompt"], tuple(op["texts"]))
    elif kind == "tags":
        text, _ = state["prompts"][op["prompt"]]
        state["prompts"][op["prompt"]] = (text, tuple(op["tags"]))
    elif kind == "unrank":
        state["rankings"].pop((op["batch"], op["annotator"]), None)
    elif kind == "rank":
        key = (op["batch"], op["annotator"])
        before = state["rankings"].get(key)
        seconds = (before[2] if before else 0.0) + op["seconds"]  # seconds spent add up on a re-rank
        state["rankings"][key] = (tuple(tuple(g) for g in op["groups"]), op["all_bad"], seconds)


def copy_labels(state: dict) -> dict:
    return {name: dict(table) for name, table in state.items()}


def read_labels(project) -> dict:
    state = empty_labels()
    for uid, text, tags in project.query("SELECT uid, text, tags FROM prompts"):
        state["prompts"][uid] = (text, tuple(json.loads(tags)))
    position, texts = {}, {}
    for rid, batch, pos, text, prompt_uid in project.query(
            "SELECT r.id, r.batch, r.position, r.text, p.uid FROM responses r JOIN prompts p ON p.id = r.prompt_id "
            "ORDER BY r.batch, r.position, r.id"):
        position[rid] = pos
        texts.setdefault(batch, (prompt_uid, []))[1].append(text)
    state["batches"] = {batch: (prompt_uid, tuple(t)) for batch, (prompt_uid, t) in texts.items()}
    for batch, annotator, ranking, all_bad, seconds in project.query(
            "SELECT batch, annotator, ranking, all_bad, seconds_spent FROM rankings"):
        groups = tuple(tuple(position.get(r, -1) for r in group) for group in json.loads(ranking))
        state["rankings"][(batch, annotator)] = (groups, bool(all_bad), seconds)
    return state


class LabelingWriter:
    """Applies edits the way the ranking page does, through the stores (child and setup)."""

    def __init__(self, project):
        from workbench.data.prompts import PromptStore
        from workbench.data.rankings import RankingStore

        self.project, self.prompts, self.rankings = project, PromptStore(project), RankingStore(project)

    def prompt_id(self, uid: str) -> int:
        return self.project.query("SELECT id FROM prompts WHERE uid = ?", (uid,))[0][0]

    def apply(self, op: dict) -> None:
        kind = op["op"]
        if kind == "prompt":
            self.prompts.add(op["text"], op["tags"], uid=op["uid"])
        elif kind == "batch":
            self.rankings.add_batch(self.prompt_id(op["prompt"]), op["texts"],
                                    [{"source": "base", "seed": i} for i in range(len(op["texts"]))],
                                    batch_uid=op["batch"], response_uids=op["ruids"])
        elif kind == "tags":
            self.prompts.update(self.prompt_id(op["prompt"]), tags=op["tags"])
        elif kind == "unrank":
            self.rankings.delete_ranking(op["batch"], op["annotator"])
        elif kind == "rank":
            batch = self.rankings.batch(op["batch"])
            ids = [r.id for r in batch.responses]  # in position order
            self.rankings.save_ranking(op["batch"], op["annotator"], [[ids[p] for p in g] for g in op["groups"]],
                                       all_bad=op["all_bad"], seconds_spent=op["seconds"])


# ---- SFT edits ---------------------------------------------------------------------------------

class Bag:
    """A set with O(1) random choice (a list plus positions), deterministic for a seed."""

    def __init__(self, items=()):
        self.items, self.at = [], {}
        for item in items:
            self.add(item)

    def add(self, item) -> None:
        if item not in self.at:
            self.at[item] = len(self.items)
            self.items.append(item)

    def remove(self, item) -> None:
        index = self.at.pop(item)
        last = self.items.pop()
        if index < len(self.items):
            self.items[index] = last
            self.at[last] = index

    def choice(self, rng: random.Random):
        return rng.choice(self.items)

    def __len__(self) -> int:
        return len(self.items)


def sft_messages(rng: random.Random, empty_replies: bool = True) -> list[dict]:
    """A conversation; with `empty_replies`, 5% of replies are empty (the editor allows them)."""
    messages = [{"role": "system", "content": sentence(rng)}] if rng.random() < 0.2 else []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        messages.append({"role": "user", "content": sentence(rng, 10)})
        empty = empty_replies and rng.random() < 0.05
        messages.append({"role": "assistant", "content": "" if empty else sentence(rng, 20)})
    return messages


def canon(messages: list[dict]) -> str:
    return json.dumps([{"role": m["role"], "content": m["content"]} for m in messages], ensure_ascii=False)


def sft_ops(state: dict, rng: random.Random, n: int) -> list[dict]:
    """Edits valid one after the other; new ids are predicted (SQLite gives max(id) + 1)."""
    live = Bag(state)
    top = max(state, default=0)
    deleted: dict[int, dict[int, tuple]] = {}
    model = dict(state)
    ops = []
    for index in range(n):
        r = rng.random()
        if r < 0.25 or len(live) < 5:
            top = max(model, default=0) + 1
            messages = sft_messages(rng)
            ops.append({"op": "add", "messages": messages, "expect": top})
            model[top] = (canon(messages), "faults")
            live.add(top)
        elif r < 0.30:
            examples = [sft_messages(rng) for _ in range(rng.randint(2, 5))]
            first = max(model, default=0) + 1
            ops.append({"op": "add_many", "examples": examples, "expect": list(range(first, first + len(examples)))})
            for offset, messages in enumerate(examples):
                model[first + offset] = (canon(messages), "faults-many")
                live.add(first + offset)
        elif r < 0.65:
            target = live.choice(rng)
            messages = sft_messages(rng)
            ops.append({"op": "update", "id": target, "messages": messages})
            model[target] = (canon(messages), model[target][1])
        elif r < 0.90:
            ids = sorted({live.choice(rng) for _ in range(rng.randint(1, 3))})
            ops.append({"op": "delete", "ids": ids, "key": index})
            deleted[index] = {i: model.pop(i) for i in ids}
            for i in ids:
                live.remove(i)
        else:
            free = [key for key, rows in deleted.items() if not any(i in model for i in rows)]
            if not free:
                continue
            key = rng.choice(free)
            ops.append({"op": "restore", "of": key, "ids": sorted(deleted[key])})
            for i, value in deleted.pop(key).items():
                model[i] = value
                live.add(i)
    return ops


def apply_sft(state: dict, op: dict, undo: dict) -> None:
    """The effect on {id: (messages json, source)}; `undo` remembers deletes by op key."""
    kind = op["op"]
    if kind == "add":
        state[op["expect"]] = (canon(op["messages"]), "faults")
    elif kind == "add_many":
        for i, messages in zip(op["expect"], op["examples"]):
            state[i] = (canon(messages), "faults-many")
    elif kind == "update":
        state[op["id"]] = (canon(op["messages"]), state[op["id"]][1])
    elif kind == "delete":
        undo[op["key"]] = {i: state.pop(i) for i in op["ids"]}
    elif kind == "restore":
        state.update(undo.pop(op["of"]))


def read_sft(project) -> tuple[dict, int]:
    """{id: (messages, source)} and how many rows' derived columns disagree with their messages."""
    from workbench.data.sft_store import derived_columns

    state, wrong = {}, 0
    for row in project.query("SELECT id, messages, source, prompt, response, turns, has_empty, digest "
                             "FROM sft_examples"):
        state[row[0]] = (row[1], row[2])
        derived = derived_columns(json.loads(row[1]))
        if (derived["messages"], derived["prompt"], derived["response"], derived["turns"], derived["has_empty"],
                derived["digest"]) != (row[1], *row[3:]):
            wrong += 1
    return state, wrong


class SftWriter:
    def __init__(self, project):
        from workbench.data.sft_store import SftStore

        self.store, self.undo = SftStore(project), {}

    def apply(self, op: dict) -> str:
        kind = op["op"]
        if kind == "add":
            return str(self.store.add(op["messages"], source="faults"))
        if kind == "add_many":
            return ",".join(map(str, self.store.add_many(op["examples"], source="faults-many")))
        if kind == "update":
            self.store.update(op["id"], op["messages"])
        elif kind == "delete":
            self.undo[op["key"]] = self.store.delete(op["ids"])
        elif kind == "restore":
            self.store.restore(self.undo.pop(op["of"]))
        return ""


def child_main(argv: list[str]) -> int:
    """python bench/faults.py --child labeling|sft PROJECT OPS.json: apply the edits, print
    "ready" once open, then "ACK <index> [ids]" after each edit returns (it has committed)."""
    kind, path, ops_file = argv
    from workbench.project import Project

    ops = json.loads(Path(ops_file).read_text(encoding="utf-8"))
    project = Project.open(path)
    writer = LabelingWriter(project) if kind == "labeling" else SftWriter(project)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for index, op in enumerate(ops):
        extra = writer.apply(op)
        out.write(f"ACK {index} {extra or ''}\n")
        out.flush()
    out.write("done\n")
    out.flush()
    project.close()
    return 0


# ---- 1. kill -9 during writes ----------------------------------------------------------------

@dataclass
class WriteKills:
    name: str
    kills: int = 0
    rounds_finished_first: int = 0
    acked: int = 0
    in_flight_landed: int = 0      # the edit that was running at the kill had committed
    in_flight_absent: int = 0
    lost: int = 0                  # records differing from every acceptable state
    integrity_failures: int = 0
    child_errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


ABSENT = ("absent",)


def state_diff(actual: dict, a: dict, b: dict) -> int:
    """Records (over the tables of these dicts of dicts) of `actual` that match neither
    acceptable state `a` nor `b`."""
    wrong = 0
    for name in actual:
        for key in set(actual[name]) | set(a[name]) | set(b[name]):
            if actual[name].get(key, ABSENT) not in (a[name].get(key, ABSENT), b[name].get(key, ABSENT)):
                wrong += 1
    return wrong


def run_writer_kills(kind: str, kills: int, seed: int, work: Path, ops_per_round: int = 3000,
                     max_delay: float = 0.2, log=None) -> WriteKills:
    """`kills` SIGKILLs of a child applying labeling (kind "labeling") or SFT ("sft") edits to one
    project, each checked against the acknowledged edits."""
    from workbench.project import Project

    started = time.monotonic()
    rng = random.Random(f"{kind}-{seed}")
    stats = WriteKills("labeling" if kind == "labeling" else "SFT edits")
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{kind}.rlhf"
    remove_project(path)
    project = Project.create(path, name=f"faults {kind}")
    # Some data to start from, written here through the same writer.
    if kind == "labeling":
        state = empty_labels()
        writer = LabelingWriter(project)
        setup = labeling_ops(state, rng, 0)
        for _ in range(30):
            setup.append({"op": "prompt", "uid": hexid(rng), "text": sentence(rng), "tags": []})
        for op in list(setup):
            setup.append({"op": "batch", "prompt": op["uid"], "batch": hexid(rng),
                          "texts": [sentence(rng) for _ in range(3)], "ruids": [hexid(rng) for _ in range(3)]})
        for op in setup:
            writer.apply(op)
            apply_labeling(state, op)
    else:
        state, undo = {}, {}
        writer = SftWriter(project)
        for op in sft_ops(state, rng, 0) + [{"op": "add_many", "examples": [sft_messages(rng) for _ in range(40)],
                                             "expect": list(range(1, 41))}]:
            writer.apply(op)
            apply_sft(state, op, undo)
    project.close()
    env = child_env(work)
    ops_file = work / f"{kind}-ops.json"
    while stats.kills < kills:
        ops = labeling_ops(state, rng, ops_per_round) if kind == "labeling" else sft_ops(state, rng, ops_per_round)
        ops_file.write_text(json.dumps(ops, ensure_ascii=False), encoding="utf-8")
        errors = work / f"{kind}-child.err"
        with open(errors, "w") as err:
            child = subprocess.Popen([PY, str(THIS), "--child", kind, str(path), str(ops_file)],
                                     stdout=subprocess.PIPE, stderr=err, text=True, env=env)
            ready = child.stdout.readline().strip()
            if ready == "ready":
                time.sleep(rng.uniform(0, max_delay))
            killed = child.poll() is None
            if killed:
                os.kill(child.pid, signal.SIGKILL)
            rest = child.stdout.read()
            child.wait()
        lines = rest.splitlines()
        acks = [line.split(" ") for line in lines if line.startswith("ACK ")]
        if ready != "ready" or (not killed and "done" not in lines):
            stats.child_errors.append(last_line(errors.read_text()) or f"child exited {child.returncode}")
            if len(stats.child_errors) > 3:
                break
            continue
        if not killed:
            stats.rounds_finished_first += 1
        else:
            stats.kills += 1
        done = len(acks)
        if [int(a[1]) for a in acks] != list(range(done)):
            stats.problems.append(f"kill {stats.kills}: acknowledgements out of order")
        # The ids the child got back must be the ones predicted (else the model is off).
        for a in acks:
            op = ops[int(a[1])]
            if op["op"] in ("add", "add_many"):
                expect = op["expect"] if op["op"] == "add_many" else [op["expect"]]
                if a[2] != ",".join(map(str, expect)):
                    stats.problems.append(f"kill {stats.kills}: op {a[1]} got ids {a[2]}, predicted {expect}")
        stats.acked += done
        # The acceptable states: every acknowledged edit, plus or minus the one in flight.
        if kind == "labeling":
            acked_state = copy_labels(state)
            for op in ops[:done]:
                apply_labeling(acked_state, op)
            with_flight = copy_labels(acked_state)
            if done < len(ops):
                apply_labeling(with_flight, ops[done])
        else:
            undo = {}
            acked_state = dict(state)
            for op in ops[:done]:
                apply_sft(acked_state, op, undo)
            with_flight = dict(acked_state)
            if done < len(ops):
                apply_sft(with_flight, ops[done], dict(undo))
        problem, project = checked_open(path)
        if problem:
            stats.integrity_failures += 1
            stats.problems.append(f"kill {stats.kills}: {problem}")
            break  # the project cannot be used for further rounds
        try:
            if kind == "labeling":
                actual = read_labels(project)
                a, b = acked_state, with_flight
                same_a, same_b = actual == a, actual == b
                wrong = 0 if (same_a or same_b) else state_diff(actual, a, b)
            else:
                actual, derived_wrong = read_sft(project)
                if derived_wrong:
                    stats.integrity_failures += 1
                    stats.problems.append(f"kill {stats.kills}: {derived_wrong} rows' derived columns are stale")
                same_a, same_b = actual == acked_state, actual == with_flight
                wrong = 0 if (same_a or same_b) else state_diff({"t": actual}, {"t": acked_state}, {"t": with_flight})
        finally:
            project.close()
        if same_a and same_b:
            pass  # the edit in flight changes nothing visible (or there was none)
        elif same_b:
            stats.in_flight_landed += 1
        elif same_a:
            stats.in_flight_absent += 1
        else:
            stats.lost += max(wrong, 1)
            stats.problems.append(f"kill {stats.kills}: {wrong} records match neither the acknowledged state "
                                  f"nor it plus the edit in flight ({done} acknowledged)")
        state = actual if kind == "labeling" else {k: v for k, v in actual.items()}
        if log and stats.kills and stats.kills % 100 == 0 and killed:
            log(f"  {stats.name}: {stats.kills} kills, {stats.acked} acknowledged edits checked")
    stats.seconds = time.monotonic() - started
    return stats


# ---- 1b. kill -9 during an import -----------------------------------------------------------

@dataclass
class ImportKills:
    kills: int = 0
    rows: int = 0
    outcomes: dict = field(default_factory=lambda: {"none": 0, "all": 0, "partial": 0})
    by_mode: dict = field(default_factory=lambda: {"uniform": 0, "aimed": 0})
    finished_first: int = 0
    acked_then_killed: int = 0     # "imported N" was printed, then the kill came: must be "all"
    integrity_failures: int = 0
    problems: list[str] = field(default_factory=list)
    timing: dict = field(default_factory=dict)
    seconds: float = 0.0


def import_file(path: Path, rows: int, seed: int) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(rows):
            if i % 2:
                row = {"prompt": sentence(rng, 12) + f" #{i}", "completion": sentence(rng, 40)}
            else:
                row = {"messages": [{"role": "user", "content": sentence(rng, 12) + f" #{i}"},
                                    {"role": "assistant", "content": sentence(rng, 40)}]}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def run_import_kills(kills: int, seed: int, work: Path, rows: int = 4000, log=None) -> ImportKills:
    """`kills` SIGKILLs of `workbench.cli import` of a `rows`-row JSONL into a fresh copy of a
    project that already holds 100 examples; half at a uniform moment, half aimed at the write."""
    from workbench.data.sft_store import SftStore
    from workbench.project import Project

    started = time.monotonic()
    rng = random.Random(f"import-{seed}")
    stats = ImportKills(rows=rows)
    work.mkdir(parents=True, exist_ok=True)
    template = work / "import-template.rlhf"
    remove_project(template)
    project = Project.create(template)
    SftStore(project).add_many([sft_messages(rng) for _ in range(100)], source="before")
    project.close()
    data = import_file(work / "import.jsonl", rows, seed)
    target = work / "import.rlhf"
    env = child_env(work)
    command = [PY, "-m", "workbench.cli", "import", str(target), str(data)]

    def launch():
        copy_project(template, target)
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def wait_for_write(child, wal: Path) -> float | None:
        while child.poll() is None:
            try:
                if wal.stat().st_size > 0:
                    return time.monotonic()
            except FileNotFoundError:
                pass
            time.sleep(0.0005)
        return None

    # Calibration: one import left alone, timed from start and from the first write to the log.
    t0 = time.monotonic()
    child = launch()
    wrote = wait_for_write(child, Path(f"{target}-wal"))
    out, err = child.communicate()
    end = time.monotonic()
    if child.returncode != 0:
        stats.problems.append(f"an uninterrupted import failed: {last_line(err)}")
        stats.seconds = time.monotonic() - started
        return stats
    stats.timing = {"total_s": end - t0, "write_to_exit_s": (end - wrote) if wrote else 0.0}
    expected_before, expected_after = 100, 100 + rows
    while stats.kills < kills:
        mode = "aimed" if stats.kills % 2 else "uniform"
        child = launch()
        if mode == "uniform":
            time.sleep(rng.uniform(0.05, stats.timing["total_s"]))
        else:
            if wait_for_write(child, Path(f"{target}-wal")) is not None:
                time.sleep(rng.uniform(0, stats.timing["write_to_exit_s"]))
        killed = child.poll() is None
        if killed:
            os.kill(child.pid, signal.SIGKILL)
        out, err = child.communicate()
        problem, project = checked_open(target)
        if problem:
            stats.integrity_failures += 1
            stats.problems.append(f"kill {stats.kills + 1} ({mode}): {problem}")
            count = None
        else:
            count = project.query("SELECT COUNT(*) FROM sft_examples")[0][0]
            project.close()
        if not killed:
            stats.finished_first += 1
            if child.returncode != 0:
                stats.problems.append(f"an import that was not killed failed: {last_line(err)}")
            continue
        stats.kills += 1
        stats.by_mode[mode] += 1
        outcome = {expected_before: "none", expected_after: "all"}.get(count, "partial")
        stats.outcomes[outcome] += 1
        if outcome == "partial":
            stats.problems.append(f"kill {stats.kills} ({mode}): {count} examples, neither "
                                  f"{expected_before} nor {expected_after}")
        if out.startswith("imported"):
            stats.acked_then_killed += 1
            if outcome != "all":
                stats.problems.append(f"kill {stats.kills}: the import was reported done, then {count} rows")
        if log and stats.kills % 50 == 0:
            log(f"  import: {stats.kills} kills")
    stats.seconds = time.monotonic() - started
    return stats


# ---- 1c. kill -9 during training ---------------------------------------------------------------

TRAIN_ARGS = {
    "sft": ["--max-steps", "16", "--set", "checkpoint_every=2", "--set", "batch_size=2", "--set", "eval_every=4"],
    "rm": ["--max-steps", "16", "--set", "checkpoint_every=2", "--set", "batch_size=4", "--set", "eval_every=4"],
    "ppo": ["--max-steps", "10", "--set", "checkpoint_every=2", "--set", "batch_size=4",
            "--set", "max_new_tokens=8"],
}
POLITE = ["I'm sorry your order is late.", "Check the tracking link, please.", "I will send a replacement.",
          "You have 30 days to return them for free."]
RUDE = ["the quick brown fox", "jumps over the lazy dog", "0123456789 system user", "brown dog quick lazy"]


def cli(argv: list[str]) -> tuple[int, str, str]:
    """workbench.cli.main in this process, its output captured."""
    from workbench.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as error:
            code = error.code if isinstance(error.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def tiny_model(work: Path) -> Path:
    from transformers.utils import logging as transformers_logging

    from workbench.models.tiny import make_tiny_llama

    transformers_logging.disable_progress_bar()
    folder = work / "tiny-llama"
    if not (folder / "config.json").is_file():
        make_tiny_llama(folder)
    return folder


def sft_training_project(path: Path, model: Path, examples: int = 24) -> Path:
    from workbench.config import ModelSpec
    from workbench.data.sft_store import SftStore
    from workbench.project import Project

    remove_project(path)
    project = Project.create(path)
    project.set_base_model(ModelSpec(kind="folder", location=str(model)))
    SftStore(project).add_many([[{"role": "user", "content": f"Where is order {i}?"},
                                 {"role": "assistant", "content": POLITE[i % 4]}] for i in range(examples)])
    project.close()
    return path


def rm_training_project(path: Path, model: Path, prompts: int = 16, k: int = 3, seed: int = 0) -> Path:
    """Prompts, batches and rankings made with the stores (no model): the polite answer wins."""
    from workbench.config import ModelSpec
    from workbench.data.prompts import PromptStore
    from workbench.data.rankings import RankingStore
    from workbench.project import Project

    rng = random.Random(seed)
    remove_project(path)
    project = Project.create(path)
    project.set_base_model(ModelSpec(kind="folder", location=str(model)))
    store = RankingStore(project)
    for i in range(prompts):
        prompt = PromptStore(project).add(f"My order number {i} hasn't arrived.")
        texts = [rng.choice(POLITE) + f" {i}"] + [rng.choice(RUDE) + f" {i} {j}" for j in range(k - 1)]
        batch = store.add_batch(prompt, texts, [{"source": "base"}] * k)
        ids = [r.id for r in batch.responses]
        store.save_ranking(batch.uid, "ana", [[ids[0]], ids[1:]])
    project.close()
    return path


def ppo_training_project(path: Path, model: Path) -> Path:
    """The RM project with a finished reward-model run (trained once here)."""
    rm_training_project(path, model)
    code, out, err = cli(["train", "rm", path, "--max-steps", "2", "--set", "batch_size=4"])
    if code != 0:
        raise RuntimeError(f"the reward model for PPO did not train: {last_line(err)}")
    return path


def training_metrics(path: Path, run_id: int) -> dict:
    from workbench.project import Project
    from workbench.train.runs import RunRecord

    project = Project.open(path)
    try:
        return {k: v for k, v in RunRecord(project, run_id).metrics().items() if not k.startswith(SKIP_METRICS)}
    finally:
        project.close()


def curve_difference(got: dict, want: dict) -> tuple[float, str]:
    """Largest relative difference between two runs' curves, and what differs in shape."""
    if set(got) != set(want):
        return float("inf"), f"metrics differ: {sorted(set(got) ^ set(want))}"
    worst = 0.0
    for key, (steps, values) in want.items():
        if got[key][0] != steps:
            return float("inf"), f"{key} has steps {got[key][0][:5]}..., want {steps[:5]}..."
        for a, b in zip(got[key][1], values):
            if a != b:
                worst = max(worst, abs(a - b) / max(abs(a), abs(b), 1e-6))
    return worst, ""


@dataclass
class TrainKill:
    kind: str
    target: int
    killed_after: int | None = None   # the last step line seen before the kill
    checkpoint: int | None = None     # last complete checkpoint after the kill
    status_after_kill: str = ""
    partials: int = 0
    resumed_at: int | None = None
    first_step: int | None = None
    final_status: str = ""
    difference: float = float("inf")
    problem: str = ""
    finished_first: bool = False

    partials_after: int = 0           # .partial folders left in the run folder after the resume

    @property
    def ok(self) -> bool:
        if self.status_after_kill == "finished":  # killed while exiting, after its run had finished
            return not self.problem and self.final_status == "finished" and self.difference <= 1e-4
        return (not self.problem and self.resumed_at == (self.checkpoint or 0)
                and self.first_step == (self.checkpoint or 0) + 1 and self.final_status == "finished"
                and self.difference <= 1e-4)


def run_training_kills(kind: str, kills: int, seed: int, work: Path, model: Path, log=None) -> tuple[list, dict]:
    from workbench.project import Project
    from workbench.train.runs import RunRecord

    rng = random.Random(f"train-{kind}-{seed}")
    work.mkdir(parents=True, exist_ok=True)
    template = work / f"{kind}-template.rlhf"
    {"sft": sft_training_project, "rm": rm_training_project, "ppo": ppo_training_project}[kind](template, model)
    args = TRAIN_ARGS[kind]
    total = int(args[1])
    reference = copy_project(template, work / f"{kind}-reference.rlhf")
    t0 = time.monotonic()
    code, out, err = cli(["train", kind, reference, *args])
    seconds = time.monotonic() - t0
    if code != 0:
        return [], {"problem": f"the uninterrupted run failed: {last_line(err)}"}
    run_id = int(re.search(r"^run (\d+)", out, re.MULTILINE).group(1))
    want = training_metrics(reference, run_id)
    info = {"reference_s": seconds, "run_id": run_id, "steps": total}
    results = []
    env = child_env(work)
    while len([r for r in results if not r.finished_first]) < kills:
        target = rng.randint(0, total - 2)
        result = TrainKill(kind, target)
        path = copy_project(template, work / f"{kind}-killed.rlhf")
        errors = work / f"{kind}-train.err"
        with open(errors, "w") as err_file:
            child = subprocess.Popen([PY, "-m", "workbench.cli", "train", kind, str(path), *args],
                                     stdout=subprocess.PIPE, stderr=err_file, text=True, env=env)
            watchdog = threading.Timer(300, lambda: child.poll() is None and os.kill(child.pid, signal.SIGKILL))
            watchdog.start()
            seen, stamps = None, []
            for line in child.stdout:
                found = re.match(r"run \d+ step (\d+)/", line)
                if found:
                    seen = int(found.group(1))
                if line.startswith("run "):  # "run 1: Training 16 steps." starts the first step's clock
                    stamps.append(time.monotonic())
                if (target == 0 and line.startswith("run ")) or (seen is not None and seen >= target):
                    break
            # Then a random part of the next step and a half (its compute, metrics, checkpoint);
            # target 0: somewhere in the setup (data, adapter, the first step).
            step_s = stamps[-1] - stamps[-2] if len(stamps) >= 2 else 0.5
            time.sleep(rng.uniform(0, 1.5 * step_s))
            alive = child.poll() is None
            if alive:
                os.kill(child.pid, signal.SIGKILL)
            rest = child.stdout.read()
            child.wait()
            watchdog.cancel()
        for line in rest.splitlines():  # steps printed before the kill took effect
            found = re.match(r"run \d+ step (\d+)/", line)
            if found:
                seen = int(found.group(1))
        result.killed_after = seen
        if not alive:
            result.finished_first = True
            if child.returncode != 0:
                result.problem = f"the child exited {child.returncode} before the kill: {last_line(errors.read_text())}"
                results.append(result)
                break
            continue
        problem, project = checked_open(path)
        if problem:
            result.problem = problem
            results.append(result)
            continue
        try:
            record = RunRecord(project, run_id)
            result.status_after_kill = record.status
            last = record.last_checkpoint()
            result.checkpoint = last[0] if last else 0
            result.partials = len(list((record.folder / "checkpoints").glob("*.partial")))
        finally:
            project.close()
        if result.status_after_kill != "finished":
            code, out, err = cli(["train", kind, path, "--resume", run_id])
            resumed = re.search(r"resumed at step (\d+)", out)
            started_over = re.search(r"^run \d+: .*\b\d+ steps\.$", out, re.MULTILINE)  # "Training 16 steps."
            result.resumed_at = int(resumed.group(1)) if resumed else (0 if started_over else None)
            first = re.search(r"^run \d+ step (\d+)/", out, re.MULTILINE)
            result.first_step = int(first.group(1)) if first else None
            if code != 0:
                result.problem = f"resume exited {code}: {last_line(err)}"
        problem, project = checked_open(path)
        if problem:
            result.problem = result.problem or problem
        else:
            record = RunRecord(project, run_id)
            result.final_status = record.status
            result.partials_after = len(list(record.folder.rglob("*.partial")))
            project.close()
            result.difference, shape = curve_difference(training_metrics(path, run_id), want)
            result.problem = result.problem or shape
        results.append(result)
        if log:
            log(f"  train {kind}: kill {len(results)} after step {seen}, checkpoint {result.checkpoint}, "
                f"resumed at {result.resumed_at}, max rel diff {result.difference:.1e}"
                + (f", PROBLEM: {result.problem}" if result.problem else ""))
    return results, info


# ---- 2. disk full ------------------------------------------------------------------------------

class NoTmpfs(Exception):
    pass


@contextlib.contextmanager
def tmpfs(size_kib: int):
    folder = Path(tempfile.mkdtemp(prefix="faults-tmpfs-"))
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        folder.rmdir()
        raise NoTmpfs(last_line(made.stderr) or "mount failed")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def fill(folder: Path, leave: int = 0) -> int:
    """Fill the file system of `folder` with a filler file, then free `leave` bytes of it; returns
    the bytes free."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (b"\0" * 2**20, b"\0" * 4096, b"\0"):
            while True:
                try:
                    if os.write(fd, chunk) < len(chunk):
                        break
                except OSError:
                    break
    finally:
        os.close(fd)
    if leave:
        size = filler.stat().st_size
        os.truncate(filler, max(0, size - leave))
    return shutil.disk_usage(folder).free


def free_filler(folder: Path) -> None:
    (folder / "filler.bin").unlink(missing_ok=True)


def leftovers(folder: Path, expected: set[str] = frozenset()) -> list[str]:
    """What a failed command left that it should not have: half-written folders and files."""
    found = []
    for path in sorted(folder.rglob("*")):
        name = path.name
        if name == "filler.bin" or name in expected:
            continue
        relative = str(path.relative_to(folder))
        if name.endswith(".partial"):
            found.append(relative + ("/" if path.is_dir() else ""))
        elif name.endswith((".tmp", ".saving")):
            found.append(f"{relative} ({path.stat().st_size} B)")
        elif name.endswith((".rlhf-wal", ".rlhf-shm", ".rlhf-journal")):
            found.append(f"{relative} ({path.stat().st_size} B)")
        elif name.endswith(".rlhf") and path.stat().st_size == 0:
            found.append(f"{relative} (0 B)")
    return found


def raw_status(path: Path) -> str:
    """Runs' statuses straight from the file, as a killed or failed process left them."""
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            return ", ".join(f"run {i} {s}" for i, s in db.execute("SELECT id, status FROM runs")) or "no runs"
    except sqlite3.Error as error:
        return f"unreadable: {error}"


def opens(path: Path) -> str:
    from workbench.project import Project

    try:
        Project.open(path).close()
        return "yes"
    except Exception as error:  # noqa: BLE001
        return f"no: {str(error)[:48]}"


@dataclass
class DiskCase:
    case: str
    free: str = ""
    code: int | None = None
    message: str = ""
    traceback: bool = False
    opens_full: str = ""
    integrity_after: str = ""
    left: list[str] = field(default_factory=list)
    status: str = "-"
    notes: str = ""
    full_message: str = ""
    goal_ok: bool = True


def run_cli_child(argv: list, env: dict, timeout: float = 300) -> tuple[int, str, str]:
    done = subprocess.run([PY, "-m", "workbench.cli", *map(str, argv)], capture_output=True, text=True, env=env,
                          timeout=timeout)
    return done.returncode, done.stdout, done.stderr


def one_line(code: int, out: str, err: str) -> tuple[str, bool]:
    text = err if code else out
    return last_line(text)[:120], "Traceback" in err


def record_run(case: "DiskCase", code: int, out: str, err: str) -> None:
    case.code = code
    case.message, case.traceback = one_line(code, out, err)
    case.full_message = last_line(err if code else out)


def run_disk(work: Path, model: Path, seed: int, log=None) -> list[DiskCase]:
    from workbench.data.sft_store import SftStore
    from workbench.project import Project
    from workbench.train.runs import RunRecord

    work.mkdir(parents=True, exist_ok=True)
    env = child_env(work)
    cases = []

    # a) An SFT checkpoint that does not fit: measure one first, then leave room for the run's
    #    other writes (database, example snapshot) and half a checkpoint.
    probe = sft_training_project(work / "probe.rlhf", model)
    sets = ["--set", "checkpoint_every=2", "--set", "batch_size=2", "--set", "lora_rank=64", "--set", "lora_alpha=128"]
    code, out, err = cli(["train", "sft", probe, "--max-steps", "3", *sets])
    project = Project.open(probe)
    checkpoint = RunRecord(project, 1).last_checkpoint()
    project.close()
    size = sum(f.stat().st_size for f in checkpoint[1].rglob("*") if f.is_file()) if checkpoint else 0
    case = DiskCase("SFT checkpoint (train sft)")
    with tmpfs(8192) as disk:
        path = sft_training_project(disk / "ckpt.rlhf", model)
        leave = 320 * 1024 + size // 2
        case.free = f"{fill(disk, leave) // 1024} KiB free, checkpoint {size // 1024} KiB"
        code, out, err = run_cli_child(["train", "sft", path, "--max-steps", "6", *sets], env)
        record_run(case, code, out, err)
        steps = re.findall(r"step (\d+)/6", out)
        case.notes = f"reached step {steps[-1] if steps else 0} of 6"
        case.left = leftovers(disk)
        case.opens_full = opens(path)
        free_filler(disk)
        case.status = raw_status(path)
        case.integrity_after = integrity_of(path)
        says_full = any(words in case.message.lower() for words in ("disk is full", "no space"))
        case.goal_ok = (case.code != 0 and not case.traceback and says_full and "running" not in case.status
                        and not case.left and case.integrity_after == "ok")
    cases.append(case)
    if log:
        log(f"  disk: {case.case}: exit {case.code}")

    # b) An import onto a nearly full disk (room to open the project, not for the rows).
    data = import_file(work / "disk-import.jsonl", 4000, seed)
    case = DiskCase("import 4000 rows")
    with tmpfs(8192) as disk:
        path = disk / "import.rlhf"
        project = Project.create(path)
        SftStore(project).add_many([sft_messages(random.Random(seed)) for _ in range(30)])
        project.close()
        case.free = f"{fill(disk, 96 * 1024) // 1024} KiB free"
        code, out, err = run_cli_child(["import", path, data], env)
        record_run(case, code, out, err)
        case.left = leftovers(disk)
        case.opens_full = opens(path)
        free_filler(disk)
        case.integrity_after = integrity_of(path)
        problem, project = checked_open(path)
        count = project.query("SELECT COUNT(*) FROM sft_examples")[0][0] if project else None
        if project:
            project.close()
        case.notes = f"examples after: {count} (before: 30)"
        case.goal_ok = (case.code != 0 and not case.traceback and count == 30 and not case.left
                        and case.integrity_after == "ok")
    cases.append(case)

    # c) An export onto a full disk (the project itself is on a healthy disk).
    source = work / "export-source.rlhf"
    remove_project(source)
    project = Project.create(source)
    SftStore(project).add_many([sft_messages(random.Random(seed + i), empty_replies=False) for i in range(3000)])
    project.close()
    case = DiskCase("export 3000 rows to full disk")
    with tmpfs(1024) as disk:
        case.free = f"{fill(disk) // 1024} KiB free"
        code, out, err = run_cli_child(["export", source, disk / "out.jsonl"], env)
        record_run(case, code, out, err)
        case.left = leftovers(disk) + [f"out.jsonl ({(disk / 'out.jsonl').stat().st_size} B)"
                                        for _ in [0] if (disk / "out.jsonl").exists()]
        case.opens_full = opens(source)
        case.integrity_after = integrity_of(source)
        case.goal_ok = case.code != 0 and not case.traceback and not case.left and case.integrity_after == "ok"
    cases.append(case)

    # d) `new` on a full disk, and with a few KiB free (the file starts, the schema does not fit).
    for leave, label in ((0, "new on full disk"), (12 * 1024, "new, 12 KiB free")):
        case = DiskCase(label)
        with tmpfs(1024) as disk:
            case.free = f"{fill(disk, leave) // 1024} KiB free"
            code, out, err = run_cli_child(["new", disk / "fresh"], env)
            record_run(case, code, out, err)
            if case.code != 0:  # a refused `new` should leave nothing at all
                case.left = [f"{p.name} ({p.stat().st_size} B)" if p.is_file() else p.name + "/"
                             for p in sorted(disk.iterdir()) if p.name != "filler.bin"]
            else:
                case.left = leftovers(disk)
            if case.code == 0:
                case.opens_full = opens(disk / "fresh.rlhf")
                free_filler(disk)
                case.integrity_after = integrity_of(disk / "fresh.rlhf")
            else:
                case.opens_full = case.integrity_after = "n/a (nothing should exist)"
            case.goal_ok = (not case.traceback and (case.code != 0 and not case.left
                                                     or case.code == 0 and case.integrity_after == "ok"))
        cases.append(case)

    # e) `info` on a healthy project when its disk is full.
    case = DiskCase("info, project on full disk")
    with tmpfs(1024) as disk:
        path = disk / "healthy.rlhf"
        project = Project.create(path)
        SftStore(project).add_many([sft_messages(random.Random(seed)) for _ in range(20)])
        project.close()
        case.free = f"{fill(disk) // 1024} KiB free"
        code, out, err = run_cli_child(["info", path], env)
        record_run(case, code, out, err)
        if case.code == 0:
            case.message = "printed the JSON summary" if out.strip().startswith("{") else case.message
        case.left = leftovers(disk)
        case.opens_full = opens(path)
        free_filler(disk)
        case.integrity_after = integrity_of(path)
        case.goal_ok = case.code == 0 and not case.left and case.integrity_after == "ok"
    cases.append(case)
    return cases


# ---- 3. out of memory in each trainer -------------------------------------------------------------

@dataclass
class OomCase:
    kind: str
    error: str = ""
    advice: bool = False
    status: str = ""
    same_message: bool = False
    busy_with: str | None = "?"
    adapter_removed: bool = False
    rss_before: int = 0
    rss_at_oom: int = 0
    rss_after: int = 0
    rss_after_gc: int = 0
    next_run: str = ""
    fired: bool = False

    @property
    def released(self) -> bool:
        return self.rss_after - self.rss_before < 64 * 2**20

    @property
    def ok(self) -> bool:
        return (self.fired and "Out of memory" in self.error and self.advice and self.status == "failed"
                and self.same_message and self.busy_with is None and self.adapter_removed and self.released
                and self.next_run == "finished")


SHORT = {"sft": dict(max_steps=3, batch_size=2, checkpoint_every=100),
         "rm": dict(max_steps=3, batch_size=4, checkpoint_every=100),
         "ppo": dict(max_steps=3, batch_size=4, max_new_tokens=8, checkpoint_every=100)}
BALLAST_MIB = 512


class OomAtStep2:
    """The base's backbone forward, once armed, allocates a ballast and raises OutOfMemoryError."""

    def __init__(self, backbone, ballast_mib: int = BALLAST_MIB):
        self.backbone, self.armed, self.fired, self.rss_at = backbone, False, False, 0
        self.ballast_mib = ballast_mib
        self.original = backbone.forward

    def __enter__(self):
        import torch

        def forward(*args, **kwargs):
            if self.armed and not self.fired:
                self.fired = True
                ballast = torch.ones(self.ballast_mib * 2**18)  # float32: what the step had allocated so far
                self.rss_at = rss()
                raise torch.OutOfMemoryError(
                    f"CUDA out of memory. Tried to allocate 2.00 GiB (simulated by bench/faults.py; "
                    f"{ballast.numel() * 4 // 2**20} MiB were held)")
            return self.original(*args, **kwargs)

        self.backbone.forward = forward
        return self

    def __exit__(self, *exc):
        del self.backbone.forward  # back to the class's forward
        return False


def run_oom_case(kind: str, project_path: Path, models, ballast_mib: int = BALLAST_MIB) -> OomCase:
    """In this process: a short run (warm-up), the run that runs out of memory at step 2, then a
    short run again on the same ModelSession."""
    from workbench.cli import trainers
    from workbench.project import Project
    from workbench.train.runs import RunRecord, TrainingError

    config_class, train = trainers()[kind]
    result = OomCase(kind)
    project = Project.open(project_path)
    try:
        list(train(project, models, config_class(**SHORT[kind])))
        gc.collect()
        result.rss_before = rss()
        config = config_class(**{**SHORT[kind], "max_steps": 4, "checkpoint_every": 1})
        run_id = None
        with OomAtStep2(models.model.model, ballast_mib) as oom:
            try:
                for log in train(project, models, config):
                    run_id = log.run_id
                    if log.step == 1 and log.metrics:
                        oom.armed = True
                result.error = "no error: the run finished"
            except TrainingError as error:
                result.error = str(error)
            except Exception as error:  # noqa: BLE001 - reported as it is
                result.error = f"{type(error).__name__} (not a TrainingError): {error}"
        result.fired, result.rss_at_oom = oom.fired, oom.rss_at
        result.rss_after = rss()
        gc.collect()
        result.rss_after_gc = rss()
        result.advice = any(word in result.error for word in ("Lower", "lower", "reduce", "Reduce"))
        if run_id is not None:
            record = RunRecord(project, run_id)
            result.status = record.status
            result.same_message = record.message == result.error
        result.busy_with = models.busy_with
        result.adapter_removed = f"{kind}-run-{run_id}" not in models.adapters
        try:
            logs = list(train(project, models, config_class(**SHORT[kind])))
            result.next_run = logs[-1].status
        except Exception as error:  # noqa: BLE001
            result.next_run = f"{type(error).__name__}: {error}"[:80]
    finally:
        project.close()
    return result


def run_oom(work: Path, model: Path) -> list[OomCase]:
    from workbench.config import ModelSpec
    from workbench.models.loading import ModelSession

    import warnings

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
    work.mkdir(parents=True, exist_ok=True)
    models = ModelSession()
    for _ in models.load(ModelSpec(kind="folder", location=str(model))):
        pass
    projects = {"sft": sft_training_project(work / "oom-sft.rlhf", model),
                "rm": rm_training_project(work / "oom-rm.rlhf", model),
                "ppo": ppo_training_project(work / "oom-ppo.rlhf", model)}
    return [run_oom_case(kind, path, models) for kind, path in projects.items()]


# ---- the report ---------------------------------------------------------------------------------

def allocate(total: int, train_per_kind: int) -> dict:
    train = min(3 * train_per_kind, total)
    rest = total - train
    imports = max(1, round(rest * 0.15)) if rest else 0
    labeling = (rest - imports + 1) // 2
    return {"labeling": labeling, "sft": rest - imports - labeling, "import": imports,
            "train": train // 3 if total >= 3 else 0}


def kill_section(args, work: Path, goals: list) -> None:
    shares = allocate(args.kills, args.train_kills)
    say(f"== 1. kill -9 at random moments: {args.kills} kills ==")
    say(f"   labeling {shares['labeling']}, SFT edits {shares['sft']}, imports {shares['import']}, training "
        f"{shares['train']} per kind (sft, rm, ppo): training kills are few because each killed child loads torch "
        "and the model (~10 s); writes get the rest.")
    writes = []
    for kind in ("labeling", "sft"):
        stats = run_writer_kills(kind, shares[kind], args.seed, work / "kills", log=say)
        writes.append(stats)
    imports = run_import_kills(shares["import"], args.seed, work / "kills", log=say)
    rows = [[s.name, s.kills, s.rounds_finished_first, f"{s.acked:,}", s.in_flight_landed, s.in_flight_absent,
             s.lost, s.integrity_failures, f"{s.seconds:.0f}"] for s in writes]
    say(table("\nWrites (one project each, checked after every kill):",
              ["target", "kills", "no kill (done first)", "acked edits checked", "in-flight landed",
               "in-flight absent", "acked lost/wrong", "integrity failures", "s"], rows))
    say("   in-flight landed: the edit running at the kill had committed, its acknowledgement not yet printed "
        "(allowed); absent: it had not committed (allowed); acked lost/wrong: records matching neither state.")
    for s in writes:
        for problem in s.problems[:10] + [f"child error: {e}" for e in s.child_errors[:3]]:
            say(f"   {s.name}: {problem}")
    say(table(f"\nImports ({imports.rows:,} rows into a project holding 100; an uncut import takes "
              f"{imports.timing.get('total_s', 0):.2f} s, {imports.timing.get('write_to_exit_s', 0):.3f} s of it "
              "from the first write to the log until exit):",
              ["kills", "uniform", "aimed at the write", "none", "all", "partial", "reported done then killed",
               "not killed (done first)", "integrity failures", "s"],
              [[imports.kills, imports.by_mode["uniform"], imports.by_mode["aimed"], imports.outcomes["none"],
                imports.outcomes["all"], imports.outcomes["partial"], imports.acked_then_killed, imports.finished_first,
                imports.integrity_failures, f"{imports.seconds:.0f}"]]))
    say("   none/all: the project's examples after the kill; reported done then killed: \"imported N\" was "
        "printed before the kill landed (those must be all).")
    for problem in imports.problems[:10]:
        say(f"   import: {problem}")

    train_results = {}
    if shares["train"]:
        model = tiny_model(work)
        for kind in ("sft", "rm", "ppo"):
            started = time.monotonic()
            results, info = run_training_kills(kind, shares["train"], args.seed, work / "train", model, log=say)
            train_results[kind] = (results, info, time.monotonic() - started)
        rows = []
        for kind, (results, info, seconds) in train_results.items():
            for number, r in enumerate([r for r in results if not r.finished_first], 1):
                after_finish = r.status_after_kill == "finished"
                rows.append([kind, number, r.target, "- (setup)" if r.killed_after is None else r.killed_after,
                             r.status_after_kill, r.checkpoint, r.partials,
                             "- (no resume needed)" if after_finish else r.resumed_at,
                             "-" if after_finish else r.first_step, r.final_status, r.partials_after,
                             f"{r.difference:.1e}", "yes" if r.ok else f"NO {r.problem}"[:80]])
        say(table("\nTraining (kill, then `train KIND P --resume RUN`; curves against an uninterrupted run):",
                  ["kind", "kill", "target step", "last step printed", "status in file", "last complete ckpt",
                   ".partial after kill", "resumed at", "first step", "final", ".partial after resume",
                   "max rel diff", "same curve"], rows))
        for kind, (results, info, seconds) in train_results.items():
            skipped = sum(r.finished_first for r in results)
            say(f"   {kind}: {info.get('steps', '?')} steps, uninterrupted run {info.get('reference_s', 0):.1f} s in "
                f"process; {seconds:.0f} s for this kind" + (f"; {skipped} children finished before their kill "
                                                               "(not counted)" if skipped else "")
                + (f"; {info['problem']}" if "problem" in info else ""))

    kills = sum(s.kills for s in writes) + imports.kills + sum(
        len([r for r in results if not r.finished_first]) for results, _, _ in train_results.values())
    acked = sum(s.acked for s in writes)
    lost = sum(s.lost for s in writes)
    integrity = sum(s.integrity_failures for s in writes) + imports.integrity_failures + sum(
        1 for results, _, _ in train_results.values() for r in results if r.problem.startswith(
            ("Project.open", "integrity", "foreign")))
    killed_runs = [r for results, _, _ in train_results.values() for r in results if not r.finished_first]
    same = sum(r.ok for r in killed_runs)
    say(f"\nTotals: {kills} kills; {acked:,} acknowledged writes checked, {lost} lost; {integrity} integrity "
        f"failures; imports partial {imports.outcomes['partial']} of {imports.kills}; "
        f"killed runs resumed to the same curve {same}/{len(killed_runs)}.")
    goals += [("1000 kills" if args.kills == 1000 else f"{args.kills} kills", kills >= args.kills),
              ("0 acknowledged writes lost", lost == 0 and not any(s.problems for s in writes)),
              ("0 integrity failures", integrity == 0),
              ("imports all-or-nothing", imports.outcomes["partial"] == 0 and not imports.problems),
              ("every killed run resumes to the same curve", same == len(killed_runs) and
               not any("problem" in info for _, info, _ in train_results.values()))]


def disk_section(args, work: Path, goals: list) -> None:
    say("\n== 2. disk full (tmpfs) ==")
    try:
        model = tiny_model(work)
        cases = run_disk(work / "disk", model, args.seed, log=say)
    except NoTmpfs as error:
        say(f"   skipped: needs root for tmpfs ({error})")
        return
    rows = [[c.case, c.free, c.code, c.message + (" [TRACEBACK]" if c.traceback else ""), c.opens_full,
             c.integrity_after, "; ".join(c.left) or "none", c.status, c.notes, "yes" if c.goal_ok else "NO"]
            for c in cases]
    say(table("", ["case", "space", "exit", "message (last line)", "opens while full", "integrity after freeing",
                   "left behind", "run status in file", "notes", "as it should be"], rows))
    for c in cases:
        full = c.full_message or c.message
        say(f"   {c.case}: {full}")
    goals.append(("disk full: clear errors, nothing half-made, no run left running", all(c.goal_ok for c in cases)))


def oom_section(args, work: Path, goals: list) -> None:
    say("\n== 3. out of memory in each trainer (in process, simulated at step 2 with a "
        f"{BALLAST_MIB} MiB ballast) ==")
    model = tiny_model(work)
    cases = run_oom(work / "oom", model)
    rows = [[c.kind, "yes" if c.fired else "NO", c.error[:100], "yes" if c.advice else "NO", c.status,
             "yes" if c.same_message else "NO", c.busy_with, "yes" if c.adapter_removed else "NO",
             f"{mib(c.rss_before)} / {mib(c.rss_at_oom)} / {mib(c.rss_after)} / {mib(c.rss_after_gc)}",
             c.next_run, "yes" if c.ok else "NO"] for c in cases]
    say(table("", ["trainer", "OOM raised", "TrainingError", "advice", "run status", "message stored",
                   "busy_with", "adapter removed", "RSS before / at OOM / after / after gc.collect",
                   "next run", "ok"], rows))
    for c in cases:
        say(f"   {c.kind}: {c.error}")
    goals.append(("OOM: clear error, run failed, model free, memory back, next run works", all(c.ok for c in cases)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, help="kills in total (default 1000; --quick: 40)")
    parser.add_argument("--train-kills", type=int, help="kills per kind of training (default 5; --quick: 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a small run: 40 kills, 1 per kind of training")
    parser.add_argument("--only", choices=["kills", "disk", "oom"])
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    args.kills = args.kills if args.kills is not None else (40 if args.quick else 1000)
    args.train_kills = args.train_kills if args.train_kills is not None else (1 if args.quick else 5)
    work = args.keep or Path(tempfile.mkdtemp(prefix="faults-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["WORKBENCH_CONFIG"] = str(work / "config")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.monotonic()
    say(f"bench/faults.py  seed {args.seed}  work folder {work}")
    goals: list[tuple[str, bool]] = []
    try:
        if args.only in (None, "kills"):
            kill_section(args, work, goals)
        if args.only in (None, "disk"):
            disk_section(args, work, goals)
        if args.only in (None, "oom"):
            oom_section(args, work, goals)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    say(f"\n== goals ({time.monotonic() - started:.0f} s) ==")
    for goal, met in goals:
        say(f"  {'PASS' if met else 'FAIL'}  {goal}")
    return 0 if all(met for _, met in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
