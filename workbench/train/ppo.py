"""PPO on LoRA adapters of the one shared base (Ziegler et al. 2019 / InstructGPT).

- policy: a LoRA adapter `ppo-run-N`, started from an SFT adapter's weights (or fresh);
- reference: that SFT adapter, frozen (or the plain base);
- reward: a reward-model run's adapter and head, or any Python callable (rule-based rewards, tests);
- value: a head of its own on the policy's last hidden state (PPO's GAE only).

The advantage estimator is a setting (`advantage`): gae, PPO's default, learns the value head
and spreads the score over the tokens with GAE; rloo and grpo are critic-free (Ahmadian et al.
2024; Shao et al. 2024): each step answers batch_size / group_size prompts group_size times,
and an answer's advantage is its reward against the other answers to the same prompt, the same
for all its tokens. The KL to the reference is a penalty in the reward, or for rloo and grpo
optionally a loss term (`kl_in_loss`, as GRPO does).

One step, read top to bottom in `_PpoTrainer.step`: 1. sample prompts and generate with the
policy, keeping its last hidden state at each response position; 2. from those states the policy's
log-probs and the values (no second policy forward pass, unlike TRL) when the model computes in
float32, otherwise from a forward pass (see `Rollout.states`), and the reference's log-probs from
one forward pass; 3. scores; 4. per-token rewards
(-beta * KL, plus the score at the last token, minus a penalty when there is no EOS); 5. GAE and
whitened advantages; 6. several epochs of clipped policy and value losses over minibatches with
gradient accumulation; 7. the adaptive KL controller. Log-probs are taken from the response
positions only, a few rows at a time, never as full fp32 logits for the whole batch.
`train_ppo(...)` is a generator of StepLogs like SFT and reward training.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import workbench.models  # noqa: F401 - offline settings before transformers is imported
from workbench.data.prompts import PromptStore
from workbench.models.chat_format import TemplateRefused, prompt_ids as chat_prompt_ids
from workbench.models.generation import SamplingSettings, pad_token_id, sampling_config, stop_token_ids
from workbench.models.loading import ModelSession
from workbench.project import Project
from workbench.train import ops, ppo_heldout, sequence_logprobs
from workbench.train.lora_settings import LoraTrainingConfig
from workbench.train.loop import (
    adapter_for, between_steps, clip_gradients, non_finite, optimizer_and_schedule, restore_checkpoint, run_training,
    save_adapter, save_checkpoint, start_policy, train_mode_without_dropout,
)
from workbench.train.memory import check_fits, estimate_for_session
from workbench.train.runs import RunControl, RunRecord, StepLog, TrainingError

KIND = "ppo"
ADVANTAGES = ("gae", "rloo", "grpo")
METRIC_KEYS = ("objective/score", "objective/reward", "objective/kl", "loss/policy", "loss/value",
               "policy/entropy", "policy/clipfrac", "policy/approx_kl", "value/clipfrac", "response/length",
               "response/eos_rate", "kl/coef", "time/generate_s", "time/logprobs_s", "time/score_s",
               "time/train_s")
RewardFn = Callable[[list[list[dict]], list[str]], list[float]]
TRAIN_FILE, HELDOUT_FILE, SAMPLES_FILE = "train_prompts.json", "heldout_prompts.json", "samples.jsonl"


def last_samples(run_folder: Path) -> tuple[int, list[dict]] | None:
    """The last step's samples of a run and that step, from its samples.jsonl (None: it kept
    none). A shared project's file may be damaged: lines that are not a sample are skipped."""
    path = Path(run_folder) / SAMPLES_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    if not rows:
        return None
    last = max(row["step"] for row in rows)
    return last, [row for row in rows if row["step"] == last]


