"""How good is a reward model? Figures from its validation pairs (`evaluation.json`, written at
the end of training): pairwise accuracy with a 95% Wilson interval, accuracy per annotator, the
scores of chosen and rejected responses, how strongly the score follows response length (a
model that mostly rewards length is being gamed, not taught), and the pairs it gets most wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

LENGTH_WARNING = 0.5  # |correlation| of score with length from which the page warns


@dataclass
class RewardEvaluation:
    pairs: int
    accuracy: float
    ci_low: float
    ci_high: float
    mean_margin: float
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
    low, high = wilson_interval(right, len(scored))
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
