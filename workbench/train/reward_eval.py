"""How good is a reward model? Figures from its validation pairs (`evaluation.json`, written at
the end of training): pairwise accuracy with a 95% interval that allows for pairs of one prompt
agreeing with each other (below), accuracy per annotator, the
scores of chosen and rejected responses, how strongly the score follows response length (a
model that mostly rewards length is being gamed, not taught), and the pairs it gets most wrong.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

LENGTH_WARNING = 0.5  # |correlation| of score with length from which the page warns
BOOTSTRAP_RESAMPLES = 2000


@dataclass
class RewardEvaluation:
    pairs: int
    accuracy: float
    ci_low: float
    ci_high: float
    mean_margin: float
    prompts: int = 0  # held-out prompts the pairs come from
    per_annotator: dict[str, tuple[int, float]] = field(default_factory=dict)  # name -> (pairs, accuracy)
    chosen_scores: list[float] = field(default_factory=list)
    rejected_scores: list[float] = field(default_factory=list)
    length_correlation: float | None = None
    worst: list[dict] = field(default_factory=list)  # validation pairs, most wrong first

    @property
    def length_warning(self) -> bool:
        return self.length_correlation is not None and abs(self.length_correlation) >= LENGTH_WARNING


def wilson_interval(right: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% confidence interval of a proportion; sensible for small samples and 0% or 100%."""
    if total == 0:
        return 0.0, 1.0
    p = right / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def prompt_bootstrap_interval(right_and_total: list[tuple[int, int]], seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the accuracy when whole prompts, (right, total) each, are
    resampled. The pairs of one prompt share its replies, so they tend to be right or wrong
    together; treating them as independent (Wilson's interval) overstates what 24 prompts show."""
    if len(right_and_total) < 2:
        return 0.0, 1.0
    rng = random.Random(seed)
    rates = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        drawn = rng.choices(right_and_total, k=len(right_and_total))
        rates.append(sum(r for r, _ in drawn) / sum(n for _, n in drawn))
    rates.sort()
    return rates[int(0.025 * len(rates))], rates[min(len(rates) - 1, int(0.975 * len(rates)))]


def prompt_of(pair: dict):
    """The held-out prompt a scored pair comes from; its batch (one prompt's answers) in an
    evaluation.json written without prompt ids."""
    return pair.get("prompt_id", pair["batch"])


def accuracy_interval(scored: list[dict]) -> tuple[float, float]:
    """The wider of Wilson's interval over pairs and the prompt-resampling one: honest both with
    many pairs from few prompts and with few pairs."""
    by_prompt: dict = {}
    for s in scored:
        right, total = by_prompt.get(prompt_of(s), (0, 0))
        by_prompt[prompt_of(s)] = (right + (s["chosen_score"] > s["rejected_score"]), total + 1)
    low, high = wilson_interval(sum(r for r, _ in by_prompt.values()), len(scored))
    boot_low, boot_high = prompt_bootstrap_interval(list(by_prompt.values()))
    return min(low, boot_low), max(high, boot_high)


def pearson(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    if sx == 0 or sy == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sx * sy)


def evaluate(scored: list[dict], worst: int = 50) -> RewardEvaluation | None:
    """Figures from scored validation pairs (dicts with chosen/rejected texts and scores)."""
    if not scored:
        return None
    right = sum(s["chosen_score"] > s["rejected_score"] for s in scored)
    low, high = accuracy_interval(scored)
    per_annotator: dict[str, tuple[int, float]] = {}
    for name in sorted({s["annotator"] for s in scored}):
        mine = [s for s in scored if s["annotator"] == name]
        per_annotator[name] = (len(mine), sum(s["chosen_score"] > s["rejected_score"] for s in mine) / len(mine))
    # Each distinct response once: a response in several pairs would count several times.
    responses = {(s["batch"], side, s[side]): s[f"{side}_score"] for s in scored for side in ("chosen", "rejected")}
    lengths = [len(text) for (_, _, text) in responses]
    return RewardEvaluation(
        pairs=len(scored), accuracy=right / len(scored), ci_low=low, ci_high=high,
        mean_margin=sum(s["chosen_score"] - s["rejected_score"] for s in scored) / len(scored),
        prompts=len({prompt_of(s) for s in scored}),
        per_annotator=per_annotator,
        chosen_scores=[s["chosen_score"] for s in scored], rejected_scores=[s["rejected_score"] for s in scored],
        length_correlation=pearson([float(n) for n in lengths], list(responses.values())),
        worst=sorted(scored, key=lambda s: s["chosen_score"] - s["rejected_score"])[:worst])


def evaluate_run(run_folder: Path) -> RewardEvaluation | None:
    """The evaluation of a finished reward-model run, or None when it has none (no validation)."""
    path = Path(run_folder) / "evaluation.json"
    try:
        scored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return evaluate(scored)
