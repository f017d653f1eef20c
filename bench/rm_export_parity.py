"""Does the exported reward model score as the app does? On the demo model (pad == EOS).

    .venv/bin/python bench/rm_export_parity.py [--steps 3] [--prompts 12]

Trains a reward model for a few steps on rankings of two fixed answers per prompt, exports it as
an AutoModelForSequenceClassification folder, then scores every validation pair both ways: in
the app (RewardModel.score) and as a user of the export would, through the export's own
tokenizer and chat template in one padded batch. Prints the largest and mean difference.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import workbench.models  # noqa: F401 - offline settings before transformers is imported

ANSWERS = ["I'm sorry your order is late. Send me the order number and I will check the tracking.",
           "Wait.", "Orders take time. Nothing to do.", "Sorry! I will send a replacement at no cost today."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=12)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from workbench.config import ModelSpec
    from workbench.data.prompts import PromptStore
    from workbench.data.rankings import RankingStore
    from workbench.models.loading import ModelSession
    from workbench.project import Project
    from workbench.train.reward import RewardConfig, load_reward_model, reward_runs, train_rm
    from workbench.train.reward_export import export_reward_model

    folder = Path(tempfile.mkdtemp(prefix="rm-parity-"))
    project = Project.create(folder / "p.rlhf")
    project.set_base_model(ModelSpec(kind="demo"))
    models = ModelSession()
    for _ in models.load(ModelSpec(kind="demo")):
        pass
    rankings = RankingStore(project)
    for i in range(args.prompts):
        prompt = PromptStore(project).add(f"My order number {i} hasn't arrived. What should I do?")
        batch = rankings.add_batch(prompt, ANSWERS, [{"source": "base"}] * len(ANSWERS))
        ids = [r.id for r in batch.responses]
        rankings.save_ranking(batch.uid, "ana", [[ids[0]], [ids[3]], [ids[2]], [ids[1]]])
    logs = list(train_rm(project, models, RewardConfig(max_steps=args.steps)))
    [(run_id, adapter)] = reward_runs(project)
    pairs = [json.loads(line) for line in (adapter.parent / "pairs.jsonl").read_text().splitlines() if line]
    chats = [(p["messages"], p[side]) for p in pairs if p["split"] == "validation" for side in ("chosen", "rejected")]
    out = export_reward_model(project.base_model, adapter, folder / "export")
    with models.hold("scoring"):
        ours = load_reward_model(models, adapter, f"rm-run-{run_id}").score(chats)
    tokenizer = AutoTokenizer.from_pretrained(out)
    classifier = AutoModelForSequenceClassification.from_pretrained(out).eval()
    texts = [tokenizer.apply_chat_template([*m, {"role": "assistant", "content": r}], tokenize=False)
             for m, r in chats]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        theirs = classifier(**batch).logits[:, 0].tolist()
    differences = [abs(a - b) for a, b in zip(ours, theirs)]
    print(f"reward run: {logs[-1].status}, {args.steps} steps; {len(chats)} validation conversations")
    print(f"pad token of the export: {tokenizer.pad_token!r} (EOS {tokenizer.eos_token!r})")
    print(f"|exported - in-app| max {max(differences):.2e}, mean {sum(differences) / len(differences):.2e}")


if __name__ == "__main__":
    main()
