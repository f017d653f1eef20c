"""Preference data in TRL's shapes: export for reward-model and DPO training, import from elsewhere.

Export formats (`fmt`), one container per file suffix (.jsonl, .json as one JSON array, .parquet):

- "standard": `{"prompt": str, "chosen": str, "rejected": str}`. A prompt that is a single user
  message is its text. Any other conversation (a system message, earlier turns) is flattened into
  one string, each message as "System: ...", "User: ..." or "Assistant: ..." with a blank line
  between them; it reads back as one user message holding that text. Use "conversational" or
  "kway" to keep the turns.
- "conversational": `prompt` is the list of messages, `chosen` and `rejected` are each
  `[{"role": "assistant", "content": ...}]`.
- "kway": one row per ranking, lossless: the prompt's messages, uid and tags, the batch uid, the
  responses in generation order (uid, text, generator record), the ranking as groups of indices
  into that list (best first; tied responses share a group), all_bad, annotator, the order the
  annotator saw them in (indices too), seconds_spent, created_at and updated_at. Parquet holds
  each generator record as JSON text (its keys vary); import accepts either.

Pairs come from `preferences.ranking_to_pairs`, per ranking: every annotator's ranking gives its
own rows; each response of a better group is chosen over each response of every worse group
(K*(K-1)/2 rows for a strict order of K); tied responses give no pair; an all-bad ranking gives
none (it is still in "kway"). A pair whose two replies have the same text is left out: it says
nothing. Indices and pairs follow generation order, never the blind order the annotator saw.

Import reads, row by row: kway rows; pairs in the standard (strings) or conversational (message
lists) form, where `chosen`/`rejected` may hold the whole conversation, prompt included (the
prefix shared with `prompt`, or with each other when there is no `prompt`, is the prompt); and
Anthropic HH transcripts, `{"chosen", "rejected"}` strings of "\\n\\nHuman: ..." and
"\\n\\nAssistant: ..." turns, whose prompt is everything before the last Assistant turn.

Imported records get ids derived from their content, so importing a file twice adds nothing:
- a prompt reuses the project's prompt with the same messages, else gets uid = hash(messages);
- a batch's uid = hash(prompt uid, its response texts in order); a pair's two replies are stored
  in text order, so the same two replies form one batch whoever ranked them and either way round
  (their agreement can then be measured);
- a response's uid = hash(batch uid, position): not hash(prompt, text), since one reply often
  appears in several pairs and each batch needs its own response rows;
- kway rows keep the uids they carry (a round trip through a teammate keeps them);
- a file that ranks the same replies again for the same annotator (e.g. pairs from several
  unnamed labelers) keeps every row: each repeat gets a batch of its own, numbered in file order.
A ranking is one per (batch, annotator): the row's "annotator", else "imported:<file name>". It
is added when missing, left alone when identical, and replaced when different, unless the row
says when it was made (kway's updated_at) and the project's ranking is newer.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.data.preferences import ranking_to_pairs
from workbench.data.prompts import canonical, check_prompt_messages, clean_tags
from workbench.data.rankings import Batch, RankingStore, check_groups
from workbench.data.sft_formats import (
    RowError, _keys, _kind, _messages, _read_jsonl, _read_parquet, _write_bytes, readable,
)
from workbench.data.untrusted import check_record, check_text, finite_float, parse_json, quote
from workbench.errors import WorkbenchError
from workbench.project import Project

FORMATS = ("standard", "conversational", "kway")
_CONTAINERS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _container(path: Path) -> str:
    container = _CONTAINERS.get(path.suffix.lower())
    if container is None:
        raise WorkbenchError(f"Cannot tell the format of {path}: use a .jsonl, .json or .parquet file.")
    return container


# ---------------------------------------------------------------- export


def flatten_prompt(messages: list[dict]) -> str:
    """The standard format's prompt string (see the module docstring)."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{_ROLE_NAMES[m['role']]}: {m['content']}" for m in messages)


