"""The launch side of an exported job: run.sh, accelerate's multi-GPU configs, the README."""

from __future__ import annotations

from pathlib import Path

from workbench.jobs.openrlhf_job import OPENRLHF_MODULES, OPENRLHF_VERSION, flag_args
from workbench.jobs.trl_job import TRL_COMMANDS, TRL_VERSION

_COMMON = {"compute_environment": "LOCAL_MACHINE", "mixed_precision": "bf16", "num_machines": 1,
           "machine_rank": 0, "num_processes": 8, "main_training_function": "main", "rdzv_backend": "static",
           "same_network": True, "use_cpu": False}
ACCELERATE = {
    "ddp": {"distributed_type": "MULTI_GPU"},
    "zero2": {"distributed_type": "DEEPSPEED", "deepspeed_config": {
        "zero_stage": 2, "offload_optimizer_device": "none", "offload_param_device": "none",
        "zero3_init_flag": False}},
    "zero3": {"distributed_type": "DEEPSPEED", "deepspeed_config": {
        "zero_stage": 3, "offload_optimizer_device": "none", "offload_param_device": "none",
        "zero3_init_flag": True, "zero3_save_16bit_model": True}},
    "fsdp": {"distributed_type": "FSDP", "fsdp_config": {
        "fsdp_version": 2, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "fsdp_cpu_ram_efficient_loading": True,
        "fsdp_offload_params": False, "fsdp_reshard_after_forward": True, "fsdp_state_dict_type": "FULL_STATE_DICT"}},
}
"""accelerate's config files for one machine of 8 GPUs; run.sh sets the process and machine counts."""


def _yaml(value, indent: int = 0) -> list[str]:
    import json

    lines = []
    for key, item in value.items():
        if isinstance(item, dict):
            lines.append(" " * indent + f"{key}:")
            lines += _yaml(item, indent + 2)
        else:
            lines.append(" " * indent + f"{key}: {json.dumps(item)}")
    return lines


def accelerate_configs(folder: Path) -> None:
    folder.mkdir()
    for name, specific in ACCELERATE.items():
        (folder / f"{name}.yaml").write_text("\n".join(_yaml({**specific, **_COMMON})) + "\n")


def _words(words: list[str], indent: str = "  ") -> str:
    return " \\\n".join(indent + " ".join(pair) for pair in _pairs(words))


def _pairs(words: list[str]) -> list[list[str]]:
    """Flags one per line with their values, for a readable script."""
    lines: list[list[str]] = []
    for word in words:
        if word.startswith("--") or not lines:
            lines.append([word])
        else:
            lines[-1].append(word)
    return lines


def run_script(engine: str, stage: str, base: str, settings: dict, template: str | None) -> str:
    head = ["#!/usr/bin/env bash",
            "# Exported by RLHF Workbench; README.md says what this runs and what comes back.",
            "#   ./run.sh                      one GPU (or the CPU, slowly)",
            "#   GPUS=8 ./run.sh               eight GPUs on this machine",
            "#   ./run.sh --some.flag VALUE    any further engine flag, after the job's own",
            "set -euo pipefail",
            'JOB_DIR="$(cd "$(dirname "$0")" && pwd)"',
            'cd "$JOB_DIR"',
            f'BASE_MODEL="${{BASE_MODEL:-{_bash_default(base)}}}"',
            'GPUS="${GPUS:-1}"']
    if engine == "trl":
        module = f"trl.scripts.{TRL_COMMANDS[stage]}"
        body = ['PYTHON="${PYTHON:-python3}"',
                f"ARGS=(-m {module} --config config.yaml --model_name_or_path \"$BASE_MODEL\")",
                "# Several GPUs or machines: accelerate with a config from accelerate/ (ddp, zero2, zero3, fsdp).",
                'if [ "$GPUS" -gt 1 ] || [ -n "${NUM_MACHINES:-}" ] || [ -n "${ACCELERATE_CONFIG:-}" ]; then',
                '  exec "$PYTHON" -m accelerate.commands.launch --config_file "${ACCELERATE_CONFIG:-accelerate/ddp.yaml}" \\',
                '    --num_processes "$(( GPUS * ${NUM_MACHINES:-1} ))" --num_machines "${NUM_MACHINES:-1}" \\',
                '    --machine_rank "${MACHINE_RANK:-0}" ${MAIN_PROCESS_IP:+--main_process_ip "$MAIN_PROCESS_IP"} \\',
                '    ${MAIN_PROCESS_PORT:+--main_process_port "$MAIN_PROCESS_PORT"} "${ARGS[@]}" "$@"',
                "fi",
                'exec "$PYTHON" "${ARGS[@]}" "$@"']
        return "\n".join(head + body) + "\n"
    words = flag_args({key: _in_job(value) for key, value in settings.items()})
    if stage == "ppo":
        models = ["actor", "ref", "reward"] + (["critic"] if settings.get("algo.advantage.estimator") == "gae" else [])
        placement = [f'--{m}.num_nodes "${{NODES:-1}}" --{m}.num_gpus_per_node "$GPUS"' for m in models]
        placement.append("--train.colocate_actor_ref" + (" --train.colocate_critic_reward" if "critic" in models else ""))
        body = ['RAY_ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"',
                "# Start Ray first (ray start --head --num-gpus 8; on more machines, ray start --address ...).",
                "# The job folder must be on storage every Ray node sees: its paths are absolute.",
                'exec ray job submit --address="$RAY_ADDRESS" -- \\',
                f"  python3 -m {OPENRLHF_MODULES[stage]} \\",
                '  --actor.model_name_or_path "$BASE_MODEL" \\',
                *[f"  {line} \\" for line in placement],
                _words(words) + ' \\',
                '  "$@"']
        return "\n".join(head + body) + "\n"
    extra = ['  --model.model_name_or_path "$BASE_MODEL" \\']
    if stage == "dpo":
        extra.append('  --ref.model_name_or_path "$BASE_MODEL" \\')
    if template:
        extra.append(f'  --data.tokenizer_chat_template "$(cat {template}/chat_template.jinja)" \\')
    body = ["# Several machines: HOSTFILE=hostfile (DeepSpeed's: one 'host slots=8' line per machine).",
            'exec deepspeed ${HOSTFILE:+--hostfile "$HOSTFILE"} --num_gpus "$GPUS" \\',
            f"  --module {OPENRLHF_MODULES[stage]} \\",
            *extra,
            _words(words) + ' \\',
            '  "$@"']
    return "\n".join(head + body) + "\n"


