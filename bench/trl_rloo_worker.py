"""TRL's RLOO side of bench/ppo_vs_trl.py --peer rloo: one timed run of `trl.RLOOTrainer`.

    bench/.trl-dpo-venv/bin/python bench/trl_rloo_worker.py PLAN.json RESULT.json

Run in its own process, in the environment with the current TRL (1.16.0, the one
bench/dpo_vs_trl.py makes), so it imports nothing from the workbench: the base folder, the
exported reward model, the prompts (as conversations, which RLOO renders with the chat
template) and the settings come from PLAN.json.

Set up as TRL's RLOO example with a `peft_config`: a LoRA policy on the base, the reference is
the base with the adapter disabled, the reward model an `AutoModelForSequenceClassification`
given as a reward function, `num_generations` answers per prompt with the leave-one-out
baseline. One generation batch per optimizer step, in two gradient-accumulation passes (ours:
one minibatch of two micro-batches). Only `trainer.train()` is timed; peak memory is the
process's peak RSS and, on CUDA, `torch.cuda.max_memory_allocated()`.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def main() -> None:
    plan = json.loads(open(sys.argv[1], encoding="utf-8").read())
    result_path = sys.argv[2]

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    torch.manual_seed(plan["seed"])
    cuda = plan["device"] == "cuda"
    group, batch = plan["group_size"], plan["batch_size"]
    # At least one step's prompts (batch / group), as TRL drops an incomplete last batch.
    prompts = plan["prompt_messages"] * math.ceil(batch / group / len(plan["prompt_messages"]))
    dataset = Dataset.from_dict({"prompt": prompts})
    config = RLOOConfig(
        output_dir=os.path.join(plan["scratch"], "trl-rloo-output"),
        per_device_train_batch_size=batch // 2,
        gradient_accumulation_steps=2,            # one generation batch = one optimizer step, two passes
        num_generations=group,
        num_iterations=plan["ppo_epochs"],
        max_completion_length=plan["response_length"],
        temperature=plan["temperature"], top_p=1.0, top_k=0,
        beta=plan["kl_coef"],
        learning_rate=plan["learning_rate"], lr_scheduler_type="constant", warmup_steps=0,
        max_steps=plan["steps"],
        gradient_checkpointing=False,
        bf16=cuda, use_cpu=not cuda,
        seed=plan["seed"], report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
    )
    lora = LoraConfig(r=plan["lora_rank"], lora_alpha=plan["lora_alpha"], lora_dropout=plan["lora_dropout"],
                      target_modules="all-linear", task_type="CAUSAL_LM", bias="none")
    policy = AutoModelForCausalLM.from_pretrained(plan["base_folder"],
                                                  dtype=torch.bfloat16 if cuda else torch.float32)

    class Record(TrainerCallback):
        def __init__(self):
            self.step_ends: list[float] = []
            self.logs: list[dict] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.step_ends.append(time.monotonic())

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs or {}))

    record = Record()
    trainer = RLOOTrainer(model=policy, reward_funcs=plan["reward_folder"], args=config, train_dataset=dataset,
                          peft_config=lora, callbacks=[record])
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    if cuda:
        torch.cuda.synchronize()
    started = time.monotonic()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    loop_s = time.monotonic() - started

    def mean_of(key):
        values = [log[key] for log in record.logs if key in log]
        return sum(values) / len(values) if values else None

    result = {
        "loop_s": loop_s, "samples": plan["steps"] * batch,
        "step_s": [b - a for a, b in zip([started] + record.step_ends, record.step_ends)],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_cuda_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "trainable_params": trainable, "threads": torch.get_num_threads(),
        "metrics": {"score": mean_of("reward"), "kl": mean_of("kl"),
                    "response_length": mean_of("completions/mean_length")},
        "versions": {"torch": torch.__version__, "trl": __import__("trl").__version__,
                     "transformers": __import__("transformers").__version__},
    }
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
