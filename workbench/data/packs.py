"""Labeling packs: prompts and their responses sent to teammates, and their labels sent back.

A pack is one JSON file (suffix .rlhfpack):

    {"format": "rlhf-workbench-pack", "version": 1, "project": name, "created_at": time,
     "labels": true/false,
     "prompts": [{"uid", "messages", "tags",
                  "batches": [{"uid", "responses": [{"uid", "position", "text", "generator"}],
                               "rankings": [{"annotator", "groups", "shown_order", "all_bad",
                                             "seconds_spent", "created_at", "updated_at"}]}]}]}

Everything is named by uid, never by a project's row ids, so a pack means the same thing in any
project. Rankings name responses by uid too (groups best first; shown_order as displayed).

Importing merges: prompts, batches and responses missing from the project (by uid) are added;
rankings are one per (batch, annotator): added when missing, and when present replaced only by a
newer one (updated_at; at equal times the larger content, compared as canonical JSON, wins). That
order is total, so importing packs in any order gives the same rankings, and importing one twice
changes nothing. The whole file is checked before anything is written; any problem (not a pack,
truncated, newer version, a ranking that does not rank exactly its batch's responses, a uid the
project already uses for something else, a value SQLite cannot hold, more than the size cap: see
untrusted.py) stops the import with nothing changed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from workbench.data.preferences import check_ranking
from workbench.data.prompts import canonical, check_prompt_messages, clean_tags
from workbench.data.sft_formats import _write_bytes
from workbench.data.untrusted import check_record, check_size, check_text, finite_float, parse_json, quote
from workbench.errors import WorkbenchError
from workbench.project import Project

PACK_FORMAT = "rlhf-workbench-pack"
PACK_VERSION = 1
PACK_SUFFIX = ".rlhfpack"


# ---------------------------------------------------------------- export


def export_pack(project: Project, path, prompt_ids: list[int] | None = None, with_labels: bool = False,
                annotator: str | None = None) -> int:
    """Write the prompts (all, or `prompt_ids`) with their batches, and with_labels their rankings
    (all, or one annotator's), atomically; returns the number of prompts written."""
    if annotator is not None and not with_labels:
        raise WorkbenchError("Choose to include labels to export one annotator's labels.")
    rows = project.query("SELECT id, uid, messages, tags FROM prompts ORDER BY id")
    if prompt_ids is not None:
        wanted = set(prompt_ids)
        missing = wanted - {row[0] for row in rows}
        if missing:
            raise WorkbenchError(f"Prompt {min(missing)} does not exist (it may have been deleted).")
        rows = [row for row in rows if row[0] in wanted]
    prompts = {row[0]: {"uid": row[1], "messages": json.loads(row[2]), "tags": json.loads(row[3]), "batches": []}
               for row in rows}
    batches, uid_of = {}, {}
    for prompt_id, batch, uid, text, generator, response_id in project.query(
            "SELECT prompt_id, batch, uid, text, generator, id FROM responses ORDER BY batch, position, id"):
        if prompt_id in prompts:
            uid_of[response_id] = uid
            entry = batches.setdefault(batch, [prompt_id, response_id, []])
            entry[1] = min(entry[1], response_id)
            entry[2].append({"uid": uid, "text": text, "generator": json.loads(generator)})
    # Batches in the order they were made; positions renumbered 0.. (old batches all have 0).
    for batch, (prompt_id, _, responses) in sorted(batches.items(), key=lambda b: b[1][1]):
        for position, response in enumerate(responses):
            response["position"] = position
        entry = {"uid": batch, "responses": responses, "rankings": []}
        prompts[prompt_id]["batches"].append(entry)
        if with_labels:
            entry["rankings"] = _rankings(project, batch, uid_of, annotator)
    pack = {"format": PACK_FORMAT, "version": PACK_VERSION, "project": project.name, "created_at": time.time(),
            "labels": with_labels, "prompts": list(prompts.values())}
    _write_bytes(Path(path), json.dumps(pack, ensure_ascii=False).encode("utf-8"))
    return len(prompts)


def _rankings(project: Project, batch: str, uid_of: dict[int, str], annotator: str | None) -> list[dict]:
    where, params = ("batch = ? AND annotator = ?", (batch, annotator)) if annotator else ("batch = ?", (batch,))
    rows = project.query(
        "SELECT annotator, ranking, shown_order, all_bad, coalesce(seconds_spent, 0), created_at, updated_at "
        f"FROM rankings WHERE {where} ORDER BY annotator", params)
    return [{"annotator": r[0], "groups": [[uid_of[i] for i in group] for group in json.loads(r[1])],
             "shown_order": [uid_of[i] for i in json.loads(r[2]) if i in uid_of], "all_bad": bool(r[3]),
             "seconds_spent": r[4], "created_at": r[5], "updated_at": r[6]} for r in rows]


# ---------------------------------------------------------------- import


def import_pack(project: Project, path, allow_large: bool = False) -> dict:
    """Merge a pack into the project in one transaction (see the module docstring); returns counts.
    ImportTooLarge for more than untrusted.py's cap of records or text, unless `allow_large`."""
    path = Path(path)
    try:
        prompts = _check_pack(_load(path, allow_large))
        check_size(path.name, rows=_records(prompts), allow_large=allow_large)
        _check_against(project, prompts)
    except ValueError as error:
        raise WorkbenchError(f"{path.name} cannot be imported: {error}; nothing was changed.") from None
    return _merge(project, prompts, path.name)


def _records(prompts: list[dict]) -> int:
    """The rows a pack can add: its prompts, responses and rankings."""
    return len(prompts) + sum(len(b["responses"]) + len(b.get("rankings", [])) for p in prompts for b in p["batches"])


def _load(path: Path, allow_large: bool) -> Any:
    try:
        # JSON text decodes to at most its size: the size is checked before the file is read.
        check_size(path.name, text_bytes=path.stat().st_size, allow_large=allow_large)
        data = path.read_bytes()
    except OSError as error:
        raise WorkbenchError(f"Cannot read {path}: {error.strerror or error}.") from None
    try:
        return parse_json(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("it is not a labeling pack (not UTF-8 text)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"it is not complete JSON ({error.msg} at line {error.lineno}, column {error.colno}); "
                         "it may be truncated or damaged") from None


def _check_pack(pack: Any) -> list[dict]:
    """The pack's prompts, after checking every field; ValueError(phrase) at the first problem."""
    if not isinstance(pack, dict) or pack.get("format") != PACK_FORMAT:
        raise ValueError("it is not a workbench labeling pack")
    version = pack.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError("its version is missing or not valid")
    if version > PACK_VERSION:
        raise ValueError(f"it was made by a newer version of RLHF Workbench (pack version {version}; "
                         f"this version reads up to {PACK_VERSION})")
    prompts = _list(pack, "prompts", "the pack")
    seen: set[str] = set()  # every uid once in the whole pack: prompts, batches and responses
    for p, prompt in enumerate(prompts, 1):
        where = f"prompt {p}"
        _uid(prompt, where, seen)
        try:
            prompt["messages"] = check_prompt_messages(prompt.get("messages"))
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        for m, message in enumerate(prompt["messages"], 1):
            check_text(message["content"], f"{where}, message {m}")
        tags = prompt.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError(f"{where}: tags must be a list of strings")
        prompt["tags"] = clean_tags(check_text(t, f"{where}, a tag,") for t in tags)
        for b, batch in enumerate(_list(prompt, "batches", where), 1):
            _check_batch(batch, f"{where}, batch {b}", seen)
    return prompts


def _check_batch(batch: Any, where: str, seen: set[str]) -> None:
    _uid(batch, where, seen)
    responses = _list(batch, "responses", where)
    if not responses:
        raise ValueError(f"{where} has no responses")
    for r, response in enumerate(responses, 1):
        _uid(response, f"{where}, response {r}", seen)
        if not isinstance(response.get("text"), str) or not isinstance(response.get("generator"), dict):
            raise ValueError(f"{where}, response {r} needs a text and a generator record")
        check_text(response["text"], f"{where}, response {r}'s text")
        check_record(response["generator"], f"{where}, response {r}'s generator")
    if sorted(_integer(r.get("position"), f"{where}, a response position") for r in responses) \
            != list(range(len(responses))):
        raise ValueError(f"{where}: the response positions must be 0 to {len(responses) - 1}, each once")
    responses.sort(key=lambda r: r["position"])
    uids = sorted(r["uid"] for r in responses)
    annotators = set()
    for k, ranking in enumerate(_list(batch, "rankings", where, optional=True), 1):
        _check_ranking(ranking, f"{where}, ranking {k}", uids, annotators)


def _check_ranking(ranking: Any, here: str, uids: list[str], annotators: set[str]) -> None:
    """One ranking of a batch whose response uids are `uids` (sorted); `annotators` so far."""
    if not isinstance(ranking, dict):
        raise ValueError(f"{here} is not an object")
    annotator = ranking.get("annotator")
    if not isinstance(annotator, str) or not annotator.strip() or annotator in annotators:
        raise ValueError(f"{here} needs an annotator name of its own")
    annotators.add(check_text(annotator, f"{here}'s annotator"))
    groups = ranking.get("groups")
    if not isinstance(groups, list) or not all(isinstance(g, list) and all(isinstance(u, str) for u in g)
                                               for g in groups):
        raise ValueError(f"{here}: groups must be lists of response uids")
    try:
        check_ranking(groups)
    except ValueError as error:
        raise ValueError(f"{here}: {error}") from None
    if sorted(u for g in groups for u in g) != uids:
        raise ValueError(f"{here} does not rank exactly the responses of its batch")
    shown = ranking.get("shown_order", [])
    # Exactly the batch's uids, each once, or empty: anything else would name no response.
    if not isinstance(shown, list) or (shown and (not all(isinstance(u, str) for u in shown)
                                                  or sorted(shown) != uids)):
        raise ValueError(f"{here}: shown_order must list each response of its batch once")
    if not isinstance(ranking.get("all_bad", False), bool):
        raise ValueError(f"{here}: all_bad must be true or false")
    for key in ("seconds_spent", "created_at", "updated_at"):
        seconds = finite_float(ranking.get(key))
        if seconds is None or seconds < 0:
            raise ValueError(f"{here}: {key} must be a number of seconds")
        ranking[key] = seconds


def _list(container: dict, key: str, where: str, optional: bool = False) -> list:
    value = container.get(key, [] if optional else None)
    if not isinstance(value, list):
        raise ValueError(f"{where} has no list of {key}")
    return value


def _uid(item: Any, where: str, seen: set[str]) -> None:
    if not isinstance(item, dict):
        raise ValueError(f"{where} is not an object")
    uid = item.get("uid")
    if not isinstance(uid, str) or not uid.strip():
        raise ValueError(f"{where} has no uid")
    if uid in seen:
        raise ValueError(f"{where} repeats the uid {quote(uid)}")
    seen.add(check_text(uid, f"{where}'s uid"))


def _integer(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{where} is not a whole number")
    return value


def _check_against(project: Project, prompts: list[dict]) -> None:
    """A uid the project has must mean the same thing in the pack: same prompt, same batch."""
    owner = {uid: (batch, prompt) for uid, batch, prompt in project.query(
        "SELECT r.uid, r.batch, p.uid FROM responses r JOIN prompts p ON p.id = r.prompt_id")}
    batch_responses: dict[str, set[str]] = {}
    for uid, (batch, _) in owner.items():
        batch_responses.setdefault(batch, set()).add(uid)
    for prompt in prompts:
        for batch in prompt["batches"]:
            uids = {r["uid"] for r in batch["responses"]}
            for uid in uids:
                if uid in owner and owner[uid] != (batch["uid"], prompt["uid"]):
                    raise ValueError(f"response {quote(uid)} is already in the project under a different prompt "
                                     "or batch")
            if batch["uid"] in batch_responses and batch_responses[batch["uid"]] != uids:
                raise ValueError(f"batch {quote(batch['uid'])} holds different responses in the project")


def _merge(project: Project, prompts: list[dict], source: str) -> dict:
    summary = dict(prompts_added=0, batches_added=0, rankings_added=0, rankings_updated=0,
                   rankings_unchanged=0, rankings_kept=0)
    now = time.time()
    with project.transaction():
        known_prompts = {uid for (uid,) in project.query("SELECT uid FROM prompts")}
        known_batches = {batch for (batch,) in project.query("SELECT DISTINCT batch FROM responses")}
        for prompt in prompts:
            if prompt["uid"] not in known_prompts:
                project.execute(
                    "INSERT INTO prompts(uid, text, messages, tags, source, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (prompt["uid"], prompt["messages"][-1]["content"], canonical(prompt["messages"]),
                     json.dumps(prompt["tags"]), source, now))
                summary["prompts_added"] += 1
            prompt_id = project.query("SELECT id FROM prompts WHERE uid = ?", (prompt["uid"],))[0][0]
            for batch in prompt["batches"]:
                if batch["uid"] not in known_batches:
                    project.execute_many(
                        "INSERT INTO responses(prompt_id, uid, batch, position, text, generator, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [(prompt_id, r["uid"], batch["uid"], r["position"], r["text"], json.dumps(r["generator"]), now)
                         for r in batch["responses"]])
                    summary["batches_added"] += 1
                for ranking in batch.get("rankings", []):
                    summary[_merge_ranking(project, prompt_id, batch["uid"], ranking, source)] += 1
    return summary


def _content(ranking: dict) -> tuple[float, str]:
    """The order rankings of one (batch, annotator) are merged by: newest, then larger content."""
    body = {key: ranking.get(key) for key in ("groups", "shown_order", "all_bad", "seconds_spent", "created_at")}
    body["all_bad"] = bool(body["all_bad"])
    body["seconds_spent"] = float(body["seconds_spent"] or 0)
    body["created_at"] = float(body["created_at"])
    return float(ranking["updated_at"]), json.dumps(body, sort_keys=True, ensure_ascii=False)


def _merge_ranking(project: Project, prompt_id: int, batch: str, ranking: dict, source: str) -> str:
    rows = project.query("SELECT id, uid FROM responses WHERE batch = ?", (batch,))
    id_of, uid_of = {uid: i for i, uid in rows}, {i: uid for i, uid in rows}
    annotator = ranking["annotator"]
    incoming = dict(ranking, shown_order=ranking.get("shown_order", []), all_bad=ranking.get("all_bad", False))
    stored = project.query(
        "SELECT ranking, shown_order, all_bad, coalesce(seconds_spent, 0), created_at, updated_at FROM rankings "
        "WHERE batch = ? AND annotator = ?", (batch, annotator))
    values = (json.dumps([[id_of[u] for u in g] for g in incoming["groups"]]), int(incoming["all_bad"]),
              json.dumps([id_of[u] for u in incoming["shown_order"]]), float(incoming["seconds_spent"]), source,
              float(incoming["created_at"]), float(incoming["updated_at"]))
    if not stored:
        project.execute(
            "INSERT INTO rankings(prompt_id, batch, annotator, ranking, all_bad, shown_order, seconds_spent, "
            "source, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (prompt_id, batch, annotator, *values))
        return "rankings_added"
    groups, shown, all_bad, seconds, created, updated = stored[0]
    current = {"groups": [[uid_of.get(i, str(i)) for i in g] for g in json.loads(groups)],
               "shown_order": [uid_of.get(i, str(i)) for i in json.loads(shown)], "all_bad": all_bad,
               "seconds_spent": seconds, "created_at": created, "updated_at": updated}
    if _content(incoming) == _content(current):
        return "rankings_unchanged"
    if _content(incoming) < _content(current):
        return "rankings_kept"
    project.execute(
        "UPDATE rankings SET ranking = ?, all_bad = ?, shown_order = ?, seconds_spent = ?, source = ?, "
        "created_at = ?, updated_at = ? WHERE batch = ? AND annotator = ?", (*values, batch, annotator))
    return "rankings_updated"
