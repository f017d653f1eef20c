"""DPO, IPO and SimPO on a tiny model: each loss against its published formula computed by hand,
the reference log-probs against a frozen copy of the model, learning a rule-based preference on
held-out prompts, resume as if never stopped, bad settings and data, the command line."""

import json
import math

import pytest
import torch

from tests.core.test_reward import KIND, RUDE, synthetic_project
from workbench.cli import main
from workbench.models import chat_format
from workbench.project import Project
from workbench.train.dpo import REFERENCE_FILE, DpoConfig, train_dpo
from workbench.train.dpo_loss import PairLogprobs, preference_loss
from workbench.train.reward_data import run_pairs
from workbench.train.runs import RunControl, RunRecord, TrainingError, finished_adapters

FAST = dict(learning_rate=2e-3, warmup_steps=0, batch_size=8, grad_accum=1, eval_every=5, checkpoint_every=5,
            validation_fraction=0.25, schedule="constant")


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# Two pairs: policy and reference log-probs of chosen and rejected replies, and reply lengths.
PC, PR, RC, RR = [-10.0, -4.0], [-12.0, -3.0], [-11.0, -4.5], [-11.5, -3.5]
NC, NR = [5.0, 2.0], [6.0, 3.0]


def logprobs(with_reference: bool = True) -> PairLogprobs:
    t = lambda values: torch.tensor(values, dtype=torch.float64)  # noqa: E731
    return PairLogprobs(t(PC), t(PR), t(RC) if with_reference else None, t(RR) if with_reference else None,
                        t(NC), t(NR))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_dpo_sigmoid_loss_is_the_published_formula(smoothing):
    beta = 0.1
    losses, chosen, rejected = preference_loss(logprobs(), "sigmoid", beta, smoothing)
    for i in range(2):
        h = (PC[i] - RC[i]) - (PR[i] - RR[i])
        expected = -(1 - smoothing) * math.log(sigmoid(beta * h)) - smoothing * math.log(sigmoid(-beta * h))
        assert losses[i].item() == pytest.approx(expected, rel=1e-12)
        assert chosen[i].item() == pytest.approx(beta * (PC[i] - RC[i]))
        assert rejected[i].item() == pytest.approx(beta * (PR[i] - RR[i]))


def test_ipo_loss_is_the_published_formula_on_per_token_log_ratios():
    beta = 0.5
    losses, chosen, _ = preference_loss(logprobs(), "ipo", beta)
    for i in range(2):
        h = (PC[i] - RC[i]) / NC[i] - (PR[i] - RR[i]) / NR[i]
        assert losses[i].item() == pytest.approx((h - 1 / (2 * beta)) ** 2, rel=1e-12)
        assert chosen[i].item() == pytest.approx(beta * (PC[i] - RC[i]) / NC[i])


def test_simpo_loss_is_the_published_formula_and_needs_no_reference():
    beta, gamma = 2.0, 0.5
    losses, chosen, rejected = preference_loss(logprobs(with_reference=False), "simpo", beta, 0.0, gamma)
    for i in range(2):
        expected = -math.log(sigmoid(beta * PC[i] / NC[i] - beta * PR[i] / NR[i] - gamma))
        assert losses[i].item() == pytest.approx(expected, rel=1e-12)
        assert chosen[i].item() == pytest.approx(beta * PC[i] / NC[i])
        assert rejected[i].item() == pytest.approx(beta * PR[i] / NR[i])


def frozen_logprob(model, tokenizer, messages, reply) -> float:
    """log p(reply | prompt) from a plain forward pass of an untouched model, over the tokens
    that follow the prompt rendered ready for the reply."""
    prompt = chat_format.prompt_ids(tokenizer, messages)
    ids = chat_format.conversation_ids(tokenizer, messages, reply)
    assert ids[:len(prompt)] == prompt
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)
    return float(logp[len(prompt) - 1:].sum())


