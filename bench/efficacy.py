"""Does the loop work? The whole RLHF loop, headless, judged by a rule it never sees.

    .venv/bin/python bench/efficacy.py [--work DIR] [--ppo-steps 8] [--from rank|rm|ppo] [--set-rm K=V] [--set-ppo K=V]

On the demo model, through the same command line a user has:

1. a new project with the 48 customer-support prompts of bench/data/support_prompts.json;
2. `workbench generate` (4 answers per prompt, the Rank page's defaults);
3. `workbench export --kind pack`, ranked by a scripted teammate (`Rule` below), and
   `workbench import --kind pack`, exactly as a teammate's labels come back;
4. `workbench train rm` with default settings except the split: half the prompts are held out,
   so the reward model learns from 24 ranked prompts and is measured on 24 others;
5. `workbench train ppo` for --ppo-steps steps with PPO_SETTINGS (below: RLOO, 16 answers a
   step, 64 new tokens; everything else is the default), then the policy and its reference
   answer the PPO run's held-out prompts (4 answers each), and the rule scores both.

The teammate's rule (fixed, documented, never shown to the models): a reply scores 2 if it
apologises for or acknowledges the trouble (sorry, apologise, inconvenience, frustrating), plus 1
if it offers or asks a concrete next step (please send/check/contact..., I will arrange...,
your order number, customer service). Equal scores are ranked as ties, which give no pairs.
`--rule broad-with-topic` is the looser rule of earlier runs, to compare (see RULES).

Prints the reward model's held-out pairwise accuracy with its 95% interval, the rule's mean
score of policy and reference answers, the policy's win rate under the rule (ties half), the
KL from the reference, and whether each goal of issue 16 holds: accuracy >= 75%, win rate
>= 65% at a KL under the run's target. --work keeps the project, so `--from rm` or `--from ppo`
reruns the later stages with other settings (--set-rm/--set-ppo, repeatable).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench import cli  # noqa: E402
from workbench.config import ModelSpec  # noqa: E402
from workbench.data.prompts import PromptStore  # noqa: E402
from workbench.project import Project  # noqa: E402

PROMPTS = Path(__file__).parent / "data" / "support_prompts.json"
TEAMMATE = "rule-teammate"
# The rule's parts, as a person reading the reply would mean them: words that apologise for or
# acknowledge the trouble, and a concrete action offered to or asked of the customer.
APOLOGY = re.compile(r"\b(sorry|apologi[sz]e\w*|apolog(y|ies)|inconvenien\w*|frustrat\w*)\b", re.I)
NEXT_STEP = re.compile(
    r"\b(please (contact|reach|send|check|reply|provide|share|call|email|visit|let)|"
    r"i('ll| will) (send|check|arrange|refund|look|contact|escalate|forward)|next step|contact (us|our)|"
    r"reply with|your order number|customer (service|support)|step \d)", re.I)
# The rule of earlier runs (--rule broad-with-topic), kept to compare: its apology also matched
# "understand" and "unfortunately" in any sense, its next step any "you can", and it added an
# on-topic part (a shared word of five or more letters with the prompt).
BROAD_APOLOGY = re.compile(r"\b(sorry|apolog\w*|unfortunate\w*|frustrat\w*|inconvenien\w*|understand)\b", re.I)
BROAD_NEXT_STEP = re.compile(NEXT_STEP.pattern[:-1] + r"|you can|you could|first,)", re.I)
PARTS = ("apology", "next step", "on topic")
# The online run's settings, where they differ from the defaults (--set-ppo overrides them),
# for 8 steps (--ppo-steps). Measured on the same reward model (runs of 2026-12-07):
# - RLOO, four answers to each of four prompts a step: the leave-one-out baseline compares
#   answers to the same prompt, so a step tells an apology from its absence under equal
#   conditions, with no value head to learn first from a few hundred samples;
# - 64 new tokens: the apology and the next step come in the first sentences, and a step costs
#   about a third of one with 160; no missing-EOS penalty then, since most answers are cut short
#   and the penalty rewards stopping early (GAE at 64 tokens with it: 64- against 245-character
#   answers, win rate 48%);
# - learning rate 2e-4 and a KL coefficient of 0.2 for 8 steps: win rate 82% at KL 5.5. The same
#   for 24 steps: 93% at KL 10.5 (over the target of 6); with 3e-4 and 0.05: 88% at KL 21.9.
PPO_SETTINGS = ("advantage=rloo", "group_size=4", "batch_size=16", "max_new_tokens=64", "missing_eos_penalty=0",
                "learning_rate=2e-4", "kl_coef=0.2")


@dataclass(frozen=True)
class Rule:
    """The scripted teammate: a reply's score is the sum of the weights of the parts it has."""

    apology: re.Pattern
    next_step: re.Pattern
    weights: tuple[float, float, float]  # apology, next step, on topic

    def parts(self, prompt: str, reply: str) -> tuple[bool, bool, bool]:
        topic = set(re.findall(r"[a-z]{5,}", prompt.lower()))
        on_topic = bool(topic & set(re.findall(r"[a-z]{5,}", reply.lower())))
        return bool(self.apology.search(reply)), bool(self.next_step.search(reply)), on_topic

    def score(self, prompt: str, reply: str) -> float:
        return sum(weight * has for weight, has in zip(self.weights, self.parts(prompt, reply)))

    def deciding_part(self, prompt: str, chosen: str, rejected: str) -> str:
        """The heaviest part on which a pair's two replies differ: what a reward model has to
        see to rank that pair as the teammate did."""
        for name, weight, a, b in zip(PARTS, self.weights, self.parts(prompt, chosen), self.parts(prompt, rejected)):
            if weight and a != b:
                return name
        return "none"


