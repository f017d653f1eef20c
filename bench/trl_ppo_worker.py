"""TRL's PPO side of bench/ppo_vs_trl.py: one timed run of `trl.experimental.ppo.PPOTrainer`.

    bench/.trl-venv/bin/python bench/trl_ppo_worker.py PLAN.json RESULT.json

Run by ppo_vs_trl.py in its own process, in the separate environment that has trl 1.12.0 (the
last release with PPO), so this file imports nothing from the workbench: everything it needs
(the base model folder, the exported reward model, the prompts already tokenized with the chat
template, the settings) comes from PLAN.json, which the preparation step wrote.

It sets TRL up the way TRL's own PPO example does with a `peft_config`: the policy is a LoRA
adapter on the base, the reference is that base with the adapter disabled, the reward model
is an `AutoModelForSequenceClassification` (num_labels=1) and the value model is a second full
`AutoModelForSequenceClassification` from the base folder, trained in full (that is how TRL
works, and part of what is compared). Only `trainer.train()` is timed. Peak memory is this
process's peak RSS (whole run: imports, loading and training) and, on CUDA, the peak of
`torch.cuda.max_memory_allocated()`.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

# Never contact a hub: every model comes from a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def load_tokenizer(folder: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
    # TRL finds the end of each response by the pad token, and masks pad positions out of every
    # forward pass; a pad token equal to EOS (SmolLM2's) would make it drop the EOS token itself.
    # TRL's PPO example adds a separate [PAD] token for this; its id is never embedded, because
    # TRL replaces pad ids by 0 before each forward pass.
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    return tokenizer


def load_models(plan: dict):
    """Policy (plain causal LM; TRL wraps it in the LoRA adapter), value and reward models."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BitsAndBytesConfig

    cuda = plan["device"] == "cuda"
    # The workbench runs float32 on the CPU and bfloat16 on CUDA; TRL gets the same.
    dtype = torch.bfloat16 if cuda else torch.float32
    placement = {"device_map": {"": 0}} if cuda else {}
    policy_kwargs = dict(placement)
    if plan["quantization"] == "4bit":
        policy_kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True)
    policy = AutoModelForCausalLM.from_pretrained(plan["base_folder"], dtype=dtype, **policy_kwargs)
    # The value model is trained in full by TRL, so it cannot be 4-bit; the reward model is
    # loaded as TRL users load it, in the compute dtype.
    value = AutoModelForSequenceClassification.from_pretrained(plan["base_folder"], num_labels=1, dtype=dtype,
                                                               **placement)
    reward = AutoModelForSequenceClassification.from_pretrained(plan["reward_folder"], num_labels=1, dtype=dtype,
                                                                **placement)
    return policy, value, reward


def main() -> None:
    plan_path, result_path = sys.argv[1], sys.argv[2]
    plan = json.loads(open(plan_path, encoding="utf-8").read())

    import torch

    torch.manual_seed(plan["seed"])
    cuda = plan["device"] == "cuda"
    try:
        run(plan, result_path, cuda)
    except torch.OutOfMemoryError as error:
        # At 7B shapes TRL's full value model with AdamW may not fit: that is a result, not a crash.
        print(f"out of memory: {str(error).splitlines()[0]}", flush=True)
        result = {"error": "out of memory", "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "peak_cuda_bytes": torch.cuda.max_memory_allocated() if cuda else None}
        with open(result_path, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)


def run(plan: dict, result_path: str, cuda: bool) -> None:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    tokenizer = load_tokenizer(plan["base_folder"])
    policy, value, reward = load_models(plan)
    # TRL's dataloader drops an incomplete last batch, so with fewer prompts than a batch it would
    # never yield one and wait forever: repeat the prompts up to at least one batch.
    prompts = plan["prompt_ids"] * -(-plan["batch_size"] // len(plan["prompt_ids"]))
    dataset = Dataset.from_dict({"input_ids": prompts})

    # TRL's rollout batch is per_device_train_batch_size x gradient_accumulation_steps (x processes),
    # split into num_mini_batches optimizer steps; inside a minibatch it runs forward passes of
    # per_device_train_batch_size rows at most. So the whole batch as per_device_train_batch_size
    # with no accumulation gives exactly the workbench's schedule: 2 minibatches of batch/2 rows,
    # one forward pass and one optimizer step each. (Accumulation would instead span minibatches.)
    config = PPOConfig(
        output_dir=os.path.join(plan["scratch"], "trl-output"),
        per_device_train_batch_size=plan["batch_size"],
        gradient_accumulation_steps=1,
        num_mini_batches=plan["num_minibatches"],
        num_ppo_epochs=plan["ppo_epochs"],
        total_episodes=plan["steps"] * plan["batch_size"],
        response_length=plan["response_length"],
        temperature=plan["temperature"],
        stop_token="eos",
        missing_eos_penalty=plan["missing_eos_penalty"],
        kl_coef=plan["kl_coef"],
        learning_rate=plan["learning_rate"],
        lr_scheduler_type="constant",   # the workbench's PPO default
        warmup_steps=0,
        # TRL's PPOConfig turns gradient checkpointing on by default; the workbench's is off.
        # The same setting for both: off.
        gradient_checkpointing=False,
        bf16=cuda,                      # TRL's default is bf16; there is no bf16 autocast on our CPU runs
        use_cpu=not cuda,
        seed=plan["seed"],
        report_to="none",
        save_strategy="no",
        num_sample_generations=0,
        logging_steps=1,
        disable_tqdm=True,
    )
    lora = LoraConfig(r=plan["lora_rank"], lora_alpha=plan["lora_alpha"], lora_dropout=plan["lora_dropout"],
                      target_modules="all-linear", task_type="CAUSAL_LM", bias="none")

    class Record(TrainerCallback):
        """Per-step end times and TRL's logged metrics (scores, KL, EOS counts)."""

        def __init__(self):
            self.step_ends: list[float] = []
            self.logs: list[dict] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.step_ends.append(time.monotonic())

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs or {}))

    record = Record()
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=None,
                         reward_model=reward, train_dataset=dataset, value_model=value,
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
        "loop_s": loop_s,
        "samples": plan["steps"] * plan["batch_size"],
        "step_s": [b - a for a, b in zip([started] + record.step_ends, record.step_ends)],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux: KiB
        "peak_cuda_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "trainable_params": trainable,
        "threads": torch.get_num_threads(),
        "metrics": {
            "score": mean_of("objective/scores"),
            "kl": mean_of("objective/kl"),
            "eos_per_batch": mean_of("val/num_eos_tokens"),
            "loss/policy": mean_of("loss/policy_avg"),
            "loss/value": mean_of("loss/value_avg"),
        },
        "versions": {"torch": torch.__version__, "trl": __import__("trl").__version__,
                     "transformers": __import__("transformers").__version__},
    }
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
