"""Our settings as flags of OpenRLHF's command-line trainers, pinned to the version whose
argument parsers these flag names were read from (openrlhf/cli/train_{sft,rm,dpo,ppo_ray}.py;
tests/core/test_jobs_openrlhf.py checks every flag against that version's parser).

OpenRLHF reads our conversational rows with `--data.apply_chat_template` and the columns named
by `--data.*_key`; SFT, reward-model and DPO runs are launched with `deepspeed`, PPO as a Ray job."""

from __future__ import annotations

import math

from workbench.errors import WorkbenchError
from workbench.jobs.translation import SCHEDULERS, Translation, optimizer_steps, quantization

OPENRLHF_VERSION = "0.11.2"
OPENRLHF_MODULES = {"sft": "openrlhf.cli.train_sft", "rm": "openrlhf.cli.train_rm",
                    "dpo": "openrlhf.cli.train_dpo", "ppo": "openrlhf.cli.train_ppo_ray"}
ESTIMATORS = {"gae": "gae", "rloo": "rloo", "grpo": "group_norm"}


def translate(stage: str, config, spec, train_rows: int, has_test: bool) -> Translation:
    """Flags as a dict of name (without the leading --) to value; True is a switch."""
    t = Translation(config)
    t.set("ckpt.output_dir", "output")
    t.set("ckpt.save_hf", True)
    t.set("data.apply_chat_template", True)
    t.set("data.max_len", config.max_length if stage != "ppo" else config.max_length + config.max_new_tokens,
          "max_length")
    t.set("train.seed", config.seed, "seed")
    t.set("ds.zero_stage", 2)
    t.set("ds.param_dtype", "bf16")
    t.set("ds.lora.rank", config.lora_rank, "lora_rank")
    t.set("ds.lora.alpha", config.lora_alpha, "lora_alpha")
    t.set("ds.lora.dropout", config.lora_dropout, "lora_dropout")
    targets = config.target_modules.strip()
    if targets != "all-linear":  # OpenRLHF's own default is all-linear
        t.settings["ds.lora.target_modules"] = [m.strip() for m in targets.split(",")]
    t.use("target_modules")
    quant = quantization(spec)
    if quant == "nf4":
        t.set("ds.load_in_4bit", True)
    elif quant == "int8":
        t.skip("base_model", "OpenRLHF loads 8-bit bases only as 4-bit (--ds.load_in_4bit) or in bf16")
    t.set("ckpt.save_steps", config.checkpoint_every, "checkpoint_every")
    t.set("ckpt.max_num", config.keep_checkpoints, "keep_checkpoints")
    steps = optimizer_steps(stage, config, train_rows)
    # PPO's trainer has these per model (actor., critic.), the others once
    for prefix in (("actor.", "critic.") if stage == "ppo" and config.advantage == "gae"
                   else ("actor.",) if stage == "ppo" else ("",)):
        t.set(f"{prefix}max_norm", config.max_grad_norm, "max_grad_norm")
        t.set(f"{prefix}lr_scheduler", SCHEDULERS[config.schedule], "schedule")
        t.set(f"{prefix}lr_warmup_ratio", round(min(1.0, config.warmup_steps / max(1, steps)), 4), "warmup_steps")
        t.set(f"{prefix}min_lr_ratio", 0.0)  # ours decays to zero
    t.use_where_neutral(config)
    if stage == "ppo":
        _ppo(t, config, train_rows)
        return t
    t.set("adam.lr", config.learning_rate, "learning_rate")
    t.set("adam.weight_decay", config.weight_decay, "weight_decay")
    t.set("train.micro_batch_size", config.batch_size, "batch_size")
    t.set("train.batch_size", config.batch_size * config.grad_accum, "grad_accum")
    t.set("train.max_epochs", max(1, math.ceil(config.epochs)), "epochs")
    if config.epochs != int(config.epochs):
        t.reasons["epochs"] = f"OpenRLHF trains whole epochs: {config.epochs} became {math.ceil(config.epochs)}"
        t.used.discard("epochs")
    if config.max_steps:
        t.skip("max_steps", "OpenRLHF's SFT, RM and DPO trainers run whole epochs; lower epochs instead")
    t.use("validation_fraction")
    t.set("model.gradient_checkpointing_enable", config.gradient_checkpointing, "gradient_checkpointing")
    t.set("data.dataset", "data/train.jsonl")
    if has_test:
        t.set("eval.dataset", "data/test.jsonl")
        t.set("eval.split", "train")  # a JSONL file is one split, named train by datasets
        t.set("eval.steps", config.eval_every, "eval_every")
    if stage == "sft":
        t.set("data.input_key", "prompt")
        t.set("data.output_key", "completion")
    else:
        t.set("data.prompt_key", "prompt")
        t.set("data.chosen_key", "chosen")
        t.set("data.rejected_key", "rejected")
        t.use("annotators")
    if stage == "rm":
        if config.rank_margin:
            t.set("model.margin_loss_enable", True, "rank_margin")
        else:
            t.use("rank_margin")
        t.skip("head_lr_scale", "OpenRLHF trains the value head at the model's learning rate")
    if stage == "dpo":
        if config.loss_type == "simpo":
            raise WorkbenchError(f"OpenRLHF {OPENRLHF_VERSION} has no SimPO loss; export with loss_type=sigmoid or "
                                 "ipo (--set loss_type=sigmoid), or train SimPO here.")
        if config.loss_type == "ipo":
            t.set("model.ipo_enable", True)
        t.use("loss_type")
        t.set("model.beta", config.beta, "beta")
        t.set("model.label_smoothing", config.label_smoothing, "label_smoothing")
        t.skip("init_adapter", "OpenRLHF's DPO starts from BASE_MODEL: merge the SFT adapter into the base and "
               "point BASE_MODEL there")
        for name in ("max_new_tokens", "temperature"):
            t.skip(name, "our held-out comparison's sampling; OpenRLHF's DPO does not sample")
    return t


