"""How much memory a PPO or SFT run needs, estimated from the model's shape before launch.

The PPO estimate adds up what our PPO keeps at its peak (one shared base, several adapters):
- the base weights: 4-bit NF4 (about 4.5 bits per weight with its scales) for the linear layers
  and 16-bit embeddings when quantized, else 2 or 4 bytes per weight;
- LoRA adapters: the trainable policy with its gradient and AdamW moments (16 bytes per
  parameter in fp32), the frozen reference and reward adapters (4 bytes each);
- generation: the key/value cache of the whole batch at prompt + response length;
- training: one micro-batch's activations (every layer's, or one layer's plus the checkpoints
  with gradient checkpointing) and its response-position logits in fp32, with their gradient.
The SFT estimate: the base, one trained adapter with its optimizer, one micro-batch's
activations at the longest example's length (LoRA's dropout keeps a copy of each adapted
layer's input), and the logits of every position. `check_fits` compares what a run adds to the
loaded base with the memory free on its device and refuses one that cannot fit, before it starts.
It is a planning figure, not a promise: allocator fragmentation and CUDA's own context
(about 0.5 GB) come on top; `bench/memory_check.py` measures real peaks on the CPU against it,
`bench/ppo_memory.py` at 7B shapes on CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass

from workbench.train.runs import TrainingError

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
    head_size: int = 0
    """Per-head size where it is not hidden / heads (Gemma's 256); 0: hidden / heads."""
    block: tuple[tuple[int, int], ...] = ()
    """(in, out) of each linear layer of one block as the model really has them (Phi-3's fused
    qkv_proj, GPT-2's Conv1D c_attn); empty: Llama's seven (q, k, v, o, gate, up, down)."""

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        config = config.get_text_config()
        heads = config.num_attention_heads
        hidden = config.hidden_size
        intermediate = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
        return cls(hidden, intermediate, config.num_hidden_layers, heads,
                   getattr(config, "num_key_value_heads", None) or heads, config.vocab_size,
                   bool(getattr(config, "tie_word_embeddings", False)), getattr(config, "head_dim", None) or 0)

    @classmethod
    def from_model(cls, model) -> "ModelShape":
        """The shape with the linear layers of the model's first block, whatever its family."""
        from dataclasses import replace

        shape = cls.from_config(model.config)
        return replace(shape, block=first_block_linears(model, shape.layers) or ())

    @property
    def head_dim(self) -> int:
        return self.head_size or self.hidden // self.heads

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer of one block."""
        if self.block:
            return list(self.block)
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linear_shapes())

    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def lora_params(self, rank: int) -> int:
        return self.layers * sum(rank * (a + b) for a, b in self.linear_shapes())

    def lora_inputs(self) -> int:
        """Numbers per token entering the block's adapted layers (what LoRA's dropout copies)."""
        return sum(a for a, _ in self.linear_shapes())


def first_block_linears(model, layers: int) -> tuple[tuple[int, int], ...] | None:
    """(in, out) of the linear layers (Linear, bitsandbytes' 4-bit and 8-bit ones, GPT-2's
    Conv1D) of the model's first decoder block, leaving out any LoRA layers on them."""
    import torch
    from transformers.pytorch_utils import Conv1D

    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == layers:
            found = []
            for name, layer in module[0].named_modules():
                if "lora_" in name:
                    continue
                if isinstance(layer, Conv1D):
                    found.append((layer.weight.shape[0], layer.nf))
                elif isinstance(layer, torch.nn.Linear):
                    found.append((layer.in_features, layer.out_features))
            return tuple(found) or None
    return None


@dataclass(frozen=True)
class MemoryEstimate:
    parts: dict[str, float]  # bytes, by what holds them

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def describe(self) -> str:
        parts = " · ".join(f"{name} {size / GIB:.2f}" for name, size in self.parts.items())
        return f"about {self.total / GIB:.1f} GiB ({parts} GiB)"


def base_bytes(shape: ModelShape, quantization: str, dtype_bytes: int) -> float:
    """The base weights: quantized linear layers with full-width embeddings, or all at dtype."""
    weight_bytes = {"4bit": BITS_NF4 / 8, "8bit": 1.0}.get(quantization, dtype_bytes)
    embedding_bytes = dtype_bytes if quantization in ("4bit", "8bit") else weight_bytes
    return shape.linear_params() * weight_bytes + shape.embedding_params() * embedding_bytes


def activation_bytes(shape: ModelShape, tokens: int, dtype_bytes: int, checkpointing: bool,
                     dropout: bool = False) -> float:
    """What one training micro-batch of `tokens` tokens (rows x length) keeps for backward.

    Per token and layer, as counted by tests/core/test_memory.py over a real micro-batch: 8
    hidden-sized tensors (the block's inputs and their normed copies, q, k and v, which attention
    gets repeated to every head, the attention output) and 5 intermediate-sized ones (the MLP's
    gate, up, activation and product among them). The LoRA inputs are among these, unless LoRA's
    dropout is on: then each adapted layer keeps its dropped-out input and a byte-per-number
    mask too. Dequantized 4-bit weights are transient. With gradient checkpointing only each
    layer's input stays, plus one layer's activations while it is recomputed."""
    per_token = (8 * shape.hidden + 5 * shape.intermediate) * dtype_bytes
    if dropout:
        per_token += shape.lora_inputs() * (dtype_bytes + 1)
    per_layer = tokens * per_token
    if checkpointing:
        return tokens * shape.hidden * dtype_bytes * shape.layers + per_layer
    return per_layer * shape.layers


