"""Preference pairs for reward-model training: from the project's rankings, split by prompt.

Pairs come from `preferences.ranking_to_pairs`, one set per annotator's ranking (labels made
here, imported files and teammates' packs alike): each better response is chosen over each worse
one, tied responses give no pair (they say neither is better; a tie-aware loss is not used), and
an "all bad" ranking gives none. The validation set holds whole prompts, so no prompt's responses
are on both sides (the model is measured on prompts it has not seen).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from workbench.data.preferences import ranking_to_pairs
from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.project import Project
from workbench.models import chat_format
from workbench.models.chat_format import TemplateRefused
from workbench.paths import write_atomically
from workbench.train.runs import TrainingError

PAIRS_FILE = "pairs.jsonl"


@dataclass(frozen=True)
class PairExample:
    prompt_uid: str
    prompt_id: int
    messages: list[dict]      # the prompt conversation, ending with the user's turn
    chosen: str
    rejected: str
    distance: int             # rank groups apart (1 for neighbours), for an optional margin
    annotator: str
    batch: str

    def to_dict(self) -> dict:
        return asdict(self)


def preference_pairs(project: Project, annotators: list[str] | None = None) -> list[PairExample]:
    store, prompts = RankingStore(project), PromptStore(project)
    uid_of = dict(project.query("SELECT id, uid FROM prompts"))
    messages_of: dict[int, list[dict]] = {}
    pairs: list[PairExample] = []
    for ranking in store.rankings():
        if annotators and ranking.annotator not in annotators:
            continue
        batch = store.batch(ranking.batch)
        if batch is None:
            continue
        text = {r.id: r.text for r in batch.responses}
        if ranking.prompt_id not in messages_of:
            messages_of[ranking.prompt_id] = prompts.messages(ranking.prompt_id)
        for pair in ranking_to_pairs(ranking.groups, ranking.all_bad):
            if text[pair.chosen] != text[pair.rejected]:  # the same text twice says nothing
                pairs.append(PairExample(uid_of[ranking.prompt_id], ranking.prompt_id, messages_of[ranking.prompt_id],
                                         text[pair.chosen], text[pair.rejected], pair.rank_distance,
                                         ranking.annotator, ranking.batch))
    return pairs


def split_by_prompt(pairs: list[PairExample], fraction: float, seed: int) -> tuple[list[PairExample], list[PairExample]]:
    """(train, validation) with every prompt wholly on one side; at least one validation prompt
    once there are three or more prompts and fraction > 0."""
    prompts = sorted({p.prompt_uid for p in pairs})
    random.Random(seed).shuffle(prompts)
    held_out = round(len(prompts) * fraction)
    if held_out == 0 and fraction > 0 and len(prompts) >= 3:
        held_out = 1
    validation_prompts = set(prompts[:held_out])
    train = [p for p in pairs if p.prompt_uid not in validation_prompts]
    validation = [p for p in pairs if p.prompt_uid in validation_prompts]
    return train, validation


def run_pairs(project: Project, folder: Path, tokenizer, annotators: list[str] | None, max_length: int,
              validation_fraction: float, seed: int) -> tuple[list[PairExample], list[PairExample]]:
    """(train, validation) pairs of the run whose folder is `folder`: its own copy in
    `pairs.jsonl` when it has one, so a resume trains on exactly the pairs and split it began
    with; otherwise collected from the project's rankings, checked, split and written there.
    Reward-model and DPO runs both get their pairs here, so the two are comparable."""
    snapshot = Path(folder) / PAIRS_FILE
    if snapshot.is_file():
        rows = [json.loads(line) for line in filter(None, snapshot.read_text(encoding="utf-8").split("\n"))]
        split = {side: [PairExample(**{k: v for k, v in row.items() if k != "split"})
                        for row in rows if row["split"] == side] for side in ("train", "validation")}
        return split["train"], split["validation"]
    pairs = preference_pairs(project, annotators)
    if not pairs:
        raise TrainingError("There are no preference pairs: rank some responses on the Rank page (ties and "
                            "\"all bad\" give no pairs), or import preference data.")
    checked: set[int] = set()
    for pair in pairs:  # a conversation the template refuses stops us now, not mid-run
        if pair.prompt_id not in checked:
            checked.add(pair.prompt_id)
            try:
                conversation_ids(tokenizer, pair.messages, pair.chosen, max_length)
            except TemplateRefused as error:
                raise TrainingError(f"Prompt {pair.prompt_id}: {error}. Edit the prompt, or leave its "
                                    "rankings out.") from error
    train, validation = split_by_prompt(pairs, validation_fraction, seed)
    if not train:
        raise TrainingError("Every prompt went to validation; lower validation_fraction or rank more prompts.")
    lines = [json.dumps({"split": "train", **p.to_dict()}, ensure_ascii=False) for p in train]
    lines += [json.dumps({"split": "validation", **p.to_dict()}, ensure_ascii=False) for p in validation]
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_atomically(snapshot, ("\n".join(lines) + "\n").encode("utf-8"))
    return train, validation


def conversation_ids(tokenizer, messages: list[dict], reply: str, max_length: int) -> list[int]:
    """Token ids of the prompt and reply after the chat template. Too long: the start of the
    prompt is cut, never the reply's end, where the score is read."""
    return chat_format.conversation_ids(tokenizer, messages, reply)[-max_length:]


def pad_right(sequences: list[list[int]], pad_id: int):
    """input_ids and attention_mask tensors, right-padded."""
    import torch

    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, :len(sequence)] = torch.tensor(sequence)
        attention[row, :len(sequence)] = 1
    return input_ids, attention
