"""TRL's DPOTrainer on bench/dpo_vs_trl.py's plan, in TRL's own environment (bench/.trl-dpo-venv).

    bench/.trl-dpo-venv/bin/python bench/trl_dpo_worker.py PLAN.json RESULT.json

A new LoRA adapter on the base (TRL's reference is then the base with the adapter switched off),
every setting as in the plan; times `trainer.train()` and records the last steps' loss, reward
margin and accuracy under TRL's own names.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path


def main(plan_path: str, result_path: str) -> None:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    plan = json.loads(Path(plan_path).read_text())
    cuda = plan["device"] == "cuda"
    tokenizer = AutoTokenizer.from_pretrained(plan["base_folder"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(plan["base_folder"], dtype=torch.bfloat16 if cuda else torch.float32)
    if cuda:
        model = model.to("cuda")
    logged: list[dict] = []

    class Keep(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                logged.append(dict(logs))

    args = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-dpo-"), per_device_train_batch_size=plan["trl_micro"],
        gradient_accumulation_steps=plan["batch_size"] // plan["trl_micro"],
        max_steps=plan["steps"], learning_rate=plan["learning_rate"], lr_scheduler_type="constant", warmup_steps=0,
        beta=plan["beta"], loss_type=[plan["loss"]], max_length=plan["max_length"], logging_steps=1,
        save_strategy="no", report_to="none", seed=0, bf16=cuda, use_cpu=not cuda,
        gradient_checkpointing=plan.get("trl_checkpointing", False),
        disable_dropout=True, dataloader_num_workers=0)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(plan["rows"]),
                         processing_class=tokenizer, callbacks=[Keep()],
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
    if cuda:
        torch.cuda.synchronize()
    started = time.monotonic()
    trainer.train()
    if cuda:
        torch.cuda.synchronize()
    loop = time.monotonic() - started
    last = logged[-max(1, len(logged) // 4):]
    mean = lambda key: sum(row[key] for row in last) / len(last)  # noqa: E731
    Path(result_path).write_text(json.dumps({
        "loop_s": loop, "pairs": plan["steps"] * plan["batch_size"],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_cuda_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "threads": torch.get_num_threads(),
        "loss_last": mean("loss"), "margin_last": mean("rewards/margins"), "accuracy_last": mean("rewards/accuracies"),
    }, indent=2))
    print(f"TRL {len(logged)} logged steps in {loop:.1f} s; last loss {logged[-1]['loss']:.4f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
