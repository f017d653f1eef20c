"""Direct preference optimisation of a LoRA policy on the rankings: DPO, IPO or SimPO.

- pairs: exactly the reward model's (`reward_data.run_pairs`: every ranking, ties and "all bad"
  give none, split by prompt with the same seed and fraction), so a DPO run's validation
  accuracy and a reward model's are measured on the same held-out pairs;
- policy: a LoRA adapter `dpo-run-N` on the shared base, a copy of an SFT adapter or fresh
  (`loop.start_policy`, as PPO's);
- reference: that SFT adapter or the plain base, on the same base with adapters switched, never
  a second copy of the model. Its log-probs of every pair are computed once at the start and
  kept in the run folder (`reference_logps.json`), so a resumed run continues from the same ones;
- loss: `dpo_loss.preference_loss` over summed reply log-probs (the chat template is the one
  renderer every path uses; the reply's end-of-turn tokens count, so the policy learns to stop).

Dropout stays off (as TRL's `disable_dropout`): with it, the policy would not start equal to
its reference, and the first steps would push on noise. The run folder ends with `adapter/`,
`evaluation.json` (each validation pair's implicit rewards, read like a reward model's) and
the prompts it trained on and held out (`train_prompts.json`, `heldout_prompts.json`), which
"Did it work?" answers. `train_dpo(...)` is a generator of StepLogs like the other trainers.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import workbench.models  # noqa: F401 - offline settings before transformers is imported
from workbench.models.loading import ModelSession
from workbench.paths import write_atomically
from workbench.project import Project
from workbench.train.dpo_loss import LOSS_TYPES, PairLogprobs, pair_metrics, preference_loss
from workbench.train.lora_settings import LoraTrainingConfig
from workbench.train.loop import (
    between_steps, clip_gradients, memory_advice, micro_batch, non_finite, optimizer_and_schedule,
    restore_checkpoint, run_training, save_adapter, save_checkpoint, start_policy, train_mode_without_dropout,
)
from workbench.train.memory import ModelShape, check_fits, estimate_dpo_memory, session_quantization
from workbench.train.ppo import HELDOUT_FILE, TRAIN_FILE
from workbench.train.reward_data import PairExample, pad_right, run_pairs
from workbench.train.runs import RunControl, RunRecord, StepLog
from workbench.train.sequence_logprobs import response_logprobs, split_conversation

KIND = "dpo"
METRIC_KEYS = ("loss/train", "loss/validation", "rewards/accuracies", "eval/rewards/accuracies", "rewards/margins",
               "eval/rewards/margins", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected",
               "train/lr", "train/grad_norm", "train/epoch", "perf/pairs_per_s", "time/step_s")
REFERENCE_FILE = "reference_logps.json"


@dataclass(frozen=True)
class DpoConfig(LoraTrainingConfig):
    """The shared LoRA settings with DPO defaults, the loss and its strength."""

    lora_dropout: float = 0.0
    """Off, as in TRL's DPO (disable_dropout): with dropout the policy would not start equal to
    its reference. A policy copied from an SFT adapter has its dropout turned off too."""
    learning_rate: float = 5e-5
    """Peak learning rate of AdamW for the policy adapter."""
    batch_size: int = 1
    """Preference pairs per forward and backward pass (each pair is two sequences); a step
    trains on batch_size x grad_accum pairs. One pair per pass holds the fewest activations: on
    the demo model on a CPU, a step of 4 pairs peaked at 1,990 MiB in passes of 1 pair against
    3,650 MiB in one pass of 4, and took about as long. On a GPU with memory to spare, more
    pairs per pass keep it busier."""
    grad_accum: int = 4
    """Passes per optimizer step; 4 x 1 pair is TRL's usual 4 pairs per step, one at a time."""
    max_length: int = 512
    """Tokens per prompt + reply; longer ones lose the start of the prompt, never the reply."""
    epochs: float = 2.0
    """Passes over the training pairs (fractions allowed); ignored when max_steps is set."""
    validation_fraction: float = 0.2
    """Share of prompts held out, with all their pairs, as for the reward model (with the same
    seed both hold out the same prompts): validation accuracy, and "Did it work?"'s prompts."""
    loss_type: str = "sigmoid"
    """sigmoid (DPO), ipo (IPO: a squared loss on per-token log-ratios, harder to overfit) or
    simpo (SimPO: no reference model, per-token log-probs and a target margin)."""
    beta: float = 0.1
    """How strongly the policy may move from the reference: the scale of the log-ratios in the
    loss. DPO and IPO: 0.1 is usual (lower lets it move further). SimPO wants about 2."""
    label_smoothing: float = 0.0
    """sigmoid and simpo: the share of pairs assumed mislabeled (conservative DPO); 0 trusts
    every ranking."""
    simpo_gamma: float = 0.5
    """simpo: the target margin between chosen and rejected rewards."""
    init_adapter: str = ""
    """SFT adapter to start the policy from, which is then also the frozen reference (e.g.
    "sft-run-2"); empty: a fresh adapter, with the plain base as reference."""
    annotators: str = ""
    """Only these annotators' rankings (names separated by commas); empty means everyone's."""
    max_new_tokens: int = 128
    """"Did it work?": the longest answer, in tokens, when the policy and its reference answer
    the held-out prompts."""
    temperature: float = 1.0
    """"Did it work?": the sampling temperature of those answers (the whole distribution, no
    top-p/top-k cut, so the KL reported describes what was sampled)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}")
        if self.beta <= 0:
            raise ValueError("beta must be positive")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError("label_smoothing must be from 0 up to (not including) 0.5")
        if self.simpo_gamma < 0:
            raise ValueError("simpo_gamma must be 0 or more")
        if self.max_new_tokens < 1 or self.temperature <= 0:
            raise ValueError("max_new_tokens must be at least 1 and temperature positive")

    @property
    def pairs_without_gradients(self) -> int:
        """Pairs per pass where nothing is kept for a backward pass (reference log-probs,
        validation): a whole step's, as they cost no activation memory."""
        return self.batch_size * self.grad_accum

    @property
    def uses_reference(self) -> bool:
        return self.loss_type != "simpo"

    def annotator_list(self) -> list[str] | None:
        names = [n.strip() for n in self.annotators.split(",") if n.strip()]
        return names or None


