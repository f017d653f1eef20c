"""How much accelerator memory a PPO run needs, estimated from the model's config before launch.

The estimate adds up what our PPO keeps at its peak (one shared base, several adapters):
- the base weights: 4-bit NF4 (about 4.5 bits per weight with its scales) for the linear layers
  and 16-bit embeddings when quantized, else 2 or 4 bytes per weight;
- LoRA adapters: the trainable policy with its gradient and AdamW moments (16 bytes per
  parameter in fp32), the frozen reference and reward adapters (4 bytes each);
- generation: the key/value cache of the whole batch at prompt + response length;
- training: one micro-batch's activations (every layer's, or one layer's plus the checkpoints
  with gradient checkpointing) and its response-position logits in fp32, with their gradient.
It is a planning figure, not a promise: allocator fragmentation and CUDA's own context
(about 0.5 GB) come on top, and `bench/ppo_memory.py` measures the real peak to compare.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024 ** 3
BITS_NF4 = 4.5  # 4-bit weights plus one absmax scale per 64 (double-quantized), rounded up


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer that memory depends on."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        heads = config.num_attention_heads
        return cls(config.hidden_size, config.intermediate_size, config.num_hidden_layers, heads,
                   getattr(config, "num_key_value_heads", None) or heads, config.vocab_size,
                   bool(getattr(config, "tie_word_embeddings", False)))

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer of one block: q, k, v, o, gate, up, down."""
        kv = self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]

    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linear_shapes())

    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def lora_params(self, rank: int) -> int:
        return self.layers * sum(rank * (a + b) for a, b in self.linear_shapes())


@dataclass(frozen=True)
class MemoryEstimate:
    parts: dict[str, float]  # bytes, by what holds them

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        parts = " · ".join(f"{name} {size / GIB:.2f}" for name, size in self.parts.items())
        return f"about {self.total / GIB:.1f} GiB ({parts} GiB)"


def estimate_ppo_memory(shape: ModelShape, config, quantization: str = "4bit", dtype_bytes: int = 2,
                        frozen_adapters: int = 2) -> MemoryEstimate:
    """Peak memory of a PPO run with `config` (a PpoConfig) on a base of `shape`, loaded with
    `quantization` ("4bit", "8bit" or "none") and computing in `dtype_bytes` per number.
    `frozen_adapters`: the reference and the reward model's adapters next to the policy."""
    weight_bytes = {"4bit": BITS_NF4 / 8, "8bit": 1.0}.get(quantization, dtype_bytes)
    embedding_bytes = dtype_bytes if quantization in ("4bit", "8bit") else weight_bytes
    base = shape.linear_params() * weight_bytes + shape.embedding_params() * embedding_bytes
    lora = shape.lora_params(config.lora_rank)
    adapters = lora * 16 + frozen_adapters * lora * 4
    prompt, response = config.max_length, config.max_new_tokens
    sequence = prompt + response
    kv_cache = 2 * shape.layers * config.batch_size * sequence * shape.kv_heads * shape.head_dim * dtype_bytes
    micro = min(config.micro_batch_size, config.batch_size)
    # Saved for backward per token and layer, as counted by tests/core/test_ppo_memory.py over a
    # real micro-batch: 8 hidden-sized tensors (the block's inputs and their normed copies, q, k
    # and v, which attention gets repeated to every head, the attention output) and 5
    # intermediate-sized ones (the MLP's gate, up, activation and product among them). The LoRA
    # inputs are among these; dequantized 4-bit weights are transient.
    per_layer = micro * sequence * (8 * shape.hidden + 5 * shape.intermediate) * dtype_bytes
    if config.gradient_checkpointing:
        activations = micro * sequence * shape.hidden * dtype_bytes * shape.layers + per_layer
    else:
        activations = per_layer * shape.layers
    # Response logits in fp32, their log-softmax and its gradient (token_logprobs works in chunks
    # without gradient, but the training forward keeps them for backward).
    logits = 3 * micro * response * shape.vocab * 4
    return MemoryEstimate({"base": base, "adapters+optimizer": adapters, "generation cache": kv_cache,
                           "activations": activations + logits})


def estimate_for_session(models, config) -> MemoryEstimate | None:
    """The estimate for the model loaded in `models`, as it is loaded (None without a model)."""
    if not models.loaded:
        return None
    model = models.model
    quantization = ("4bit" if getattr(model, "is_loaded_in_4bit", False) else
                    "8bit" if getattr(model, "is_loaded_in_8bit", False) else "none")
    dtype_bytes = model.dtype.itemsize  # what it computes in (4-bit weights are dequantized to it)
    return estimate_ppo_memory(ModelShape.from_config(model.config), config, quantization, dtype_bytes)
