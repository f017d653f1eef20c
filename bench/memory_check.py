"""The memory estimate before an SFT or PPO run against the peak measured on the CPU.

    .venv/bin/python bench/memory_check.py [--shapes smollm2-135m,qwen2.5-0.5b] [--kinds sft,ppo]

For each shape (random weights from a published config, written once to bench/.cache) and each
kind of run, a fresh child process loads the base in float32 through the app's loader, then
runs one training step while a thread samples the process's resident memory every 2 ms. The
figure compared is what the step adds to the loaded base: peak RSS during the step minus RSS
before it, against the estimate without its base part (`workbench/train/memory.py`, the same
call the trainers make before they start). The goal: within 25%.

Each run is measured twice. "tensors" runs with MALLOC_MMAP_THRESHOLD_=131072, so glibc gives
every large freed block back at once and the peak is that of the tensors alive together (what
the estimate models, and what CUDA's max_memory_allocated reports on a GPU). "as run" keeps
glibc's default, whose mmap threshold rises after the first large frees: freed activations then
stay resident and the first step's RSS peak comes out up to ~1.8x higher.

SFT: a micro-batch of 4 examples of about 256 tokens (LoRA rank 16, dropout 0.05, no gradient
checkpointing). PPO: 8 prompts of 64 tokens, 64 sampled tokens (random weights rarely sample
EOS: full length), micro-batches of 4, scored by a rule (no reward adapter).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ppo_memory import SHAPES  # noqa: E402 - bench/ppo_memory.py, beside this file

SHAPES = {**SHAPES, "qwen2.5-0.5b": dict(
    hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
    vocab_size=151936, tie_word_embeddings=True)}

CHILD = r"""
import json, sys, tempfile, threading, time
from pathlib import Path
import psutil, torch
sys.path.insert(0, BENCH)
from ppo_memory import random_model
import ppo_memory
ppo_memory.SHAPES[SHAPE] = SHAPE_CONFIG
from workbench.config import ModelSpec
from workbench.data.prompts import PromptStore
from workbench.data.sft_store import SftStore
from workbench.models.loading import ModelSession
from workbench.project import Project
from workbench.train.memory import GIB, ModelShape, estimate_ppo_memory, estimate_sft_memory
from workbench.train.ppo import PpoConfig, train_ppo
from workbench.train.sft import SftConfig, train_sft
from workbench.train.sft_data import tokenize_example

spec = ModelSpec(kind="folder", location=str(random_model(SHAPE)), device="cpu", quantization="none", dtype="float32")
project = Project.create(Path(tempfile.mkdtemp()) / "m.rlhf")
project.set_base_model(spec)
models = ModelSession()
for _ in models.load(spec):
    pass
shape = ModelShape.from_model(models.model)
words = "my order has not arrived and the tracking link shows nothing please help with the refund "
if KIND == "sft":
    config = SftConfig(max_steps=1, batch_size=4, max_length=256, validation_fraction=0.0, warmup_steps=0)
    examples = [[{"role": "user", "content": f"{i} " + words * 2},
                 {"role": "assistant", "content": words * 30}] for i in range(4)]
    SftStore(project).add_many(examples)
    longest = max(len(tokenize_example(models.tokenizer, m, config.max_length).input_ids) for m in examples)
    estimate = estimate_sft_memory(shape, config, longest, "none", 4)
    run = lambda: list(train_sft(project, models, config))
else:
    config = PpoConfig(max_steps=1, batch_size=8, micro_batch_size=4, num_minibatches=2, max_length=64,
                       max_new_tokens=64, heldout_fraction=0.0, checkpoint_every=1000, samples_per_step=0)
    for i in range(8):
        PromptStore(project).add(f"{i} " + words * 8)
    estimate = estimate_ppo_memory(shape, config, "none", 4, frozen_adapters=0)
    run = lambda: list(train_ppo(project, models, config, reward_fn=lambda p, t: [len(x) / 100 for x in t]))
process = psutil.Process()
before = process.memory_info().rss
peak, done = [before], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        time.sleep(0.002)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
started = time.perf_counter()
logs = run()
done.set()
sampler.join()
assert logs[-1].status == "finished", logs[-1].message
print(json.dumps({"measured": peak[0] - before, "estimate": estimate.total - estimate.parts["base"],
                  "parts": {k: v for k, v in estimate.parts.items() if k != "base"},
                  "seconds": time.perf_counter() - started}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="smollm2-135m,qwen2.5-0.5b")
    parser.add_argument("--kinds", default="sft,ppo")
    args = parser.parse_args()
    bench = str(Path(__file__).resolve().parent)
    print("| shape | run | estimate (GiB, beyond the base) | measured: tensors (GiB) | estimate / tensors | "
          "measured: as run, glibc default (GiB) | step s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for shape in args.shapes.split(","):
        for kind in args.kinds.split(","):
            code = (f"BENCH={bench!r}; SHAPE={shape!r}; KIND={kind!r}; SHAPE_CONFIG={SHAPES[shape]!r}\n" + CHILD)
            rows = {}
            for name, extra in (("tensors", {"MALLOC_MMAP_THRESHOLD_": "131072"}), ("as run", {})):
                result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                        env={**os.environ, **extra})
                lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
                if result.returncode or not lines:
                    print(f"| {shape} | {kind} | failed ({name}): {result.stderr.strip().splitlines()[-1:]} |")
                    break
                rows[name] = json.loads(lines[-1])
            if len(rows) < 2:
                continue
            gib = 1024 ** 3
            estimate, tensors = rows["tensors"]["estimate"], rows["tensors"]["measured"]
            print(f"| {shape} | {kind} | {estimate / gib:.2f} | {tensors / gib:.2f} | {estimate / tensors:.2f} | "
                  f"{rows['as run']['measured'] / gib:.2f} | {rows['tensors']['seconds']:.0f} |", flush=True)
            print(f"|   | parts | {', '.join(f'{k} {v / gib:.2f}' for k, v in rows['tensors']['parts'].items())} "
                  "| | | | |", flush=True)


if __name__ == "__main__":
    main()