def test_reference_logprobs_equal_a_frozen_models_and_the_policy_starts_there(tmp_path, tiny_model_dir, models):
    from transformers import AutoModelForCausalLM

    project = synthetic_project(tmp_path / "p", tiny_model_dir, prompts=8)
    logs = list(train_dpo(project, models, DpoConfig(max_steps=1, **{**FAST, "validation_fraction": 0.25})))
    record = RunRecord(project, logs[-1].run_id)
    assert logs[-1].status == "finished"
    saved = json.loads((record.folder / REFERENCE_FILE).read_text())
    train, validation = run_pairs(project, record.folder, models.tokenizer, None, 512, 0.25, 0)
    frozen = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()  # a second copy, for the test only
    for split, pairs in (("train", train), ("validation", validation)):
        assert len(saved[split]) == len(pairs)
        for pair, (chosen, rejected) in list(zip(pairs, saved[split]))[:4]:
            assert chosen == pytest.approx(frozen_logprob(frozen, models.tokenizer, pair.messages, pair.chosen), abs=1e-4)
            assert rejected == pytest.approx(frozen_logprob(frozen, models.tokenizer, pair.messages, pair.rejected),
                                             abs=1e-4)
    # A fresh LoRA adapter is the base: at the first step the policy's log-probs are the reference's.
    metrics = record.metrics()
    first_batch_mean = metrics["logps/chosen"][1][0]
    assert min(c for c, _ in saved["train"]) <= first_batch_mean <= max(c for c, _ in saved["train"])
    assert metrics["rewards/margins"][1][0] == pytest.approx(0.0, abs=1e-5)
    project.close()


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "simpo"])
def test_a_short_run_learns_the_preference_on_held_out_prompts(tmp_path, tiny_model_dir, models, loss_type):
    project = synthetic_project(tmp_path / "p", tiny_model_dir)
    beta = {"sigmoid": 0.1, "ipo": 0.1, "simpo": 2.0}[loss_type]
    logs = list(train_dpo(project, models, DpoConfig(max_steps=30, loss_type=loss_type, beta=beta, **FAST)))
    assert logs[-1].status == "finished"
    metrics = RunRecord(project, logs[-1].run_id).metrics()
    steps, accuracy = metrics["eval/rewards/accuracies"]
    margins = metrics["eval/rewards/margins"][1]
    assert steps == [5, 10, 15, 20, 25, 30]
    assert accuracy[-1] >= 0.9 and accuracy[-1] > accuracy[0] - 1e-9  # prompts it never trained on
    assert margins[-1] > margins[0] > (0 if loss_type != "simpo" else -1e9)
    train_margins = metrics["rewards/margins"][1]
    assert sum(train_margins[-5:]) / 5 > sum(train_margins[:5]) / 5
    [(run_id, folder)] = finished_adapters(project, "dpo")
    assert (folder / "adapter_config.json").is_file()
    assert (folder.parent / "evaluation.json").is_file() and (folder.parent / "heldout_prompts.json").is_file()
    project.close()


def test_the_policy_prefers_the_kind_reply_after_training(tmp_path, tiny_model_dir, models):
    """What DPO is for: the policy itself, not only its validation statistics, moves towards the
    preferred kind of reply relative to the reference."""
    project = synthetic_project(tmp_path / "p", tiny_model_dir)
    logs = list(train_dpo(project, models, DpoConfig(max_steps=30, **FAST)))
    run_id = logs[-1].run_id
    messages = [{"role": "user", "content": "Where is my parcel?"}]
    from workbench.train.ppo_eval import sequence_logprob

    with models.hold("checking"):
        models.load_adapter(f"dpo-run-{run_id}", RunRecord(project, run_id).artifact)
        ratio = lambda text: (sequence_logprob(models, f"dpo-run-{run_id}", messages, text, 1.0)  # noqa: E731
                              - sequence_logprob(models, None, messages, text, 1.0))
        assert ratio(KIND[1]) > ratio(RUDE[1])
    project.close()


