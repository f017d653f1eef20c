"""Before/after for PPO on the tiny model: held-out prompts, the policy against its reference
scored by the reward model, pairs sent to the Rank page and the human win rate read back, the
policy exported for plain peft."""

import json

import pytest
import torch

from workbench.cli import main
from workbench.data.rankings import RankingStore
from workbench.errors import WorkbenchError
from workbench.train.ppo import PpoConfig, split_prompts, train_ppo
from workbench.train.ppo_eval import (
    POLICY, REFERENCE, Comparison, compare_policy, human_win_rate, policy_runs, send_to_ranking,
)
from workbench.train.reward import RewardConfig, train_rm
from workbench.train.runs import RunRecord

from .test_reward import FAST as RM_FAST, synthetic_project

PPO_FAST = dict(learning_rate=3e-3, max_new_tokens=8, batch_size=4, micro_batch_size=2, num_minibatches=2)


def test_the_split_holds_out_a_stable_share_of_prompts(tmp_path, tiny_model_dir):
    project = synthetic_project(tmp_path / "p", tiny_model_dir, prompts=20)
    train, heldout = split_prompts(project, 0.2)
    assert len(heldout) == 4 and not set(train) & set(heldout) and len(train) + len(heldout) == 20
    assert split_prompts(project, 0.2) == (train, heldout)
    assert split_prompts(project, 0.0)[1] == []
    small = synthetic_project(tmp_path / "small", tiny_model_dir, prompts=4)
    assert split_prompts(small, 0.2)[1] == []  # too few prompts to spare one


@pytest.fixture
def trained(tmp_path, tiny_model_dir, models):
    """A project with a reward model and a finished PPO run on it, 25% of prompts held out."""
    project = synthetic_project(tmp_path / "p", tiny_model_dir, prompts=12)
    assert list(train_rm(project, models, RewardConfig(max_steps=3, **RM_FAST)))[-1].status == "finished"
    logs = list(train_ppo(project, models, PpoConfig(max_steps=2, heldout_fraction=0.25, **PPO_FAST)))
    assert logs[-1].status == "finished", logs[-1].message
    return project, logs[-1].run_id


def test_compare_send_to_ranking_and_the_human_win_rate(trained, models):
    project, run_id = trained
    assert [r for r, _ in policy_runs(project)] == [run_id]
    heldout = json.loads((RunRecord(project, run_id).folder / "heldout_prompts.json").read_text())
    assert len(heldout) == 3
    *progress, comparison = compare_policy(project, models, run_id, answers_per_prompt=2)
    assert progress[0] == "Answering held-out prompt 1 of 3..."
    assert len(comparison.pairs) == 6 and {p.prompt_id for p in comparison.pairs} == set(heldout)
    assert comparison.reference == "base" and comparison.policy == f"ppo-run-{run_id}"
    assert all(isinstance(p.kl, float) for p in comparison.pairs)
    assert 0 <= comparison.win_rate <= 1 and comparison.training_kl is not None
    assert "held-out prompts" in comparison.summary()

    # Sent to the Rank page: one batch per prompt, 2 reference + 2 policy answers.
    assert human_win_rate(project, comparison) is None
    batches = send_to_ranking(project, comparison)
    assert len(batches) == 3
    store = RankingStore(project)
    for uid in batches:
        batch = store.batch(uid)
        assert [r.generator["role"] for r in batch.responses] == [REFERENCE] * 2 + [POLICY] * 2
        assert store.latest_batch(batch.prompt_id).uid == uid  # the Rank page shows it next
    # One annotator prefers the policy everywhere, except a full tie on the last prompt.
    for uid in batches[:2]:
        by_role = {}
        for r in store.batch(uid).responses:
            by_role.setdefault(r.generator["role"], []).append(r.id)
        store.save_ranking(uid, "ana", [by_role[POLICY], by_role[REFERENCE]])
    last = store.batch(batches[2])
    store.save_ranking(batches[2], "ana", [[r.id for r in last.responses]])
    reloaded = Comparison.load(RunRecord(project, run_id).folder)
    assert reloaded.sent_batches == batches
    rate, pairs, labels = human_win_rate(project, reloaded)
    assert (pairs, labels) == (12, 3) and rate == pytest.approx((8 + 2) / 12)


