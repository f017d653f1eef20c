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
])
def test_bad_input_is_one_line_and_non_zero(args, message):
    result = workbench(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("workbench: error:") and message in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [[], ["new"], ["info"], ["gui"], ["screenshots"]])
def test_every_command_has_help(command):
    result = workbench(*command, "--help")
    assert result.returncode == 0 and "usage: workbench" in result.stdout