def _in_job(value):
    """A path inside the job folder made absolute, since Ray and DeepSpeed may start elsewhere."""
    if isinstance(value, str) and value.split("/")[0] in ("data", "output", "reward_model", "tokenizer"):
        return f'"$JOB_DIR/{value}"'
    return value


def _bash_default(text: str) -> str:
    """`text` safe inside ${VAR:-...} within double quotes: what bash expands there, escaped."""
    for special in ("\\", '"', "$", "`"):
        text = text.replace(special, "\\" + special)
    return text


def job_readme(job: dict, project_name: str) -> str:
    engine, stage = job["engine"], job["stage"]
    engine_name = f"TRL {TRL_VERSION}" if engine == "trl" else f"OpenRLHF {OPENRLHF_VERSION}"
    what = {"sft": "supervised fine-tuning of a LoRA adapter", "rm": "a reward model (LoRA and a score head)",
            "dpo": "DPO of a LoRA policy on the preference pairs",
            "ppo": "PPO of a LoRA policy against the included reward model" if engine == "openrlhf"
            else "RLOO (PPO has left TRL) of a LoRA policy against the included reward model"}[stage]
    data = job["data"]
    install = (f"pip install trl=={TRL_VERSION} peft" + (" bitsandbytes" if job["settings"].get("load_in_4bit") else "")
               + "   # plus deepspeed for the zero2/zero3 configs" if engine == "trl"
               else f"pip install openrlhf=={OPENRLHF_VERSION}" + ("   # and start Ray: ray start --head" if stage == "ppo" else ""))
    if engine == "trl":
        launch = ["./run.sh                                      # 1 GPU",
                  "GPUS=8 ./run.sh                               # 8 GPUs, DDP",
                  "GPUS=8 ACCELERATE_CONFIG=accelerate/zero3.yaml ./run.sh   # 8 GPUs, DeepSpeed ZeRO-3 (or zero2, fsdp)",
                  "# N machines of 8: on each, with its own MACHINE_RANK (0 on the first)",
                  "GPUS=8 NUM_MACHINES=N MACHINE_RANK=0 MAIN_PROCESS_IP=10.0.0.1 ./run.sh"]
    elif stage == "ppo":
        launch = ["ray start --head --num-gpus 8      # then ray start --address HEAD:6379 on other machines",
                  "./run.sh                          # 1 GPU per model",
                  "GPUS=8 ./run.sh                   # 8 GPUs per model",
                  "GPUS=8 NODES=N ./run.sh           # N machines of 8 GPUs"]
    else:
        launch = ["./run.sh                                   # 1 GPU",
                  "GPUS=8 ./run.sh                            # 8 GPUs (DeepSpeed ZeRO-2)",
                  "HOSTFILE=hostfile GPUS=8 ./run.sh          # N machines listed in a DeepSpeed hostfile"]
    comes_back = job["comes_back_as"]
    lines = [f"# {engine_name} job: {what}", "",
             f"Exported by RLHF Workbench from `{project_name}` on {job['exported_at']}: the same {data['rows']} "
             f"our own trainer would use ({data['train_rows']} training rows, {data['test_rows']} test rows), "
             f"and the settings last started on the project's {stage.upper()} page, translated.", "",
             "## Run it", "", "```bash", install,
             f"export BASE_MODEL={job['base_model']['default']}   # {job['base_model']['what']}",
             *launch, "```", "",
             "Any flag after `./run.sh` goes to the engine and overrides the job's own, e.g. "
             + ("`./run.sh --learning_rate 1e-4`." if engine == "trl" else "`./run.sh --train.seed 1`."), "",
             "## What comes back", "",
             "The LoRA adapter in `output/`" + (" (and its checkpoints)." if engine == "trl" else
                                                 " (with --ckpt.save_hf, a Hugging Face folder)."),
             "Bring it back into the project, where it can answer in Try it, start PPO or DPO, be compared in "
             "\"Did it work?\" and be ranked blind on the Rank page:", "",
             "```bash", f"workbench import {project_name} output --kind adapter --as {comes_back}", "```", ""]
    if job["notes"]:
        lines += ["## Notes", "", *[f"- {note}" for note in job["notes"]], ""]
    if job["unmapped"]:
        lines += ["## Our settings with no equivalent here", "", "| setting | value | why |", "|---|---|---|",
                  *[f"| {u['setting']} | {u['value']!r} | {u['why']} |" for u in job["unmapped"]], ""]
    lines += ["Files: `data/` (the rows), `tokenizer/` (the base's tokenizer with our prompt format), "
              + ("`config.yaml` and `accelerate/`, " if engine == "trl" else "")
              + ("`reward_model/`, " if stage == "ppo" else "") + "`run.sh`, `job.json` (everything above, "
              "machine-readable)."]
    return "\n".join(lines) + "\n"
