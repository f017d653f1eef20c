"""Plain-words advice before a run: is there enough data, and is the reward model worth
optimising against? Shown beside Start on the Reward and PPO pages; never blocks a run."""

from __future__ import annotations

from workbench.project import Project
from workbench.train.reward_eval import RewardEvaluation

FEW_RANKED_PROMPTS = 30  # below this, held-out accuracy swings by tens of points
GOOD_ENOUGH_ACCURACY = 0.7  # a reward model right less often than this mostly teaches PPO its mistakes


def seconds_per_step(project: Project, kind: str) -> float | None:
    """The median measured seconds a training step took in this project's earlier runs of
    `kind` (the sum of a step's time/* metrics: one for SFT and reward models, the phases for
    PPO), None before the first."""
    rows = project.query("SELECT SUM(m.value) AS seconds FROM metrics m JOIN runs r ON r.id = m.run_id "
                         "WHERE r.kind = ? AND m.key LIKE 'time/%' GROUP BY m.run_id, m.step ORDER BY seconds",
                         (kind,))
    return rows[len(rows) // 2][0] if rows else None


def run_time_advice(project: Project, kind: str, steps: int) -> str:
    """"About 4 min (24 steps at 10 s a step, as measured here)", or "" with nothing to go on."""
    per_step = seconds_per_step(project, kind)
    if per_step is None or steps <= 0:
        return ""
    total = per_step * steps
    minutes = f"{total / 60:.0f} min" if total >= 90 else f"{total:.0f} s"
    return f"About {minutes} ({steps:,} steps at {per_step:.1f} s a step, as measured in earlier runs here)."


def reward_data_advice(project: Project, method: str = "reward model") -> str:
    """What to label before a reward-model (or DPO, `method`) run ("" when there is enough)."""
    ranked = project.query("SELECT COUNT(DISTINCT prompt_id) FROM rankings WHERE all_bad = 0")[0][0]
    if ranked >= FEW_RANKED_PROMPTS:
        return ""
    return (f"Only {ranked} prompts are ranked. A {method} validates on whole held-out prompts, so with "
            f"fewer than {FEW_RANKED_PROMPTS} its accuracy says little and it learns little beyond response "
            "length. Rank more on the Rank page; once a reward model exists, tick Least sure first to label "
            "where it is most unsure.")


def reward_verdict(evaluation: RewardEvaluation) -> str:
    """Can this reward model be trusted, in one sentence, from its held-out pairs."""
    if evaluation.ci_low <= 0.5:
        return (f"Not yet better than chance: with {evaluation.pairs} held-out pairs from {evaluation.prompts} "
                f"prompts the 95% interval reaches {evaluation.ci_low:.0%} (a prompt's pairs count together, as "
                "they share its replies). Too few ranked prompts, or rankings that disagree; rank more prompts "
                "before trusting or optimising it.")
    if evaluation.accuracy < GOOD_ENOUGH_ACCURACY:
        return (f"Better than chance but weak (under {GOOD_ENOUGH_ACCURACY:.0%}): PPO against it would learn its "
                "mistakes too. More ranked prompts usually help most.")
    return "Good enough to optimise against; watch the PPO page's Over-optimisation tab for when to stop."


def ppo_reward_advice(evaluation: RewardEvaluation | None) -> str:
    """A warning about the reward model PPO would optimise ("" when it looks sound)."""
    if evaluation is None:
        return "The newest reward model has no validation figures, so how good it is is unknown."
    warnings = []
    if evaluation.accuracy < GOOD_ENOUGH_ACCURACY:
        warnings.append(f"it ranks only {evaluation.accuracy:.0%} of held-out pairs right (95% interval "
                        f"{evaluation.ci_low:.0%}–{evaluation.ci_high:.0%}), so PPO will chase its mistakes")
    if evaluation.length_warning:
        warnings.append(f"its scores follow response length (r = {evaluation.length_correlation:+.2f}), so PPO "
                        "will learn to write longer rather than better; raise the length penalty or rank more "
                        "pairs where the shorter answer wins")
    if not warnings:
        return ""
    return "Weak reward model: " + "; ".join(warnings) + ". Label more and retrain it first."