def preference_rows(project: Project, fmt: str, annotator: str | None = None) -> list[dict]:
    """Every ranking (or one annotator's) as rows of `fmt`, by prompt, batch, then annotator."""
    if fmt not in FORMATS:
        raise WorkbenchError(f"Unknown preference format {fmt!r}; the formats are {', '.join(FORMATS)}.")
    store = RankingStore(project)
    where, params = ("annotator = ?", (annotator,)) if annotator is not None else ("1", ())
    rankings = store.rankings(where, params)
    prompts = {row[0]: (row[1], json.loads(row[2]), json.loads(row[3]))
               for row in project.query("SELECT id, uid, messages, tags FROM prompts")}
    batches: dict[str, Batch] = {}
    for ranking in rankings:
        if ranking.batch not in batches:
            batches[ranking.batch] = store.batch(ranking.batch)
    rankings.sort(key=lambda r: (r.prompt_id, batches[r.batch].responses[0].id, r.annotator))
    rows = []
    for ranking in rankings:
        batch, (prompt_uid, messages, tags) = batches[ranking.batch], prompts[ranking.prompt_id]
        if fmt == "kway":
            rows.append(_kway_row(ranking, batch, prompt_uid, messages, tags))
            continue
        text = {r.id: r.text for r in batch.responses}
        for pair in ranking_to_pairs(ranking.groups, ranking.all_bad):
            chosen, rejected = text[pair.chosen], text[pair.rejected]
            if chosen == rejected:
                continue
            if fmt == "standard":
                rows.append({"prompt": flatten_prompt(messages), "chosen": chosen, "rejected": rejected})
            else:
                rows.append({"prompt": messages, "chosen": [{"role": "assistant", "content": chosen}],
                             "rejected": [{"role": "assistant", "content": rejected}]})
    return rows


def _kway_row(ranking, batch: Batch, prompt_uid: str, messages: list[dict], tags: list[str]) -> dict:
    # Indices into the generation-ordered list rather than the stored `position`: batches made
    # before labeling had batches (format 3) all have position 0.
    index = {r.id: i for i, r in enumerate(batch.responses)}
    return {
        "prompt": messages, "prompt_uid": prompt_uid, "tags": tags, "batch": batch.uid,
        "responses": [{"uid": r.uid, "text": r.text, "generator": r.generator} for r in batch.responses],
        "ranking": [sorted(index[r] for r in group) for group in ranking.groups],
        "all_bad": ranking.all_bad, "annotator": ranking.annotator,
        "shown_order": [index[r] for r in ranking.shown_order if r in index],
        "seconds_spent": float(ranking.seconds_spent),
        "created_at": ranking.created_at, "updated_at": ranking.updated_at,
    }


def write_preferences(project: Project, path, fmt: str, annotator: str | None = None) -> int:
    """Write preference_rows into the container `path`'s suffix names, atomically; returns the rows."""
    path = Path(path)
    container = _container(path)
    rows = preference_rows(project, fmt, annotator)
    if container == "parquet":
        data = _parquet_bytes(rows, fmt)
    elif container == "json":
        data = json.dumps(rows, ensure_ascii=False, indent=1).encode("utf-8")
    else:
        data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    _write_bytes(path, data)
    return len(rows)


def _parquet_bytes(rows: list[dict], fmt: str) -> bytes:
    import pyarrow as pa  # imported here: the CLI and GUI start faster without it
    import pyarrow.parquet as pq

    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    if fmt == "standard":
        schema = pa.schema([(key, pa.string()) for key in ("prompt", "chosen", "rejected")])
    elif fmt == "conversational":
        schema = pa.schema([(key, messages) for key in ("prompt", "chosen", "rejected")])
    else:
        indices = pa.list_(pa.int64())
        response = pa.struct([("uid", pa.string()), ("text", pa.string()), ("generator", pa.string())])
        schema = pa.schema([
            ("prompt", messages), ("prompt_uid", pa.string()), ("tags", pa.list_(pa.string())),
            ("batch", pa.string()), ("responses", pa.list_(response)), ("ranking", pa.list_(indices)),
            ("all_bad", pa.bool_()), ("annotator", pa.string()), ("shown_order", indices),
            ("seconds_spent", pa.float64()), ("created_at", pa.float64()), ("updated_at", pa.float64())])
        rows = [{**row, "responses": [{**r, "generator": json.dumps(r["generator"], ensure_ascii=False)}
                                      for r in row["responses"]]} for row in rows]
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink)
    return sink.getvalue().to_pybytes()


# ---------------------------------------------------------------- reading


