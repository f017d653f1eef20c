"""What every LoRA training run shares (SFT, reward model, PPO): claiming the model and the
run record, recording how a run ended, pausing and stopping between steps, checkpoints of the
adapter (plus any extra tensors such as a reward head) with optimizer, schedule and RNG, and the
final adapter folder.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from workbench.config import ModelSpec
from workbench.errors import WorkbenchError, first_line
from workbench.models.loading import ModelSession, free_memory
from workbench.paths import disk_problem
from workbench.project import Project
from workbench.train.runs import RunControl, RunLock, RunRecord, StepLog, TrainingError, finished_adapters
from workbench.train.tensorboard_log import with_tensorboard

LABELS = {"sft": "SFT", "rm": "reward-model", "ppo": "PPO", "dpo": "DPO", "policy": "imported policy"}


def adapter_for(kind: str, run_id: int) -> str:
    """The name of a run's LoRA adapter on the shared base: sft-run-3, rm-run-4, ppo-run-5."""
    return f"{kind}-run-{run_id}"


def named_adapters(project: Project, kind: str) -> dict[str, Path]:
    """Finished runs' adapter folders of `kind` by adapter name (e.g. "sft-run-3"), newest first."""
    return {adapter_for(kind, run_id): folder for run_id, folder in finished_adapters(project, kind)}


def run_training(project: Project, models: ModelSession, kind: str, config_class, config,
                 control: RunControl | None, resume_run_id: int | None, first_message: str,
                 oom_advice: Callable[[object], str],
                 steps: Callable[[object, RunRecord, str, RunControl], Iterator[StepLog]]) -> Iterator[StepLog]:
    """What every `train_*` generator does around its own loop: claim the model (a busy model
    refuses before any run record changes), create or resume the run and lock it, record how it
    ends. `steps(config, record, adapter_name, control)` is the kind's own loop."""
    control = control or RunControl()
    if models.model is None:
        raise TrainingError("No model is loaded. Load the base model on the Model page first.")
    label = LABELS.get(kind, kind)
    with models.hold(f"{label} training"):
        record, config, lock = start_or_resume(project, models, kind, config, config_class, resume_run_id)
        models.busy_with = f"{label} run {record.id}"
        name = adapter_for(kind, record.id)
        try:
            yield StepLog(record.id, 0, 0, message=first_message)
            yield from recorded(record, models, name, config.gradient_checkpointing, oom_advice(config),
                                with_tensorboard(record, steps(config, record, name, control)))
        finally:
            lock.release()


def memory_advice(config) -> str:
    """What to change after running out of memory, for trainers of batches of sequences."""
    return (f"Lower batch_size (now {config.batch_size}) or max_length (now {config.max_length}), raise "
            "grad_accum, turn on gradient checkpointing, or load the base in 4-bit.")


def train_adapter(models: ModelSession, name: str, config, lora_config=None):
    """Add adapter `name` to the shared base (with `config`'s LoRA settings unless `lora_config`
    is given) as the active, trainable one; gradient checkpointing on when `config` asks."""
    models.add_adapter(name, lora_config or config.lora_config())
    models.peft.set_adapter(name)
    if config.gradient_checkpointing:
        models.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return models.peft


def start_policy(project: Project, models: ModelSession, name: str, config) -> str | None:
    """Add policy adapter `name` (PPO's, DPO's), trainable and active: a copy of the SFT adapter
    `config.init_adapter` (which stays loaded, frozen, as the reference) or a fresh one with
    `config`'s LoRA settings. Returns the reference's adapter name, None for the plain base."""
    from peft import PeftConfig, get_peft_model_state_dict, set_peft_model_state_dict

    if not config.init_adapter:
        train_adapter(models, name, config)
        return None
    adapters = named_adapters(project, "sft")
    if config.init_adapter not in adapters:
        raise TrainingError(f"No finished SFT adapter named {config.init_adapter}; choose from: "
                            f"{', '.join(adapters) or 'none yet'}.")
    models.load_adapter(config.init_adapter, adapters[config.init_adapter])
    lora = PeftConfig.from_pretrained(str(adapters[config.init_adapter]))
    lora.inference_mode = False
    train_adapter(models, name, config, lora)
    state = get_peft_model_state_dict(models.peft, adapter_name=config.init_adapter)
    set_peft_model_state_dict(models.peft, state, adapter_name=name)
    return config.init_adapter


@contextmanager
def train_mode_without_dropout(peft):
    """Train mode, since gradient checkpointing acts only in it, with every dropout off (LoRA's:
    a policy copied from an SFT adapter has 0.05, and the base's). PPO's update must compute the
    rollout's log-probs until the weights move, and DPO's policy must start equal to its reference."""
    import torch

    peft.train()
    attention = {}
    for module in peft.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()
        rate = getattr(module, "attention_dropout", None)  # Llama-style attention reads it in train mode
        if isinstance(rate, float) and rate > 0:
            attention[module] = rate
            module.attention_dropout = 0.0
    try:
        yield
    finally:
        for module, rate in attention.items():
            module.attention_dropout = rate
        peft.eval()


