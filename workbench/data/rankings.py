"""Generated responses and the annotators' rankings of them.

Responses come in batches: the K responses generated for a prompt in one call, ranked
together. A ranking belongs to one batch and one annotator (changing a label replaces it) and
keeps the order the responses were shown in. That order is a shuffle seeded by the batch and
the annotator: the same on every visit, different for each annotator, and unrelated to which
model made which response (blind labeling). Rankings store response ids; exports turn them back
into the generation order (`positions`).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from workbench.data.preferences import check_ranking
from workbench.errors import WorkbenchError
from workbench.project import Project


@dataclass(frozen=True)
class Response:
    id: int
    uid: str
    position: int          # order of generation within the batch
    text: str
    generator: dict        # what made it: source (base or adapter), sampling settings, seed


@dataclass(frozen=True)
class Batch:
    uid: str
    prompt_id: int
    responses: list[Response]

    def by_id(self) -> dict[int, Response]:
        return {r.id: r for r in self.responses}


@dataclass(frozen=True)
class Ranking:
    batch: str
    prompt_id: int
    annotator: str
    groups: list[list[int]]   # response ids, best group first; a group of several is a tie
    all_bad: bool
    shown_order: list[int]    # response ids left to right as the annotator saw them
    seconds_spent: float
    source: str               # '' when labeled here, else the pack or file it came from
    created_at: float
    updated_at: float


def blind_order(batch_uid: str, annotator: str, response_ids: Sequence[int]) -> list[int]:
    """The order one annotator sees a batch in: random, but stable across visits."""
    seed = int.from_bytes(hashlib.sha256(f"{batch_uid}\0{annotator}".encode()).digest()[:8], "big")
    order = list(response_ids)
    random.Random(seed).shuffle(order)
    return order


def check_groups(groups: Sequence[Sequence[int]], response_ids: Iterable[int]) -> list[list[int]]:
    """A ranking of a batch names each of the batch's responses exactly once."""
    groups = [[int(r) for r in group] for group in groups]
    check_ranking(groups)
    named, expected = sorted(r for g in groups for r in g), sorted(response_ids)
    if named != expected:
        raise ValueError("a ranking must place every response of its batch exactly once")
    return groups