@dataclass
class PreferenceItem:
    """One row read: a prompt, the responses ranked, and one annotator's ranking of them."""

    row: int
    where: str                     # "line 3" or "row 3", for messages
    kind: str                      # standard, conversational, hh or kway
    messages: list[dict]
    responses: list[dict]          # {"text", "generator": dict | None, "uid": str | None}, generation order
    ranking: list[list[int]]       # groups of indices into responses, best first
    all_bad: bool = False
    annotator: str | None = None
    tags: list[str] = field(default_factory=list)
    prompt_uid: str | None = None
    batch: str | None = None
    shown_order: list[int] | None = None
    seconds_spent: float = 0.0
    created_at: float | None = None
    updated_at: float | None = None


@dataclass
class PreferenceImport:
    items: list[PreferenceItem]
    errors: list[RowError]         # "line 3: ..." for each row that cannot be read
    format: str                    # the rows' kind, "mixed" when they differ, "" when none was read
    total_rows: int


def read_preferences(path, allow_large: bool = False) -> PreferenceImport:
    """Every row of a JSONL, JSON-array or Parquet file as PreferenceItems and RowErrors.
    ImportTooLarge for more than untrusted.py's cap of rows or text, unless `allow_large`."""
    path = Path(path)
    container = _container(path)
    if not path.is_file():
        raise WorkbenchError(f"{path} does not exist.")
    read = _read_parquet if container == "parquet" else _read_jsonl
    unit, rows, _ = read(path, allow_large)
    items, errors = [], []
    for number, raw in rows:
        where = f"{unit} {number}"
        try:
            record = parse_json(raw) if unit == "line" else readable(raw)
            items.append(_item(record, number, where))
        except json.JSONDecodeError as error:
            errors.append(RowError(number, f"{where}: this is not valid JSON ({error.msg} at column {error.colno})"))
        except ValueError as error:
            errors.append(RowError(number, f"{where}: {error}"))
    kinds = {item.kind for item in items}
    fmt = kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "")
    return PreferenceImport(items, errors, fmt, len(rows))


def _item(record: Any, number: int, where: str) -> PreferenceItem:
    if not isinstance(record, dict):
        raise ValueError(f"the record is {_kind(record)}, not an object")
    if record.get("responses") is not None or record.get("ranking") is not None:
        item = _kway_item(record, number, where)
    else:
        item = _pair_item(record, number, where)
    annotator = record.get("annotator")
    if annotator is not None and (not isinstance(annotator, str) or not annotator.strip()):
        raise ValueError('"annotator" must be a non-empty string')
    item.annotator = check_text(annotator.strip(), '"annotator"') if annotator else None
    tags = record.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError('"tags" must be a list of strings')
    item.tags = clean_tags(check_text(t, '"tags"') for t in tags)
    return item


def _pair_item(record: dict, number: int, where: str) -> PreferenceItem:
    prompt, chosen, rejected = record.get("prompt"), record.get("chosen"), record.get("rejected")
    if chosen is None or rejected is None:
        raise ValueError('the record has neither "chosen" and "rejected" nor "responses" and "ranking" '
                         f"(it has {_keys(record)})")
    if isinstance(chosen, str) and isinstance(rejected, str):
        check_text(chosen, '"chosen"')
        check_text(rejected, '"rejected"')
        if prompt is None:
            kind, (messages, replies) = "hh", _from_transcripts(chosen, rejected)
        elif isinstance(prompt, str):
            messages = _prompt([{"role": "user", "content": check_text(prompt, '"prompt"')}])
            kind, replies = "standard", (chosen, rejected)
        else:
            raise ValueError(f'"prompt" is {_kind(prompt)} but "chosen" and "rejected" are strings')
    elif isinstance(chosen, list) and isinstance(rejected, list):
        kind, (messages, replies) = "conversational", _from_conversations(prompt, chosen, rejected)
    else:
        raise ValueError(f'"chosen" is {_kind(chosen)} and "rejected" is {_kind(rejected)}; '
                         "both must be strings or both lists of messages")
    if replies[0] == replies[1]:
        raise ValueError("the chosen and rejected replies are the same")
    texts = sorted(replies)  # one canonical order: see the module docstring
    return PreferenceItem(number, where, kind, messages, [{"text": t, "generator": None, "uid": None} for t in texts],
                          [[texts.index(replies[0])], [texts.index(replies[1])]])


def _prompt(messages: list[dict]) -> list[dict]:
    try:
        return check_prompt_messages(messages)
    except ValueError as error:
        raise ValueError(f"the prompt is not valid: {error}") from None


