"""Reward model on a tiny model: pairs and the split, learning a learnable preference, resume,
export to a transformers sequence classifier with the same scores, the command line."""

import random
from itertools import islice

import pytest
import torch

from workbench.cli import main
from workbench.config import ModelSpec
from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.project import Project
from workbench.train.reward import RewardConfig, load_reward_model, reward_runs, train_rm
from workbench.train.reward_data import preference_pairs, split_by_prompt
from workbench.train.reward_export import export_reward_model
from workbench.train.runs import RunControl, RunRecord, TrainingError

KIND = ["I'm sorry your order is late.", "Check the tracking link, please.", "I will send a replacement.",
        "You have 30 days to return them for free."]
RUDE = ["the quick brown fox", "jumps over the lazy dog", "0123456789 system user", "brown dog quick lazy"]
FAST = dict(learning_rate=2e-3, warmup_steps=0, batch_size=8, eval_every=5, checkpoint_every=5,
            validation_fraction=0.25, schedule="constant")


def synthetic_project(path, tiny_model_dir, prompts=24, k=3, seed=0):
    """Each prompt has k responses; the annotator always prefers the one that is polite."""
    rng = random.Random(seed)
    project = Project.create(path)
    project.set_base_model(ModelSpec(kind="folder", location=str(tiny_model_dir)))
    store = RankingStore(project)
    for i in range(prompts):
        prompt = PromptStore(project).add(f"My order number {i} hasn't arrived.")
        texts = [rng.choice(KIND) + f" {i}"] + [rng.choice(RUDE) + f" {i} {j}" for j in range(k - 1)]
        order = list(range(k))
        rng.shuffle(order)
        batch = store.add_batch(prompt, [texts[p] for p in order], [{"source": "base"}] * k)
        polite = next(r.id for r in batch.responses if r.text == texts[0])
        others = [r.id for r in batch.responses if r.id != polite]
        store.save_ranking(batch.uid, "ana", [[polite], others])  # the rude ones tie: no pair between them
    return project


def test_pairs_split_by_prompt_with_ties_and_all_bad_giving_none(tmp_path, tiny_model_dir):
    project = synthetic_project(tmp_path / "p", tiny_model_dir, prompts=10, k=3)
    pairs = preference_pairs(project)
    assert len(pairs) == 20  # best over each of the two tied others
    batch = RankingStore(project).latest_batch(PromptStore(project).rows()[0].id)
    RankingStore(project).save_ranking(batch.uid, "bo", [[r.id] for r in batch.responses], all_bad=True)
    assert len(preference_pairs(project)) == 20 and len(preference_pairs(project, ["bo"])) == 0
    train, validation = split_by_prompt(pairs, 0.3, seed=1)
    assert {p.prompt_uid for p in train}.isdisjoint({p.prompt_uid for p in validation})
    assert len({p.prompt_uid for p in validation}) == 3 and len(train) + len(validation) == 20
    assert split_by_prompt(pairs, 0.3, seed=1) == (train, validation)  # the seed decides
    project.close()


def test_a_short_run_learns_the_preference_on_unseen_prompts(tmp_path, tiny_model_dir, models):
    project = synthetic_project(tmp_path / "p", tiny_model_dir)
    logs = list(train_rm(project, models, RewardConfig(max_steps=25, **FAST)))
    assert logs[-1].status == "finished"
    metrics = RunRecord(project, logs[-1].run_id).metrics()
    steps, accuracy = metrics["reward/accuracy"]
    assert steps[-1] == 25 and accuracy[-1] >= 0.9  # validation prompts were never trained on
    assert metrics["reward/margin"][1][-1] > metrics["reward/margin"][1][0]
    losses = metrics["loss/train"][1]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    [(run_id, folder)] = reward_runs(project)
    assert (folder / "adapter_config.json").is_file() and (folder / "reward_head.safetensors").is_file()
    rm = load_reward_model(models, folder, "rm-check")
    with models.hold("scoring"):
        good, bad = rm.score([([{"role": "user", "content": "Where is my parcel?"}], KIND[0]),
                              ([{"role": "user", "content": "Where is my parcel?"}], RUDE[0])])
    assert good > bad
    project.close()


def test_stop_and_resume_continue_from_the_checkpoint(tmp_path, tiny_model_dir, models):
    project = synthetic_project(tmp_path / "p", tiny_model_dir, prompts=12)
    control = RunControl()
    for log in train_rm(project, models, RewardConfig(max_steps=12, **FAST), control):
        if log.step == 5 and log.metrics:
            control.stop()
    record = RunRecord(project, log.run_id)
    assert record.status == "stopped" and record.last_checkpoint()[0] == 5
    resumed = list(train_rm(project, models, resume_run_id=record.id))
    assert "resumed at step 5" in resumed[0 if resumed[0].message.startswith("Training") else 1].message
    assert resumed[-1].status == "finished" and resumed[-1].step == 12
    assert RunRecord(project, record.id).metrics()["loss/train"][0] == list(range(1, 13))
    project.close()


def test_no_pairs_is_a_clear_error(tmp_path, models):
    project = Project.create(tmp_path / "empty")
    with pytest.raises(TrainingError, match="no preference pairs"):
        list(train_rm(project, models))
    assert RunRecord(project, 1).status == "failed"
    project.close()


def test_export_loads_in_plain_transformers_with_the_same_scores(tmp_path, tiny_model_dir, models):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    project = synthetic_project(tmp_path / "p", tiny_model_dir, prompts=12)
    list(train_rm(project, models, RewardConfig(max_steps=6, **FAST)))
    [(run_id, folder)] = reward_runs(project)
    out = export_reward_model(project.base_model, folder, tmp_path / "rm-export")
    rm = load_reward_model(models, folder, f"rm-run-{run_id}")
    chats = [([{"role": "user", "content": "Where is my parcel?"}], text) for text in (KIND[1], RUDE[2], KIND[3])]
    with models.hold("scoring"):
        ours = rm.score(chats)
    classifier = AutoModelForSequenceClassification.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = [tokenizer.apply_chat_template([*m, {"role": "assistant", "content": r}], tokenize=False) for m, r in chats]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        theirs = classifier(**batch).logits[:, 0].tolist()
    assert classifier.config.num_labels == 1
    assert theirs == pytest.approx(ours, abs=1e-4)
    project.close()


def test_cli_trains_and_exports(tmp_path, tiny_model_dir, capsys):
    project = synthetic_project(tmp_path / "p", tiny_model_dir, prompts=8)
    path = project.path
    project.close()
    assert main(["train", "rm", str(path), "--max-steps", "3", "--set", "batch_size=4"]) == 0
    out = capsys.readouterr().out
    assert "step 3/3" in out and "loss/train" in out
    assert main(["export", str(path), str(tmp_path / "adapter"), "--kind", "rm", "--adapter-only"]) == 0
    assert (tmp_path / "adapter" / "reward_head.json").is_file()
    assert main(["export", str(path), str(tmp_path / "adapter"), "--kind", "rm", "--adapter-only"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(path), str(tmp_path / "x"), "--kind", "rm", "--run", "9"]) == 1
    assert "not a finished reward-model run" in capsys.readouterr().err
    assert main(["train", "rm", str(path), "--set", "rank_margin=-1"]) == 1
