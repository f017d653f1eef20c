"""Over-optimisation, measured as the run goes: the policy on data it never trains on.

Gao et al. (2022) showed that as a policy moves away from its reference (√KL), the reward
model's score keeps rising while the true quality rises, peaks and falls: past the peak the
policy exploits the reward model. Here the truth is the team's own labels. Before the first
step, every `eval_every` steps and after the last, `evaluate` records:

- `heldout/score`: the reward model's mean score of the policy's answers to the run's held-out
  prompts (one answer each, at most MAX_PROMPTS of them, sampled as in the rollouts);
- `heldout/kl` and `heldout/sqrt_kl`: the KL of those answers from the reference, in nats;
- `heldout/pair_accuracy`: on the reward model's validation pairs (human rankings of prompts
  it never trained on; at most MAX_PAIRS), how often the policy raised the chosen answer's
  log-likelihood over the reference more than the rejected one's (DPO's implicit reward
  log π/π_ref, ties half). A policy that still agrees with the people rises or holds; one that
  games the reward model drifts towards 50% or below while its score climbs.

`curve(record)` reads these back for the PPO page, with the step to stop at: the best
pair accuracy (then the higher score, then the lower KL).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from workbench.data.prompts import PromptStore
from workbench.train.runs import RunRecord

MAX_PROMPTS, MAX_PAIRS = 16, 32
KEYS = ("heldout/score", "heldout/kl", "heldout/sqrt_kl", "heldout/pair_accuracy")


def validation_pairs(reward_folder: Path | None, limit: int = MAX_PAIRS) -> list[dict]:
    """The reward-model run's held-out pairs (its `pairs.jsonl`, split "validation"), in order."""
    if reward_folder is None:
        return []
    path = Path(reward_folder).parent / "pairs.jsonl"  # the run folder holds adapter/ and pairs.jsonl
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    pairs = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a damaged line of a shared project is skipped, like damaged samples
        if isinstance(row, dict) and row.get("split") == "validation" and isinstance(row.get("messages"), list) \
                and isinstance(row.get("chosen"), str) and isinstance(row.get("rejected"), str):
            pairs.append(row)
    return pairs[:limit]


def evaluate(trainer, value_head, heldout_ids: list[int], pairs: list[dict], step: int, seed: int,
             device) -> dict[str, float]:
    """The held-out figures of the policy as it is now (see the module docstring). Its sampling
    has a generator of its own (from `seed` and `step`): evaluating never changes what the run
    trains on, so a run with evaluations trains exactly like one without."""
    import torch

    from workbench.train import ops
    from workbench.train.ppo_eval import sequence_logprob

    store = PromptStore(trainer.project)
    prompts = [store.messages(i) for i in heldout_ids[:MAX_PROMPTS] if store.row(i) is not None]
    if not prompts:
        return {}
    models, name, reference = trainer.models, trainer.name, trainer.reference
    metrics: dict[str, float] = {}
    cuda = [device] if getattr(device, "type", str(device)) == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed * 7_919 + step)
        rollout = trainer.generate(prompts, device)
        logprobs, _, _ = trainer.forward(rollout, value_head, name)
        ref_logprobs, _, _ = trainer.forward(rollout, value_head, reference)
        kl = float(ops.kl_estimate(logprobs, ref_logprobs, "k1", rollout.response_mask).sum(1).mean())
        metrics["heldout/score"] = sum(trainer.score(rollout)) / len(prompts)
        metrics["heldout/kl"] = kl
        metrics["heldout/sqrt_kl"] = math.sqrt(max(kl, 0.0))
        if pairs:
            if step == 0:  # the policy is its reference: every implicit reward is 0, a tie
                metrics["heldout/pair_accuracy"] = 0.5
            else:
                right = 0.0
                for pair in pairs:
                    margin = 0.0
                    for text, sign in ((pair["chosen"], 1.0), (pair["rejected"], -1.0)):
                        margin += sign * (sequence_logprob(models, name, pair["messages"], text, 1.0)
                                          - sequence_logprob(models, reference, pair["messages"], text, 1.0))
                    right += 1.0 if margin > 0 else 0.5 if margin == 0 else 0.0
                metrics["heldout/pair_accuracy"] = right / len(pairs)
    models.peft.set_adapter(name)
    return metrics


@dataclass
class CurvePoint:
    step: int
    sqrt_kl: float
    score: float
    pair_accuracy: float | None


@dataclass
class Curve:
    points: list[CurvePoint]
    stop_step: int | None  # the evaluated step to stop at, None without pair accuracies

    def stop_point(self) -> CurvePoint | None:
        return next((p for p in self.points if p.step == self.stop_step), None)


def curve(record: RunRecord) -> Curve | None:
    """The run's held-out evaluations, in step order; None when it made none."""
    metrics = record.metrics()
    if "heldout/score" not in metrics:
        return None
    by_step = {key: dict(zip(*metrics[key])) for key in KEYS if key in metrics}
    points = [CurvePoint(step, by_step.get("heldout/sqrt_kl", {}).get(step, 0.0), score,
                         by_step.get("heldout/pair_accuracy", {}).get(step))
              for step, score in sorted(by_step["heldout/score"].items())]
    rated = [p for p in points if p.pair_accuracy is not None]
    best = max(rated, key=lambda p: (round(p.pair_accuracy, 6), p.score, -p.sqrt_kl)) if rated else None
    return Curve(points, best.step if best else None)
