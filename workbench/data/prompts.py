"""The prompts that responses are generated for and ranked: add, edit, tag, import, list.

A prompt is a conversation that ends with the user's turn (usually one user message). Its
`text` is that last user message, what the list shows and searches; `messages` is the whole
conversation, what the model is asked to answer. Each prompt has a `uid` that stays the same in
a teammate's workbench, so labels sent back find their prompt (see `packs.py`).
"""

from __future__ import annotations

import csv
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.data.sft_store import ROLES, SftStore
from workbench.errors import WorkbenchError
from workbench.project import Project

PROMPT_FILTERS = ("all", "unlabeled", "labeled", "no responses")
# Field names other tools use for a prompt's text, tried in this order on import.
TEXT_FIELDS = ("prompt", "text", "question", "instruction", "input", "query")


@dataclass(frozen=True)
class PromptRow:
    id: int
    uid: str
    text: str
    tags: list[str]
    source: str
    responses: int = 0
    labels: int = 0           # rankings of its latest batch, by anyone
    labeled_by_me: bool = False


@dataclass
class PromptImport:
    prompts: list[dict] = field(default_factory=list)  # {"messages": [...], "tags": [...]}
    errors: list[str] = field(default_factory=list)


def check_prompt_messages(messages) -> list[dict]:
    """A prompt is a non-empty conversation whose last turn is a non-empty user message."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("a prompt needs at least one message")
    clean = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES \
                or not isinstance(message.get("content"), str):
            raise ValueError(f"each message needs a role ({', '.join(ROLES)}) and text content")
        clean.append({"role": message["role"], "content": message["content"]})
    if clean[-1]["role"] != "user" or not clean[-1]["content"].strip():
        raise ValueError("a prompt must end with a non-empty user message")
    return clean


def as_messages(prompt: str | list[dict]) -> list[dict]:
    return check_prompt_messages([{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt)


def canonical(messages: list[dict]) -> str:
    return json.dumps(messages, ensure_ascii=False)


class PromptStore:
    def __init__(self, project: Project):
        self.project = project

    # ---- edits -----------------------------------------------------------------------

    def add(self, prompt: str | list[dict], tags: Iterable[str] = (), source: str = "",
            uid: str | None = None) -> int:
        messages = as_messages(prompt)
        return self.project.execute(
            "INSERT INTO prompts(uid, text, messages, tags, source, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (uid or uuid.uuid4().hex, messages[-1]["content"], canonical(messages),
             json.dumps(clean_tags(tags)), source, time.time()))

    def add_many(self, prompts: Iterable[dict], source: str = "") -> tuple[int, int]:
        """Add {"messages", "tags"} items in one transaction, skipping conversations already in
        the project; returns (added, skipped)."""
        existing = {row[0] for row in self.project.query("SELECT messages FROM prompts")}
        added = skipped = 0
        with self.project.transaction():
            for item in prompts:
                messages = as_messages(item["messages"])
                key = canonical(messages)
                if key in existing:
                    skipped += 1
                    continue
                existing.add(key)
                self.add(messages, item.get("tags", ()), source)
                added += 1
        return added, skipped

    def update(self, prompt_id: int, text: str | None = None, tags: Iterable[str] | None = None) -> None:
        if text is not None:
            if not text.strip():
                raise ValueError("a prompt cannot be empty")
            messages = self.messages(prompt_id)
            messages[-1]["content"] = text
            self.project.execute("UPDATE prompts SET text = ?, messages = ? WHERE id = ?",
                                 (text, canonical(messages), prompt_id))
        if tags is not None:
            self.project.execute("UPDATE prompts SET tags = ? WHERE id = ?",
                                 (json.dumps(clean_tags(tags)), prompt_id))

    def delete(self, prompt_ids: Iterable[int]) -> None:
        """Delete prompts with their responses and rankings (the database cascades)."""
        with self.project.transaction():
            self.project.execute_many("DELETE FROM prompts WHERE id = ?", [(i,) for i in prompt_ids])

    # ---- reading ---------------------------------------------------------------------

    def messages(self, prompt_id: int) -> list[dict]:
        rows = self.project.query("SELECT messages FROM prompts WHERE id = ?", (prompt_id,))
        if not rows:
            raise WorkbenchError(f"prompt {prompt_id} does not exist (it may have been deleted).")
        return json.loads(rows[0][0])

    def row(self, prompt_id: int, annotator: str = "") -> PromptRow | None:
        rows = self.rows(annotator=annotator, only=[prompt_id])
        return rows[0] if rows else None

    def rows(self, annotator: str = "", filter: str = "all", search: str = "", tag: str = "",
             only: list[int] | None = None) -> list[PromptRow]:
        """Prompts in id order with their label status for `annotator` (a few thousand at most,
        so one query for all is fine)."""
        if filter not in PROMPT_FILTERS:
            raise ValueError(f"unknown filter {filter!r}")
        where, params = ["1"], {"me": annotator}
        if search:
            where.append("p.text LIKE :search ESCAPE '\\'")
            params["search"] = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        if tag:
            where.append("EXISTS (SELECT 1 FROM json_each(p.tags) WHERE value = :tag)")
            params["tag"] = tag
        if only is not None:
            where.append(f"p.id IN ({','.join(str(int(i)) for i in only) or 'NULL'})")
        rows = self.project.query(f"""
            WITH latest AS (
                SELECT prompt_id, batch FROM responses r
                WHERE id = (SELECT MAX(id) FROM responses WHERE prompt_id = r.prompt_id))
            SELECT p.id, p.uid, p.text, p.tags, p.source,
                (SELECT COUNT(*) FROM responses r JOIN latest l ON r.batch = l.batch WHERE l.prompt_id = p.id),
                (SELECT COUNT(*) FROM rankings k JOIN latest l ON k.batch = l.batch WHERE l.prompt_id = p.id),
                EXISTS (SELECT 1 FROM rankings k JOIN latest l ON k.batch = l.batch
                        WHERE l.prompt_id = p.id AND k.annotator = :me)
            FROM prompts p WHERE {' AND '.join(where)} ORDER BY p.id""", params)
        found = [PromptRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], bool(r[7])) for r in rows]
        if filter == "unlabeled":
            return [r for r in found if not r.labeled_by_me]
        if filter == "labeled":
            return [r for r in found if r.labeled_by_me]
        if filter == "no responses":
            return [r for r in found if not r.responses]
        return found

    def tags(self) -> list[str]:
        rows = self.project.query("SELECT DISTINCT value FROM prompts, json_each(prompts.tags) ORDER BY value")
        return [r[0] for r in rows]

    def count(self) -> int:
        return self.project.query("SELECT COUNT(*) FROM prompts")[0][0]

    # ---- sources of prompts ------------------------------------------------------------

    def add_from_sft(self) -> tuple[int, int]:
        """Every SFT example's conversation up to its last reply becomes a prompt."""
        prompts = []
        for messages in SftStore(self.project).all_messages():
            last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
            if last_user is not None and messages[last_user]["content"].strip():
                prompts.append({"messages": messages[:last_user + 1], "tags": ["from SFT"]})
        return self.add_many(prompts, source="SFT examples")


