"""Exported TRL jobs run for real: TRL 1.16 in an environment of its own trains each stage for
two steps on the CPU from the job folder exactly as exported (run.sh, config.yaml, data/), and
what it writes comes back as a run of the project that our own code then uses."""

import json
import os
import subprocess

import pytest

from tests.core.engines import trl_python
from tests.core.test_reward import synthetic_project
from workbench.cli import main
from workbench.data.sft_store import SftStore
from workbench.jobs.export_job import export_job
from workbench.jobs.import_run import import_adapter
from workbench.project import Project
from workbench.train.dpo import DpoConfig, train_dpo
from workbench.train.policy_export import policy_runs
from workbench.train.ppo import HELDOUT_FILE, TRAIN_FILE
from workbench.train.ppo_eval import Comparison, compare_policy
from workbench.train.reward import load_reward_model, reward_runs
from workbench.train.runs import RunControl, RunRecord, finished_adapters

# The CPU, full precision, two steps: what a cluster run would change on the command line.
ON_THIS_CPU = ["--use_cpu", "true", "--load_in_4bit", "false", "--dtype", "float32", "--max_steps", "2",
               "--save_strategy", "no", "--eval_strategy", "no"]


def run_job(folder, python, *extra: str) -> str:
    done = subprocess.run([str(folder / "run.sh"), *ON_THIS_CPU, *extra], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": str(python), "TOKENIZERS_PARALLELISM": "false"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (folder / "output" / "adapter_model.safetensors").is_file()
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def trl():
    return trl_python()


def project_with_sft(tmp_path, tiny_model_dir) -> Project:
    project = synthetic_project(tmp_path / "p", tiny_model_dir, prompts=10)
    SftStore(project).add_many([[{"role": "user", "content": f"Where is order {i}?"},
                                 {"role": "assistant", "content": f"Order {i} ships today."}] for i in range(10)],
                               source="test")
    return project


def test_sft_reward_and_rloo_jobs_train_in_trl_and_come_back(tmp_path, tiny_model_dir, models, trl):
    """The reward model trained by TRL comes back and is the one the RLOO job then optimises against."""
    project = project_with_sft(tmp_path, tiny_model_dir)
    project.set_meta("ppo_settings", {"batch_size": 4, "group_size": 2, "max_new_tokens": 8})
    for stage, as_kind in (("sft", "sft"), ("rm", "rm"), ("ppo", "policy")):
        job = export_job(project, tmp_path / stage, "trl", stage)
        log = run_job(job.folder, trl)
        assert "Training completed" in log
        run_id = import_adapter(project, job.folder / "output", as_kind)
        record = RunRecord(project, run_id)
        assert (record.kind, record.status) == (as_kind, "finished")
        assert record.config["engine"] == "trl 1.16.0" and record.config["stage"] == stage
    rloo = json.loads((tmp_path / "ppo" / "job.json").read_text())
    assert rloo["command"] == "rloo" and rloo["reward_model"].startswith("rm-run-2")  # the imported one
    (sft_id, sft_folder), = finished_adapters(project, "sft")
    models.load_adapter(f"sft-run-{sft_id}", sft_folder)  # answers in Try it, starts PPO and DPO
    (rm_id, rm_folder), = reward_runs(project)
    reward = load_reward_model(models, rm_folder, f"rm-run-{rm_id}")
    messages = [{"role": "user", "content": "My order hasn't arrived."}]
    scores = reward.score([(messages, "I'm sorry, I will send a replacement."), (messages, "the quick brown fox")])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)
    project.close()


def test_a_dpo_policy_goes_out_as_a_trl_job_and_is_compared_with_the_original(tmp_path, tiny_model_dir, models,
                                                                              trl, capsys):
    project = synthetic_project(tmp_path / "p", tiny_model_dir, prompts=10)
    config = DpoConfig(max_steps=3, batch_size=4, grad_accum=1, learning_rate=1e-3, warmup_steps=0,
                       validation_fraction=0.3, max_new_tokens=8)
    logs = list(train_dpo(project, models, config, RunControl()))
    assert logs[-1].status == "finished"
    project.set_meta("dpo_settings", config.to_dict())  # as the DPO page remembers what it started
    original = logs[-1].run_id
    trained = RunRecord(project, original).folder.joinpath("pairs.jsonl").read_text().count('"split": "train"')
    path = project.path
    project.close()

    assert main(["export", str(path), str(tmp_path / "job"), "--kind", "job", "--engine", "trl", "--stage", "dpo"]) == 0
    assert "exported a trl dpo job" in capsys.readouterr().out
    job = json.loads((tmp_path / "job" / "job.json").read_text())
    assert job["settings"]["beta"] == config.beta and job["settings"]["max_steps"] == 3
    assert job["data"]["train_rows"] == trained  # the same pairs as the run trained on
    run_job(tmp_path / "job", trl, "--save_strategy", "steps", "--save_steps", "2")  # a checkpoint: its log
    assert main(["import", str(path), str(tmp_path / "job" / "output"), "--kind", "adapter", "--as", "policy"]) == 0
    assert "as policy run" in capsys.readouterr().out

    project = Project.open(path)
    imported = policy_runs(project)[0][0]
    assert RunRecord(project, imported).kind == "policy"
    curves = RunRecord(project, imported).metrics()  # TRL's log, under the names our DPO plots use
    assert curves["loss/train"][0] == [1, 2] and "rewards/margins" in curves and "train/lr" in curves
    original_folder, imported_folder = RunRecord(project, original).folder, RunRecord(project, imported).folder
    for name in (TRAIN_FILE, HELDOUT_FILE):  # the job's split, read back from its data
        assert json.loads((imported_folder / name).read_text()) == json.loads((original_folder / name).read_text())
    events = list(compare_policy(project, models, original, answers_per_prompt=1, against=imported))
    comparison = events[-1]
    assert isinstance(comparison, Comparison) and comparison.against_run == imported
    assert comparison.pairs and comparison.reference == f"policy-run-{imported}"
    project.close()