def _from_conversations(prompt: Any, chosen: list, rejected: list) -> tuple[list[dict], tuple[str, str]]:
    chosen, rejected = _messages(chosen, "chosen"), _messages(rejected, "rejected")
    if prompt is None:  # TRL's implicit prompt: what the two conversations share
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        messages = chosen[:shared]
    elif isinstance(prompt, list):
        messages = _messages(prompt, "prompt")
    else:
        raise ValueError(f'"prompt" is {_kind(prompt)} but "chosen" and "rejected" are lists of messages')
    return _prompt(messages), (_reply(chosen, messages, "chosen"), _reply(rejected, messages, "rejected"))


def _reply(conversation: list[dict], prompt: list[dict], key: str) -> str:
    if len(conversation) > len(prompt) and conversation[:len(prompt)] == prompt:
        conversation = conversation[len(prompt):]
    if len(conversation) != 1 or conversation[0]["role"] != "assistant":
        raise ValueError(f'"{key}" must be one assistant message after the prompt')
    return conversation[0]["content"]


def _from_transcripts(chosen: str, rejected: str) -> tuple[list[dict], tuple[str, str]]:
    first, second = _transcript(chosen, "chosen"), _transcript(rejected, "rejected")
    if first[:-1] != second[:-1]:
        raise ValueError('"chosen" and "rejected" differ before their last Assistant turn')
    return _prompt(first[:-1]), (first[-1]["content"], second[-1]["content"])


