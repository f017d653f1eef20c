"""Supervised fine-tuning: a LoRA adapter on the shared base, loss on the replies only.

`train_sft(...)` is a generator of StepLogs (DESIGN.md principle 2): the GUI runs it in a
worker thread, the command line in a loop, the tests with `islice`. It records the run in the
project as it goes: config, metrics, logs, checkpoints, and at the end the adapter folder,
which plain `PeftModel.from_pretrained(base, folder)` loads.

One training step is one optimizer update over `grad_accum` micro-batches. The order of the
examples is a function of the seed and the epoch only, so a resumed run sees exactly the
batches it would have seen.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import workbench.models  # noqa: F401 - offline settings before transformers is imported
from workbench.data.sft_store import SftStore
from workbench.models.chat_format import TemplateRefused, render
from workbench.models.loading import ModelSession
from workbench.project import Project
from workbench.train.lora_settings import LoraTrainingConfig
from workbench.train.loop import (
    adapter_for, between_steps, clip_gradients, memory_advice, micro_batch, non_finite,
    optimizer_and_schedule, restore_checkpoint, run_training, save_adapter, save_checkpoint, train_adapter,
)
from workbench.train.memory import ModelShape, check_fits, estimate_sft_memory, session_quantization
from workbench.train.runs import RunControl, RunRecord, StepLog, TrainingError
from workbench.train.sft_data import TokenizedExample, collate, predicted_tokens, tokenize_example

KIND = "sft"
METRIC_KEYS = ("loss/train", "loss/validation", "train/lr", "train/grad_norm", "train/epoch",
               "perf/tokens_per_s", "time/step_s")


@dataclass(frozen=True)
class SftConfig(LoraTrainingConfig):
    """SFT uses the shared settings as they are."""


def adapter_name(run_id: int) -> str:
    return adapter_for(KIND, run_id)


def train_sft(project: Project, models: ModelSession, config: SftConfig | None = None,
              control: RunControl | None = None, resume_run_id: int | None = None) -> Iterator[StepLog]:
    """Train (or resume) an SFT run on the project's examples; yields a StepLog per step."""
    yield from run_training(
        project, models, KIND, SftConfig, config, control, resume_run_id, "Tokenizing the examples...",
        memory_advice,
        lambda config, record, name, control: _Trainer(project, models, config, record, name).run(control))


