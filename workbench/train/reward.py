"""Reward model: a LoRA adapter on the shared base plus a scalar head, trained on preference pairs.

The score of a conversation is the head (a bias-free linear layer, as in transformers'
`...ForSequenceClassification`) applied to the base's last hidden state at the last real token.
There is no second copy of the base: the adapter is one more LoRA adapter of the ModelSession,
and the head is a few thousand numbers. Loss is Bradley-Terry, `-logsigmoid(r_chosen -
r_rejected - margin)`, where the margin is `rank_margin` times how many rank groups lie between
the two beyond the first (0 by default). `train_rm(...)` is a generator of StepLogs like SFT.

At the end the run folder holds `adapter/` (peft adapter + `reward_head.safetensors` +
`reward_head.json`) and `evaluation.json` (every validation pair's scores, read by the Reward page).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import workbench.models  # noqa: F401 - offline settings before transformers is imported
from workbench.models.loading import ModelSession
from workbench.paths import write_atomically
from workbench.project import Project
from workbench.train.lora_settings import LoraTrainingConfig
from workbench.train.loop import (
    adapter_for, between_steps, clip_gradients, memory_advice, micro_batch, non_finite,
    optimizer_and_schedule, restore_checkpoint, run_training, save_adapter, save_checkpoint, train_adapter,
)
from workbench.train.reward_data import PairExample, conversation_ids, pad_right, run_pairs
from workbench.train.runs import RunControl, RunRecord, StepLog, TrainingError

KIND = "rm"
METRIC_KEYS = ("loss/train", "loss/validation", "reward/accuracy", "reward/margin", "reward/accuracy_train",
               "train/lr", "train/grad_norm", "train/epoch", "perf/pairs_per_s", "time/step_s")
HEAD_FILE, HEAD_INFO = "reward_head.safetensors", "reward_head.json"


@dataclass(frozen=True)
class RewardConfig(LoraTrainingConfig):
    """The shared LoRA settings with reward-model defaults, plus a margin and an annotator filter."""

    learning_rate: float = 5e-4
    """Peak learning rate of AdamW for the adapter (the head's is head_lr_scale times it). 5e-4:
    on bench/efficacy.py's 24 ranked prompts, 1e-4 reached 64% held-out accuracy and 5e-4 69%
    by the same step."""
    batch_size: int = 4
    """Preference pairs per micro-batch (each pair is two sequences)."""
    max_length: int = 512
    """Tokens per prompt + response; longer ones lose the start of the prompt, never the reply."""
    epochs: float = 2.0
    """Passes over the training pairs (fractions allowed); ignored when max_steps is set."""
    validation_fraction: float = 0.2
    """Share of prompts held out (with all their pairs) to measure validation accuracy."""
    head_lr_scale: float = 10.0
    """The scalar head's learning rate as a multiple of learning_rate. The head starts as a
    random direction; at the adapter's rate it barely turns in a short run (1e-4 x 56 steps
    against weights of about 0.04), so the adapter would have to bend the model towards a
    random direction instead of the head finding the one that separates the answers."""
    rank_margin: float = 0.0
    """Margin per extra rank group: a pair ranked 1st vs 3rd must be separated by this much more
    than neighbours. 0 is the plain Bradley-Terry loss."""
    annotators: str = ""
    """Only these annotators' rankings (names separated by commas); empty means everyone's."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank_margin < 0:
            raise ValueError("rank_margin must be 0 or more")
        if self.head_lr_scale <= 0:
            raise ValueError("head_lr_scale must be positive")

    def annotator_list(self) -> list[str] | None:
        names = [n.strip() for n in self.annotators.split(",") if n.strip()]
        return names or None


def adapter_name(run_id: int) -> str:
    return adapter_for(KIND, run_id)


# ---- scoring -------------------------------------------------------------------------------

def backbone(models: ModelSession):
    """The base's transformer without its LM head (LoRA layers inside act for the active adapter)."""
    model = models.peft.get_base_model() if models.peft is not None else models.model
    return model.base_model


