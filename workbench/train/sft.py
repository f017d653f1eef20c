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
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import workbench.models  # noqa: F401 - offline settings before transformers is imported
from workbench.config import ModelSpec, from_known_fields
from workbench.data.sft_store import SftStore
from workbench.models.loading import ModelSession, free_memory
from workbench.project import Project
from workbench.train.runs import RunControl, RunLock, RunRecord, StepLog, TrainingError
from workbench.train.sft_data import TokenizedExample, collate, predicted_tokens, tokenize_example

KIND = "sft"
SCHEDULES = ("constant", "linear", "cosine")
METRIC_KEYS = ("loss/train", "loss/validation", "train/lr", "train/grad_norm", "train/epoch",
               "perf/tokens_per_s", "time/step_s")


@dataclass(frozen=True)
class SftConfig:
    lora_rank: int = 16
    """LoRA rank r: the size of the low-rank update. 8-64 is typical; higher learns more, costs more."""
    lora_alpha: int = 32
    """LoRA scale; the update is multiplied by alpha / rank. Usually twice the rank."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input during training."""
    target_modules: str = "all-linear"
    """Which layers get LoRA: "all-linear", or names separated by commas (e.g. "q_proj,v_proj")."""
    learning_rate: float = 2e-4
    """Peak learning rate of AdamW. LoRA tolerates higher rates than full fine-tuning."""
    schedule: str = "cosine"
    """Learning-rate schedule after warm-up: constant, linear or cosine decay to zero."""
    warmup_steps: int = 5
    """Steps of linear warm-up from zero to the peak learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay on the LoRA weights."""
    batch_size: int = 4
    """Examples per micro-batch (what must fit in memory at once)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step; the effective batch is batch_size x grad_accum."""
    max_length: int = 1024
    """Tokens per example after the chat template; longer examples are cut at the end."""
    epochs: float = 3.0
    """Passes over the training examples (fractions allowed); ignored when max_steps is set."""
    max_steps: int = 0
    """Stop after this many optimizer steps; 0 means use epochs."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this total norm; 0 turns clipping off."""
    seed: int = 0
    """Seeds the split, the order of examples, dropout and the LoRA initialisation."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: much less memory, about 30% slower."""
    validation_fraction: float = 0.1
    """Share of examples held out to measure validation loss (at least one when there are 5+)."""
    eval_every: int = 10
    """Measure validation loss every this many steps (and at the end)."""
    checkpoint_every: int = 50
    """Save a resumable checkpoint every this many steps (and always when stopped)."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep on disk."""

    def __post_init__(self) -> None:
        positive = ("lora_rank", "lora_alpha", "batch_size", "grad_accum", "max_length",
                    "eval_every", "checkpoint_every", "keep_checkpoints")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError("validation_fraction must be at least 0 and below 1")
        if self.learning_rate <= 0 or self.epochs <= 0 or self.max_steps < 0:
            raise ValueError("learning_rate and epochs must be positive, max_steps 0 or more")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SftConfig":
        return from_known_fields(cls, data)

    def lora_config(self):
        from peft import LoraConfig

        targets = self.target_modules.strip()
        return LoraConfig(
            r=self.lora_rank, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
            target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
            task_type="CAUSAL_LM", bias="none")


def adapter_name(run_id: int) -> str:
    return f"sft-run-{run_id}"


def train_sft(project: Project, models: ModelSession, config: SftConfig | None = None,
              control: RunControl | None = None, resume_run_id: int | None = None) -> Iterator[StepLog]:
    """Train (or resume) an SFT run on the project's examples; yields a StepLog per step."""
    control = control or RunControl()
    if models.model is None:
        raise TrainingError("No model is loaded. Load the base model on the Model page first.")
    # The model first: a busy model (Try it answering) refuses before any run record changes.
    with models.hold("SFT training"):
        record, config, lock = _start_or_resume(project, models, config, resume_run_id)
        models.busy_with = f"SFT run {record.id}"
        try:
            yield from _supervised(project, models, config, record, control)
        finally:
            lock.release()