class _Trainer:
    """The state of one run; `run` is the loop and reads top to bottom."""

    def __init__(self, project: Project, models: ModelSession, config: SftConfig, record: RunRecord,
                 name: str):
        self.project, self.models, self.config, self.record, self.name = project, models, config, record, name
        self.tokenizer = models.tokenizer

    # ---- data ------------------------------------------------------------------------------

    def load_examples(self) -> tuple[list[list[dict]], list[list[dict]]]:
        """The run's own copy of its data, so a resume trains on exactly the same examples."""
        snapshot = self.record.folder / "examples.jsonl"
        if snapshot.is_file():
            train, validation = [], []
            # split on newlines only: splitlines() would also split inside texts at U+2028 etc.
            for line in filter(None, snapshot.read_text(encoding="utf-8").split("\n")):
                row = json.loads(line)
                (train if row["split"] == "train" else validation).append(row["messages"])
            return train, validation
        numbered = trainable_examples(self.project)
        for example_id, messages in numbered:  # a conversation the template refuses stops us now, not mid-run
            try:
                render(self.tokenizer, messages)
            except TemplateRefused as error:
                raise TrainingError(f"SFT example {example_id}: {error}. Edit or delete it on the SFT data "
                                    "page.") from error
        train, validation = split_examples([m for _, m in numbered], self.config.validation_fraction,
                                           self.config.seed)
        self.record.folder.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"split": "train", "messages": m}, ensure_ascii=False) for m in train]
        lines += [json.dumps({"split": "validation", "messages": m}, ensure_ascii=False) for m in validation]
        partial = snapshot.with_suffix(".partial")
        partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(partial, snapshot)
        return train, validation

    def tokenize(self, examples: list[list[dict]]) -> list[TokenizedExample]:
        tokenized = [tokenize_example(self.tokenizer, m, self.config.max_length) for m in examples]
        kept = [t for t in tokenized if t.trainable_tokens > 0]
        if len(kept) < len(tokenized):
            self.record.log(f"{len(tokenized) - len(kept)} examples have no reply within max_length="
                            f"{self.config.max_length} tokens and were skipped.", "warning")
        return kept

    # ---- the loop --------------------------------------------------------------------------

    def run(self, control: RunControl) -> Iterator[StepLog]:
        import torch

        cfg, record = self.config, self.record
        train_texts, validation_texts = self.load_examples()
        train, validation = self.tokenize(train_texts), self.tokenize(validation_texts)
        if not train:
            raise TrainingError(f"No training example fits in max_length={cfg.max_length} with part "
                                "of its reply; raise max_length.")
        micro_per_epoch = math.ceil(len(train) / cfg.batch_size)
        total = cfg.max_steps or max(1, math.ceil(cfg.epochs * micro_per_epoch / cfg.grad_accum))
        record.log(f"{len(train)} training and {len(validation)} validation examples; {total} steps "
                   f"of {cfg.batch_size} x {cfg.grad_accum} examples.")

        # 1. A run that cannot fit says so now; then the adapter, the optimizer and the schedule,
        #    restored from a checkpoint when resuming.
        base = self.models.model
        longest = max(len(t.input_ids) for t in train + validation)
        check_fits(estimate_sft_memory(ModelShape.from_model(base), cfg, longest, *session_quantization(base)),
                   next(base.parameters()).device, memory_advice(cfg))
        torch.manual_seed(cfg.seed)
        model = train_adapter(self.models, self.name, cfg)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer, scheduler = optimizer_and_schedule(params, cfg, total)
        step = self.restore(optimizer, scheduler)
        device = next(model.parameters()).device
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        started, first_step = time.monotonic(), step
        yield StepLog(record.id, step, total, message=f"Training {total} steps" +
                      (f", resumed at step {step}." if step else "."))

        while step < total:
            # 2. Pause and stop are honoured between steps; stopping saves a checkpoint first.
            yield from between_steps(control, record, step, total, started,
                                     lambda: self.save_checkpoint(step, model, optimizer, scheduler))
            if record.status == "stopped":
                return

            # 3. One optimizer step over grad_accum micro-batches, weighted by reply tokens.
            step_started = time.monotonic()
            batches = [micro_batch(train, step * cfg.grad_accum + k, micro_per_epoch, cfg.batch_size, cfg.seed)
                       for k in range(cfg.grad_accum)]
            batches = [collate(b, pad_id) for b in batches]
            counts = [predicted_tokens(batch) for batch in batches]
            tokens = sum(counts)
            loss_sum = 0.0
            for batch, batch_tokens in zip(batches, counts):
                batch = {key: value.to(device) for key, value in batch.items()}
                out = model(**batch, use_cache=False)
                loss = out.loss * (batch_tokens / max(tokens, 1))
                if not torch.isfinite(loss):
                    raise non_finite("training loss", loss.item(), step + 1, record,
                                     f"Lower the learning rate (now {cfg.learning_rate:g}) or check the examples")
                loss.backward()
                loss_sum += loss.item()
            grad_norm = clip_gradients(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seconds = time.monotonic() - step_started

            # 4. Metrics, validation, checkpoints; each recorded before it is reported.
            metrics = {
                "loss/train": loss_sum,
                "train/lr": scheduler.get_last_lr()[0],
                "train/grad_norm": float(grad_norm),
                "train/epoch": step * cfg.grad_accum / micro_per_epoch,
                "perf/tokens_per_s": tokens / max(seconds, 1e-9),
                "time/step_s": seconds,
            }
            if validation and (step % cfg.eval_every == 0 or step == total):
                metrics["loss/validation"] = self.validation_loss(model, validation, pad_id, device)
            record.add_metrics(step, metrics)
            if step % cfg.checkpoint_every == 0 and step < total:
                self.save_checkpoint(step, model, optimizer, scheduler)
            elapsed = time.monotonic() - started
            eta = elapsed / (step - first_step) * (total - step)
            yield StepLog(record.id, step, total, metrics, elapsed_s=elapsed, eta_s=eta)

        # 5. The adapter, where plain peft finds it.
        folder = self.save_adapter(model)
        record.set_artifact(folder)
        record.set_status("finished", f"Finished {total} steps.")
        record.log(f"Finished; adapter saved to {folder}.")
        yield StepLog(record.id, step, total, message="Finished.", status="finished",
                      elapsed_s=time.monotonic() - started, eta_s=0.0)

    def validation_loss(self, model, validation: list[TokenizedExample], pad_id: int, device) -> float:
        import torch

        model.eval()
        total_loss, total_tokens = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(validation), self.config.batch_size):
                batch = collate(validation[start:start + self.config.batch_size], pad_id)
                tokens = predicted_tokens(batch)
                out = model(**{key: value.to(device) for key, value in batch.items()}, use_cache=False)
                total_loss += out.loss.item() * tokens
                total_tokens += tokens
        model.train()
        return total_loss / max(total_tokens, 1)

    # ---- checkpoints -----------------------------------------------------------------------

    def save_checkpoint(self, step: int, model, optimizer, scheduler) -> None:
        save_checkpoint(self.record, model, self.name, step, optimizer, scheduler, self.config)

    def restore(self, optimizer, scheduler) -> int:
        return restore_checkpoint(self.record, self.models, self.name, optimizer, scheduler)[0]

    def save_adapter(self, model) -> Path:
        return save_adapter(self.models, self.record, self.name)


def _is_trainable(messages: list[dict]) -> bool:
    return any(m["role"] == "assistant" and m["content"].strip() for m in messages)


def trainable_examples(project: Project) -> list[tuple[int, list[dict]]]:
    """(example id, messages) of the SFT examples with a non-empty assistant reply."""
    return [(i, m) for i, m in SftStore(project).numbered_messages() if _is_trainable(m)]


def split_examples(usable: list[list[dict]], validation_fraction: float, seed: int) -> tuple[list, list]:
    """(train, validation) of an SFT run, the split every run and every exported job uses: a
    seeded shuffle, at least one validation example once there are five."""
    if not usable:
        raise TrainingError("There are no usable SFT examples (each needs a non-empty assistant "
                            "reply). Add or import examples on the SFT data page.")
    order = list(range(len(usable)))
    random.Random(seed).shuffle(order)
    held_out = int(len(usable) * validation_fraction)
    if held_out == 0 and validation_fraction > 0 and len(usable) >= 5:
        held_out = 1
    return [usable[i] for i in sorted(order[held_out:])], [usable[i] for i in order[:held_out]]
