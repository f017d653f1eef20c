import json
import subprocess
import sys

import pytest


def workbench(*args, env=None):
    """The installed front door (ui.cli) as a user runs it, in a child process."""
    return subprocess.run([sys.executable, "-m", "ui.cli", *args], capture_output=True, text=True, env=env)


def test_new_then_info_prints_a_json_summary(tmp_path):
    made = workbench("new", str(tmp_path / "demo"), "--name", "Demo")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().endswith("demo.rlhf")
    info = workbench("info", str(tmp_path / "demo.rlhf"))
    assert info.returncode == 0, info.stderr
    summary = json.loads(info.stdout)
    assert summary["name"] == "Demo" and summary["base_model"] is None
    assert set(summary["counts"]) == {"sft_examples", "prompts", "responses", "rankings", "runs"}
    assert summary["runs"] == []


@pytest.mark.parametrize("args, message", [
    (["info", "/definitely/not/here.rlhf"], "does not exist"),
    (["info", __file__], "not a workbench project"),
    (["info"], "required: project"),
    (["frobnicate"], "invalid choice"),
    (["new", "/definitely/not/here/x"], "does not exist"),
    (["train", "sft", "/x.rlhf", "--resume", "1", "--set", "seed=1"], "cannot change a resumed run"),
    (["import", "/definitely/not/here.rlhf", __file__], "Cannot tell the format"),
])
def test_bad_input_is_one_line_and_non_zero(args, message):
    result = workbench(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("workbench: error:") and message in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [[], ["new"], ["demo"], ["info"], ["gui"], ["screenshots"], ["import"], ["export"],
                                     ["train"], ["train", "sft"]])
def test_every_command_has_help(command):
    result = workbench(*command, "--help")
    assert result.returncode == 0 and "usage: workbench" in result.stdout


def test_import_export_and_train_sft_headlessly(tiny_project, tmp_path):
    good = tmp_path / "good.jsonl"
    rows = [{"prompt": f"Where is order {i}?", "completion": "It ships today."} for i in range(6)]
    good.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n{not json\n" + json.dumps({"messages": []}) + "\n")

    refused = workbench("import", str(tiny_project), str(bad), "--kind", "sft")
    assert refused.returncode == 1 and "line 2" in refused.stderr and "nothing was imported" in refused.stderr
    assert workbench("import", str(tiny_project), str(good)).stdout.startswith("imported 6 SFT examples")
    partial = workbench("import", str(tiny_project), str(bad), "--valid-only")
    assert partial.returncode == 0 and "skipped 2 invalid rows" in partial.stdout

    out = tmp_path / "out.parquet"
    assert workbench("export", str(tiny_project), str(out), "--kind", "sft").returncode == 0
    from workbench.data.sft_formats import read_sft_file
    assert len(read_sft_file(out).examples) == 7

    trained = workbench("train", "sft", str(tiny_project), "--max-steps", "3", "--set", "batch_size=2",
                        "--set", "checkpoint_every=2")
    assert trained.returncode == 0, trained.stderr
    assert "step 3/3" in trained.stdout and "Finished" in trained.stdout
    [run] = json.loads(workbench("info", str(tiny_project)).stdout)["runs"]
    assert run["kind"] == "sft" and run["status"] == "finished" and run["last_step"] == 3

    wrong = workbench("train", "sft", str(tiny_project), "--set", "lora_rank=many")
    assert wrong.returncode == 1 and "lora_rank must be a whole number" in wrong.stderr


def test_a_killed_training_process_resumes_from_its_last_checkpoint(tiny_project, tmp_path):
    import signal
    import sqlite3
    import time

    rows = [{"prompt": f"Where is order {i}?", "completion": "It ships today."} for i in range(6)]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    assert workbench("import", str(tiny_project), str(data)).returncode == 0
    child = subprocess.Popen([sys.executable, "-m", "ui.cli", "train", "sft", str(tiny_project), "--max-steps", "300",
                              "--set", "checkpoint_every=3", "--set", "batch_size=2"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with sqlite3.connect(tiny_project) as db:
                if db.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0] >= 2:
                    break
            time.sleep(0.2)
        child.send_signal(signal.SIGKILL)  # no cleanup at all, possibly mid-checkpoint
    finally:
        child.wait()
    [run] = json.loads(workbench("info", str(tiny_project)).stdout)["runs"]
    # A kill leaves "running" in the file; info already reports it as interrupted (issue 19).
    assert run["status"] == "stopped" and run["message"].startswith("Interrupted"), run
    resumed = workbench("train", "sft", str(tiny_project), "--resume", str(run["id"]))
    assert resumed.returncode == 0, resumed.stderr
    import re

    saved = int(re.search(r"resumed at step (\d+)", resumed.stdout).group(1))
    first = int(re.search(r"^run \d+ step (\d+)/300", resumed.stdout, re.MULTILINE).group(1))
    assert saved >= 6 and saved % 3 == 0 and first == saved + 1  # right after a complete checkpoint
    [run] = json.loads(workbench("info", str(tiny_project)).stdout)["runs"]
    assert run["status"] == "finished" and run["last_step"] == 300


def test_demo_gives_a_cli_user_the_demo_project(capsys):
    from pathlib import Path

    from workbench.cli import main

    assert main(["demo"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.suffix == ".rlhf" and path.is_file()
    assert main(["info", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["base_model"]["kind"] == "demo" and summary["counts"]["sft_examples"] > 0