def clean_tags(tags: Iterable[str]) -> list[str]:
    return sorted({str(t).strip() for t in tags if str(t).strip()})


def read_prompt_file(path: Path | str) -> PromptImport:
    """Prompts from JSONL/JSON (a text field, or `messages`/`prompt` as a conversation) or CSV
    (a column named prompt, text, question, instruction, input or query; optional `tags`)."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise WorkbenchError(f"{path.name} is not UTF-8 text.") from None
    except OSError as error:
        raise WorkbenchError(f"{path.name} cannot be read: {error.strerror}.") from None
    result = PromptImport()
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(raw.splitlines()))
        numbered = [(f"row {i}", row) for i, row in enumerate(rows, 2)]
    elif path.suffix.lower() == ".json":
        try:
            data = json.loads(raw)
        except ValueError as error:
            raise WorkbenchError(f"{path.name} is not valid JSON: {error}.") from None
        if not isinstance(data, list):
            raise WorkbenchError(f"{path.name} must hold a JSON list of prompts.")
        numbered = [(f"item {i}", row) for i, row in enumerate(data, 1)]
    else:
        numbered = []
        for number, line in enumerate(raw.split("\n"), 1):
            if not line.strip():
                continue
            try:
                numbered.append((f"line {number}", json.loads(line)))
            except ValueError:
                result.errors.append(f"line {number}: not valid JSON")
    for where, row in numbered:
        try:
            result.prompts.append(_prompt_from_row(row))
        except ValueError as error:
            result.errors.append(f"{where}: {error}")
    if not result.prompts and not result.errors:
        raise WorkbenchError(f"{path.name} holds no prompts.")
    return result


def _prompt_from_row(row) -> dict:
    if isinstance(row, str):
        return {"messages": as_messages(row), "tags": []}
    if not isinstance(row, dict):
        raise ValueError("expected an object with a prompt")
    tags = row.get("tags") or []
    if isinstance(tags, str):
        tags = [t for t in tags.replace(";", ",").split(",")]
    for name in ("messages", "prompt"):
        value = row.get(name)
        if isinstance(value, list):
            messages = list(value)
            while messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
                messages.pop()  # a full chat: the prompt is everything before the reply
            return {"messages": check_prompt_messages(messages), "tags": tags}
    for name in TEXT_FIELDS:
        value = row.get(name)
        if isinstance(value, str) and value.strip():
            return {"messages": as_messages(value), "tags": tags}
    raise ValueError(f"no prompt found (expected one of: messages, {', '.join(TEXT_FIELDS)})")
