"""Did PPO work? The trained policy against its reference on prompts it never trained on.

`compare_policy` answers each held-out prompt of a finished PPO run (`heldout_prompts.json`)
with the reference and the policy in one batched call (a mixed-adapter batch on the one base),
at the run's own sampling settings, scores every answer with the run's reward model, and
measures the KL of the policy's answers from the reference. It saves `comparison.json` in the
run folder: the pairs, the reward-model win rate and the KL reached.

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
from workbench.train.loop import adapter_for, named_adapters
from workbench.train.ppo import KIND, PpoConfig, choose_reward_model, heldout_prompts, rollout_sampling
from workbench.train.reward import load_reward_model
from workbench.train.reward_eval import wilson_interval
from workbench.train.runs import RunRecord, finished_adapters

COMPARISON_FILE = "comparison.json"
REFERENCE, POLICY = "reference", "policy"


@dataclass
class ComparedPair:
    prompt_id: int
    prompt: str
    reference: str
    policy: str
    reference_score: float
    policy_score: float
    kl: float  # log p_policy - log p_reference of the policy's answer, in nats


@dataclass
class Comparison:
    run_id: int
    reference: str        # "sft-run-N" or "base"
    policy: str           # "ppo-run-N"
    reward_model: str
    training_kl: float | None  # the run's mean objective/kl over its last steps
    pairs: list[ComparedPair] = field(default_factory=list)
    sent_batches: list[str] = field(default_factory=list)  # Rank-page batches made from the pairs

    @property
    def wins(self) -> float:
        """Pairs the policy's answer scores higher, ties counting half."""
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
        return sum(values) / len(values) if values else 0.0

    def summary(self) -> str:
        low, high = self.interval()
        training = f"; KL reached in training {self.training_kl:.2f}" if self.training_kl is not None else ""
        return (f"Reward-model win rate of {self.policy} over {self.reference}: {self.win_rate:.0%} "
                f"(95% CI {low:.0%}–{high:.0%}) on {len(self.pairs)} answers to "
                f"{len({p.prompt_id for p in self.pairs})} held-out prompts; mean score "
                f"{self.mean_score(POLICY):+.3f} vs {self.mean_score(REFERENCE):+.3f}; KL from the reference "
                f"{self.mean_kl:.2f} nats per answer{training}.")

    def save(self, folder: Path) -> None:
        (folder / COMPARISON_FILE).write_text(json.dumps(asdict(self), ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, folder: Path) -> "Comparison | None":
        path = folder / COMPARISON_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(**{**data, "pairs": [ComparedPair(**p) for p in data["pairs"]]})


def policy_runs(project: Project) -> list[tuple[int, Path]]:
    """(run id, adapter folder) of finished PPO runs, newest first."""
    return finished_adapters(project, KIND)


def compare_policy(project: Project, models: ModelSession, run_id: int, answers_per_prompt: int = 2,
                   should_stop: Callable[[], bool] = lambda: False) -> Iterator[str | Comparison]:
    """Progress messages, then the Comparison (also saved in the run folder). Each held-out prompt
    gets `answers_per_prompt` answers from each side."""
    record = RunRecord(project, run_id)
    if record.kind != KIND or record.status != "finished" or record.artifact is None:
        raise WorkbenchError(f"Run {run_id} is not a finished PPO run.")
    config = PpoConfig.from_dict(record.config)
    store = PromptStore(project)
    prompt_ids = [p for p in heldout_prompts(record) if store.row(p) is not None]
    if not prompt_ids:
        raise WorkbenchError("This run held out no prompts to compare on (heldout_fraction was 0, there were "
                             "fewer than five prompts, or they were deleted).")
    policy = adapter_for(KIND, run_id)
    reference = config.init_adapter or "base"
    sft = named_adapters(project, "sft")
    if config.init_adapter and config.init_adapter not in sft:
        raise WorkbenchError(f"The run's reference adapter {config.init_adapter} is no longer in the project.")
    reward_name, reward_folder = choose_reward_model(project, config.reward_model)
    metrics = record.metrics().get("objective/kl")
    training_kl = sum(metrics[1][-5:]) / len(metrics[1][-5:]) if metrics and metrics[1] else None
    comparison = Comparison(run_id, reference, policy, reward_name, training_kl)

    n = answers_per_prompt
    with models.hold("comparing the PPO policy with its reference"):
        models.load_adapter(policy, record.artifact)
        if config.init_adapter:
            models.load_adapter(config.init_adapter, sft[config.init_adapter])
        reward = load_reward_model(models, reward_folder, reward_name)
        rows = ["__base__" if reference == "base" else reference] * n + [policy] * n
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
            scores = reward.score([(messages, text) for text in texts])
            kls = [sequence_logprob(models, policy, messages, text, config.temperature)
                   - sequence_logprob(models, None if reference == "base" else reference, messages, text,
                                      config.temperature) for text in texts[n:]]
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