def last_token_hidden(models: ModelSession, input_ids, attention_mask):
    """Hidden state at each row's last real token (rows are right-padded)."""
    import torch

    out = backbone(models)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    last = attention_mask.sum(dim=1) - 1
    return out.last_hidden_state[torch.arange(input_ids.shape[0], device=input_ids.device), last]


def new_head(hidden_size: int, device):
    import torch

    head = torch.nn.Linear(hidden_size, 1, bias=False, device=device, dtype=torch.float32)
    torch.nn.init.normal_(head.weight, std=1.0 / math.sqrt(hidden_size + 1))
    return head


def head_scores(models: ModelSession, head, input_ids, attention_mask):
    hidden = last_token_hidden(models, input_ids, attention_mask)
    return head(hidden.float()).squeeze(-1)


@dataclass
class RewardModel:
    """A trained reward model ready to score: its adapter is loaded on the shared base."""

    models: ModelSession
    name: str
    head: object
    max_length: int

    def score(self, conversations: list[tuple[list[dict], str]], batch_size: int = 8) -> list[float]:
        """Scores of (prompt messages, reply) pairs, in order. The caller holds the model."""
        import torch

        tokenizer = self.models.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        device = next(self.head.parameters()).device
        self.models.peft.set_adapter(self.name)
        self.models.peft.eval()
        scores: list[float] = []
        with torch.no_grad():
            for start in range(0, len(conversations), batch_size):
                chunk = [conversation_ids(tokenizer, m, r, self.max_length)
                         for m, r in conversations[start:start + batch_size]]
                ids, mask = pad_right(chunk, pad)
                scores += head_scores(self.models, self.head, ids.to(device), mask.to(device)).tolist()
        return scores


def load_reward_model(models: ModelSession, folder: Path, name: str) -> RewardModel:
    """The adapter and head in `folder` (a finished run's `adapter/`), loaded onto the base once."""
    from safetensors.torch import load_file

    info = json.loads((Path(folder) / HEAD_INFO).read_text())
    models.load_adapter(name, Path(folder))
    device = next(models.model.parameters()).device
    head = new_head(info["hidden_size"], device)
    head.load_state_dict({"weight": load_file(str(Path(folder) / HEAD_FILE))["weight"].to(device)})
    head.requires_grad_(False)
    return RewardModel(models, name, head, info.get("max_length", 512))


def reward_runs(project: Project) -> list[tuple[int, Path]]:
    """(run id, adapter folder) of finished reward-model runs with a head, newest first."""
    from workbench.train.runs import finished_adapters

    return [(run_id, folder) for run_id, folder in finished_adapters(project, KIND) if (folder / HEAD_FILE).is_file()]


# ---- training -----------------------------------------------------------------------------

def train_rm(project: Project, models: ModelSession, config: RewardConfig | None = None,
             control: RunControl | None = None, resume_run_id: int | None = None) -> Iterator[StepLog]:
    """Train (or resume) a reward model on the project's rankings; yields a StepLog per step."""
    yield from run_training(
        project, models, KIND, RewardConfig, config, control, resume_run_id, "Collecting preference pairs...",
        memory_advice,
        lambda config, record, name, control: _RewardTrainer(project, models, config, record, name).run(control))


