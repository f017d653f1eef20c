"""What translating our settings into another engine's produces, and the sums both engines need.

A translator fills `Translation.settings` (the engine's names and values), marks each of our
fields it carried over with `use`, and gives reasons for those it could not carry with `skip`;
`unmapped()` then lists every other field too, so job.json accounts for the whole config."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

SCHEDULERS = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}
"""Our schedules (warm-up then constant, linear or cosine decay to zero) by transformers' names."""


@dataclass
class Translation:
    config: object
    settings: dict = field(default_factory=dict)
    used: set = field(default_factory=set)
    reasons: dict = field(default_factory=dict)

    def use(self, *ours: str) -> None:
        self.used.update(ours)

    def set(self, key: str, value, *ours: str) -> None:
        self.settings[key] = value
        self.use(*ours)

    def skip(self, ours: str, why: str) -> None:
        self.reasons[ours] = why

    def use_where_neutral(self, config) -> None:
        """Settings whose value here asks nothing of the engine: a fresh adapter (no init_adapter),
        no step limit (max_steps 0: epochs decide), SimPO's gamma when the loss is not SimPO."""
        if not getattr(config, "init_adapter", "x"):
            self.use("init_adapter")
        if getattr(config, "max_steps", 1) == 0:
            self.use("max_steps")
        if getattr(config, "loss_type", "simpo") != "simpo":
            self.use("simpo_gamma")
        for name in ("length_penalty", "missing_eos_penalty", "kl_in_loss", "whiten_rewards"):
            if not getattr(config, name, True):
                self.use(name)
        if hasattr(config, "samples_per_step"):  # PPO: what its page shows, and fields it ignores
            self.use("samples_per_step", "epochs", "validation_fraction")

    def unmapped(self, engine: str) -> list[dict]:
        """Our fields with no equivalent: name, our value, and why."""
        return [{"setting": f.name, "value": getattr(self.config, f.name),
                 "why": self.reasons.get(f.name, f"no equivalent in {engine}")}
                for f in fields(self.config) if f.name not in self.used]


def optimizer_steps(stage: str, config, train_rows: int) -> int:
    """How many optimizer steps our trainer would make on `train_rows` rows."""
    if config.max_steps or stage == "ppo":  # PPO's length is always max_steps
        return config.max_steps
    per_step = config.batch_size * config.grad_accum
    return max(1, math.ceil(math.ceil(train_rows / per_step) * config.epochs))


def quantization(spec) -> str:
    """"nf4", "int8" or "none": what the base is loaded as on a CUDA machine (our "auto" is NF4 there)."""
    if spec is None:
        return "none"
    return {"auto": "nf4", "nf4": "nf4", "int8": "int8"}.get(spec.quantization, "none")


def compute_dtype(spec) -> str:
    """The dtype on a CUDA machine: our "auto" is bfloat16 there."""
    chosen = getattr(spec, "dtype", "auto")
    return "bfloat16" if chosen == "auto" else chosen