@dataclass(frozen=True)
class PpoConfig(LoraTrainingConfig):
    """PPO settings; the shared LoRA fields apply to a fresh policy (one started from an SFT
    adapter takes that adapter's rank and layers)."""

    lora_dropout: float = 0.0
    """Unused by PPO: dropout stays off in the rollout and in the update (as in TRL), so that both
    compute the same policy's log-probs."""
    learning_rate: float = 1e-4
    """Peak learning rate of AdamW, for the policy adapter and the value head (LoRA wants about
    ten times a full fine-tune's rate; 1e-4 moved the demo model's policy within 40 steps)."""
    schedule: str = "constant"
    """Learning-rate schedule after warm-up: constant, linear or cosine decay to zero."""
    warmup_steps: int = 0
    """Optimizer updates of linear warm-up from zero to the peak learning rate (a PPO step makes
    ppo_epochs x num_minibatches of them)."""
    batch_size: int = 8
    """Prompts (and so responses) per PPO step."""
    max_length: int = 256
    """Longest prompt in tokens (after the chat template); longer prompts lose their start."""
    max_steps: int = 100
    """PPO steps (each one batch of rollouts)."""
    epochs: float = 1.0
    """Unused by PPO: its length is max_steps."""
    validation_fraction: float = 0.0
    """Unused by PPO."""
    checkpoint_every: int = 20
    """Save a resumable checkpoint every this many steps (and always when stopped)."""
    init_adapter: str = ""
    """SFT adapter to start the policy from, which is then also the frozen reference (e.g.
    "sft-run-2"); empty: a fresh adapter, with the plain base as reference."""
    reward_model: str = ""
    """Reward-model run to score with (e.g. "rm-run-3"); empty: the newest finished one."""
    length_penalty: float = 0.0
    """Subtracted from the score per response token (discourages padding answers for reward)."""
    max_new_tokens: int = 64
    """Longest response in tokens."""
    temperature: float = 0.7
    """Sampling temperature of the rollouts; the policy learns, and its KL is measured, at this
    temperature. Rollouts are sampled from the whole distribution at this temperature, nothing
    else: no top-p/top-k cut and none of the model's generation defaults, so the log-probs and
    KL describe exactly the distribution the tokens were drawn from. 0.7 (TRL's PPOTrainer's
    default too) keeps a small model's answers close to the Rank page's, the answers the reward
    model learned from; at 1 the demo model's rollouts drifted into text no ranking had covered,
    and 24 steps taught it nothing (bench/efficacy.py)."""
    kl_coef: float = 0.05
    """Initial KL penalty coefficient beta."""
    kl_target: float = 6.0
    """KL (per response, in nats) the adaptive controller aims for; 0 keeps beta fixed."""
    kl_horizon: float = 256.0
    """How quickly the adaptive controller moves beta, in samples: over N samples beta changes by
    at most a factor e^(0.2·N/horizon). Ziegler et al.'s 10,000 suits batches of hundreds; with
    a desktop run's few hundred samples it would leave beta where it started."""
    kl_estimator: str = "k1"
    """Per-token KL estimate in the reward: k1 (log ratio) or k3 (never negative)."""
    missing_eos_penalty: float = 1.0
    """Subtracted from the score of a response that never ends (hits max_new_tokens)."""
    gamma: float = 1.0
    """Discount of GAE."""
    lam: float = 0.95
    """Lambda of GAE."""
    ppo_epochs: int = 2
    """Passes over each batch of rollouts."""
    num_minibatches: int = 2
    """Optimizer steps per epoch: the batch is split into this many minibatches."""
    micro_batch_size: int = 4
    """Rollouts per forward pass; a minibatch accumulates gradients over its micro-batches."""
    clip_range: float = 0.2
    """PPO's clip of the probability ratio."""
    clip_range_value: float = 0.2
    """Clip of the value update."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    whiten_rewards: bool = False
    """Whiten the per-token rewards before GAE."""
    advantage: str = "gae"
    """How an answer's advantage is estimated: gae (PPO: a value head and GAE over its tokens),
    rloo (its reward minus the mean reward of the other answers to the same prompt) or grpo (its
    reward standardised within the answers to the same prompt). rloo and grpo need no value head
    and sample group_size answers per prompt."""
    group_size: int = 4
    """rloo and grpo: answers per prompt in each step (batch_size must be a multiple of it)."""
    kl_in_loss: bool = False
    """rloo and grpo: the KL to the reference as a loss term (k3 per token, weighted by the KL
    coefficient, as in GRPO) instead of a penalty subtracted from the reward."""
    eval_every: int = 10
    """Every this many steps, and before the first and after the last, the policy answers the
    held-out prompts: their reward-model score, the KL from the reference and the accuracy on the
    reward model's held-out human pairs, for the over-optimisation view (ppo_heldout.py)."""
    samples_per_step: int = 8
    """How many of each step's samples are shown and kept in the run folder."""
    heldout_fraction: float = 0.2
    """Share of the prompts kept out of training for the before/after comparison (at least one
    prompt when there are five or more; chosen by prompt uid, so the same prompts every run)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("max_new_tokens", "ppo_epochs", "num_minibatches", "micro_batch_size", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.batch_size % self.num_minibatches:
            raise ValueError("batch_size must be a multiple of num_minibatches")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError("kl_estimator must be k1 or k3")
        if self.temperature <= 0:
            raise ValueError("temperature must be positive")
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"advantage must be one of {', '.join(ADVANTAGES)}")
        if self.critic_free and (self.group_size < 2 or self.batch_size % self.group_size):
            raise ValueError("rloo and grpo need group_size of 2 or more, and batch_size a multiple of it")
        if self.kl_in_loss and not self.critic_free:
            raise ValueError("kl_in_loss applies to rloo and grpo; PPO (gae) keeps the KL in the reward")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError("heldout_fraction must be from 0 up to (not including) 1")


    @property
    def critic_free(self) -> bool:
        return self.advantage != "gae"


def adapter_name(run_id: int) -> str:
    return adapter_for(KIND, run_id)


def choose_reward_model(project: Project, name: str) -> tuple[str, Path]:
    """(adapter name, folder) of the finished reward model `name` ("rm-run-3"), or of the newest
    one when `name` is empty."""
    from workbench.train.reward import adapter_name as rm_adapter, reward_runs

    runs = {rm_adapter(run_id): folder for run_id, folder in reward_runs(project)}
    if not runs:
        raise TrainingError("There is no finished reward model: train one on the Reward page first.")
    chosen = name or next(iter(runs))
    if chosen not in runs:
        raise TrainingError(f"No finished reward model named {chosen}; choose from: {', '.join(runs)}.")
    return chosen, runs[chosen]


def split_prompts(project: Project, heldout_fraction: float) -> tuple[list[int], list[int]]:
    """Prompt ids to train on and those held out for the before/after comparison. The split
    orders prompts by a hash of their uid, so the same prompts give the same split in every run,
    on every machine (a teammate's copy included)."""
    rows = PromptStore(project).rows()
    ranked = sorted(rows, key=lambda r: hashlib.sha256(r.uid.encode()).hexdigest())
    count = max(1, int(len(rows) * heldout_fraction)) if heldout_fraction and len(rows) >= 5 else 0
    heldout = {r.id for r in ranked[:count]}
    return [r.id for r in rows if r.id not in heldout], [r.id for r in rows if r.id in heldout]


def heldout_prompts(record: RunRecord) -> list[int]:
    """The prompt ids a run holds out (written when it starts), [] before that."""
    path = record.folder / HELDOUT_FILE
    return json.loads(path.read_text()) if path.is_file() else []


@dataclass
class Rollout:
    """One step's batch: token tensors on the model's device and plain-text copies."""

    input_ids: object          # [B, P + T]: left-padded prompts, right-padded responses
    attention_mask: object
    prompt_length: int         # P
    response_mask: object      # [B, T]: 1 up to and including the EOS token
    messages: list[list[dict]]
    texts: list[str]
    has_eos: list[bool]
    states: object = None      # [B, T, hidden]: the policy's last hidden state before each response token
    # Kept only in float32, where they equal a forward pass over the finished batch. In bfloat16
    # (CUDA's compute dtype) the cached one-token-at-a-time decode rounds differently: on the demo
    # model, log-probs 0.05 nats per token off on average (0.34 at most) and 0.11 nats of KL per
    # response between a policy and its identical reference. The update compares against a
    # forward pass, so the old log-probs must come from one too, or PPO clips from the start.


# ---- entry point ------------------------------------------------------------------------------

def train_ppo(project: Project, models: ModelSession, config: PpoConfig | None = None,
              control: RunControl | None = None, resume_run_id: int | None = None,
              reward_fn: RewardFn | None = None) -> Iterator[StepLog]:
    """Train (or resume) a PPO run on the project's prompts; yields a StepLog per step.
    `reward_fn(prompts, responses) -> scores` replaces the reward model when given."""
    yield from run_training(
        project, models, KIND, PpoConfig, config, control, resume_run_id,
        "Preparing the policy, reference, reward and value...", memory_advice,
        lambda config, record, name, control: _PpoTrainer(project, models, config, record, name,
                                                          reward_fn).run(control))


def rollout_sampling(config: PpoConfig, seed: int | None = None) -> SamplingSettings:
    """How rollouts (and "Did it work?"'s answers, of PPO and DPO runs alike: `config` may be
    any config with a temperature and max_new_tokens) are sampled: the whole distribution at
    the temperature, nothing else (see PpoConfig.temperature)."""
    return SamplingSettings(temperature=config.temperature, top_p=1.0, top_k=0,
                            max_new_tokens=config.max_new_tokens, repetition_penalty=1.0, seed=seed)


def memory_advice(config: PpoConfig) -> str:
    return (f"Lower batch_size (now {config.batch_size}), micro_batch_size (now {config.micro_batch_size}) or "
            f"max_new_tokens (now {config.max_new_tokens}), turn on gradient checkpointing, or load the base "
            "in 4-bit.")


class _PpoTrainer:
    def __init__(self, project: Project, models: ModelSession, config: PpoConfig, record: RunRecord,
                 name: str, reward_fn: RewardFn | None):
        self.project, self.models, self.config, self.record, self.name = project, models, config, record, name
        self.reward_fn = reward_fn
        self.tokenizer = models.tokenizer
        self.stop_ids = stop_token_ids(models.model, self.tokenizer)
        self.pad = pad_token_id(self.tokenizer, self.stop_ids)
        self.reference: str | None = None   # adapter name, None for the plain base
        self.reward_model = None
        self.reward_folder: Path | None = None  # the reward model's adapter folder; None for a Python reward

    # ---- setup ---------------------------------------------------------------------------

    def prompts(self) -> list[list[dict]]:
        """The training prompts. A resumed run keeps the split it started with, so prompts added
        since then neither change what it trains on nor join the held-out comparison."""
        store, folder = PromptStore(self.project), self.record.folder
        if (folder / TRAIN_FILE).is_file():
            train = [i for i in json.loads((folder / TRAIN_FILE).read_text()) if store.row(i) is not None]
        else:
            train, heldout = split_prompts(self.project, self.config.heldout_fraction)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / HELDOUT_FILE).write_text(json.dumps(heldout))
            (folder / TRAIN_FILE).write_text(json.dumps(train))
        if not train:
            raise TrainingError("There are no prompts to train on: add some on the Rank page.")
        prompts = [store.messages(prompt_id) for prompt_id in train]
        for prompt_id, messages in zip(train, prompts):  # a refused prompt now, not mid-run
            try:
                chat_prompt_ids(self.tokenizer, messages)
            except TemplateRefused as error:
                raise TrainingError(f"Prompt {prompt_id}: {error}. Edit or delete it on the Rank page.") from error
        return prompts

    def setup(self):
        """Policy (from the SFT adapter or fresh), reference, reward model and value head."""
        import torch

        self.reference = start_policy(self.project, self.models, self.name, self.config)
        if self.reward_fn is None:
            self.reward_model = self.load_reward_model()
        self.models.peft.set_adapter(self.name)
        self.models.peft.eval()  # no dropout in the rollout; update_mode() keeps it off in the update
        device = next(self.models.model.parameters()).device
        value_head = torch.nn.Linear(self.models.model.config.hidden_size, 1, device=device, dtype=torch.float32)
        torch.nn.init.zeros_(value_head.weight)
        torch.nn.init.zeros_(value_head.bias)
        return value_head, device

    def heldout_set(self) -> tuple[list[int], list[dict]]:
        """The run's held-out prompts and the reward model's held-out human pairs."""
        return heldout_prompts(self.record), ppo_heldout.validation_pairs(self.reward_folder)

    def load_reward_model(self):
        from workbench.train.reward import load_reward_model

        name, self.reward_folder = choose_reward_model(self.project, self.config.reward_model)
        return load_reward_model(self.models, self.reward_folder, name)

    # ---- the loop --------------------------------------------------------------------------

    def run(self, control: RunControl) -> Iterator[StepLog]:
        import torch

        cfg, record = self.config, self.record
        prompts = self.prompts()
        check_fits(estimate_for_session(self.models, cfg), next(self.models.model.parameters()).device,
                   memory_advice(cfg))  # a run that cannot fit says so before it starts
        torch.manual_seed(cfg.seed)
        value_head, device = self.setup()
        params = [p for p in self.models.peft.parameters() if p.requires_grad] + list(value_head.parameters())
        optimizer, scheduler = optimizer_and_schedule(params, cfg, cfg.max_steps * cfg.ppo_epochs * cfg.num_minibatches)
        kl = ops.KLController(cfg.kl_coef, cfg.kl_target or None, cfg.kl_horizon)
        step, extra, state = restore_checkpoint(record, self.models, self.name, optimizer, scheduler)
        self.forget_samples_after(step)
        if extra:
            value_head.load_state_dict({"weight": extra["value.weight"].to(device),
                                        "bias": extra["value.bias"].to(device)})
            kl.value = state.get("kl_coef", kl.value)
        record.log(f"{len(prompts)} training prompts; {cfg.max_steps} steps of {cfg.batch_size} responses; reference: "
                   f"{self.reference or 'the base model'}; reward: "
                   f"{'a Python function' if self.reward_fn else self.reward_model.name}.")
        save = lambda: save_checkpoint(  # noqa: E731 - reads `step` and `kl` when called
            record, self.models.peft, self.name, step, optimizer, scheduler, cfg,
            {"value.weight": value_head.weight, "value.bias": value_head.bias}, {"kl_coef": kl.value})
        heldout, pairs = self.heldout_set()
        if step == 0 and heldout:  # the starting point of the over-optimisation curve: the reference
            record.add_metrics(0, ppo_heldout.evaluate(self, value_head, heldout, pairs, 0, cfg.seed, device))
        started, first_step = time.monotonic(), step
        yield StepLog(record.id, step, cfg.max_steps, message=f"PPO for {cfg.max_steps} steps" +
                      (f", resumed at step {step}." if step else "."))

        while step < cfg.max_steps:
            yield from between_steps(control, record, step, cfg.max_steps, started, save)
            if record.status == "stopped":
                return
            metrics, samples = self.step(step, prompts, value_head, optimizer, scheduler, params, kl, device)
            step += 1
            if heldout and (step % cfg.eval_every == 0 or step == cfg.max_steps):  # before the checkpoint
                metrics.update(ppo_heldout.evaluate(self, value_head, heldout, pairs, step, cfg.seed, device))
            record.add_metrics(step, metrics)
            self.keep_samples(step, samples)
            if step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
                save()
            elapsed = time.monotonic() - started
            yield StepLog(record.id, step, cfg.max_steps, metrics, elapsed_s=elapsed,
                          eta_s=elapsed / (step - first_step) * (cfg.max_steps - step), samples=tuple(samples))

        folder = save_adapter(self.models, record, self.name, also=lambda f: self.save_value_head(value_head, f))
        record.set_artifact(folder)
        record.set_status("finished", f"Finished {cfg.max_steps} steps.")
        record.log(f"Finished; policy adapter saved to {folder}.")
        yield StepLog(record.id, step, cfg.max_steps, message="Finished.", status="finished",
                      elapsed_s=time.monotonic() - started, eta_s=0.0)

    def step(self, step: int, prompts, value_head, optimizer, scheduler, params, kl, device):
        import torch

        cfg = self.config
        # 1. Sample a batch of prompts (a function of the seed and step) and generate with the
        # policy; rloo and grpo answer each prompt group_size times, in consecutive rows.
        started = time.monotonic()
        group = cfg.group_size if cfg.critic_free else 1
        chosen = random.Random(cfg.seed * 1_000_003 + step).choices(prompts, k=cfg.batch_size // group)
        batch = [messages for messages in chosen for _ in range(group)]
        rollout = self.generate(batch, device)
        generated = time.monotonic()

        # 2. Log-probs of the sampled tokens under the policy (in float32 from the states
        # generation already computed, else a forward pass: see Rollout.states) and under the
        # reference (one forward pass); the values.
        with torch.no_grad():
            if rollout.states is not None:
                old_logprobs, old_values, _ = self.heads(rollout.states, rollout, value_head)
            else:
                old_logprobs, old_values, _ = self.forward(rollout, value_head, self.name)
            ref_logprobs, _, _ = self.forward(rollout, value_head, self.reference)
        mask = rollout.response_mask
        forwarded = time.monotonic()

        # 3. Scores: the reward model (or function), minus penalties for no EOS and for length.
        scores = torch.tensor(self.score(rollout), device=device, dtype=torch.float32)
        raw_scores = scores.clone()
        lengths = mask.sum(1)
        scores = scores - cfg.missing_eos_penalty * (~torch.tensor(rollout.has_eos, device=device)).float()
        scores = scores - cfg.length_penalty * lengths
        scored = time.monotonic()
        if not torch.isfinite(scores).all():
            raise non_finite("reward", float(scores[~torch.isfinite(scores)][0]), step + 1, self.record,
                             "Check the reward model or function")

        token_kl = ops.kl_estimate(old_logprobs, ref_logprobs, cfg.kl_estimator, mask)
        beta = kl.value  # this step's; the controller moves it at the end
        if cfg.critic_free:
            # 4-5. rloo/grpo: one reward per answer (the score, less beta * its KL unless the KL is
            # a loss term), its advantage against the other answers to its prompt on every token.
            rewards = scores if cfg.kl_in_loss else scores - beta * token_kl.sum(1)
            advantages = ops.group_advantages(rewards, cfg.group_size, cfg.advantage).unsqueeze(1) * mask
            returns, reward_mean = None, float(rewards.mean())
        else:
            # 4. Per-token rewards: -beta * KL everywhere, plus the score at the last real token.
            rewards = -beta * token_kl
            last = (lengths - 1).clamp(min=0).long()
            rewards[torch.arange(len(last), device=device), last] += scores
            if cfg.whiten_rewards:
                rewards = ops.masked_whiten(rewards, mask, shift_mean=False)
            reward_mean = float(rewards.sum(1).mean()) if not cfg.whiten_rewards \
                else float((scores - beta * token_kl.sum(1)).mean())

            # 5. Advantages (GAE, whitened) and returns.
            advantages, returns = ops.gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
            advantages = ops.masked_whiten(advantages, mask)

        # 6. Epochs over minibatches, accumulating gradients over micro-batches.
        with self.update_mode():
            stats = self.update(rollout, value_head, optimizer, scheduler, params, old_logprobs, old_values,
                                advantages, returns, step, ref_logprobs if cfg.kl_in_loss else None, beta)

        # 7. The KL controller moves beta towards the target KL.
        mean_kl = float(token_kl.sum(1).mean())
        kl.update(mean_kl, cfg.batch_size)
        metrics = {key: sum(values) / len(values) for key, values in stats.items()}
        metrics.update({
            "objective/score": float(raw_scores.mean()),
            "objective/reward": reward_mean,
            "objective/kl": mean_kl,
            "kl/coef": beta,
            "response/length": float(lengths.float().mean()),
            "response/eos_rate": sum(rollout.has_eos) / len(rollout.has_eos),
            "time/generate_s": generated - started, "time/logprobs_s": forwarded - generated,
            "time/score_s": scored - forwarded,
            "time/train_s": time.monotonic() - scored,
        })
        samples = [{"prompt": m[-1]["content"], "response": text, "score": float(s), "kl": float(k)}
                   for m, text, s, k in zip(rollout.messages, rollout.texts, raw_scores.tolist(),
                                            token_kl.sum(1).tolist())][:cfg.samples_per_step]
        return metrics, samples

    def update(self, rollout: Rollout, value_head, optimizer, scheduler, params, old_logprobs, old_values,
               advantages, returns, step: int, ref_logprobs=None, beta: float = 0.0) -> dict[str, list[float]]:
        """Step 6: epochs over minibatches, accumulating gradients over micro-batches: the clipped
        policy loss, plus the value loss (gae) or beta * the k3 KL to `ref_logprobs` (rloo/grpo
        with kl_in_loss). Returns each micro-batch's losses and statistics."""
        import torch

        cfg, mask, device = self.config, rollout.response_mask, old_logprobs.device
        stats: dict[str, list[float]] = {}
        minibatch = cfg.batch_size // cfg.num_minibatches
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(cfg.batch_size).tolist()
            for start in range(0, cfg.batch_size, minibatch):
                rows = order[start:start + minibatch]
                for micro in range(0, len(rows), cfg.micro_batch_size):
                    index = torch.tensor(rows[micro:micro + cfg.micro_batch_size], device=device)
                    part = self.subset(rollout, index)
                    logprobs, values, entropy = self.forward(part, value_head, self.name, with_entropy=True)
                    m = mask[index]
                    pg_loss, clipfrac, approx_kl = ops.policy_loss(logprobs, old_logprobs[index], advantages[index],
                                                                   m, cfg.clip_range)
                    parts = {"loss/policy": pg_loss, "policy/entropy": ops.masked_mean(entropy, m),
                             "policy/clipfrac": clipfrac, "policy/approx_kl": approx_kl}
                    loss = pg_loss
                    if returns is not None:
                        vf_loss, vf_clipfrac = ops.value_loss(values, old_values[index], returns[index], m,
                                                              cfg.clip_range_value)
                        parts.update({"loss/value": vf_loss, "value/clipfrac": vf_clipfrac})
                        loss = loss + cfg.vf_coef * vf_loss
                    if ref_logprobs is not None:
                        kl_loss = ops.masked_mean(ops.kl_estimate(logprobs, ref_logprobs[index], "k3", m), m)
                        parts["loss/kl"] = kl_loss
                        loss = loss + beta * kl_loss
                    loss = loss * len(index) / len(rows)
                    if not torch.isfinite(loss):
                        raise non_finite("PPO loss", loss.item(), step + 1, self.record,
                                         f"Lower the learning rate (now {cfg.learning_rate:g})")
                    loss.backward()
                    for key, value in parts.items():
                        stats.setdefault(key, []).append(value.item())
                clip_gradients(params, cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        return stats

    def update_mode(self):
        """The update runs without dropout, as the rollout did (loop.train_mode_without_dropout)."""
        return train_mode_without_dropout(self.models.peft)

    # ---- pieces of a step --------------------------------------------------------------------

    def generate(self, batch: list[list[dict]], device) -> Rollout:
        """Left-padded prompts, then sampled responses; the mask ends at each response's EOS."""
        import torch

        cfg = self.config
        encoded = [chat_prompt_ids(self.tokenizer, m)[-cfg.max_length:] for m in batch]
        width = max(len(ids) for ids in encoded)
        prompt_ids = torch.full((len(encoded), width), self.pad, dtype=torch.long)
        prompt_mask = torch.zeros_like(prompt_ids)
        for row, ids in enumerate(encoded):
            prompt_ids[row, width - len(ids):] = torch.tensor(ids)
            prompt_mask[row, width - len(ids):] = 1
        prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
        self.models.peft.set_adapter(self.name)
        # Each forward pass of generate() ends with the hidden state that predicts the next token:
        # the prompt's last position, then one position per step. Kept, they give the policy's
        # log-probs and the values without running the policy over the batch again.
        states = []
        keep = lambda module, args, output: states.append(output.last_hidden_state[:, -1:])  # noqa: E731
        exact = self.models.model.dtype == torch.float32  # see Rollout.states
        hook = self.backbone().register_forward_hook(keep) if exact else None
        try:
            with torch.no_grad():
                sequences = self.models.peft.generate(
                    input_ids=prompt_ids, attention_mask=prompt_mask,
                    generation_config=sampling_config(rollout_sampling(cfg), self.stop_ids, self.pad))
        finally:
            if hook is not None:
                hook.remove()
        responses = sequences[:, width:]
        eos = torch.zeros_like(responses, dtype=torch.bool)
        for token in self.stop_ids:
            eos |= responses == token
        has_eos = eos.any(1)
        # 1 up to and including the first EOS; everything after it is padding.
        first_eos = torch.where(has_eos, eos.float().argmax(1), torch.full_like(has_eos, responses.shape[1], dtype=torch.long))
        positions = torch.arange(responses.shape[1], device=device).unsqueeze(0)
        response_mask = (positions <= first_eos.unsqueeze(1)).long()
        responses = torch.where(response_mask.bool(), responses, torch.full_like(responses, self.pad))
        texts = [self.tokenizer.decode(r[m.bool()], skip_special_tokens=True) for r, m in zip(responses, response_mask)]
        return Rollout(torch.cat([prompt_ids, responses], 1), torch.cat([prompt_mask, response_mask], 1), width,
                       response_mask.float(), batch, texts, has_eos.tolist(),
                       torch.cat(states, 1)[:, :responses.shape[1]] if exact else None)

    def subset(self, rollout: Rollout, index) -> Rollout:
        return Rollout(rollout.input_ids[index], rollout.attention_mask[index], rollout.prompt_length,
                       rollout.response_mask[index], [], [], [])

    def forward(self, rollout: Rollout, value_head, adapter: str | None, with_entropy: bool = False):
        """Log-probs of the response tokens and values at their positions, with `adapter`
        active (None: the plain base). Logits exist for the response positions only."""
        peft = self.models.peft
        mask = rollout.attention_mask
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)  # as generate() numbered the left-padded rows
        if adapter is None:
            with peft.disable_adapter():
                hidden = self.hidden(rollout, mask, position_ids)
        else:
            peft.set_adapter(adapter)
            hidden = self.hidden(rollout, mask, position_ids)
            if adapter != self.name:
                peft.set_adapter(self.name)
        states = hidden[:, rollout.prompt_length - 1:-1]  # the position before each response token
        return self.heads(states, rollout, value_head, with_entropy)

    def heads(self, states, rollout: Rollout, value_head, with_entropy: bool = False):
        """Log-probs of the response tokens, values (and entropies) from the hidden states before them."""
        import torch

        # Divided by the sampling temperature (in fp32): the distribution the tokens were drawn from.
        logits = self.lm_logits(states)
        tokens = rollout.input_ids[:, rollout.prompt_length:]
        temperature = self.config.temperature
        logprobs = ops.token_logprobs(logits, tokens, temperature=temperature)
        values = value_head(states.float()).squeeze(-1)
        entropy = None
        if with_entropy:  # a statistic, never in the loss: kept out of the graph and its memory
            with torch.no_grad():
                entropy = ops.entropy_from_logits(logits, temperature=temperature)
        return logprobs, values, entropy

    def lm_logits(self, states):
        return sequence_logprobs.lm_logits(self.models.peft, states)

    def backbone(self):
        return sequence_logprobs.backbone(self.models.peft)

    def hidden(self, rollout: Rollout, mask, position_ids):
        return self.backbone()(input_ids=rollout.input_ids, attention_mask=mask, position_ids=position_ids,
                               use_cache=False).last_hidden_state

    def score(self, rollout: Rollout) -> list[float]:
        if self.reward_fn is not None:
            return [float(s) for s in self.reward_fn(rollout.messages, rollout.texts)]
        scores = self.reward_model.score(list(zip(rollout.messages, rollout.texts)))
        self.models.peft.set_adapter(self.name)
        return scores

    def forget_samples_after(self, step: int) -> None:
        """Drop the samples of steps after the checkpoint a run resumes from: they are done again."""
        path = self.record.folder / SAMPLES_FILE
        if path.is_file():
            kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
                    if line.strip() and json.loads(line)["step"] <= step]
            path.write_text("".join(kept), encoding="utf-8")

    def keep_samples(self, step: int, samples: list[dict]) -> None:
        path = self.record.folder / SAMPLES_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            for sample in samples:
                handle.write(json.dumps({"step": step, **sample}, ensure_ascii=False) + "\n")

    def save_value_head(self, value_head, folder) -> None:
        from safetensors.torch import save_file

        save_file({"weight": value_head.weight.detach().cpu().contiguous(),
                   "bias": value_head.bias.detach().cpu().contiguous()}, str(folder / "value_head.safetensors"))
