"""The rows an exported job trains on: the same examples, pairs, prompts and splits our own
trainers use (`sft.split_examples`, `reward_data.split_by_prompt`, `ppo.split_prompts`), in the
conversational columns both TRL and OpenRLHF read:

- SFT: `prompt` (the conversation up to the last reply) and `completion` (that reply);
- reward model and DPO: `prompt`, `chosen`, `rejected` (each answer a one-message list);
- PPO/RLOO: `prompt` alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.data.prompts import PromptStore
from workbench.errors import WorkbenchError
from workbench.project import Project

STAGES = ("sft", "rm", "dpo", "ppo")


@dataclass
class JobData:
    train: list[dict]
    test: list[dict]
    description: str        # what the rows are, for the README
    counts: dict            # what was left out and why, for job.json


def sft_rows(project: Project, config) -> JobData:
    from workbench.train.sft import split_examples, trainable_examples

    usable = [messages for _, messages in trainable_examples(project)]
    try:
        train, validation = split_examples(usable, config.validation_fraction, config.seed)
    except WorkbenchError as error:
        raise WorkbenchError(f"nothing to export for the sft stage: {error}") from None

    def row(messages: list[dict]) -> dict:
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        return {"prompt": messages[:last], "completion": [messages[last]]}

    multi_turn = sum(sum(m["role"] == "assistant" for m in messages) > 1 for messages in usable)
    return JobData([row(m) for m in train], [row(m) for m in validation],
                   "SFT examples: the conversation up to its last reply as `prompt`, that reply as `completion`",
                   {"examples": len(usable), "multi_turn": multi_turn})


def pair_rows(project: Project, config) -> JobData:
    from workbench.train.reward_data import preference_pairs, split_by_prompt

    annotators = [a.strip() for a in config.annotators.split(",") if a.strip()] or None
    pairs = preference_pairs(project, annotators)
    if not pairs:
        raise WorkbenchError(f"{project.path.name} has no preference pairs to export: rank some responses on "
                             "the Rank page (ties and \"all bad\" give no pairs), or import preference data.")
    train, validation = split_by_prompt(pairs, config.validation_fraction, config.seed)
    if not train:
        raise WorkbenchError("every prompt went to the test split; lower validation_fraction or rank more prompts.")

    rank_margin = getattr(config, "rank_margin", 0.0)  # the reward model's; both engines read `margin`

    def row(pair) -> dict:
        row = {"prompt": pair.messages, "chosen": [{"role": "assistant", "content": pair.chosen}],
               "rejected": [{"role": "assistant", "content": pair.rejected}]}
        return {**row, "margin": rank_margin * (pair.distance - 1)} if rank_margin else row

    return JobData([row(p) for p in train], [row(p) for p in validation],
                   "preference pairs from every ranking (each better answer over each worse one; ties and "
                   "\"all bad\" give none), split by prompt", {"pairs": len(pairs),
                                                               "prompts": len({p.prompt_uid for p in pairs})})


def prompt_rows(project: Project, config) -> JobData:
    from workbench.train.ppo import split_prompts

    train_ids, heldout_ids = split_prompts(project, config.heldout_fraction)
    if not train_ids:
        raise WorkbenchError(f"{project.path.name} has no prompts to export; add some on the Prompts page.")
    store = PromptStore(project)
    rows = lambda ids: [{"prompt": store.messages(i)} for i in ids]  # noqa: E731
    return JobData(rows(train_ids), rows(heldout_ids),
                   "prompts to sample answers for; the held-out ones (test) are those our PPO compares on",
                   {"prompts": len(train_ids) + len(heldout_ids)})


def stage_rows(project: Project, stage: str, config) -> JobData:
    return {"sft": sft_rows, "rm": pair_rows, "dpo": pair_rows, "ppo": prompt_rows}[stage](project, config)
