"""The demo project: built on first use from the committed seed in projects/, never committed itself."""

from __future__ import annotations

import json
from pathlib import Path

from workbench.config import ModelSpec
from workbench.data.prompts import PromptStore
from workbench.data.sft_store import SftStore
from workbench.errors import ProjectError
from workbench.paths import DEMO_PROJECT_SEED
from workbench.project import SUFFIX, Project


def demo_project_path(seed: Path = DEMO_PROJECT_SEED) -> Path:
    return seed.with_suffix(SUFFIX)


def ensure_demo_project(seed: Path = DEMO_PROJECT_SEED) -> Path:
    """Return the demo project's file, creating it from `seed` if it does not exist yet."""
    path = demo_project_path(seed)
    if path.exists():
        return path
    try:
        data = json.loads(seed.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ProjectError(f"the demo project seed {seed} cannot be read: {error}") from None
    project = Project.create(path, name=data.get("name"))
    try:
        project.set_meta("description", data.get("description", ""))
        project.set_base_model(ModelSpec.from_dict(data.get("base_model", {})))
        SftStore(project).add_many(data.get("sft_examples", []), source="demo seed")
        PromptStore(project).add_many(({"messages": p["text"], "tags": p.get("tags", [])}
                                       for p in data.get("prompts", [])), source="demo seed")
    finally:
        project.close()
    return path