def test_the_exported_policy_loads_in_plain_peft(trained, models, tiny_model_dir, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    project, run_id = trained
    artifact, path = RunRecord(project, run_id).artifact, project.path
    project.close()  # the command line opens the file itself
    out = tmp_path / "policy"
    assert main(["export", str(path), str(out), "--kind", "policy"]) == 0
    assert f"PPO run {run_id}" in capsys.readouterr().out
    assert not (out / "value_head.safetensors").exists() and json.loads((out / "policy.json").read_text())["run"] == run_id
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out)).eval()
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    models.load_adapter("ppo-check", artifact)
    models.peft.set_adapter("ppo-check")
    models.peft.eval()
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, models.peft(input_ids=ids).logits, atol=1e-5)
    assert main(["export", str(path), str(out), "--kind", "policy"]) == 1  # exists: refused
    assert main(["export", str(path), str(tmp_path / "x"), "--kind", "policy", "--run", "1"]) == 1
    assert "not a finished PPO or DPO run" in capsys.readouterr().err


def test_comparing_needs_held_out_prompts_and_a_finished_ppo_run(tmp_path, tiny_model_dir, models):
    project = synthetic_project(tmp_path / "p", tiny_model_dir, prompts=6)
    list(train_rm(project, models, RewardConfig(max_steps=2, **RM_FAST)))
    with pytest.raises(WorkbenchError, match="not a finished PPO or DPO run"):
        list(compare_policy(project, models, 1))
    logs = list(train_ppo(project, models, PpoConfig(max_steps=1, heldout_fraction=0.0, **PPO_FAST)))
    with pytest.raises(WorkbenchError, match="held out no prompts"):
        list(compare_policy(project, models, logs[-1].run_id))


def test_a_dpo_policy_against_its_reference_and_against_a_ppo_policy(tmp_path, tiny_model_dir, models):
    from workbench.train.dpo import DpoConfig, train_dpo

    project = synthetic_project(tmp_path / "p", tiny_model_dir, prompts=12)
    dpo = list(train_dpo(project, models, DpoConfig(max_steps=2, validation_fraction=0.75, max_new_tokens=8,
                                                    batch_size=4, grad_accum=1, warmup_steps=0)))[-1].run_id
    dpo_heldout = set(json.loads((RunRecord(project, dpo).folder / "heldout_prompts.json").read_text()))
    assert len(dpo_heldout) == 9

    # No reward model yet: the answers are compared and the KL measured, and people judge.
    *_, alone = compare_policy(project, models, dpo, answers_per_prompt=1)
    assert alone.policy == f"dpo-run-{dpo}" and alone.reference == "base" and not alone.scored
    assert {p.prompt_id for p in alone.pairs} == dpo_heldout and alone.pairs[0].policy_score is None
    assert "no reward model" in alone.summary()
    assert len(send_to_ranking(project, alone)) == 9

    # With a reward model, scored; and against a PPO policy on prompts neither trained on.
    list(train_rm(project, models, RewardConfig(max_steps=2, **RM_FAST)))
    ppo = list(train_ppo(project, models, PpoConfig(max_steps=1, heldout_fraction=0.5, **PPO_FAST)))[-1].run_id
    *_, scored = compare_policy(project, models, dpo, answers_per_prompt=1)
    assert scored.scored and scored.reward_model.startswith("rm-run-") and 0 <= scored.win_rate <= 1
    ppo_trained = set(json.loads((RunRecord(project, ppo).folder / "train_prompts.json").read_text()))
    *_, versus = compare_policy(project, models, dpo, answers_per_prompt=1, against=ppo)
    assert versus.reference == f"ppo-run-{ppo}" and versus.against_run == ppo
    assert {p.prompt_id for p in versus.pairs} == dpo_heldout - ppo_trained != set()
    folder = RunRecord(project, dpo).folder
    assert Comparison.load(folder, against_run=ppo).pairs == versus.pairs
    assert Comparison.load(folder).pairs == scored.pairs  # against the reference: kept apart

    # A baseline that trained on every prompt the run held out would be favoured: refused.
    (RunRecord(project, ppo).folder / "train_prompts.json").write_text(json.dumps(sorted(dpo_heldout)))
    with pytest.raises(WorkbenchError, match="was trained on by run"):
        list(compare_policy(project, models, dpo, against=ppo))
    with pytest.raises(WorkbenchError, match="another run"):
        list(compare_policy(project, models, dpo, against=dpo))