def optimizer_and_schedule(params, config, total_updates: int):
    """AdamW and the learning-rate schedule (with warm-up) of a run's `total_updates` updates.
    `params`: parameters, or parameter groups of which one may set its own peak "lr"."""
    import torch
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    # transformers' "constant" ignores num_warmup_steps; its warm-up twin honours them.
    schedule = "constant_with_warmup" if config.schedule == "constant" else config.schedule
    scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=config.warmup_steps,
                              num_training_steps=total_updates)
    return optimizer, scheduler


def clip_gradients(params, max_norm: float):
    """Clip to `max_norm` (0: no clipping) and return the total norm before clipping."""
    import torch

    return torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))


def micro_batch(items: list, micro: int, micro_per_epoch: int, batch_size: int, seed: int) -> list:
    """Micro-batch number `micro` of a whole run: a function of the seed and epoch only, so a
    resumed run sees exactly the batches it would have seen."""
    import torch

    epoch, index = divmod(micro, micro_per_epoch)
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return [items[i] for i in order[index * batch_size:(index + 1) * batch_size]]


def base_spec(models: ModelSession) -> dict | None:
    return models.spec.to_dict() if models.spec else None


def start_or_resume(project: Project, models: ModelSession, kind: str, config, config_class,
                    resume_run_id: int | None) -> tuple[RunRecord, object, RunLock]:
    """A new run record for `config`, or the stopped run `resume_run_id` with its own config."""
    if resume_run_id is None:
        config = config or config_class()
        record = RunRecord.create(project, kind, {**config.to_dict(), "base_model": base_spec(models)})
        # A folder left by a deleted project of the same name holds someone else's data.
        shutil.rmtree(record.folder, ignore_errors=True)  # inside the artifacts folder: see RunRecord.folder
        lock = RunLock(record)
        lock.acquire()
        record.log(f"Started on {models.info.name if models.info else 'the loaded model'}.")
        return record, config, lock
    record = RunRecord.open(project, resume_run_id)
    lock = RunLock(record)
    if not lock.acquire():
        raise TrainingError(f"run {resume_run_id} is being trained by another process right now.")
    try:
        check_resumable(record, models, kind)
        return record, config_class.from_dict(record.config), lock
    except BaseException:
        lock.release()
        raise


def check_resumable(record: RunRecord, models: ModelSession, kind: str) -> None:
    if record.kind != kind:
        raise TrainingError(f"run {record.id} is a {record.kind} run, not a {LABELS.get(kind, kind)} run.")
    if record.status not in ("stopped", "failed"):
        raise TrainingError(f"run {record.id} is {record.status}; only stopped or failed runs resume.")
    trained_on, loaded = record.config.get("base_model"), base_spec(models)
    if trained_on and loaded and trained_on != loaded:
        raise TrainingError(f"run {record.id} was trained on {ModelSpec.from_dict(trained_on).display_name}; "
                            "load that model to resume it.")
    record.set_status("running", None)


def recorded(record: RunRecord, models: ModelSession, name: str, checkpointing: bool, oom_advice: str,
             steps: Iterator[StepLog]) -> Iterator[StepLog]:
    """Run `steps` and record how the run ended, whatever happens; the base is left clean."""
    try:
        try:
            yield from steps
        finally:
            cleanup(models, name, keep_adapter=record.status == "finished", checkpointing=checkpointing)
    except WorkbenchError as error:  # a TrainingError, or a ProjectError such as a full disk
        fail(record, str(error))
        raise
    except Exception as error:
        import torch

        if isinstance(error, torch.OutOfMemoryError):
            message = f"Out of memory during {LABELS.get(record.kind, record.kind)} run {record.id}. {oom_advice}"
            fail(record, message)
            raise TrainingError(message) from None
        fail(record, f"Unexpected error: {type(error).__name__}: {error}")
        raise


def fail(record: RunRecord, message: str) -> None:
    """Mark the run failed with `message`. Where even that cannot be written (the disk holding
    the project is full), the run is left as it is: once this process lets go of its lock,
    the next command or open reports it as interrupted (mark_interrupted), and the original
    error still reaches the user."""
    try:
        if record.status in ("running", "paused"):
            record.set_status("failed", message)
            record.log(message, "error")
    except WorkbenchError:
        pass


