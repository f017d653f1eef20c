"""Did it work? A trained policy (PPO or DPO) against its reference, or against another
policy, on prompts it never trained on.

`compare_policy` answers each held-out prompt of a finished PPO or DPO run (`heldout_prompts.json`)
with the baseline and the policy in one batched call (a mixed-adapter batch on the one base), at
the run's own sampling settings, scores every answer with the reward model (a PPO run's own; for
DPO the newest, when the project has one: DPO needs none, and then only people judge), and
measures the KL of the policy's answers from the baseline. The baseline is the run's reference,
or another finished policy run: then the prompts are those the first held out and the second
never trained on either, so neither side has seen them. It saves `comparison.json` (against the
reference) or `comparison-vs-run-M.json` in the run folder.

`send_to_ranking` puts each prompt's answers on the Rank page as one batch (shown in blind order
like any other), and `human_win_rate` reads the annotators' rankings of those batches back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.errors import WorkbenchError
from workbench.models.generation import chat_input_ids, stream_batch
from workbench.models.loading import ModelSession
from workbench.project import Project
from workbench.train import ops
from workbench.train.dpo import DpoConfig
from workbench.train.loop import LABELS, adapter_for, named_adapters
from workbench.train.policy_export import POLICY_KINDS, policy_runs  # noqa: F401 - policy_runs: for the pages
from workbench.train.ppo import PpoConfig, TRAIN_FILE, choose_reward_model, heldout_prompts, rollout_sampling
from workbench.train.reward import load_reward_model, reward_runs
from workbench.train.reward_eval import wilson_interval
from workbench.train.runs import RunRecord

COMPARISON_FILE = "comparison.json"
CONFIGS = {"ppo": PpoConfig, "dpo": DpoConfig, "policy": DpoConfig}  # an imported policy: its reference is the base
REFERENCE, POLICY = "reference", "policy"


@dataclass
class ComparedPair:
    prompt_id: int
    prompt: str
    reference: str
    policy: str
    reference_score: float | None  # None without a reward model
    policy_score: float | None
    kl: float  # log p_policy - log p_reference of the policy's answer, in nats


@dataclass
class Comparison:
    run_id: int
    reference: str        # the baseline: "sft-run-N", "base", or another policy ("ppo-run-M")
    policy: str           # "ppo-run-N" or "dpo-run-N"
    reward_model: str     # "" when the project had none (a DPO run's comparison)
    training_kl: float | None  # the run's mean objective/kl over its last steps (PPO)
    pairs: list[ComparedPair] = field(default_factory=list)
    sent_batches: list[str] = field(default_factory=list)  # Rank-page batches made from the pairs
    against_run: int | None = None  # the baseline policy's run; None: the run's reference

    @property
    def scored(self) -> bool:
        return bool(self.reward_model) and all(p.policy_score is not None for p in self.pairs)

    @property
    def wins(self) -> float:
        """Pairs the policy's answer scores higher, ties counting half (0 without scores)."""
        if not self.scored:
            return 0.0
        return sum(1.0 if p.policy_score > p.reference_score else 0.5 if p.policy_score == p.reference_score
                   else 0.0 for p in self.pairs)

    @property
    def win_rate(self) -> float:
        return self.wins / len(self.pairs) if self.pairs else 0.0

    def interval(self) -> tuple[float, float]:
        return wilson_interval(round(self.wins), len(self.pairs))

    @property
    def mean_kl(self) -> float:
        return sum(p.kl for p in self.pairs) / len(self.pairs) if self.pairs else 0.0

    def mean_score(self, side: str) -> float:
        values = [getattr(p, f"{side}_score") for p in self.pairs]
        return sum(values) / len(values) if values and None not in values else 0.0

    def summary(self) -> str:
        training = f"; KL reached in training {self.training_kl:.2f}" if self.training_kl is not None else ""
        prompts = f"{len(self.pairs)} answers to {len({p.prompt_id for p in self.pairs})} held-out prompts"
        kl = f"KL from {self.reference} {self.mean_kl:.2f} nats per answer{training}"
        if not self.scored:
            return (f"{self.policy} against {self.reference} on {prompts}; {kl}. The project has no reward model to "
                    "score them: send them to the Rank page for a human win rate.")
        low, high = self.interval()
        return (f"Reward-model win rate of {self.policy} over {self.reference}: {self.win_rate:.0%} "
                f"(95% CI {low:.0%}–{high:.0%}) on {prompts}; mean score {self.mean_score(POLICY):+.3f} vs "
                f"{self.mean_score(REFERENCE):+.3f}; {kl}.")

    def save(self, folder: Path) -> None:
        (folder / comparison_file(self.against_run)).write_text(json.dumps(asdict(self), ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, folder: Path, against_run: int | None = None) -> "Comparison | None":
        path = folder / comparison_file(against_run)
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(**{**data, "pairs": [ComparedPair(**p) for p in data["pairs"]]})


def comparison_file(against_run: int | None) -> str:
    return COMPARISON_FILE if against_run is None else f"comparison-vs-run-{against_run}.json"


def finished_policy(project: Project, run_id: int) -> RunRecord:
    record = RunRecord(project, run_id)
    if record.kind not in POLICY_KINDS or record.status != "finished" or record.artifact is None:
        raise WorkbenchError(f"Run {run_id} is not a finished PPO or DPO run.")
    return record


def trained_prompts(record: RunRecord) -> set[int]:
    """The prompt ids a policy run trained on (written when it starts)."""
    path = record.folder / TRAIN_FILE
    return set(json.loads(path.read_text())) if path.is_file() else set()


def scoring_model(project: Project, record: RunRecord) -> tuple[str, Path] | None:
    """The reward model to score with: a PPO run's own; for DPO the newest, if there is one."""
    if record.kind == "ppo":
        return choose_reward_model(project, record.config.get("reward_model", ""))
    runs = reward_runs(project)
    return (adapter_for("rm", runs[0][0]), runs[0][1]) if runs else None


def compare_policy(project: Project, models: ModelSession, run_id: int, answers_per_prompt: int = 2,
                   should_stop: Callable[[], bool] = lambda: False,
                   against: int | None = None) -> Iterator[str | Comparison]:
    """Progress messages, then the Comparison (also saved in the run folder). Each held-out prompt
    gets `answers_per_prompt` answers from each side. `against`: another finished policy run to
    compare with instead of the run's reference."""
    record = finished_policy(project, run_id)
    config = CONFIGS[record.kind].from_dict(record.config)
    store = PromptStore(project)
    prompt_ids = [p for p in heldout_prompts(record) if store.row(p) is not None]
    if not prompt_ids:
        raise WorkbenchError("This run held out no prompts to compare on (no held-out share, too few prompts, "
                             "or they were deleted).")
    policy = adapter_for(record.kind, run_id)
    sft = named_adapters(project, "sft")
    if against is None:
        reference, folder = config.init_adapter or "base", sft.get(config.init_adapter)
        if config.init_adapter and folder is None:
            raise WorkbenchError(f"The run's reference adapter {config.init_adapter} is no longer in the project.")
    else:
        other = finished_policy(project, against)
        if against == run_id:
            raise WorkbenchError("Choose another run to compare with.")
        reference, folder = adapter_for(other.kind, against), other.artifact
        unseen = [p for p in prompt_ids if p not in trained_prompts(other)]
        if not unseen:
            raise WorkbenchError(f"Every prompt run {run_id} held out was trained on by run {against}, so the "
                                 f"comparison would favour it; compare run {against} against run {run_id} instead, "
                                 "or each with its reference.")
        prompt_ids = unseen
    scorer = scoring_model(project, record)
    metrics = record.metrics().get("objective/kl")
    training_kl = sum(metrics[1][-5:]) / len(metrics[1][-5:]) if metrics and metrics[1] else None
    comparison = Comparison(run_id, reference, policy, scorer[0] if scorer else "", training_kl, against_run=against)

    n = answers_per_prompt
    label = LABELS[record.kind]
    with models.hold(f"comparing the {label} policy with {'its reference' if against is None else reference}"):
        models.load_adapter(policy, record.artifact)
        if folder is not None:
            models.load_adapter(reference, folder)
        reward = load_reward_model(models, scorer[1], scorer[0]) if scorer else None
        baseline = None if reference == "base" else reference
        rows = [baseline or "__base__"] * n + [policy] * n
        for index, prompt_id in enumerate(prompt_ids):
            if should_stop():
                return
            yield f"Answering held-out prompt {index + 1} of {len(prompt_ids)}..."
            messages = store.messages(prompt_id)
            settings = rollout_sampling(config, seed=config.seed * 7919 + prompt_id)
            models.peft.eval()
            texts = None
            for update in stream_batch(models.peft, models.tokenizer, messages, 2 * n, settings, rows, should_stop):
                texts = update.texts if update.done else None
            if texts is None:
                return
            scores = reward.score([(messages, text) for text in texts]) if reward else [None] * (2 * n)
            kls = [sequence_logprob(models, policy, messages, text, config.temperature)
                   - sequence_logprob(models, baseline, messages, text, config.temperature) for text in texts[n:]]
            for i in range(n):
                comparison.pairs.append(ComparedPair(prompt_id, messages[-1]["content"], texts[i], texts[n + i],
                                                     scores[i], scores[n + i], kls[i]))
    comparison.save(record.folder)
    yield comparison


def sequence_logprob(models: ModelSession, adapter: str | None, messages: list[dict], text: str,
                     temperature: float) -> float:
    """log p(text | messages) under `adapter` (None: the plain base), at the sampling temperature.
    The answer is re-tokenized from its text, which may split a few tokens differently from
    how they were sampled; for a KL estimate this is close enough."""
    import torch

    tokenizer, peft = models.tokenizer, models.peft
    prompt = chat_input_ids(tokenizer, messages)[0]
    answer = torch.tensor(tokenizer(text, add_special_tokens=False).input_ids, dtype=torch.long)
    if len(answer) == 0:
        return 0.0
    device = next(peft.parameters()).device
    ids = torch.cat([prompt, answer]).unsqueeze(0).to(device)
    with torch.no_grad():
        if adapter is None:
            with peft.disable_adapter():
                logits = peft(input_ids=ids).logits
        else:
            peft.set_adapter(adapter)
            logits = peft(input_ids=ids).logits
    positions = logits[:, len(prompt) - 1:-1]  # each predicts the answer's next token
    return float(ops.token_logprobs(positions, answer.to(device).unsqueeze(0), temperature=temperature).sum())


def send_to_ranking(project: Project, comparison: Comparison) -> list[str]:
    """One Rank-page batch per prompt with its reference and policy answers; the generator
    records say which is which, and the page shows them in blind order. Returns the batch uids
    (also kept in the saved comparison)."""
    rankings = RankingStore(project)
    by_prompt: dict[int, list[ComparedPair]] = {}
    for pair in comparison.pairs:
        by_prompt.setdefault(pair.prompt_id, []).append(pair)
    made = []
    for prompt_id, pairs in by_prompt.items():
        texts = [p.reference for p in pairs] + [p.policy for p in pairs]
        generators = [dict(source=comparison.reference, role=REFERENCE, evaluation=comparison.policy,
                           score=p.reference_score) for p in pairs]
        generators += [dict(source=comparison.policy, role=POLICY, evaluation=comparison.policy,
                            score=p.policy_score) for p in pairs]
        made.append(rankings.add_batch(prompt_id, texts, generators).uid)
    comparison.sent_batches = comparison.sent_batches + made
    comparison.save(RunRecord(project, comparison.run_id).folder)
    return made


def human_win_rate(project: Project, comparison: Comparison) -> tuple[float, int, int] | None:
    """(policy win rate, reference-vs-policy response pairs, annotators' rankings) over the
    rankings of the sent batches, ties counting half; None until one is ranked. An all-bad
    ranking counts every pair as a tie."""
    rankings, wins, pairs, labels = RankingStore(project), 0.0, 0, 0
    for batch_uid in comparison.sent_batches:
        batch = rankings.batch(batch_uid)
        if batch is None:
            continue
        roles = {r.id: r.generator.get("role") for r in batch.responses}
        for ranking in rankings.rankings("batch = ?", (batch_uid,)):
            labels += 1
            place = {rid: rank for rank, group in enumerate(ranking.groups) for rid in group}
            for p in (rid for rid, role in roles.items() if role == POLICY):
                for r in (rid for rid, role in roles.items() if role == REFERENCE):
                    pairs += 1
                    if ranking.all_bad or place[p] == place[r]:
                        wins += 0.5
                    elif place[p] < place[r]:
                        wins += 1
    return (wins / pairs, pairs, labels) if pairs else None