def _start_or_resume(project: Project, models: ModelSession, config: SftConfig | None,
                     resume_run_id: int | None) -> tuple[RunRecord, SftConfig, RunLock]:
    if resume_run_id is None:
        config = config or SftConfig()
        record = RunRecord.create(project, KIND, {**config.to_dict(), "base_model": _base_spec(models)})
        # A folder left by a deleted project of the same name holds someone else's data.
        shutil.rmtree(record.folder, ignore_errors=True)
        lock = RunLock(record)
        lock.acquire()
        record.log(f"Started on {models.info.name if models.info else 'the loaded model'}.")
        return record, config, lock
    record = RunRecord.open(project, resume_run_id)
    lock = RunLock(record)
    if not lock.acquire():
        raise TrainingError(f"run {resume_run_id} is being trained by another process right now.")
    try:
        return record, _check_resumable(record, models), lock
    except BaseException:
        lock.release()
        raise


def _check_resumable(record: RunRecord, models: ModelSession) -> SftConfig:
    if record.kind != KIND:
        raise TrainingError(f"run {record.id} is a {record.kind} run, not an SFT run.")
    if record.status not in ("stopped", "failed"):
        raise TrainingError(f"run {record.id} is {record.status}; only stopped or failed runs resume.")
    trained_on, loaded = record.config.get("base_model"), _base_spec(models)
    if trained_on and loaded and trained_on != loaded:
        raise TrainingError(f"run {record.id} was trained on {ModelSpec.from_dict(trained_on).display_name}; "
                            "load that model to resume it.")
    record.set_status("running", None)
    return SftConfig.from_dict(record.config)


def _supervised(project: Project, models: ModelSession, config: SftConfig, record: RunRecord,
                control: RunControl) -> Iterator[StepLog]:
    """Run the trainer and record how it ended, whatever happens."""
    name = adapter_name(record.id)
    try:
        try:
            yield StepLog(record.id, 0, 0, message="Tokenizing the examples...")
            yield from _Trainer(project, models, config, record, name).run(control)
        finally:
            trainer_cleanup(models, name, keep_adapter=record.status == "finished",
                            checkpointing=config.gradient_checkpointing)
    except TrainingError as error:
        _fail(record, str(error))
        raise
    except Exception as error:
        import torch

        if isinstance(error, torch.OutOfMemoryError):
            message = (f"Out of memory during SFT run {record.id}. Lower batch_size (now {config.batch_size}) "
                       f"or max_length (now {config.max_length}), raise grad_accum, turn on gradient "
                       "checkpointing, or load the base in 4-bit.")
            _fail(record, message)
            raise TrainingError(message) from None
        _fail(record, f"Unexpected error: {type(error).__name__}: {error}")
        raise


def _fail(record: RunRecord, message: str) -> None:
    if record.status in ("running", "paused"):
        record.set_status("failed", message)
        record.log(message, "error")


def _base_spec(models: ModelSession) -> dict | None:
    return models.spec.to_dict() if models.spec else None


