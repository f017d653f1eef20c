"""The settings every LoRA training run shares (SFT, reward model, PPO), as one dataclass
each kind of run extends: a docstring under each field (shown as tooltips), checks, the LoRA config."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from workbench.config import from_known_fields

SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class LoraTrainingConfig:
    """Settings every LoRA training run shares; each kind of run may change defaults or add fields."""

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
    def from_dict(cls, data: dict):
        return from_known_fields(cls, data)

    def lora_config(self):
        from peft import LoraConfig

        targets = self.target_modules.strip()
        return LoraConfig(
            r=self.lora_rank, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
            target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
            task_type="CAUSAL_LM", bias="none")