def cleanup(models: ModelSession, name: str, keep_adapter: bool, checkpointing: bool) -> None:
    """Leave the shared base as we found it: eval mode, no checkpointing, no failed adapter."""
    model = models.model
    if checkpointing:
        model.gradient_checkpointing_disable()
    model.eval()
    if not keep_adapter:
        models.remove_adapter(name)
    free_memory()


def between_steps(control: RunControl, record: RunRecord, step: int, total: int, started: float,
                  save: Callable[[], None]) -> Iterator[StepLog]:
    """Honour pause and stop; a stop saves a checkpoint first. The caller ends the run when
    `record.status` is "stopped" afterwards."""
    if control.pause_requested:
        record.set_status("paused")
        yield StepLog(record.id, step, total, message="Paused.", status="paused",
                      elapsed_s=time.monotonic() - started)
        control.wait_while_paused()
        if not control.should_stop():
            record.set_status("running")
            yield StepLog(record.id, step, total, message="Resumed.")
    if control.should_stop():
        save()
        record.set_status("stopped", f"Stopped at step {step} of {total}; resume to continue.")
        record.log(f"Stopped at step {step}; checkpoint saved.")
        yield StepLog(record.id, step, total, message=f"Stopped at step {step}.", status="stopped",
                      elapsed_s=time.monotonic() - started)


def non_finite(what: str, value: float, step: int, record: RunRecord, advice: str) -> TrainingError:
    last = record.last_checkpoint()
    return TrainingError(f"The {what} became {value} at step {step}. {advice}; "
                         + (f"the checkpoint at step {last[0]} is kept." if last else "no checkpoint was written."))


# ---- checkpoints and the final adapter ---------------------------------------------------------

def save_checkpoint(record: RunRecord, model, name: str, step: int, optimizer, scheduler, config,
                    extra: dict | None = None, extra_state: dict | None = None) -> None:
    """The adapter's weights, `extra` tensors (e.g. a reward head), optimizer, schedule, RNG,
    and `extra_state` (plain values such as PPO's KL coefficient)."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    def write(folder: Path) -> None:
        weights = get_peft_model_state_dict(model, adapter_name=name)
        save_file({key: value.detach().cpu().contiguous() for key, value in weights.items()},
                  str(folder / "adapter.safetensors"))
        if extra:
            save_file({key: value.detach().cpu().contiguous() for key, value in extra.items()},
                      str(folder / "extra.safetensors"))
        torch.save({
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "extra": extra_state or {},
        }, folder / "trainer_state.pt")
        (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2))

    record.save_checkpoint(step, write, keep=config.keep_checkpoints)


def restore_checkpoint(record: RunRecord, models: ModelSession, name: str, optimizer,
                       scheduler) -> tuple[int, dict, dict]:
    """Continue from the run's last complete checkpoint, if any: (its step, its extra tensors,
    its extra state)."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    last = record.last_checkpoint()
    if last is None:
        record.forget_metrics_after(0)
        return 0, {}, {}
    step, folder = last
    try:
        set_peft_model_state_dict(models.peft, load_file(str(folder / "adapter.safetensors")), adapter_name=name)
        extra = load_file(str(folder / "extra.safetensors")) if (folder / "extra.safetensors").is_file() else {}
        # A checkpoint may come from someone else's project: weights_only lets torch rebuild
        # tensors and plain containers only, never call what a pickle names.
        state = torch.load(folder / "trainer_state.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(tuple(state["rng"]["python"]))
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    except Exception as error:  # noqa: BLE001 - any unreadable checkpoint gets the same clear refusal
        raise TrainingError(f"The checkpoint at step {step} of run {record.id} cannot be used ({first_line(error)}); "
                            "it is damaged or was not written by the workbench. Start a new run instead.") from None
    record.forget_metrics_after(step)
    record.log(f"Resumed from the checkpoint at step {step}.")
    return step, extra, state.get("extra", {})


def save_adapter(models: ModelSession, record: RunRecord, name: str,
                 also: Callable[[Path], None] | None = None) -> Path:
    """The finished adapter in `run-NNNN/adapter`, where plain peft loads it; `also(folder)`
    adds files (a reward head) before the folder is put in place."""
    final = record.folder / "adapter"
    partial = record.folder / "adapter.partial"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        models.peft.save_pretrained(str(partial), selected_adapters=[name])
        # peft puts a named (non-default) adapter in a subfolder of that name
        saved = partial / name if (partial / name).is_dir() else partial
        if also is not None:
            also(saved)
        if final.exists():
            shutil.rmtree(final)
        os.replace(saved, final)
    except Exception as error:  # noqa: BLE001 - peft, torch and safetensors raise their own types
        raise TrainingError(f"Could not write the finished adapter: {disk_problem(record.folder, error)}. "
                            + record.kept_checkpoint()) from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    models.adapters[name] = final
    return final