def _ppo(t: Translation, config, train_rows: int) -> None:
    group = config.group_size if config.advantage != "gae" else 1
    t.set("data.prompt_dataset", "data/train.jsonl")
    t.set("data.input_key", "prompt")
    t.set("reward.model_name_or_path", "reward_model", "reward_model")
    t.set("actor.adam.lr", config.learning_rate, "learning_rate")
    t.set("actor.adam.weight_decay", config.weight_decay, "weight_decay")
    t.set("actor.gradient_checkpointing_enable", config.gradient_checkpointing, "gradient_checkpointing")
    t.set("algo.advantage.estimator", ESTIMATORS[config.advantage], "advantage")
    if config.advantage == "gae":
        t.set("critic.adam.lr", config.learning_rate)
        t.set("critic.value_clip", config.clip_range_value, "clip_range_value")
        t.set("algo.advantage.gamma", config.gamma, "gamma")
        t.set("algo.advantage.lambd", config.lam, "lam")
        t.skip("vf_coef", "OpenRLHF's critic is a model of its own with its own optimizer (critic.adam.lr, "
               "set to our learning rate), so there is no value-loss weight")
        t.use("group_size", "kl_in_loss")  # critic-free settings, unused by PPO here as in ours
    else:
        t.set("rollout.n_samples_per_prompt", group, "group_size")
        if config.kl_in_loss:
            t.set("algo.kl.use_loss", True, "kl_in_loss")
        t.use("kl_in_loss", "clip_range_value", "gamma", "lam", "vf_coef")  # value-head settings, unused here as in ours
    prompts_per_step = max(1, config.batch_size // group)
    t.set("rollout.batch_size", prompts_per_step, "batch_size")
    t.set("train.batch_size", max(1, config.batch_size // config.num_minibatches), "num_minibatches")
    t.set("train.micro_batch_size", config.micro_batch_size, "micro_batch_size")
    t.set("rollout.micro_batch_size", config.micro_batch_size)
    t.set("train.max_epochs", config.ppo_epochs, "ppo_epochs")
    t.set("actor.eps_clip", config.clip_range, "clip_range")
    t.set("rollout.max_new_tokens", config.max_new_tokens, "max_new_tokens")
    t.set("rollout.temperature", config.temperature, "temperature")
    t.set("algo.kl.init_coef", config.kl_coef, "kl_coef")
    if config.kl_target:
        t.set("algo.kl.target", config.kl_target, "kl_target")
        t.set("algo.kl.horizon", int(config.kl_horizon), "kl_horizon")
    else:
        t.use("kl_target", "kl_horizon")
    t.set("algo.kl.estimator", config.kl_estimator, "kl_estimator")
    episodes = max(1, math.ceil(config.max_steps * prompts_per_step / max(1, train_rows)))
    t.set("train.num_episodes", episodes, "max_steps")
    t.use("heldout_fraction")
    t.skip("missing_eos_penalty", "OpenRLHF's --reward.stop_properly_penalty_coef scales, not subtracts, the "
           "score of an answer that never ends; set it by hand if wanted")
    t.skip("whiten_rewards", "OpenRLHF normalises advantages, not per-token rewards")
    t.skip("length_penalty", "no per-token length penalty in OpenRLHF")
    t.skip("init_adapter", "OpenRLHF's actor starts from BASE_MODEL: merge the SFT adapter into the base and "
           "point BASE_MODEL there")


def flag_args(settings: dict) -> list[str]:
    """The flags as command-line words: switches alone, lists as several values."""
    words: list[str] = []
    for key, value in settings.items():
        if value is False:
            continue
        words.append(f"--{key}")
        if value is True:
            continue
        words.extend(str(v) for v in value) if isinstance(value, list) else words.append(str(value))
    return words
