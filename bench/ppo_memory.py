"""Peak memory of one PPO step, measured, next to the estimate the PPO page shows before launch.

    .venv/bin/python bench/ppo_memory.py                      # 7B shapes on CUDA (the issue's goal: < 16 GB)
    .venv/bin/python bench/ppo_memory.py --shape smollm2-135m # small enough to measure on a CPU

The run: a base with random weights from a published config (Llama-2-7B by default), loaded
through the app's own loader (4-bit NF4 on CUDA, full precision on a CPU), a batch of 16 prompts
of 128 tokens, 128 sampled response tokens (random weights rarely sample EOS, so every response
is full length: the worst case), one PPO step with 2 minibatches of micro-batches of 4. The
score comes from a rule (a Python function): a reward model's forward pass runs without
gradient, between generation and training, and is smaller than the training micro-batch.

Measured on CUDA: torch.cuda.max_memory_allocated (and reserved) over the step, after loading.
On a CPU: the growth of the process's peak RSS over the step (so the allocator's and Python's
overheads count too). Random weights are written once to bench/.cache/<shape> (13 GB for 7B).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench.config import ModelSpec  # noqa: E402
from workbench.data.prompts import PromptStore  # noqa: E402
from workbench.models.loading import ModelSession  # noqa: E402
from workbench.models.tiny import make_tiny_tokenizer  # noqa: E402
from workbench.project import Project  # noqa: E402
from workbench.train.ppo import PpoConfig, train_ppo  # noqa: E402
from workbench.train.memory import GIB, ModelShape, estimate_ppo_memory  # noqa: E402

SHAPES = {
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False),
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
}
CACHE = Path(__file__).resolve().parent / ".cache"


def random_model(shape: str) -> Path:
    """A Llama with `shape`'s sizes and random weights (bf16), with a small tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = CACHE / shape
    if (folder / "config.json").is_file():
        return folder
    tokenizer = make_tiny_tokenizer()
    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    print(f"writing random {shape} weights to {folder} (once)...", flush=True)
    torch.set_default_dtype(torch.bfloat16)
    model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    partial = folder.with_name(folder.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="llama-2-7b")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--response-tokens", type=int, default=128)
    parser.add_argument("--micro", type=int, default=4, help="micro-batch size of the training forward")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing on")
    args = parser.parse_args()

    import torch

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    config = PpoConfig(max_steps=1, batch_size=args.batch, micro_batch_size=args.micro, num_minibatches=2,
                       max_length=args.prompt_tokens, max_new_tokens=args.response_tokens, heldout_fraction=0.0,
                       gradient_checkpointing=args.checkpointing, checkpoint_every=1000, samples_per_step=0)
    from transformers import LlamaConfig

    shape = ModelShape.from_config(LlamaConfig(**SHAPES[args.shape]))
    quantization = "4bit" if cuda else "none"
    estimate = estimate_ppo_memory(shape, config, quantization, dtype_bytes=2 if cuda else 4, frozen_adapters=0)
    print(f"{args.shape}, batch {args.batch}, {args.prompt_tokens} prompt + {args.response_tokens} response tokens, "
          f"micro-batch {args.micro}, checkpointing {'on' if args.checkpointing else 'off'}, "
          f"{'CUDA 4-bit NF4' if cuda else 'CPU float32'}")
    print(f"estimate (no reward adapter; the rule scores): {estimate.describe()}")
    if not cuda and args.shape == "llama-2-7b":
        print("no CUDA device: a 7B step in float32 needs ~30 GB of RAM and hours on a CPU; estimate only.")
        cuda_estimate = estimate_ppo_memory(shape, config, "4bit", dtype_bytes=2, frozen_adapters=0)
        print(f"the estimate on CUDA with a 4-bit NF4 base: {cuda_estimate.describe()}")
        return

    folder = random_model(args.shape)
    spec = ModelSpec(kind="folder", location=str(folder), device="cuda" if cuda else "cpu",
                     quantization="nf4" if cuda else "none", dtype="bfloat16" if cuda else "float32")
    scratch = Path(tempfile.mkdtemp(prefix="ppo-memory-"))
    project = Project.create(scratch / "memory.rlhf")
    project.set_base_model(spec)
    words = "my order has not arrived and the tracking link shows nothing please help with the refund "
    for i in range(args.batch):
        PromptStore(project).add(f"{i} " + words * (args.prompt_tokens // 8))  # longer than the prompt limit
    models = ModelSession()
    started = time.perf_counter()
    for _ in models.load(spec):
        pass
    print(f"loaded in {time.perf_counter() - started:.0f} s")
    if cuda:
        torch.cuda.synchronize()
        loaded = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    logs = list(train_ppo(project, models, config, reward_fn=lambda prompts, texts: [len(t) / 100 for t in texts]))
    seconds = time.perf_counter() - started
    if logs[-1].status != "finished":
        print(f"the step did not finish: {logs[-1].message}")
        sys.exit(1)
    metrics = next(log.metrics for log in logs if log.metrics)
    print(f"one PPO step in {seconds:.1f} s (generate {metrics['time/generate_s']:.1f} s, score "
          f"{metrics['time/score_s']:.1f} s, train {metrics['time/train_s']:.1f} s); mean response length "
          f"{metrics['response/length']:.0f} tokens")
    if cuda:
        peak, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
        print(f"measured: base loaded {loaded / GIB:.2f} GiB; peak allocated {peak / GIB:.2f} GiB, peak reserved "
              f"{reserved / GIB:.2f} GiB ({peak / 1e9:.2f} GB); goal < 16 GB: "
              f"{'met' if peak < 16e9 else 'NOT met'}; estimate {estimate.total / GIB:.2f} GiB")
    else:
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
        after_load = estimate.total - estimate.parts["base"]
        print(f"measured: peak RSS grew {grown / GIB:.2f} GiB over the step (the base was already loaded); the "
              f"estimate without the base: {after_load / GIB:.2f} GiB")


if __name__ == "__main__":
    main()
