"""Our settings as a config for TRL's command line (`trl sft|reward|dpo|rloo --config
config.yaml`), pinned to the TRL version whose script arguments these keys were read from.

The keys are those of TRL's ScriptArguments, ModelConfig and each stage's Config (SFTConfig,
RewardConfig, DPOConfig, RLOOConfig), which the `trl` CLI parses from the YAML. PPO has left
TRL, so the ppo stage becomes RLOO there: the same prompts, reward model and KL penalty, with a
leave-one-out baseline instead of a value head."""

from __future__ import annotations

from workbench.errors import WorkbenchError
from workbench.jobs.translation import SCHEDULERS, Translation, compute_dtype, quantization

TRL_VERSION = "1.16.0"
TRL_COMMANDS = {"sft": "sft", "rm": "reward", "dpo": "dpo", "ppo": "rloo"}
TRL_LOSSES = {"sigmoid": "sigmoid", "ipo": "ipo"}


def translate(stage: str, config, spec, train_rows: int, has_test: bool, chat_template: str | None) -> Translation:
    """`chat_template`: the job's tokenizer folder (relative), where this stage's TRL config can take one."""
    t = Translation(config)
    t.set("dataset_name", "data")
    t.set("output_dir", "output")
    t.set("use_peft", True)
    t.set("lora_r", config.lora_rank, "lora_rank")
    t.set("lora_alpha", config.lora_alpha, "lora_alpha")
    t.set("lora_dropout", config.lora_dropout, "lora_dropout")
    targets = config.target_modules.strip()
    t.set("lora_target_modules", targets if targets == "all-linear" else [m.strip() for m in targets.split(",")],
          "target_modules")
    if stage == "rm":
        t.set("lora_task_type", "SEQ_CLS")  # peft then trains and saves the `score` head as well
    quant = quantization(spec)
    if quant == "nf4":
        t.settings.update(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    elif quant == "int8":
        t.settings["load_in_8bit"] = True
    t.settings["dtype"] = compute_dtype(spec)
    t.set("learning_rate", config.learning_rate, "learning_rate")
    t.set("lr_scheduler_type", SCHEDULERS[config.schedule], "schedule")
    t.set("warmup_steps", config.warmup_steps, "warmup_steps")
    t.set("weight_decay", config.weight_decay, "weight_decay")
    t.set("max_grad_norm", config.max_grad_norm, "max_grad_norm")
    t.set("seed", config.seed, "seed")
    t.set("gradient_checkpointing", config.gradient_checkpointing, "gradient_checkpointing")
    t.set("save_strategy", "steps")
    t.set("save_steps", config.checkpoint_every, "checkpoint_every")
    t.set("save_total_limit", config.keep_checkpoints, "keep_checkpoints")
    t.set("logging_steps", 1)
    t.set("report_to", "none")
    if stage == "ppo":
        _rloo(t, config)
    else:
        t.set("per_device_train_batch_size", config.batch_size, "batch_size")
        t.set("per_device_eval_batch_size", config.batch_size)
        t.set("gradient_accumulation_steps", config.grad_accum, "grad_accum")
        t.set("max_length", config.max_length, "max_length")
        t.set("num_train_epochs", config.epochs, "epochs")
        if config.max_steps:
            t.set("max_steps", config.max_steps, "max_steps")
        t.use("max_steps", "validation_fraction")  # the split is in the data
        if has_test:
            t.set("eval_strategy", "steps")
            t.set("eval_steps", config.eval_every, "eval_every")
        else:
            t.set("eval_strategy", "no")
            t.skip("eval_every", "no test split: validation_fraction gave no held-out rows")
    if stage in ("sft", "rm") and chat_template:
        t.set("chat_template_path", f"{chat_template}/chat_template.jinja")  # a file: the text only, no new tokens
    if stage == "sft":
        t.set("completion_only_loss", True)  # loss on the reply only, as ours
    if stage == "rm":
        t.use("annotators")
        t.use("rank_margin")  # in the data's `margin` column, which TRL's reward loss subtracts as ours does
        t.skip("head_lr_scale", "TRL trains the score head at the adapter's learning rate")
    if stage == "dpo":
        _dpo(t, config)
    t.use_where_neutral(config)
    return t


def _dpo(t: Translation, config) -> None:
    if config.loss_type not in TRL_LOSSES:
        raise WorkbenchError(f"TRL {TRL_VERSION} has no {config.loss_type} loss for DPO; export with "
                             "loss_type=sigmoid or ipo (--set loss_type=sigmoid), or train SimPO here.")
    t.set("loss_type", [TRL_LOSSES[config.loss_type]], "loss_type")
    t.set("beta", config.beta, "beta")
    t.set("label_smoothing", config.label_smoothing, "label_smoothing")
    t.set("precompute_ref_log_probs", True)  # as ours: the reference's log-probs once per pair
    t.use("annotators")
    t.skip("max_new_tokens", "our held-out comparison's answer length; TRL's DPO does not sample")
    t.skip("temperature", "our held-out comparison's sampling; TRL's DPO does not sample")
    t.skip("init_adapter", "TRL's dpo script starts from BASE_MODEL: to start from an SFT adapter, "
           "merge it into the base and point BASE_MODEL there")


def _rloo(t: Translation, config) -> None:
    group = max(2, config.group_size)
    t.set("reward_model_name_or_path", "reward_model", "reward_model")
    t.set("num_generations", group, "group_size")
    t.set("per_device_train_batch_size", max(group, config.batch_size - config.batch_size % group), "batch_size")
    t.set("max_completion_length", config.max_new_tokens, "max_new_tokens")
    t.set("temperature", config.temperature, "temperature")
    t.set("beta", config.kl_coef, "kl_coef")
    t.set("num_iterations", config.ppo_epochs, "ppo_epochs")
    t.set("epsilon", config.clip_range, "clip_range")
    t.set("gradient_accumulation_steps", config.grad_accum, "grad_accum")
    t.set("max_steps", config.max_steps, "max_steps")
    t.set("eval_strategy", "no")
    t.skip("eval_every", "our held-out checks during PPO (score, KL, agreement); the held-out prompts are "
           "data/test.jsonl")
    t.skip("kl_estimator", "TRL's RLOO puts the k1 log-ratio KL in the reward")
    t.skip("missing_eos_penalty", "TRL's RLOO has no penalty for an answer that never ends "
           "(mask_truncated_completions leaves such answers out of the loss instead)")
    t.skip("num_minibatches", "TRL's RLOO makes one optimizer step per batch of completions and iteration")
    t.skip("micro_batch_size", "TRL's RLOO forwards per_device_train_batch_size completions at once")
    t.skip("length_penalty", "TRL's RLOO has no per-token length penalty")
    t.use("clip_range_value", "gamma", "lam", "vf_coef", "whiten_rewards")  # a value head's: RLOO has none
    if config.advantage == "gae":
        t.skip("advantage", "PPO (value head and GAE) has left TRL; the job uses RLOO's leave-one-out baseline "
               "with group_size answers per prompt, or export --engine openrlhf for PPO itself")
    else:
        t.use("advantage")
        if config.kl_in_loss:
            t.skip("kl_in_loss", "TRL's RLOO puts the KL in the reward")
        else:
            t.use("kl_in_loss")
    for name, why in (("kl_target", "TRL's RLOO keeps beta fixed (no adaptive KL controller)"),
                      ("kl_horizon", "TRL's RLOO keeps beta fixed (no adaptive KL controller)"),
                      ("max_length", "TRL's RLOO does not cut prompts"),
                      ("init_adapter", "TRL's rloo script starts from BASE_MODEL: merge the SFT adapter into "
                       "the base and point BASE_MODEL there")):
        t.skip(name, why)
    t.use("heldout_fraction")


def yaml_text(settings: dict, header: str) -> str:
    """The settings as YAML (JSON values are valid YAML, so no YAML library is needed)."""
    import json

    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{key}: {json.dumps(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"