def train_dpo(project: Project, models: ModelSession, config: DpoConfig | None = None,
              control: RunControl | None = None, resume_run_id: int | None = None) -> Iterator[StepLog]:
    """Train (or resume) a DPO policy on the project's rankings; yields a StepLog per step."""
    yield from run_training(
        project, models, KIND, DpoConfig, config, control, resume_run_id, "Collecting preference pairs...",
        memory_advice,
        lambda config, record, name, control: _DpoTrainer(project, models, config, record, name).run(control))


class _DpoTrainer:
    def __init__(self, project: Project, models: ModelSession, config: DpoConfig, record: RunRecord, name: str):
        self.project, self.models, self.config, self.record, self.name = project, models, config, record, name
        self.tokenizer = models.tokenizer
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.reference: str | None = None  # adapter name; None for the plain base
        self.ref: dict[str, list[list[float]]] = {}  # each pair's reference (chosen, rejected) log-probs

    # ---- data ----------------------------------------------------------------------------------

    def load_pairs(self) -> tuple[list[PairExample], list[PairExample]]:
        cfg, folder = self.config, self.record.folder
        train, validation = run_pairs(self.project, folder, self.tokenizer, cfg.annotator_list(), cfg.max_length,
                                      cfg.validation_fraction, cfg.seed)
        if not (folder / HELDOUT_FILE).is_file():  # "Did it work?" answers the prompts it never trained on
            (folder / TRAIN_FILE).write_text(json.dumps(sorted({p.prompt_id for p in train})))
            (folder / HELDOUT_FILE).write_text(json.dumps(sorted({p.prompt_id for p in validation})))
        return train, validation

    def encode(self, pairs: list[PairExample], device):
        """Chosen conversations then rejected ones, right-padded, and where each reply starts."""
        import torch

        rows = [split_conversation(self.tokenizer, p.messages, p.chosen, self.config.max_length) for p in pairs]
        rows += [split_conversation(self.tokenizer, p.messages, p.rejected, self.config.max_length) for p in pairs]
        ids, mask = pad_right([r[0] for r in rows], self.pad)
        starts = torch.tensor([r[1] for r in rows], dtype=torch.long)
        return ids.to(device), mask.to(device), starts.to(device)

    def logprobs(self, pairs: list[PairExample], adapter: str | None, device):
        """(chosen, rejected, chosen tokens, rejected tokens) [pairs] under `adapter` (None: the
        plain base); the policy's with gradients when they are enabled."""
        peft = self.models.peft
        ids, mask, starts = self.encode(pairs, device)
        if adapter is None:
            with peft.disable_adapter():
                summed, counts = response_logprobs(peft, ids, mask, starts)
        else:
            peft.set_adapter(adapter)
            summed, counts = response_logprobs(peft, ids, mask, starts)
            if adapter != self.name:
                peft.set_adapter(self.name)  # set_adapter also moves requires_grad to the active one
        n = len(pairs)
        counts = counts.float()
        return summed[:n], summed[n:], counts[:n], counts[n:]

    def reference_logprobs(self, train: list[PairExample], validation: list[PairExample], device,
                           step: int, total: int) -> Iterator[StepLog]:
        """Fills self.ref: each pair's (chosen, rejected) reference log-probs, computed once with
        the reference adapter switched on (or read back from the run folder when resuming)."""
        import torch

        path = self.record.folder / REFERENCE_FILE
        if path.is_file():
            saved = json.loads(path.read_text())
            if len(saved["train"]) == len(train) and len(saved["validation"]) == len(validation):
                self.ref = saved
                return
        self.ref = {"train": [], "validation": []}
        if not self.config.uses_reference:
            self.ref = {"train": [[0.0, 0.0]] * len(train), "validation": [[0.0, 0.0]] * len(validation)}
            return
        self.models.peft.eval()
        size, done, everything = self.config.pairs_without_gradients, 0, len(train) + len(validation)
        yield StepLog(self.record.id, step, total, message=f"Reference log-probs of {everything} pairs "
                      f"({self.reference or 'the base model'}), computed once...")
        with torch.no_grad():
            for split, pairs in (("train", train), ("validation", validation)):
                for start in range(0, len(pairs), size):
                    chosen, rejected, _, _ = self.logprobs(pairs[start:start + size], self.reference, device)
                    self.ref[split] += [[c, r] for c, r in zip(chosen.tolist(), rejected.tolist())]
                    done += len(pairs[start:start + size])
                    if done < everything and done % (size * 8) < size:
                        yield StepLog(self.record.id, step, total,
                                      message=f"Reference log-probs: {done} of {everything} pairs.")
        write_atomically(path, json.dumps(self.ref).encode("utf-8"))

    def pair_logprobs(self, pairs: list[PairExample], indices: list[int], split: str, device) -> PairLogprobs:
        import torch

        chosen, rejected, chosen_n, rejected_n = self.logprobs(pairs, self.name, device)
        ref = torch.tensor([self.ref[split][i] for i in indices], device=device, dtype=chosen.dtype)
        uses = self.config.uses_reference
        return PairLogprobs(chosen, rejected, ref[:, 0] if uses else None, ref[:, 1] if uses else None,
                            chosen_n, rejected_n)

    def loss(self, lp: PairLogprobs):
        cfg = self.config
        return preference_loss(lp, cfg.loss_type, cfg.beta, cfg.label_smoothing, cfg.simpo_gamma)

    # ---- the loop ------------------------------------------------------------------------------

    def check_memory(self, pairs: list[PairExample], device) -> None:
        """A run that cannot fit says so before it starts, from its longest pair."""
        longest = [split_conversation(self.tokenizer, p.messages, text, self.config.max_length)
                   for p in pairs for text in (p.chosen, p.rejected)]
        sequence = max(len(ids) for ids, _ in longest)
        reply = max(len(ids) - start for ids, start in longest)
        shape = ModelShape.from_model(self.models.model)
        estimate = estimate_dpo_memory(shape, self.config, sequence, reply, *session_quantization(self.models.model))
        check_fits(estimate, device, memory_advice(self.config))

    def run(self, control: RunControl) -> Iterator[StepLog]:
        import torch

        cfg, record = self.config, self.record
        train, validation = self.load_pairs()
        device = next(self.models.model.parameters()).device
        self.check_memory(train + validation, device)
        prompts = len({p.prompt_uid for p in train}), len({p.prompt_uid for p in validation})
        micro_per_epoch = math.ceil(len(train) / cfg.batch_size)
        total = cfg.max_steps or max(1, math.ceil(cfg.epochs * micro_per_epoch / cfg.grad_accum))

        # 1. The policy (and the reference it starts equal to), optimizer and schedule.
        torch.manual_seed(cfg.seed)
        self.reference = start_policy(self.project, self.models, self.name, cfg)
        params = [p for p in self.models.peft.parameters() if p.requires_grad]
        optimizer, scheduler = optimizer_and_schedule(params, cfg, total)
        step, _, _ = restore_checkpoint(record, self.models, self.name, optimizer, scheduler)
        record.log(f"{len(train)} training pairs from {prompts[0]} prompts, {len(validation)} validation pairs "
                   f"from {prompts[1]} other prompts; {total} steps of {cfg.batch_size} x {cfg.grad_accum} pairs; "
                   f"{cfg.loss_type} loss, beta {cfg.beta:g}; reference: "
                   f"{'none (SimPO)' if not cfg.uses_reference else self.reference or 'the base model'}.")

        # 2. The reference's log-probs of every pair, once.
        yield from self.reference_logprobs(train, validation, device, step, total)
        save = lambda: save_checkpoint(record, self.models.peft, self.name, step, optimizer, scheduler, cfg)  # noqa: E731
        started, first_step, scored = time.monotonic(), step, None
        yield StepLog(record.id, step, total, message=f"Training {total} steps" +
                      (f", resumed at step {step}." if step else "."))
        order = list(range(len(train)))

        while step < total:
            # 3. Pause and stop between steps; stopping saves a checkpoint first.
            yield from between_steps(control, record, step, total, started, save)
            if record.status == "stopped":
                return

            # 4. One optimizer step over grad_accum micro-batches of pairs.
            step_started = time.monotonic()
            sums: dict[str, float] = {}
            seen, loss_sum = 0, 0.0
            with train_mode_without_dropout(self.models.peft):
                for k in range(cfg.grad_accum):
                    indices = micro_batch(order, step * cfg.grad_accum + k, micro_per_epoch, cfg.batch_size, cfg.seed)
                    lp = self.pair_logprobs([train[i] for i in indices], indices, "train", device)
                    losses, chosen, rejected = self.loss(lp)
                    loss = losses.mean() / cfg.grad_accum
                    if not torch.isfinite(loss):
                        raise non_finite("DPO loss", loss.item(), step + 1, record,
                                         f"Lower the learning rate (now {cfg.learning_rate:g}) or beta (now {cfg.beta:g})")
                    loss.backward()
                    loss_sum += loss.item()
                    for key, value in pair_metrics(losses, chosen, rejected, lp).items():
                        sums[key] = sums.get(key, 0.0) + value * len(indices)
                    seen += len(indices)
            grad_norm = clip_gradients(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seconds = time.monotonic() - step_started

            # 5. Metrics and validation, recorded before they are reported; checkpoints.
            metrics = {"loss/train": loss_sum, **{key: value / seen for key, value in sums.items()},
                       "train/lr": scheduler.get_last_lr()[0], "train/grad_norm": float(grad_norm),
                       "train/epoch": step * cfg.grad_accum / micro_per_epoch,
                       "perf/pairs_per_s": seen / max(seconds, 1e-9), "time/step_s": seconds}
            if validation and (step % cfg.eval_every == 0 or step == total):
                figures, scored = self.validate(validation, device)
                metrics.update(figures)
            record.add_metrics(step, metrics)
            if step % cfg.checkpoint_every == 0 and step < total:
                save()
            elapsed = time.monotonic() - started
            yield StepLog(record.id, step, total, metrics, elapsed_s=elapsed,
                          eta_s=elapsed / (step - first_step) * (total - step))

        # 6. The policy adapter, and each validation pair's implicit rewards (read like a
        # reward model's evaluation).
        if scored is None:
            _, scored = self.validate(validation, device)
        write_atomically(record.folder / "evaluation.json", json.dumps(scored, ensure_ascii=False).encode("utf-8"))
        folder = save_adapter(self.models, record, self.name)
        record.set_artifact(folder)
        record.set_status("finished", f"Finished {total} steps.")
        record.log(f"Finished; policy adapter saved to {folder}.")
        yield StepLog(record.id, step, total, message="Finished.", status="finished",
                      elapsed_s=time.monotonic() - started, eta_s=0.0)

    def validate(self, validation: list[PairExample], device) -> tuple[dict, list[dict]]:
        """Validation loss, accuracy and margin of the implicit rewards, and each pair's rewards."""
        import torch

        self.models.peft.eval()
        scored, loss_sum = [], 0.0
        with torch.no_grad():
            size = self.config.pairs_without_gradients
            for start in range(0, len(validation), size):
                pairs = validation[start:start + size]
                lp = self.pair_logprobs(pairs, list(range(start, start + len(pairs))), "validation", device)
                losses, chosen, rejected = self.loss(lp)
                loss_sum += float(losses.sum())
                for pair, c, r in zip(pairs, chosen.tolist(), rejected.tolist()):
                    scored.append({"prompt_id": pair.prompt_id, "batch": pair.batch, "annotator": pair.annotator,
                                   "prompt": pair.messages[-1]["content"], "chosen": pair.chosen,
                                   "rejected": pair.rejected, "chosen_score": c, "rejected_score": r,
                                   "distance": pair.distance})
        if not scored:
            return {}, []
        n = len(scored)
        return {"loss/validation": loss_sum / n,
                "eval/rewards/accuracies": sum(s["chosen_score"] > s["rejected_score"] for s in scored) / n,
                "eval/rewards/margins": sum(s["chosen_score"] - s["rejected_score"] for s in scored) / n}, scored
