"""Decoding speed: tokens/s of the ways we could generate, against plain `generate()`.

    .venv/bin/python bench/generation_speed.py [--tokens 64] [--k 4] [--prompts 4] [--repeats 2]

On the demo model (or --model FOLDER), every variant writes exactly --tokens tokens per row
(min_new_tokens = max_new_tokens, so early EOS never flatters one), sampled with the same seed:

- fp32: the base as loaded on the CPU, K rows of one prompt (what the Rank page does today);
- bf16: the same weights cast to bfloat16 (the CPU's AVX-512 BF16 or AMX units, where present);
- K x prompts: --prompts prompts of K rows each in one left-padded call (PPO's rollouts, and
  what a Rank-page prefetch of several prompts could do);
- LoRA: a rank-16 adapter on every linear layer, as the PPO policy decodes (peft adds the
  low-rank product at every layer);
- LoRA merged copy: the same adapter merged into a private copy of the weights (the shared
  base is never rounded); its greedy tokens are checked to equal the unmerged adapter's;
- on CUDA also: a static cache with torch.compile.

Prints tokens/s of each, its speed-up over fp32, and the machine.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from workbench.config import ModelSpec  # noqa: E402
from workbench.models import chat_format  # noqa: E402
from workbench.models.loading import ModelSession  # noqa: E402

PROMPTS = ["My order hasn't arrived. What should I do?", "I was charged twice for the same order.",
           "How do I return a pair of shoes that don't fit?", "Can I change the delivery address after ordering?",
           "Why was my card declined?", "The item arrived broken. Can you help?"]


def batch(tokenizer, prompts: list[str], k: int, device):
    """Left-padded input ids and mask: each prompt k times."""
    ids = [chat_format.prompt_ids(tokenizer, [{"role": "user", "content": p}]) for p in prompts for _ in range(k)]
    width = max(len(i) for i in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for row, seq in enumerate(ids):
        input_ids[row, width - len(seq):] = torch.tensor(seq)
        mask[row, width - len(seq):] = 1
    return input_ids.to(device), mask.to(device)


def timed(model, inputs, tokens: int, repeats: int, greedy: bool = False, **extra) -> tuple[float, torch.Tensor]:
    """Best tokens/s over `repeats` calls (after one warm-up), and the last call's output."""
    input_ids, mask = inputs
    kwargs = dict(input_ids=input_ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens,
                  do_sample=not greedy, temperature=1.0, top_p=1.0, top_k=0,
                  pad_token_id=model.generation_config.pad_token_id or 0, **extra)
    with torch.no_grad():
        torch.manual_seed(0)
        model.generate(**{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
        best, out = 0.0, None
        for _ in range(repeats):
            torch.manual_seed(0)
            if input_ids.is_cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            out = model.generate(**kwargs)
            if input_ids.is_cuda:
                torch.cuda.synchronize()
            best = max(best, input_ids.shape[0] * tokens / (time.perf_counter() - started))
    return best, out


def with_lora(model, rank: int = 16):
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                            lora_dropout=0.0))
    torch.manual_seed(1)
    for name, parameter in peft.named_parameters():
        if "lora_B" in name:  # a trained adapter's B is not zero: give it weights to add
            parameter.data.normal_(std=0.02)
    return peft.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model folder (default: the demo model)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    models = ModelSession()
    spec = ModelSpec(kind="folder", location=args.model) if args.model else ModelSpec(kind="demo")
    for _ in models.load(spec):
        pass
    base, tokenizer = models.model, models.tokenizer
    device = next(base.parameters()).device
    one, many = batch(tokenizer, PROMPTS[:1], args.k, device), batch(tokenizer, PROMPTS[:args.prompts], args.k, device)
    print(f"{spec.display_name} on "
          f"{device} ({torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor() or 'CPU'}, "
          f"{torch.get_num_threads()} threads), dtype {base.dtype}; {args.tokens} tokens per row, best of "
          f"{args.repeats}", flush=True)

    results = []

    def report(name: str, rows: int, speed: float) -> None:
        results.append((name, speed))
        print(f"  {name:<34} {rows:>3} rows  {speed:8.1f} tokens/s  {speed / results[0][1]:5.2f}x", flush=True)

    report("plain generate()", one[0].shape[0], timed(base, one, args.tokens, args.repeats)[0])
    if device.type == "cpu" or base.dtype != torch.bfloat16:
        bf16 = copy.deepcopy(base).to(torch.bfloat16)
        report("bf16 weights", one[0].shape[0], timed(bf16, one, args.tokens, args.repeats)[0])
        del bf16
    report(f"{args.prompts} prompts x K in one call", many[0].shape[0], timed(base, many, args.tokens, args.repeats)[0])

    lora = with_lora(copy.deepcopy(base))
    speed, unmerged = timed(lora, one, args.tokens, 1, greedy=True)
    report("LoRA adapter (unmerged)", one[0].shape[0], timed(lora, one, args.tokens, args.repeats)[0])
    merged = copy.deepcopy(lora).merge_and_unload()  # a private copy: the shared base is untouched
    _, merged_out = timed(merged, one, args.tokens, 1, greedy=True)
    report("LoRA merged into a private copy", one[0].shape[0], timed(merged, one, args.tokens, args.repeats)[0])
    same = (unmerged == merged_out).float().mean().item()
    print(f"  merged vs unmerged greedy tokens equal: {same:.1%}")
    del lora, merged

    if device.type == "cuda":
        compiled = copy.deepcopy(base)
        compiled.forward = torch.compile(compiled.forward, mode="reduce-overhead")
        report("static cache + torch.compile", one[0].shape[0],
               timed(compiled, one, args.tokens, args.repeats, cache_implementation="static")[0])


if __name__ == "__main__":
    main()
