"""Shared fixtures: isolated settings, a tiny random Llama, and a project using it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

# Before anything imports Qt or transformers: no screen, and never a hub.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"

from workbench.config import ModelSpec  # noqa: E402
from workbench.models.tiny import make_tiny_llama  # noqa: E402
from workbench.data.prompts import PromptStore  # noqa: E402
from workbench.project import Project  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    """Recent projects and the last project go to a temporary folder, never the user's."""
    monkeypatch.setenv("WORKBENCH_CONFIG", str(tmp_path / "config"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture
def pickle_model_dir(tiny_model_dir, tmp_path) -> Path:
    """The tiny model with its weights as a pickle file only."""
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


@pytest.fixture
def tiny_project(tmp_path, tiny_model_dir) -> Path:
    project = Project.create(tmp_path / "tiny.rlhf", name="Tiny")
    project.set_base_model(ModelSpec(kind="folder", location=str(tiny_model_dir)))
    PromptStore(project).add("My order hasn't arrived. What should I do?", ["shipping"])
    project.close()
    return project.path


@pytest.fixture
def code_model_dir(tiny_model_dir, tmp_path):
    """The tiny model shipping a configuration module that leaves a marker when imported."""
    folder = tmp_path / "code-model"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "model-code-ran"
    (folder / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from transformers import LlamaConfig\n\n\nclass EvilConfig(LlamaConfig):\n    pass\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker
