"""A project, its artifacts folder or its model settings from someone else never run code here,
and never make a command read, copy or delete anything outside the project (issue 19)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys

import pytest
import torch

from workbench.config import ModelSpec
from workbench.data.sft_store import SftStore
from workbench.errors import ModelLoadError, WorkbenchError
from workbench.models import trust
from workbench.models.loading import ModelSession
from workbench.models.sources import grant_requested
from workbench.project import Project
from workbench.train.policy_export import export_policy
from workbench.train.runs import RunControl, RunRecord, TrainingError
from workbench.train.sft import SftConfig, train_sft

EXAMPLE = [{"role": "user", "content": "Where is my order?"}, {"role": "assistant", "content": "It ships today."}]
FAST = dict(learning_rate=5e-3, schedule="constant", warmup_steps=0, batch_size=2, eval_every=50,
            checkpoint_every=2, validation_fraction=0.0)


class Payload:
    """What an attacker puts in a pickle: unpickling it creates `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def project(tmp_path):
    project = Project.create(tmp_path / "p")
    SftStore(project).add_many([EXAMPLE] * 4)
    yield project
    project.close()


def stopped_run(project, models) -> RunRecord:
    control = RunControl()
    for log in train_sft(project, models, SftConfig(max_steps=8, **FAST), control):
        if log.step == 4 and log.metrics:
            control.stop()
    record = RunRecord(project, log.run_id)
    assert record.status == "stopped" and record.last_checkpoint()[0] == 4
    return record


def test_a_pickle_payload_in_a_checkpoint_never_runs(project, models, tmp_path):
    record = stopped_run(project, models)
    marker = tmp_path / "payload-ran"
    step, folder = record.last_checkpoint()
    torch.save({"optimizer": Payload(marker)}, folder / "trainer_state.pt")  # as torch writes it
    with pytest.raises(TrainingError, match="checkpoint at step 4 .* cannot be used"):
        list(train_sft(project, models, resume_run_id=record.id))
    assert not marker.exists()
    assert record.status == "failed" and models.busy_with is None


def test_a_checkpoint_row_pointing_outside_the_project_is_ignored(project, models, tmp_path):
    record = stopped_run(project, models)
    outside = tmp_path / "elsewhere" / "step-000004"
    shutil.copytree(record.last_checkpoint()[1], outside)
    marker = tmp_path / "payload-ran"
    torch.save(Payload(marker), outside / "trainer_state.pt")
    shutil.rmtree(record.folder / "checkpoints")
    relative = os.path.relpath(outside, project.artifacts_dir)
    project.execute("UPDATE checkpoints SET path = ? WHERE run_id = ?", (relative, record.id))
    assert record.last_checkpoint() is None
    resumed = [log.step for log in train_sft(project, models, resume_run_id=record.id) if log.metrics]
    assert resumed[0] == 1  # trained again from the start, not from the foreign folder
    assert not marker.exists() and (outside / "trainer_state.pt").is_file()  # neither loaded nor pruned


def test_a_checkpoint_planted_for_the_next_run_is_never_loaded_or_deleted(project, models, tmp_path):
    outside = tmp_path / "victim"
    outside.mkdir()
    (outside / "COMPLETE").write_text("1")
    (outside / "precious.txt").write_text("keep me")
    marker = tmp_path / "payload-ran"
    torch.save(Payload(marker), outside / "trainer_state.pt")
    planted = (os.path.relpath(outside, project.artifacts_dir),)
    path = project.path
    project.close()
    with sqlite3.connect(path) as db:  # foreign keys are off in a plain connection: any row goes in
        db.execute("INSERT INTO checkpoints(run_id, step, path, created_at) VALUES (1, 1, ?, 0)", planted)
    db.close()
    before = path.read_bytes()
    with pytest.raises(WorkbenchError, match="row 1 of checkpoints refers to a runs row that does not exist"):
        Project.open(path)
    assert path.read_bytes() == before
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM checkpoints")
    db.close()
    # Were such a row to get in anyway, a new run drops it rather than resume from it.
    project = Project.open(path)
    project.execute("PRAGMA foreign_keys = OFF")
    project.execute("INSERT INTO checkpoints(run_id, step, path, created_at) VALUES (1, 1, ?, 0)", planted)
    project.execute("PRAGMA foreign_keys = ON")
    logs = list(train_sft(project, models, SftConfig(max_steps=6, **{**FAST, "keep_checkpoints": 1})))
    assert [log.step for log in logs if log.metrics][0] == 1 and logs[-1].status == "finished"
    assert not marker.exists() and (outside / "precious.txt").read_text() == "keep me"
    project.close()


def test_an_artifact_path_outside_the_project_is_never_exported(project, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "adapter_config.json").write_text("{}")
    (elsewhere / "secret.txt").write_text("private")
    run_id = project.execute("INSERT INTO runs(kind, status, config, artifact, created_at, updated_at) "
                             "VALUES ('ppo', 'finished', '{}', ?, 0, 0)",
                             (os.path.relpath(elsewhere, project.artifacts_dir),))
    with pytest.raises(WorkbenchError, match="no finished PPO or DPO run"):
        export_policy(project, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(WorkbenchError, match="outside its artifacts folder"):
        RunRecord(project, run_id).artifact  # noqa: B018 - the property is what refuses
    # A link inside the artifacts folder that leads out is refused the same way.
    (project.artifacts_dir / "runs").mkdir()
    (project.artifacts_dir / "runs" / "run-0009").symlink_to(elsewhere)
    with pytest.raises(WorkbenchError, match="outside its artifacts folder"):
        RunRecord(project, 9).folder  # noqa: B018


def test_an_adapter_with_pickle_weights_is_refused(models, tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"]}))
    (folder / "adapter_model.bin").write_bytes(pickle.dumps(Payload(tmp_path / "ran")))
    with pytest.raises(ModelLoadError, match="safetensors"):
        models.load_adapter("foreign", folder)
    assert not (tmp_path / "ran").exists()


# ---- the model's own code and pickle weights: this machine's decision ---------------------------

def trusting_project(tmp_path, folder) -> Project:
    project = Project.create(tmp_path / "shared")
    project.set_base_model(ModelSpec(kind="folder", location=str(folder), trust_remote_code=True))
    SftStore(project).add_many([EXAMPLE] * 4)
    return project


def test_a_project_asking_for_remote_code_is_refused_until_this_machine_allows_it(code_model_dir, tmp_path):
    folder, marker = code_model_dir
    project = trusting_project(tmp_path, folder)
    with pytest.raises(ModelLoadError, match="run the Python code.*configuration_evil.py.*never a project file's"):
        list(ModelSession().load(project.base_model))
    assert not marker.exists()
    project.close()

    # Headless: one clear line, the code never ran.
    result = subprocess.run([sys.executable, "-m", "workbench.cli", "train", "sft", str(project.path),
                             "--max-steps", "1"], capture_output=True, text=True, env={**os.environ})
    assert result.returncode == 1 and "--trust-remote-code" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()

    # The user's own flag grants it, for these files, and says so; the grant is remembered.
    result = subprocess.run([sys.executable, "-m", "workbench.cli", "train", "sft", str(project.path),
                             "--max-steps", "1", "--trust-remote-code"], capture_output=True, text=True,
                            env={**os.environ})
    assert "allowed on this machine: run the Python code shipped with the model" in result.stderr
    assert marker.exists()
    spec = ModelSpec(kind="folder", location=str(folder), trust_remote_code=True)
    assert trust.pending(spec, folder) == []


def test_a_grant_covers_exactly_the_files_it_was_given_for(code_model_dir, tmp_path):
    folder, _ = code_model_dir
    spec = ModelSpec(kind="folder", location=str(folder), trust_remote_code=True)
    [granted] = grant_requested(spec, {"trust_remote_code"})
    assert granted.what == "trust_remote_code" and trust.pending(spec, folder) == []
    # Another spec on the same folder that asks for nothing needs nothing.
    assert trust.effective_flags(ModelSpec(kind="folder", location=str(folder)), folder) == (False, False)
    assert trust.effective_flags(spec, folder) == (False, True)
    # A changed code file, or a new one, asks again.
    (folder / "configuration_evil.py").write_text("print('changed')\n")
    assert [r.what for r in trust.pending(spec, folder)] == ["trust_remote_code"]
    grant_requested(spec, {"trust_remote_code"})
    (folder / "modeling_extra.py").write_text("")
    assert trust.pending(spec, folder) != []
    trust.revoke_all()
    assert trust.pending(spec, folder) != []


def test_remote_code_never_matters_for_gguf_and_the_demo():
    assert trust.requests(ModelSpec(kind="demo", trust_remote_code=True, allow_pickle=True), None) == []


def test_links_in_an_artifacts_folder_are_never_followed_into_an_export(project, tmp_path):
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY")
    adapter = project.artifacts_dir / "runs" / "run-0001" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "notes.txt").symlink_to(secret)
    project.execute("INSERT INTO runs(kind, status, config, artifact, created_at, updated_at) "
                    "VALUES ('ppo', 'finished', '{}', 'runs/run-0001/adapter', 0, 0)")
    out = tmp_path / "export"
    export_policy(project, None, out)
    assert (out / "adapter_config.json").is_file() and not (out / "notes.txt").exists()
    copy = project.save_as(tmp_path / "copy")
    assert not (copy.artifacts_dir / "runs" / "run-0001" / "adapter" / "notes.txt").exists()
    copy.close()
