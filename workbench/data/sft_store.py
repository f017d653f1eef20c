"""SFT examples in the project file: queries for a 100,000-row table, edits, and their inverses.

Every method commits before it returns. The table view never loads all examples: it asks for
the ordered list of ids that match a search (`ids`), then for the few rows on screen (`rows`).
Each edit has an exact inverse (`delete` returns what `restore` puts back under the same ids),
which is what the editor's undo/redo is built from.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from workbench.project import Project, messages_digest

ROLES = ("system", "user", "assistant")
# Sort keys the table offers, mapped to SQL over indexed or stored columns (never JSON parsing).
SORT_COLUMNS = {
    "id": "id",
    "prompt": "prompt COLLATE NOCASE",
    "response": "response COLLATE NOCASE",
    "turns": "turns",
    "length": "length(messages)",
    "source": "source COLLATE NOCASE",
    "updated": "updated_at",
}
FILTERS = ("all", "empty", "duplicates")


@dataclass(frozen=True)
class SftRow:
    """What one table row shows; the messages themselves are fetched when a row is opened."""

    id: int
    prompt: str
    response: str
    turns: int
    chars: int
    source: str
    has_empty: bool
    digest: str


@dataclass(frozen=True)
class StoredExample:
    """A whole example as stored, enough to put it back exactly (for undo)."""

    id: int
    messages: list[dict]
    source: str
    created_at: float
    updated_at: float


def derived_columns(messages: list[dict]) -> dict:
    """The stored columns the table sorts and searches on, computed from the messages."""
    text = json.dumps(messages, ensure_ascii=False)
    users = [m["content"] for m in messages if m.get("role") == "user"]
    answers = [m["content"] for m in messages if m.get("role") == "assistant"]
    return {
        "messages": text,
        "prompt": users[0] if users else "",
        "response": answers[-1] if answers else "",
        "turns": len(messages),
        "has_empty": int(not answers or any(not str(m.get("content", "")).strip() for m in messages)),
        "digest": messages_digest(text),
    }


def check_messages(messages) -> list[dict]:
    """The structure the store accepts (empty contents are allowed while editing, and flagged)."""
    if not isinstance(messages, list):
        raise ValueError("an example is a list of messages")
    clean = []
    for index, message in enumerate(messages, 1):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ValueError(f"message {index} needs a role: {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"message {index} needs text content")
        clean.append({"role": message["role"], "content": message["content"]})
    return clean


class SftStore:
    def __init__(self, project: Project):
        self.project = project

    # ---- reading ---------------------------------------------------------------------------

    def count(self, filter: str = "all") -> int:
        where, params = self._where("", filter)
        return self.project.query(f"SELECT COUNT(*) FROM sft_examples {where}", params)[0][0]

    def ids(self, search: str = "", filter: str = "all", sort: str = "id",
            descending: bool = False) -> list[int]:
        """Ids of the examples that match, in display order (a list of ints: cheap at 100k)."""
        where, params = self._where(search, filter)
        order = f"{SORT_COLUMNS[sort]} {'DESC' if descending else 'ASC'}, id"
        rows = self.project.query(f"SELECT id FROM sft_examples {where} ORDER BY {order}", params)
        return [row[0] for row in rows]

    def _where(self, search: str, filter: str) -> tuple[str, dict]:
        if filter not in FILTERS:
            raise ValueError(f"filter must be one of {', '.join(FILTERS)}")
        clauses, params = [], {}
        if search.strip():
            # Searching the JSON text finds words in any message, system prompts included.
            clauses.append("(messages LIKE :pattern ESCAPE '\\' OR source LIKE :pattern ESCAPE '\\')")
            escaped = search.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params["pattern"] = f"%{escaped}%"
        if filter == "empty":
            clauses.append("has_empty = 1")
        elif filter == "duplicates":
            clauses.append("digest IN (SELECT digest FROM sft_examples GROUP BY digest HAVING COUNT(*) > 1)")
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    def rows(self, ids: Iterable[int]) -> dict[int, SftRow]:
        found = self._select_ids("id, prompt, response, turns, length(messages), source, has_empty, digest", ids)
        return {row[0]: SftRow(*row[:6], bool(row[6]), row[7]) for row in found}

    def _select_ids(self, columns: str, ids: Iterable[int]) -> list[tuple]:
        """`columns` of the examples with these ids, in id order."""
        ids, found = list(ids), []
        for start in range(0, len(ids), 500):  # SQLite limits the number of parameters
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found += self.project.query(f"SELECT {columns} FROM sft_examples WHERE id IN ({marks})", tuple(chunk))
        return sorted(found)

    def duplicate_digests(self) -> set[str]:
        rows = self.project.query("SELECT digest FROM sft_examples GROUP BY digest HAVING COUNT(*) > 1")
        return {row[0] for row in rows}

    def messages(self, example_id: int) -> list[dict]:
        rows = self.project.query("SELECT messages FROM sft_examples WHERE id = ?", (example_id,))
        if not rows:
            raise KeyError(example_id)
        return json.loads(rows[0][0])

    def all_messages(self) -> Iterator[list[dict]]:
        """Every example in id order (for training and export)."""
        for _, messages in self.numbered_messages():
            yield messages

    def numbered_messages(self) -> Iterator[tuple[int, list[dict]]]:
        """(id, messages) of every example in id order."""
        for example_id, text in self.project.query("SELECT id, messages FROM sft_examples ORDER BY id"):
            yield example_id, json.loads(text)

    def stored(self, ids: Iterable[int]) -> list[StoredExample]:
        return [StoredExample(row[0], json.loads(row[1]), row[2], row[3], row[4])
                for row in self._select_ids("id, messages, source, created_at, updated_at", ids)]

    # ---- writing: each is one committed step with an exact inverse ------------------------

    def add(self, messages: list[dict], source: str = "") -> int:
        return self.add_many([messages], source)[0]

    def add_many(self, examples: Iterable[list[dict]], source: str = "") -> list[int]:
        """Insert examples in one transaction: all of them land, or none (an import)."""
        now = time.time()
        ids = []
        with self.project.transaction():
            for messages in examples:
                columns = derived_columns(check_messages(messages))
                ids.append(self.project.execute(
                    "INSERT INTO sft_examples(messages, prompt, response, turns, has_empty, digest, "
                    "source, created_at, updated_at) VALUES (:messages, :prompt, :response, :turns, "
                    ":has_empty, :digest, :source, :now, :now)", {**columns, "source": source, "now": now}))
        return ids

    def update(self, example_id: int, messages: list[dict]) -> None:
        columns = derived_columns(check_messages(messages))
        self.project.execute(
            "UPDATE sft_examples SET messages = :messages, prompt = :prompt, response = :response, "
            "turns = :turns, has_empty = :has_empty, digest = :digest, updated_at = :now WHERE id = :id",
            {**columns, "now": time.time(), "id": example_id})

    def delete(self, ids: Iterable[int]) -> list[StoredExample]:
        """Remove examples and return them, so `restore` can undo the delete exactly."""
        removed = self.stored(ids)
        with self.project.transaction():
            self.project.execute_many("DELETE FROM sft_examples WHERE id = ?", [(e.id,) for e in removed])
        return removed

    def restore(self, examples: Iterable[StoredExample]) -> None:
        """Put deleted examples back under their old ids (undo of a delete, redo of an add)."""
        with self.project.transaction():
            for example in examples:
                columns = derived_columns(check_messages(example.messages))
                self.project.execute(
                    "INSERT INTO sft_examples(id, messages, prompt, response, turns, has_empty, digest, "
                    "source, created_at, updated_at) VALUES (:id, :messages, :prompt, :response, :turns, "
                    ":has_empty, :digest, :source, :created, :updated)",
                    {**columns, "id": example.id, "source": example.source,
                     "created": example.created_at, "updated": example.updated_at})