def _transcript(text: str, key: str) -> list[dict]:
    parts = _HH_TURN.split(text)  # ["", "Human", "...", "Assistant", "...", ...]
    if parts[0].strip() or len(parts) < 5:
        raise ValueError(f'"{key}" is a string but not a "Human: ... Assistant: ..." transcript, '
                         'and there is no "prompt"')
    turns = [{"role": _HH_ROLES[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]
    if turns[-1]["role"] != "assistant":
        raise ValueError(f'"{key}" does not end with an Assistant turn')
    return turns


def _kway_item(record: dict, number: int, where: str) -> PreferenceItem:
    prompt = record.get("prompt")
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    messages = _prompt(_messages(prompt, "prompt"))  # _messages checks each content is storable text
    responses = record.get("responses")
    if not isinstance(responses, list) or not responses:
        raise ValueError('"responses" must be a non-empty list')
    parsed = [_response(item, n) for n, item in enumerate(responses, 1)]
    count = len(parsed)
    ranking = record.get("ranking")
    if not isinstance(ranking, list) or not all(isinstance(g, list) and all(_is_int(i) for i in g) for g in ranking):
        raise ValueError('"ranking" must be a list of groups of response indices')
    try:
        ranking = check_groups(ranking, range(count))
    except ValueError as error:
        raise ValueError(f'"ranking" is not valid: {error} (indices 0 to {count - 1})') from None
    shown = record.get("shown_order") or None
    # Exactly the indices 0..count-1, each once: anything else would name no response.
    if shown is not None and (not isinstance(shown, list) or not all(_is_int(i) for i in shown)
                              or sorted(shown) != list(range(count))):
        raise ValueError(f'"shown_order" must list each response index 0 to {count - 1} once')
    all_bad = record.get("all_bad") or False
    if not isinstance(all_bad, bool):
        raise ValueError('"all_bad" must be true or false')
    seconds = _number(record, "seconds_spent")
    if seconds is not None and seconds < 0:
        raise ValueError('"seconds_spent" cannot be negative')
    return PreferenceItem(number, where, "kway", messages, parsed, ranking, all_bad,
                          prompt_uid=_optional_uid(record.get("prompt_uid"), '"prompt_uid"'),
                          batch=_optional_uid(record.get("batch"), '"batch"'), shown_order=shown,
                          seconds_spent=seconds or 0.0, created_at=_number(record, "created_at"),
                          updated_at=_number(record, "updated_at"))


def _response(item: Any, number: int) -> dict:
    where = f'"responses" item {number}'
    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
        raise ValueError(f'{where} needs a "text" string')
    generator = item.get("generator")
    if isinstance(generator, str):  # Parquet keeps it as JSON text
        try:
            generator = parse_json(generator)
        except json.JSONDecodeError:
            raise ValueError(f'{where} has a "generator" that is text but not JSON') from None
        except ValueError as error:
            raise ValueError(f'{where} "generator" cannot be read: {error}') from None
    if generator is not None and not isinstance(generator, dict):
        raise ValueError(f'{where} has a "generator" that is not an object')
    check_record(generator, f'{where} "generator"')  # stored whole, as JSON
    return {"text": check_text(item["text"], f'{where} "text"'), "generator": generator,
            "uid": _optional_uid(item.get("uid"), f'{where} "uid"')}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(record: dict, key: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    number = finite_float(value)  # NaN, Infinity and 10**400 cannot be stored as a time
    if number is None:
        raise ValueError(f'"{key}" must be a finite number')
    return number


def _optional_uid(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    return check_text(value, name)


# ---------------------------------------------------------------- import


class PreferenceImportError(WorkbenchError):
    """Rows that cannot be imported; `errors` lists them all (the message names the first)."""

    def __init__(self, message: str, errors: list[RowError]):
        super().__init__(message)
        self.errors = errors


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:32]


def import_preferences(project: Project, path, valid_only: bool = False, allow_large: bool = False) -> dict:
    """Import a preference file in one transaction; see the module docstring for ids and merging.

    Any invalid row (unreadable, or in conflict with the project) stops the import with nothing
    changed, unless `valid_only`, which imports the other rows. More than untrusted.py's cap of
    rows or text is refused (ImportTooLarge) unless `allow_large`."""
    path = Path(path)
    result = read_preferences(path, allow_large)
    if not result.total_rows:
        raise WorkbenchError(f"{path.name} holds no preference rows.")
    plan = _Plan(project, path.name)
    errors = list(result.errors)
    for item in result.items:
        try:
            plan.add(item)
        except ValueError as error:
            errors.append(RowError(item.row, f"{item.where}: {error}"))
    errors.sort(key=lambda e: e.row)
    if errors and not valid_only:
        raise PreferenceImportError(
            f"{len(errors)} of {result.total_rows} rows in {path.name} cannot be imported ({errors[0]}); "
            "nothing was imported.", errors)
    summary = plan.apply()
    summary.update(format=result.format, rows=result.total_rows, skipped=len(errors))
    return summary


class _Plan:
    """What an import will write, checked row by row against the project before anything is."""

    def __init__(self, project: Project, file_name: str):
        self.project, self.file = project, file_name
        self.uid_by_messages: dict[str, str] = {}
        self.prompt_uids: set[str] = set()
        for uid, messages in project.query("SELECT uid, messages FROM prompts ORDER BY id"):
            self.prompt_uids.add(uid)
            self.uid_by_messages.setdefault(canonical(json.loads(messages)), uid)
        self.batches: dict[str, tuple[str, list[str]]] = {}  # uid -> (prompt uid, response uids)
        self.response_batch: dict[str, str] = {}
        for batch, prompt_uid, uid in project.query(
                "SELECT r.batch, p.uid, r.uid FROM responses r JOIN prompts p ON p.id = r.prompt_id "
                "ORDER BY r.batch, r.position, r.id"):
            self.batches.setdefault(batch, (prompt_uid, []))[1].append(uid)
            self.response_batch[uid] = batch
        self.new_prompts: dict[str, PreferenceItem] = {}
        self.new_batches: dict[str, tuple[str, list[str], PreferenceItem]] = {}
        self.rankings: dict[tuple[str, str], PreferenceItem] = {}  # later rows replace earlier ones
        self.repeats: dict[tuple[str, str], int] = {}  # (derived batch, annotator) -> rows so far

    def add(self, item: PreferenceItem) -> None:
        """Plan one row, or raise ValueError (and plan nothing) when it conflicts."""
        prompt_uid = self._prompt_uid(item)
        annotator = item.annotator or f"imported:{self.file}"
        batch = item.batch
        if batch is None:
            base = _digest("batch", prompt_uid, *(r["text"] for r in item.responses))
            repeat = self.repeats.get((base, annotator), 0)
            batch = _digest(base, str(repeat)) if repeat else base
        uids = [r["uid"] or _digest("response", batch, str(i)) for i, r in enumerate(item.responses)]
        known = self.batches.get(batch)
        if known is not None:
            if known[0] != prompt_uid:
                raise ValueError(f"batch {quote(batch)} already belongs to another prompt")
            if len(known[1]) != len(uids) or (any(r["uid"] for r in item.responses) and known[1] != uids):
                raise ValueError(f"batch {quote(batch)} already holds different responses")
        else:
            for uid in uids:
                if uid in self.response_batch or uids.count(uid) > 1:
                    raise ValueError(f"response {quote(uid)} is already in another batch")
        # Checked: now record it.
        if prompt_uid not in self.prompt_uids:
            self.prompt_uids.add(prompt_uid)
            self.uid_by_messages[canonical(item.messages)] = prompt_uid
            self.new_prompts[prompt_uid] = item
        if known is None:
            self.batches[batch] = (prompt_uid, uids)
            self.response_batch.update((uid, batch) for uid in uids)
            self.new_batches[batch] = (prompt_uid, uids, item)
        if item.batch is None:
            self.repeats[base, annotator] = repeat + 1
        self.rankings[batch, annotator] = item

    def _prompt_uid(self, item: PreferenceItem) -> str:
        key = canonical(item.messages)
        if item.prompt_uid:
            planned = self.new_prompts.get(item.prompt_uid)
            if planned is not None and canonical(planned.messages) != key:
                raise ValueError(f"prompt {quote(item.prompt_uid)} appears earlier in the file with another "
                                 "conversation")
            if item.prompt_uid in self.prompt_uids:
                return item.prompt_uid
        if key in self.uid_by_messages:
            return self.uid_by_messages[key]
        # A derived uid already in the project is the prompt imported before and edited since.
        return item.prompt_uid or _digest("prompt", key)

    def apply(self) -> dict:
        project, now = self.project, time.time()
        summary = dict(prompts_added=len(self.new_prompts), batches_added=len(self.new_batches),
                       rankings_added=0, rankings_updated=0, rankings_unchanged=0, rankings_kept=0)
        imported = json.dumps({"source": "imported", "file": self.file})
        with project.transaction():
            project.execute_many(
                "INSERT INTO prompts(uid, text, messages, tags, source, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [(uid, item.messages[-1]["content"], canonical(item.messages), json.dumps(item.tags), self.file, now)
                 for uid, item in self.new_prompts.items()])
            prompt_ids = dict(project.query("SELECT uid, id FROM prompts"))
            project.execute_many(
                "INSERT INTO responses(prompt_id, uid, batch, position, text, generator, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(prompt_ids[prompt_uid], uid, batch, position, response["text"],
                  json.dumps(response["generator"]) if response["generator"] is not None else imported, now)
                 for batch, (prompt_uid, uids, item) in self.new_batches.items()
                 for position, (uid, response) in enumerate(zip(uids, item.responses))])
            for (batch, annotator), item in self.rankings.items():
                summary[self._save_ranking(batch, annotator, item, prompt_ids[self.batches[batch][0]], now)] += 1
        return summary

    def _save_ranking(self, batch: str, annotator: str, item: PreferenceItem, prompt_id: int, now: float) -> str:
        ids = [row[0] for row in self.project.query(
            "SELECT id FROM responses WHERE batch = ? ORDER BY position, id", (batch,))]
        groups = [[ids[i] for i in group] for group in item.ranking]
        shown = [ids[i] for i in item.shown_order] if item.shown_order else ids  # unknown: generation order
        created = item.created_at if item.created_at is not None else now
        updated = item.updated_at if item.updated_at is not None else created
        values = (json.dumps(groups), int(item.all_bad), json.dumps(shown), item.seconds_spent, self.file)
        existing = self.project.query(
            "SELECT ranking, all_bad, updated_at FROM rankings WHERE batch = ? AND annotator = ?", (batch, annotator))
        if not existing:
            self.project.execute(
                "INSERT INTO rankings(prompt_id, batch, annotator, ranking, all_bad, shown_order, seconds_spent, "
                "source, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (prompt_id, batch, annotator, *values, created, updated))
            return "rankings_added"
        ranking, all_bad, stored_at = existing[0]
        if json.loads(ranking) == groups and bool(all_bad) == item.all_bad:
            return "rankings_unchanged"
        if item.updated_at is not None and stored_at > item.updated_at:
            return "rankings_kept"
        self.project.execute(
            "UPDATE rankings SET ranking = ?, all_bad = ?, shown_order = ?, seconds_spent = ?, source = ?, "
            "updated_at = ? WHERE batch = ? AND annotator = ?",
            (*values, updated if item.updated_at is not None else now, batch, annotator))
        return "rankings_updated"