class RankingStore:
    def __init__(self, project: Project):
        self.project = project

    # ---- responses -----------------------------------------------------------------

    def add_batch(self, prompt_id: int, texts: Sequence[str], generators: Sequence[dict],
                  batch_uid: str | None = None, response_uids: Sequence[str] | None = None) -> Batch:
        if len(texts) != len(generators) or not texts:
            raise ValueError("a batch needs one generator record per response, and at least one response")
        batch_uid = batch_uid or uuid.uuid4().hex
        uids = list(response_uids or [uuid.uuid4().hex for _ in texts])
        now = time.time()
        with self.project.transaction():
            for position, (text, generator, uid) in enumerate(zip(texts, generators, uids)):
                self.project.execute(
                    "INSERT INTO responses(prompt_id, uid, batch, position, text, generator, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (prompt_id, uid, batch_uid, position, text, json.dumps(generator), now))
        return self.batch(batch_uid)

    def batch(self, batch_uid: str) -> Batch | None:
        rows = self.project.query(
            "SELECT id, uid, position, text, generator, prompt_id FROM responses WHERE batch = ? "
            "ORDER BY position, id", (batch_uid,))
        if not rows:
            return None
        return Batch(batch_uid, rows[0][5], [Response(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows])

    def latest_batch(self, prompt_id: int) -> Batch | None:
        rows = self.project.query("SELECT batch FROM responses WHERE prompt_id = ? ORDER BY id DESC LIMIT 1",
                                  (prompt_id,))
        return self.batch(rows[0][0]) if rows else None

    def batches(self) -> list[str]:
        return [r[0] for r in self.project.query(
            "SELECT batch FROM responses GROUP BY batch ORDER BY MIN(id)")]

    def update_response_text(self, response_id: int, text: str) -> None:
        self.project.execute("UPDATE responses SET text = ? WHERE id = ?", (text, response_id))

    # ---- rankings ------------------------------------------------------------------

    def save_ranking(self, batch_uid: str, annotator: str, groups: Sequence[Sequence[int]],
                     all_bad: bool = False, seconds_spent: float = 0.0, shown_order: Sequence[int] = (),
                     source: str = "", at: float | None = None) -> Ranking:
        """Commit one annotator's ranking of a batch, replacing their earlier one (its time spent
        is added up, so labels per hour count the time spent changing a label too)."""
        annotator = annotator.strip()
        if not annotator:
            raise WorkbenchError("Set the annotator's name before labeling.")
        batch = self.batch(batch_uid)
        if batch is None:
            raise WorkbenchError("Those responses no longer exist (the prompt may have been deleted).")
        try:
            groups = check_groups(groups, [r.id for r in batch.responses])
        except ValueError as error:
            raise WorkbenchError(f"Not a valid ranking: {error}.") from None
        shown = list(shown_order) or blind_order(batch_uid, annotator, [r.id for r in batch.responses])
        now = time.time() if at is None else at
        self.project.execute(
            """INSERT INTO rankings(prompt_id, batch, annotator, ranking, all_bad, seconds_spent, shown_order,
                                    source, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(batch, annotator) DO UPDATE SET
                   ranking = excluded.ranking, all_bad = excluded.all_bad, shown_order = excluded.shown_order,
                   seconds_spent = coalesce(seconds_spent, 0) + excluded.seconds_spent,
                   source = excluded.source, updated_at = excluded.updated_at""",
            (batch.prompt_id, batch_uid, annotator, json.dumps(groups), int(all_bad), float(seconds_spent),
             json.dumps(shown), source, now, now))
        return self.ranking(batch_uid, annotator)

    def delete_ranking(self, batch_uid: str, annotator: str) -> None:
        self.project.execute("DELETE FROM rankings WHERE batch = ? AND annotator = ?", (batch_uid, annotator))

    def ranking(self, batch_uid: str, annotator: str) -> Ranking | None:
        found = self.rankings(where="batch = ? AND annotator = ?", params=(batch_uid, annotator))
        return found[0] if found else None

    def rankings(self, where: str = "1", params: tuple = ()) -> list[Ranking]:
        rows = self.project.query(
            "SELECT batch, prompt_id, annotator, ranking, all_bad, shown_order, coalesce(seconds_spent, 0), "
            f"source, created_at, updated_at FROM rankings WHERE {where} ORDER BY id", params)
        return [Ranking(r[0], r[1], r[2], json.loads(r[3]), bool(r[4]), json.loads(r[5]), r[6], r[7], r[8], r[9])
                for r in rows]

    def annotators(self) -> list[str]:
        return [r[0] for r in self.project.query("SELECT DISTINCT annotator FROM rankings ORDER BY annotator")]

    # ---- progress ------------------------------------------------------------------

    def progress(self, annotator: str) -> dict:
        """Labeled / total prompts for one annotator, and their labels per hour of time spent."""
        total = self.project.query("SELECT COUNT(*) FROM prompts")[0][0]
        labeled, seconds = self.project.query(
            "SELECT COUNT(DISTINCT prompt_id), coalesce(SUM(seconds_spent), 0) FROM rankings "
            "WHERE annotator = ? AND source = ''", (annotator,))[0]
        all_labeled = self.project.query("SELECT COUNT(DISTINCT prompt_id) FROM rankings WHERE annotator = ?",
                                         (annotator,))[0][0]
        return {"labeled": all_labeled, "total": total,
                "labels_per_hour": 3600.0 * labeled / seconds if seconds > 0 else None}


def positions(ranking: Ranking, batch: Batch) -> list[list[int]]:
    """The ranking as positions in generation order (what exports write): the blind order undone."""
    position = {r.id: r.position for r in batch.responses}
    return [[position[r] for r in group] for group in ranking.groups]