RULES = {
    "apology-next-step": Rule(APOLOGY, NEXT_STEP, (2.0, 1.0, 0.0)),
    "broad-with-topic": Rule(BROAD_APOLOGY, BROAD_NEXT_STEP, (2.0, 1.0, 0.5)),
}


def rank_pack(path: Path, rule: Rule) -> tuple[int, int]:
    """Add the teammate's ranking to every batch of an exported pack; (batches, tie groups)."""
    pack = json.loads(path.read_text(encoding="utf-8"))
    now, batches, ties = time.time(), 0, 0
    for prompt in pack["prompts"]:
        text = prompt["messages"][-1]["content"]
        for batch in prompt["batches"]:
            scored = {}
            for response in batch["responses"]:
                scored.setdefault(rule.score(text, response["text"]), []).append(response["uid"])
            groups = [scored[s] for s in sorted(scored, reverse=True)]
            ties += sum(len(g) > 1 for g in groups)
            batch["rankings"] = [{"annotator": TEAMMATE, "groups": groups,
                                  "shown_order": [r["uid"] for r in batch["responses"]], "all_bad": False,
                                  "seconds_spent": 10.0, "created_at": now, "updated_at": now}]
            batches += 1
    pack["labels"] = True
    path.write_text(json.dumps(pack, ensure_ascii=False), encoding="utf-8")
    return batches, ties


def workbench(*argv: str) -> None:
    """One command of the user's command line, in this process; stops the bench if it fails."""
    print("$ workbench " + " ".join(argv), flush=True)
    started = time.monotonic()
    code = cli.main(list(argv))
    if code != 0:
        sys.exit(f"workbench {argv[0]} failed with exit status {code}")
    print(f"  ({time.monotonic() - started:.0f} s)", flush=True)


def newest_run(project_path: Path, kind: str) -> int:
    project = Project.open(project_path)
    try:
        rows = project.query("SELECT id FROM runs WHERE kind = ? AND status = 'finished' ORDER BY id DESC", (kind,))
    finally:
        project.close()
    if not rows:
        sys.exit(f"no finished {kind} run")
    return rows[0][0]


def reward_figures(project_path: Path, run_id: int, rule: Rule) -> dict:
    from workbench.train.reward_eval import evaluate
    from workbench.train.runs import RunRecord

    project = Project.open(project_path)
    try:
        scored = json.loads((RunRecord(project, run_id).folder / "evaluation.json").read_text(encoding="utf-8"))
    finally:
        project.close()
    evaluation = evaluate(scored)
    if evaluation is None:
        sys.exit("the reward model has no validation pairs")
    by_part: dict[str, list[bool]] = {}
    for pair in scored:
        part = rule.deciding_part(pair["prompt"], pair["chosen"], pair["rejected"])
        by_part.setdefault(part, []).append(pair["chosen_score"] > pair["rejected_score"])
    return {"pairs": evaluation.pairs, "accuracy": evaluation.accuracy, "ci": (evaluation.ci_low, evaluation.ci_high),
            "length_correlation": evaluation.length_correlation,
            "by_part": {part: (len(right), sum(right) / len(right)) for part, right in by_part.items()}}