def estimate_ppo_memory(shape: ModelShape, config, quantization: str = "4bit", dtype_bytes: int = 2,
                        frozen_adapters: int = 2) -> MemoryEstimate:
    """Peak memory of a PPO run with `config` (a PpoConfig) on a base of `shape`, loaded with
    `quantization` ("4bit", "8bit" or "none") and computing in `dtype_bytes` per number.
    `frozen_adapters`: the reference and the reward model's adapters next to the policy."""
    lora = shape.lora_params(config.lora_rank)
    adapters = lora * 16 + frozen_adapters * lora * 4
    prompt, response = config.max_length, config.max_new_tokens
    sequence = prompt + response
    kv_cache = 2 * shape.layers * config.batch_size * sequence * shape.kv_heads * shape.head_dim * dtype_bytes
    micro = min(config.micro_batch_size, config.batch_size)
    # PPO's update turns every dropout off (_PpoTrainer.update_mode).
    activations = activation_bytes(shape, micro * sequence, dtype_bytes, config.gradient_checkpointing)
    # Response logits in fp32, their log-softmax and its gradient (token_logprobs works in chunks
    # without gradient, but the training forward keeps them for backward).
    logits = 3 * micro * response * shape.vocab * 4
    return MemoryEstimate({"base": base_bytes(shape, quantization, dtype_bytes), "adapters+optimizer": adapters,
                           "generation cache": kv_cache, "activations": activations + logits})


def estimate_sft_memory(shape: ModelShape, config, sequence_tokens: int, quantization: str = "4bit",
                        dtype_bytes: int = 2) -> MemoryEstimate:
    """Peak memory of an SFT run with `config` (an SftConfig) whose longest example has
    `sequence_tokens` tokens (a micro-batch is padded to its longest)."""
    length = min(sequence_tokens, config.max_length)
    tokens = config.batch_size * length
    activations = activation_bytes(shape, tokens, dtype_bytes, config.gradient_checkpointing,
                                   dropout=config.lora_dropout > 0)
    # Every position's logits, the fp32 copy the loss takes, and the gradient of each.
    logits = tokens * shape.vocab * (2 * dtype_bytes + 2 * 4)
    return MemoryEstimate({"base": base_bytes(shape, quantization, dtype_bytes),
                           "adapter+optimizer": shape.lora_params(config.lora_rank) * 16,
                           "activations": activations + logits})


def estimate_dpo_memory(shape: ModelShape, config, sequence_tokens: int, reply_tokens: int,
                        quantization: str = "4bit", dtype_bytes: int = 2) -> MemoryEstimate:
    """Peak memory of a DPO run with `config` (a DpoConfig) whose longest conversation has
    `sequence_tokens` tokens and longest reply `reply_tokens`. A micro-batch is batch_size
    chosen and batch_size rejected conversations in one forward pass; logits exist for the
    reply positions only (sequence_logprobs.response_logprobs); the reference is an adapter
    switched on the same base, its log-probs computed once, so it costs no memory in training."""
    rows = 2 * config.batch_size
    length = min(sequence_tokens, config.max_length)
    activations = activation_bytes(shape, rows * length, dtype_bytes, config.gradient_checkpointing,
                                   dropout=config.lora_dropout > 0)
    # Reply logits, their fp32 copy and log-softmax, kept for backward.
    logits = rows * min(reply_tokens, length) * shape.vocab * (dtype_bytes + 2 * 4)
    reference = shape.lora_params(config.lora_rank) * 4 if config.init_adapter else 0
    return MemoryEstimate({"base": base_bytes(shape, quantization, dtype_bytes),
                           "adapters+optimizer": shape.lora_params(config.lora_rank) * 16 + reference,
                           "activations": activations + logits})


def session_quantization(model) -> tuple[str, int]:
    """How the loaded model holds its weights, and the bytes per number it computes in (4-bit
    weights are dequantized to it)."""
    quantization = ("4bit" if getattr(model, "is_loaded_in_4bit", False) else
                    "8bit" if getattr(model, "is_loaded_in_8bit", False) else "none")
    return quantization, model.dtype.itemsize


def estimate_for_session(models, config, kind: str = "ppo") -> MemoryEstimate | None:
    """The PPO (or, with kind "dpo", DPO at max_length) estimate for the model loaded in
    `models`, as it is loaded (None without a model)."""
    if not models.loaded:
        return None
    shape, loaded = ModelShape.from_model(models.model), session_quantization(models.model)
    if kind == "dpo":
        return estimate_dpo_memory(shape, config, config.max_length, config.max_length, *loaded)
    return estimate_ppo_memory(shape, config, *loaded)


def free_memory_bytes(device) -> int | None:
    """Memory the run can still take on `device`: free GPU memory on CUDA, available RAM on the
    CPU (None where it cannot be known)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            import psutil
        except ImportError:
            return None
        return psutil.virtual_memory().available
    return None


def check_fits(estimate: MemoryEstimate, device, advice: str) -> None:
    """Refuse a run whose estimate, beyond the base already loaded, exceeds the free memory."""
    needed = estimate.total - estimate.parts["base"]
    free = free_memory_bytes(device)
    if free is not None and needed > free:
        where = "free on the GPU" if device.type == "cuda" else "available in RAM"
        raise TrainingError(f"This run will not fit: beyond the loaded model it needs about {needed / GIB:.1f} "
                            f"GiB ({estimate.describe()}), and {free / GIB:.1f} GiB is {where}. {advice.rstrip('.')}.")