def trainer_cleanup(models: ModelSession, name: str, keep_adapter: bool, checkpointing: bool) -> None:
    """Leave the shared base as we found it: eval mode, no checkpointing, no failed adapter."""
    model = models.model
    if checkpointing:
        model.gradient_checkpointing_disable()
    model.eval()
    if not keep_adapter:
        models.remove_adapter(name)
    free_memory()


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
        usable = [m for m in SftStore(self.project).all_messages() if _is_trainable(m)]
        if not usable:
            raise TrainingError("There are no usable SFT examples (each needs a non-empty assistant "
                                "reply). Add or import examples on the SFT data page.")
        order = list(range(len(usable)))
        random.Random(self.config.seed).shuffle(order)
        held_out = int(len(usable) * self.config.validation_fraction)
        if held_out == 0 and self.config.validation_fraction > 0 and len(usable) >= 5:
            held_out = 1
        validation = [usable[i] for i in order[:held_out]]
        train = [usable[i] for i in sorted(order[held_out:])]
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
        from transformers import get_scheduler

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

        # 1. The adapter, the optimizer and the schedule; restored from a checkpoint when resuming.
        torch.manual_seed(cfg.seed)
        self.models.add_adapter(self.name, cfg.lora_config())
        model = self.models.peft
        model.set_adapter(self.name)
        model.train()
        if cfg.gradient_checkpointing:
            self.models.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        scheduler = get_scheduler(cfg.schedule, optimizer, num_warmup_steps=cfg.warmup_steps,
                                  num_training_steps=total)
        step = self.restore(optimizer, scheduler)
        device = next(model.parameters()).device
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        started, first_step = time.monotonic(), step
        yield StepLog(record.id, step, total, message=f"Training {total} steps" +
                      (f", resumed at step {step}." if step else "."))

        while step < total:
            # 2. Pause and stop are honoured between steps; stopping saves a checkpoint first.
            if control.pause_requested:
                record.set_status("paused")
                yield StepLog(record.id, step, total, message="Paused.", status="paused",
                              elapsed_s=time.monotonic() - started)
                control.wait_while_paused()
                if not control.should_stop():
                    record.set_status("running")
                    yield StepLog(record.id, step, total, message="Resumed.")
            if control.should_stop():
                self.save_checkpoint(step, model, optimizer, scheduler)
                record.set_status("stopped", f"Stopped at step {step} of {total}; resume to continue.")
                record.log(f"Stopped at step {step}; checkpoint saved.")
                yield StepLog(record.id, step, total, message=f"Stopped at step {step}.", status="stopped",
                              elapsed_s=time.monotonic() - started)
                return

            # 3. One optimizer step over grad_accum micro-batches, weighted by reply tokens.
            step_started = time.monotonic()
            batches = [self.batch(train, step * cfg.grad_accum + k, micro_per_epoch) for k in range(cfg.grad_accum)]
            batches = [collate(b, pad_id) for b in batches]
            counts = [predicted_tokens(batch) for batch in batches]
            tokens = sum(counts)
            loss_sum = 0.0
            for batch, batch_tokens in zip(batches, counts):
                batch = {key: value.to(device) for key, value in batch.items()}
                out = model(**batch, use_cache=False)
                loss = out.loss * (batch_tokens / max(tokens, 1))
                if not torch.isfinite(loss):
                    last = record.last_checkpoint()
                    raise TrainingError(
                        f"The training loss became {loss.item()} at step {step + 1}. Lower the learning "
                        f"rate (now {cfg.learning_rate:g}) or check the examples; "
                        + (f"the checkpoint at step {last[0]} is kept." if last else "no checkpoint was written."))
                loss.backward()
                loss_sum += loss.item()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
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

    def batch(self, train: list[TokenizedExample], micro: int, micro_per_epoch: int) -> list[TokenizedExample]:
        """Micro-batch number `micro` of the whole run: a function of the seed and epoch only."""
        import torch

        epoch, index = divmod(micro, micro_per_epoch)
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        order = torch.randperm(len(train), generator=generator).tolist()
        size = self.config.batch_size
        return [train[i] for i in order[index * size:(index + 1) * size]]

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
        import torch
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        def write(folder: Path) -> None:
            weights = get_peft_model_state_dict(model, adapter_name=self.name)
            save_file({key: value.detach().cpu().contiguous() for key, value in weights.items()},
                      str(folder / "adapter.safetensors"))
            torch.save({
                "step": step,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            }, folder / "trainer_state.pt")
            (folder / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2))

        self.record.save_checkpoint(step, write, keep=self.config.keep_checkpoints)

    def restore(self, optimizer, scheduler) -> int:
        """Continue from the run's last complete checkpoint, if it has one; return its step."""
        import torch
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        last = self.record.last_checkpoint()
        if last is None:
            self.record.forget_metrics_after(0)
            return 0
        step, folder = last
        set_peft_model_state_dict(self.models.peft, load_file(str(folder / "adapter.safetensors")),
                                  adapter_name=self.name)
        # Our own file, written by save_checkpoint: optimizer tensors and RNG states need pickle.
        state = torch.load(folder / "trainer_state.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.record.forget_metrics_after(step)
        self.record.log(f"Resumed from the checkpoint at step {step}.")
        return step

    def save_adapter(self, model) -> Path:
        final = self.record.folder / "adapter"
        partial = self.record.folder / "adapter.partial"
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(str(partial), selected_adapters=[self.name])
        # peft puts a named (non-default) adapter in a subfolder of that name
        saved = partial / self.name if (partial / self.name).is_dir() else partial
        if final.exists():
            shutil.rmtree(final)
        os.replace(saved, final)
        shutil.rmtree(partial, ignore_errors=True)
        self.models.adapters[self.name] = final
        return final


def _is_trainable(messages: list[dict]) -> bool:
    return any(m["role"] == "assistant" and m["content"].strip() for m in messages)