def test_stop_and_resume_continue_as_if_never_stopped(tmp_path, tiny_model_dir, models):
    config = DpoConfig(max_steps=8, **{**FAST, "checkpoint_every": 100})
    project = synthetic_project(tmp_path / "p", tiny_model_dir, prompts=12)
    list(train_dpo(project, models, config))
    expected = RunRecord(project, 1).metrics()

    control, first = RunControl(), []
    for log in train_dpo(project, models, config, control):  # the same pairs and split: the same project
        first.append(log)
        if log.step == 3 and log.metrics:
            control.stop()
    assert any(log.message.startswith("Reference log-probs of") for log in first)
    record = RunRecord(project, log.run_id)
    assert record.status == "stopped" and record.last_checkpoint()[0] == 3
    resumed = list(train_dpo(project, models, resume_run_id=record.id))
    assert resumed[-1].status == "finished" and resumed[-1].step == 8
    assert not any(log.message.startswith("Reference log-probs") for log in resumed)  # kept, not recomputed
    got = RunRecord(project, record.id).metrics()
    for key in ("loss/train", "rewards/margins", "logps/chosen", "eval/rewards/accuracies", "loss/validation"):
        assert got[key][0] == expected[key][0]
        assert got[key][1] == pytest.approx(expected[key][1], rel=1e-4, abs=1e-6), key
    project.close()


def test_bad_settings_and_no_pairs_are_clear_errors(tmp_path, models):
    for bad in (dict(loss_type="kto"), dict(beta=0), dict(label_smoothing=0.5), dict(simpo_gamma=-1)):
        with pytest.raises(ValueError):
            DpoConfig(**bad)
    project = Project.create(tmp_path / "empty")
    with pytest.raises(TrainingError, match="no preference pairs"):
        list(train_dpo(project, models))
    assert RunRecord(project, 1).status == "failed"
    with pytest.raises(TrainingError, match="No finished SFT adapter named sft-run-9"):
        list(train_dpo(synthetic_project(tmp_path / "p", models.spec.location, prompts=6), models,
                       DpoConfig(init_adapter="sft-run-9")))
    project.close()


def test_a_non_finite_loss_stops_with_a_message(tmp_path, tiny_model_dir, models, monkeypatch):
    import workbench.train.dpo as dpo

    project = synthetic_project(tmp_path / "p", tiny_model_dir, prompts=8)
    real = dpo.preference_loss
    monkeypatch.setattr(dpo, "preference_loss", lambda *a, **k: (real(*a, **k)[0] * float("nan"),
                                                                  *real(*a, **k)[1:]))
    with pytest.raises(TrainingError, match="DPO loss became nan at step 1"):
        list(train_dpo(project, models, DpoConfig(max_steps=3, **FAST)))
    assert RunRecord(project, 1).status == "failed"
    assert models.peft is None or "dpo-run-1" not in models.peft.peft_config  # the base is left clean
    project.close()


def test_cli_trains_and_exports_a_dpo_policy(tmp_path, tiny_model_dir, capsys):
    project = synthetic_project(tmp_path / "p", tiny_model_dir, prompts=8)
    path = project.path
    project.close()
    assert main(["train", "dpo", str(path), "--max-steps", "3", "--set", "loss_type=ipo"]) == 0
    out = capsys.readouterr().out
    assert "step 3/3" in out and "rewards/margins" in out
    assert main(["export", str(path), str(tmp_path / "policy"), "--kind", "policy", "--run", "1"]) == 0
    assert "DPO run 1" in capsys.readouterr().out
    assert (tmp_path / "policy" / "adapter_config.json").is_file() and (tmp_path / "policy" / "policy.json").is_file()
    assert main(["train", "dpo", str(path), "--set", "loss_type=nope"]) == 1
    assert "loss_type must be one of" in capsys.readouterr().err
