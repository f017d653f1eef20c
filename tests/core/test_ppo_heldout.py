"""The over-optimisation view's figures: the policy on held-out prompts and held-out human
pairs before the first step, every eval_every steps and at the end, without changing training."""

import json
import math

import pytest

from workbench.train.ppo import PpoConfig, train_ppo
from workbench.train.ppo_heldout import curve, validation_pairs
from workbench.train.reward import RewardConfig, train_rm
from workbench.train.runs import RunRecord

from .test_ppo import FAST, letter_o, models, peaked_model_dir, project  # noqa: F401 - fixtures
from .test_reward import synthetic_project


def test_a_run_records_the_curve_from_the_reference_on(tmp_path, tiny_model_dir, models):  # noqa: F811
    project = synthetic_project(tmp_path / "p", tiny_model_dir, prompts=12)
    list(train_rm(project, models, RewardConfig(max_steps=2, validation_fraction=0.3, batch_size=4)))
    config = PpoConfig(max_steps=4, eval_every=2, heldout_fraction=0.3, **{**FAST, "batch_size": 4})
    logs = list(train_ppo(project, models, config))
    record = RunRecord(project, logs[-1].run_id)
    metrics = record.metrics()
    assert metrics["heldout/score"][0] == [0, 2, 4] and metrics["heldout/pair_accuracy"][0] == [0, 2, 4]
    assert metrics["heldout/pair_accuracy"][1][0] == 0.5  # the reference ties itself on every pair
    assert all(0.0 <= a <= 1.0 for a in metrics["heldout/pair_accuracy"][1])
    for kl, root in zip(metrics["heldout/kl"][1], metrics["heldout/sqrt_kl"][1]):
        assert root == pytest.approx(math.sqrt(max(kl, 0.0)))
    assert abs(metrics["heldout/kl"][1][0]) < 1e-4  # step 0 is the reference itself
    assert "heldout/score" in logs[-2].metrics  # the last step's figures reach the live plots too
    shape = curve(record)
    assert [p.step for p in shape.points] == [0, 2, 4] and shape.stop_step in (0, 2, 4)
    project.close()


def test_evaluating_never_changes_what_the_run_trains_on(project, models):  # noqa: F811
    runs = []
    for every in (1, 1000):
        config = PpoConfig(max_steps=3, eval_every=every, heldout_fraction=0.3, **FAST)
        logs = list(train_ppo(project, models, config, reward_fn=letter_o))
        runs.append(RunRecord(project, logs[-1].run_id).metrics())
    assert runs[0]["objective/score"] == runs[1]["objective/score"]
    assert runs[0]["heldout/score"][0] == [0, 1, 2, 3] and runs[1]["heldout/score"][0] == [0, 3]
    assert "heldout/pair_accuracy" not in runs[0]  # a Python reward has no human pairs


def test_the_stop_step_is_the_best_pair_accuracy_then_score(project):  # noqa: F811
    record = RunRecord.create(project, "ppo", PpoConfig().to_dict())
    for step, (score, kl, accuracy) in enumerate([(0.1, 0.0, 0.5), (0.5, 1.0, 0.7), (0.9, 4.0, 0.7),
                                                  (2.0, 16.0, 0.55)]):
        record.add_metrics(step * 10, {"heldout/score": score, "heldout/kl": kl, "heldout/sqrt_kl": math.sqrt(kl),
                                       "heldout/pair_accuracy": accuracy})
    shape = curve(record)
    assert [p.sqrt_kl for p in shape.points] == [0.0, 1.0, 2.0, 4.0]
    assert shape.stop_step == 20 and shape.stop_point().score == 0.9  # tied on accuracy: the higher score
    assert curve(RunRecord.create(project, "ppo", PpoConfig().to_dict())) is None  # no evaluations yet


def test_damaged_pair_lines_are_skipped(tmp_path):
    run = tmp_path / "run-0001"
    (run / "adapter").mkdir(parents=True)
    good = {"split": "validation", "messages": [{"role": "user", "content": "Hi"}], "chosen": "a", "rejected": "b"}
    lines = [json.dumps(good), "{not json", json.dumps({**good, "split": "train"}), json.dumps([1, 2]),
             json.dumps({**good, "chosen": 3}), json.dumps({**good, "chosen": "c"})]
    (run / "pairs.jsonl").write_text("\n".join(lines), encoding="utf-8")
    assert [p["chosen"] for p in validation_pairs(run / "adapter")] == ["a", "c"]
    assert validation_pairs(None) == [] and validation_pairs(tmp_path / "missing" / "adapter") == []
