"""`workbench export PROJECT OUT --kind job --engine trl|openrlhf --stage sft|rm|dpo|ppo`: a
folder that trains on another engine as it is, from the same data, split and settings our own
trainer would use:

    data/train.jsonl, data/test.jsonl   the rows (job_data.py), in columns both engines read
    tokenizer/                          the base's tokenizer with our prompt format
    reward_model/                       ppo only: our reward model as a sequence classifier
    config.yaml, accelerate/*.yaml      TRL: the trl script's config, multi-GPU launch configs
    run.sh                              the launch command (BASE_MODEL, GPUS, extra flags)
    job.json                            engine, version, settings, and our settings that had no
                                        equivalent there, each with why
    README.md                           what it runs, how on 1, 8 or N GPUs, what comes back
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.config import from_known_fields, with_overrides
from workbench.errors import WorkbenchError
from workbench.jobs import openrlhf_job, trl_job
from workbench.jobs.job_data import STAGES, stage_rows
from workbench.jobs.launch_files import accelerate_configs, job_readme, run_script
from workbench.project import Project

ENGINES = ("trl", "openrlhf")
SETTINGS_KEYS = {"sft": "sft_settings", "rm": "rm_settings", "dpo": "dpo_settings", "ppo": "ppo_settings"}
"""Where each page keeps the settings it last started with (ui/run_view.RunSettings)."""
WHAT_COMES_BACK = {"sft": "sft", "rm": "rm", "dpo": "policy", "ppo": "policy"}


@dataclass(frozen=True)
class ExportedJob:
    folder: Path
    engine: str
    stage: str
    train_rows: int
    test_rows: int
    unmapped: list[dict]


def stage_config(project: Project, stage: str, overrides: list[str]):
    """The settings this stage's page last started with (else the defaults), with `key=value` overrides."""
    from workbench.cli import trainers

    config_class = trainers()[stage][0]
    stored = project.get_meta(SETTINGS_KEYS[stage])
    try:
        config = from_known_fields(config_class, stored) if isinstance(stored, dict) else config_class()
        return with_overrides(config, overrides)
    except (TypeError, ValueError) as error:
        raise WorkbenchError(f"the {stage} settings cannot be used: {error}") from None


def base_model_path(project: Project) -> tuple[str, str]:
    """(what BASE_MODEL defaults to, how to read it): a hub id where the base came from the hub
    (the cluster downloads it), else the folder it was loaded from on this machine."""
    from workbench.models.sources import resolved

    spec = project.base_model
    if spec is None:
        raise WorkbenchError(f"{project.path.name} has no base model; choose one on the Model page first.")
    if spec.kind == "hub":
        return spec.location, "a Hugging Face hub id: the cluster downloads it"
    return str(resolved(spec).folder), ("a folder on the machine that exported the job: copy it to the cluster or set "
                                "BASE_MODEL to the same model there")


