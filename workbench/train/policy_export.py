"""Export a trained PPO or DPO policy: its LoRA adapter folder, which plain peft loads onto the base
(`PeftModel.from_pretrained(base, folder)`), plus `policy.json` saying what made it, and the
base's tokenizer carrying the prompt format the policy was trained with
(`chat_format.portable_template`), so other tools prompt it with exactly our text."""

from __future__ import annotations

import json
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.paths import copy_tree
from workbench.project import Project
from workbench.train.runs import RunRecord, choose_run, finished_adapters

VALUE_HEAD = "value_head.safetensors"  # PPO's value head, kept out of the export: peft has no use for it


POLICY_KINDS = ("ppo", "dpo", "policy")  # policy: trained elsewhere, imported


def policy_runs(project: Project) -> list[tuple[int, Path]]:
    """(run id, adapter folder) of finished PPO and DPO runs, newest first."""
    runs = [run for kind in POLICY_KINDS for run in finished_adapters(project, kind)]
    return sorted(runs, key=lambda run: run[0], reverse=True)


def policy_run_folder(project: Project, run_id: int | None) -> tuple[int, Path]:
    """The adapter folder of PPO or DPO run `run_id`, or of the newest finished one."""
    return choose_run(policy_runs(project), run_id,
                      f"{project.path.name} has no finished PPO or DPO run; train one first (workbench train ppo "
                      "or workbench train dpo, or the PPO and DPO pages).", "PPO or DPO run")


def export_policy(project: Project, run_id: int | None, out: Path) -> tuple[int, str]:
    """Copy the policy adapter of run `run_id` (default: the newest) to the new folder `out`;
    returns the run id and its kind ("PPO" or "DPO")."""
    run_id, adapter = policy_run_folder(project, run_id)
    out = Path(out)
    if out.exists():
        raise WorkbenchError(f"{out} already exists; choose a new folder.")
    copy_tree(adapter, out, skip=(VALUE_HEAD,))
    tokenizer_note = save_tokenizer(project, out)
    record = RunRecord(project, run_id)
    (out / "policy.json").write_text(json.dumps({
        "run": run_id, "method": record.kind, "base_model": project.base_model.display_name if project.base_model else "",
        "reference": record.config.get("init_adapter") or "base", "config": record.config,
        "how_to_load": "PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), this_folder)",
        "tokenizer": tokenizer_note}, indent=2))
    return run_id, record.kind.upper()


def save_tokenizer(project: Project, out: Path) -> str:
    """The base's tokenizer with our prompt format into `out`; says what was done, for policy.json."""
    from transformers import AutoTokenizer

    from workbench.models import chat_format
    from workbench.models.sources import resolved

    if project.base_model is None:
        return "not included: the project names no base model"
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved(project.base_model).folder, local_files_only=True)
    except Exception as error:  # noqa: BLE001 - the adapter is exported all the same
        return f"not included: the base model could not be read here ({str(error).splitlines()[0]})"
    note = f"included; prompt format: {chat_format.describe(tokenizer)}"
    tokenizer.chat_template = chat_format.portable_template(tokenizer)
    tokenizer.save_pretrained(str(out))
    return note