class _RewardTrainer:
    def __init__(self, project: Project, models: ModelSession, config: RewardConfig, record: RunRecord, name: str):
        self.project, self.models, self.config, self.record, self.name = project, models, config, record, name
        self.tokenizer = models.tokenizer
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def load_pairs(self) -> tuple[list[PairExample], list[PairExample]]:
        cfg = self.config
        return run_pairs(self.project, self.record.folder, self.tokenizer, cfg.annotator_list(), cfg.max_length,
                         cfg.validation_fraction, cfg.seed)

    def encode(self, pairs: list[PairExample]):
        """Chosen sequences then rejected ones, right-padded in one tensor pair."""
        ids = [conversation_ids(self.tokenizer, p.messages, p.chosen, self.config.max_length) for p in pairs]
        ids += [conversation_ids(self.tokenizer, p.messages, p.rejected, self.config.max_length) for p in pairs]
        return pad_right(ids, self.pad)

    def margins(self, pairs: list[PairExample], device):
        import torch

        return torch.tensor([self.config.rank_margin * (p.distance - 1) for p in pairs], device=device)

    def pair_scores(self, head, pairs: list[PairExample], device):
        ids, mask = self.encode(pairs)
        scores = head_scores(self.models, head, ids.to(device), mask.to(device))
        return scores[:len(pairs)], scores[len(pairs):]

    def run(self, control: RunControl) -> Iterator[StepLog]:
        import torch
        import torch.nn.functional as F

        cfg, record = self.config, self.record
        train, validation = self.load_pairs()
        prompts = len({p.prompt_uid for p in train}), len({p.prompt_uid for p in validation})
        micro_per_epoch = math.ceil(len(train) / cfg.batch_size)
        total = cfg.max_steps or max(1, math.ceil(cfg.epochs * micro_per_epoch / cfg.grad_accum))
        record.log(f"{len(train)} training pairs from {prompts[0]} prompts, {len(validation)} validation pairs "
                   f"from {prompts[1]} other prompts; {total} steps of {cfg.batch_size} x {cfg.grad_accum} pairs.")

        # 1. Adapter, head, optimizer and schedule; restored from a checkpoint when resuming.
        torch.manual_seed(cfg.seed)
        model = train_adapter(self.models, self.name, cfg)
        model.train()
        device = next(model.parameters()).device
        head = new_head(self.models.model.config.hidden_size, device)
        adapter_params = [p for p in model.parameters() if p.requires_grad]
        params = adapter_params + list(head.parameters())
        groups = [{"params": adapter_params},
                  {"params": list(head.parameters()), "lr": cfg.learning_rate * cfg.head_lr_scale}]
        optimizer, scheduler = optimizer_and_schedule(groups, cfg, total)
        step, extra, _ = restore_checkpoint(record, self.models, self.name, optimizer, scheduler)
        if "head.weight" in extra:
            head.weight.data.copy_(extra["head.weight"].to(device))
        save = lambda: save_checkpoint(record, model, self.name, step, optimizer, scheduler, cfg,  # noqa: E731
                                       {"head.weight": head.weight})
        started, first_step, scored = time.monotonic(), step, None
        yield StepLog(record.id, step, total, message=f"Training {total} steps" +
                      (f", resumed at step {step}." if step else "."))

        while step < total:
            # 2. Pause and stop between steps; stopping saves a checkpoint first.
            yield from between_steps(control, record, step, total, started, save)
            if record.status == "stopped":
                return

            # 3. One optimizer step: Bradley-Terry loss over grad_accum micro-batches of pairs.
            step_started = time.monotonic()
            loss_sum, right, seen = 0.0, 0, 0
            for k in range(cfg.grad_accum):
                pairs = micro_batch(train, step * cfg.grad_accum + k, micro_per_epoch, cfg.batch_size, cfg.seed)
                chosen, rejected = self.pair_scores(head, pairs, device)
                loss = -F.logsigmoid(chosen - rejected - self.margins(pairs, device)).mean() / cfg.grad_accum
                if not torch.isfinite(loss):
                    raise non_finite("reward-model loss", loss.item(), step + 1, record,
                                     f"Lower the learning rate (now {cfg.learning_rate:g})")
                loss.backward()
                loss_sum += loss.item()
                right += int((chosen > rejected).sum())
                seen += len(pairs)
            grad_norm = clip_gradients(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seconds = time.monotonic() - step_started

            # 4. Metrics and validation, recorded before they are reported; checkpoints.
            metrics = {"loss/train": loss_sum, "reward/accuracy_train": right / seen,
                       "train/lr": scheduler.get_last_lr()[0], "train/grad_norm": float(grad_norm),
                       "train/epoch": step * cfg.grad_accum / micro_per_epoch,
                       "perf/pairs_per_s": seen / max(seconds, 1e-9), "time/step_s": seconds}
            if validation and (step % cfg.eval_every == 0 or step == total):
                figures, scored = self.validate(head, validation, device)
                metrics.update(figures)
            record.add_metrics(step, metrics)
            if step % cfg.checkpoint_every == 0 and step < total:
                save()
            elapsed = time.monotonic() - started
            yield StepLog(record.id, step, total, metrics, elapsed_s=elapsed,
                          eta_s=elapsed / (step - first_step) * (total - step))

        # 5. The adapter with its head, and every validation pair's scores for the Reward page
        # (from the last step's validation; a run resumed after its last step validates now).
        if scored is None:
            _, scored = self.validate(head, validation, device)
        write_atomically(record.folder / "evaluation.json", json.dumps(scored, ensure_ascii=False).encode("utf-8"))
        folder = save_adapter(self.models, record, self.name, also=lambda f: self.save_head(head, f))
        record.set_artifact(folder)
        record.set_status("finished", f"Finished {total} steps.")
        record.log(f"Finished; adapter and reward head saved to {folder}.")
        yield StepLog(record.id, step, total, message="Finished.", status="finished",
                      elapsed_s=time.monotonic() - started, eta_s=0.0)

    def validate(self, head, validation: list[PairExample], device) -> tuple[dict, list[dict]]:
        """Validation loss, pairwise accuracy and mean margin, and each pair's scores."""
        import torch
        import torch.nn.functional as F

        self.models.peft.eval()
        scored, loss_sum = [], 0.0
        with torch.no_grad():
            for start in range(0, len(validation), self.config.batch_size):
                pairs = validation[start:start + self.config.batch_size]
                chosen, rejected = self.pair_scores(head, pairs, device)
                loss_sum += float(-F.logsigmoid(chosen - rejected).sum())
                for pair, c, r in zip(pairs, chosen.tolist(), rejected.tolist()):
                    scored.append({"prompt_id": pair.prompt_id, "batch": pair.batch, "annotator": pair.annotator,
                                   "prompt": pair.messages[-1]["content"], "chosen": pair.chosen,
                                   "rejected": pair.rejected, "chosen_score": c, "rejected_score": r,
                                   "distance": pair.distance})
        self.models.peft.train()
        if not scored:
            return {}, []
        n = len(scored)
        return {"loss/validation": loss_sum / n,
                "reward/accuracy": sum(s["chosen_score"] > s["rejected_score"] for s in scored) / n,
                "reward/margin": sum(s["chosen_score"] - s["rejected_score"] for s in scored) / n}, scored

    def save_head(self, head, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file({"weight": head.weight.detach().cpu().contiguous()}, str(folder / HEAD_FILE))
        (folder / HEAD_INFO).write_text(json.dumps({
            "hidden_size": head.in_features, "pooling": "last token", "max_length": self.config.max_length,
            "score": "linear head (no bias) on the base's last hidden state at the conversation's last token, "
                     "after the chat template",
        }, indent=2))


# ---- scores for the ranking page ------------------------------------------------------------

def score_batches(project: Project, models: ModelSession, batch_uids: list[str], run_id: int | None = None,
                  should_stop=lambda: False, wait_s: float = 60.0) -> Iterator[tuple[str, list[float]]]:
    """(batch uid, a score per response in generation order) for each batch, with the newest
    finished reward model (or run `run_id`). Waits its turn for the model, one batch at a time,
    so it can run beside the generation of responses."""
    from workbench.data.prompts import PromptStore
    from workbench.data.rankings import RankingStore

    runs = [(r, f) for r, f in reward_runs(project) if run_id is None or r == run_id]
    if not runs:
        raise TrainingError("There is no finished reward model to score with; train one on the Reward page.")
    run_id, folder = runs[0]
    store, prompts, model = RankingStore(project), PromptStore(project), None
    for uid in batch_uids:
        if should_stop():
            return
        batch = store.batch(uid)
        if batch is None:
            continue
        messages = prompts.messages(batch.prompt_id)
        with models.hold("scoring responses", wait_s=wait_s, should_stop=should_stop):
            model = model or load_reward_model(models, folder, adapter_name(run_id))
            yield uid, model.score([(messages, r.text) for r in batch.responses])


def uncertainty(scores: list[float]) -> float:
    """How unsure the reward model is about a batch: the gap between its two best scores."""
    best = sorted(scores, reverse=True)
    return best[0] - best[1] if len(best) > 1 else float("inf")