def export_job(project: Project, out: Path, engine: str, stage: str, overrides: list[str] = ()) -> ExportedJob:
    if engine not in ENGINES:
        raise WorkbenchError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}.")
    if stage not in STAGES:
        raise WorkbenchError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}.")
    out = Path(out)
    if out.exists():
        raise WorkbenchError(f"{out} already exists; choose a new folder.")
    config = stage_config(project, stage, list(overrides))
    data = stage_rows(project, stage, config)
    base, base_note = base_model_path(project)
    folded = _fold_where_refused(project, data)
    spec = project.base_model
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        (partial / "data").mkdir(parents=True)
        for split, rows in (("train", data.train), ("test", data.test)):
            if rows:
                (partial / "data" / f"{split}.jsonl").write_text(
                    "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        tokenizer_note = _save_tokenizer(project, partial / "tokenizer")
        template = "tokenizer" if (partial / "tokenizer" / "chat_template.jinja").is_file() else None
        reward_note = _reward_model(project, config, partial / "reward_model") if stage == "ppo" else None
        has_test = bool(data.test)
        if engine == "trl":
            translation = trl_job.translate(stage, config, spec, len(data.train), has_test, template)
            command = trl_job.TRL_COMMANDS[stage]
            (partial / "config.yaml").write_text(trl_job.yaml_text(
                translation.settings, f"TRL {trl_job.TRL_VERSION}: trl {command} --config config.yaml\n"
                "Written by RLHF Workbench from the project's settings; job.json says what had no equivalent."))
            accelerate_configs(partial / "accelerate")
            version = trl_job.TRL_VERSION
        else:
            translation = openrlhf_job.translate(stage, config, spec, len(data.train), has_test)
            command = openrlhf_job.OPENRLHF_MODULES[stage]
            version = openrlhf_job.OPENRLHF_VERSION
        notes = _notes(stage, engine, data, template, tokenizer_note)
        if folded:
            notes.append("The base's chat template has no system role: system text is put in front of the first "
                         "user turn in the rows, as our trainers render it.")
        job = {
            "engine": engine, "engine_version": version, "stage": stage, "command": command,
            "project": project.path.name, "exported_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "base_model": {"default": base, "what": base_note,
                           "display_name": spec.display_name, "quantization": spec.quantization},
            "data": {"train_rows": len(data.train), "test_rows": len(data.test), "rows": data.description,
                     **data.counts},
            "settings": translation.settings, "unmapped": translation.unmapped(engine),
            "notes": notes, "tokenizer": tokenizer_note, "reward_model": reward_note,
            "comes_back_as": WHAT_COMES_BACK[stage],
        }
        (partial / "job.json").write_text(json.dumps(job, indent=2, ensure_ascii=False))
        script = partial / "run.sh"
        script.write_text(run_script(engine, stage, base, translation.settings, template))
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        (partial / "README.md").write_text(job_readme(job, project.path.name))
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return ExportedJob(out, engine, stage, len(data.train), len(data.test), job["unmapped"])


def _save_tokenizer(project: Project, folder: Path) -> str:
    from workbench.train.policy_export import save_tokenizer

    folder.mkdir()
    return save_tokenizer(project, folder)


def _reward_model(project: Project, config, folder: Path) -> str:
    """Our reward model as a transformers sequence classifier, which both engines load."""
    from workbench.train.ppo import choose_reward_model
    from workbench.train.reward_export import export_reward_model
    from workbench.train.runs import TrainingError

    try:
        name, adapter = choose_reward_model(project, config.reward_model)
    except TrainingError as error:
        raise WorkbenchError(f"the ppo stage needs a reward model: {error}") from None
    export_reward_model(project.base_model, adapter, folder)
    return f"{name}, merged into the base as AutoModelForSequenceClassification (num_labels=1)"


def _fold_where_refused(project: Project, data) -> bool:
    """Put system turns into the first user turn where the base's template has no system role,
    as `chat_format.render` does, since the engines apply the template as it is. True if it did."""
    from transformers import AutoTokenizer

    from workbench.models import chat_format
    from workbench.models.sources import resolved

    rows = [row for row in data.train + data.test if any(m["role"] == "system" for m in row["prompt"])]
    if not rows:
        return False
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved(project.base_model).folder, local_files_only=True)
    except Exception:  # noqa: BLE001 - unreadable here: the rows stay as they are
        return False
    if "no system role" not in chat_format.describe(tokenizer):
        return False
    for row in rows:
        row["prompt"] = chat_format.fold_system(row["prompt"])
    return True


def _notes(stage: str, engine: str, data, template: str | None, tokenizer_note: str) -> list[str]:
    notes = []
    if stage == "sft" and data.counts.get("multi_turn"):
        notes.append(f"{data.counts['multi_turn']} examples have several replies: the job trains on the last "
                     "one of each (prompt/completion rows), ours on every reply.")
    if template is None:
        notes.append("The base's tokenizer could not be included; the engine uses the base's own chat template.")
    elif ((engine == "trl" and stage in ("dpo", "ppo")) or (engine == "openrlhf" and stage == "ppo")) \
            and "none in the model" in tokenizer_note:
        notes.append("This engine's script reads the chat template from BASE_MODEL itself: where the base has "
                     "none, copy tokenizer/chat_template.jinja into the base folder first.")
    return notes