def policy_figures(project_path: Path, run_id: int, answers: int, rule: Rule) -> dict:
    """The run's held-out comparison, scored by the rule."""
    from workbench.models.loading import ModelSession
    from workbench.train.ppo import PpoConfig
    from workbench.train.ppo_eval import Comparison, compare_policy
    from workbench.train.ppo_heldout import curve
    from workbench.train.reward_eval import wilson_interval
    from workbench.train.runs import RunRecord

    project = Project.open(project_path)
    try:
        models = ModelSession()
        for _ in models.load(project.base_model):
            pass
        comparison = None
        for event in compare_policy(project, models, run_id, answers_per_prompt=answers):
            if isinstance(event, Comparison):
                comparison = event
        record = RunRecord(project, run_id)
        target = PpoConfig.from_dict(record.config).kl_target
        shape = curve(record)
    finally:
        project.close()
    policy = [rule.score(p.prompt, p.policy) for p in comparison.pairs]
    reference = [rule.score(p.prompt, p.reference) for p in comparison.pairs]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(policy, reference))
    n = len(policy)
    return {"pairs": n, "prompts": len({p.prompt_id for p in comparison.pairs}),
            "policy_rule": statistics.mean(policy), "reference_rule": statistics.mean(reference),
            "win_rate": wins / n, "ci": wilson_interval(round(wins), n), "kl": comparison.mean_kl,
            "training_kl": comparison.training_kl, "kl_target": target,
            "rm_win_rate": comparison.win_rate, "curve": shape,
            "policy_length": statistics.mean(len(p.policy) for p in comparison.pairs),
            "reference_length": statistics.mean(len(p.reference) for p in comparison.pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep the project here (default: a temporary folder)")
    parser.add_argument("--from", dest="start", choices=["generate", "rank", "rm", "ppo"], default="generate")
    parser.add_argument("--ppo-steps", type=int, default=8)
    parser.add_argument("--answers", type=int, default=4, help="answers per held-out prompt and side")
    parser.add_argument("--set-rm", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--set-ppo", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--rule", choices=list(RULES), default="apology-next-step",
                        help="the teammate's rule (see above); the same rule ranks and judges")
    parser.add_argument("--skip-ppo", action="store_true", help="stop after the reward model")
    args = parser.parse_args()

    rule = RULES[args.rule]
    work = args.work or Path(tempfile.mkdtemp(prefix="efficacy-"))
    work.mkdir(parents=True, exist_ok=True)
    project_path, pack = work / "efficacy.rlhf", work / "to-rank.rlhfpack"
    started = time.monotonic()
    stages = ["generate", "rank", "rm", "ppo"][["generate", "rank", "rm", "ppo"].index(args.start):]

    if "generate" in stages:
        if project_path.exists():
            sys.exit(f"{project_path} exists; use --from rank|rm|ppo to reuse it, or another --work")
        project = Project.create(project_path, name="Efficacy bench")
        project.set_base_model(ModelSpec(kind="demo"))
        texts = json.loads(PROMPTS.read_text(encoding="utf-8"))["prompts"]
        PromptStore(project).add_many(({"messages": t, "tags": []} for t in texts), source="efficacy bench")
        project.close()
        workbench("generate", str(project_path), "--k", "4", "--set", "seed=1")
    if "rank" in stages:
        workbench("export", str(project_path), str(pack), "--kind", "pack")
        batches, ties = rank_pack(pack, rule)
        print(f"  {TEAMMATE} ranked {batches} batches ({ties} tie groups)")
        workbench("import", str(project_path), str(pack), "--kind", "pack")
    if "rm" in stages:
        workbench("train", "rm", str(project_path), "--set", "validation_fraction=0.5", *sum(
            (["--set", s] for s in args.set_rm), []))
    rm_run = newest_run(project_path, "rm")
    reward = reward_figures(project_path, rm_run, rule)
    low, high = reward["ci"]
    print(f"\nreward model (run {rm_run}): held-out accuracy {reward['accuracy']:.1%} "
          f"(95% CI {low:.0%}-{high:.0%}) on {reward['pairs']} pairs; score-length correlation "
          f"{reward['length_correlation'] if reward['length_correlation'] is None else round(reward['length_correlation'], 2)}")
    for part, (n, accuracy) in sorted(reward["by_part"].items(), key=lambda item: -item[1][0]):
        print(f"  pairs decided by {part!r}: {n}, held-out accuracy {accuracy:.0%}")
    goals = {"reward-model accuracy >= 75%": reward["accuracy"] >= 0.75}
    if not args.skip_ppo:
        if "ppo" in stages or "rm" in stages:
            workbench("train", "ppo", str(project_path), "--max-steps", str(args.ppo_steps),
                      "--set", "heldout_fraction=0.25",
                      *sum((["--set", s] for s in (*PPO_SETTINGS, *args.set_ppo)), []))
        ppo_run = newest_run(project_path, "ppo")
        policy = policy_figures(project_path, ppo_run, args.answers, rule)
        low, high = policy["ci"]
        print(f"policy (run {ppo_run}) vs reference on {policy['pairs']} answers to {policy['prompts']} held-out "
              f"prompts: rule score {policy['policy_rule']:.2f} vs {policy['reference_rule']:.2f}; win rate "
              f"{policy['win_rate']:.0%} (95% CI {low:.0%}-{high:.0%}); reward-model win rate "
              f"{policy['rm_win_rate']:.0%}; KL {policy['kl']:.2f} nats per answer (training "
              f"{policy['training_kl'] or 0:.2f}, target {policy['kl_target']:g}); mean length "
              f"{policy['policy_length']:.0f} vs {policy['reference_length']:.0f} characters")
        if policy["curve"] is not None:
            print("held-out checks during the run (step: sqrt KL, reward-model score, agreement with held-out pairs):")
            for point in policy["curve"].points:
                agreement = "-" if point.pair_accuracy is None else f"{point.pair_accuracy:.0%}"
                mark = "  <- stop here" if point.step == policy["curve"].stop_step else ""
                print(f"  step {point.step:>3}: {point.sqrt_kl:5.2f}  {point.score:+.3f}  {agreement}{mark}")
        goals["policy win rate >= 65%"] = policy["win_rate"] >= 0.65
        goals["KL under the target"] = policy["kl"] < policy["kl_target"]
    print()
    for goal, held in goals.items():
        print(f"{'PASS' if held else 'FAIL'}  {goal}")
    print(f"({time.monotonic() - started:.0f} s in all; project in {work})")


if __name__ == "__main__":
    main()
