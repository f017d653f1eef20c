"""Per-user settings that live outside any project: recent projects, the last one opened, the
annotator name, and which models this machine trusts (workbench.models.trust).

A small JSON file in the config folder, replaced atomically, so a kill never leaves it half
written; an unreadable file is treated as empty rather than stopping the app.
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench.paths import config_dir, write_atomically

MAX_RECENT = 10


def _settings_path() -> Path:
    return config_dir() / "settings.json"


def load() -> dict:
    """The whole settings object (other modules keep their own keys in it, e.g. models.trust)."""
    try:
        data = json.loads(_settings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save(data: dict) -> None:
    write_atomically(_settings_path(), json.dumps(data, indent=2).encode("utf-8"))


def recent_projects() -> list[Path]:
    """Recent project files, newest first, leaving out those that no longer exist."""
    entries = load().get("recent_projects", [])
    return [Path(p) for p in entries if isinstance(p, str) and Path(p).is_file()]


def remember_project(path: Path) -> None:
    """Put `path` at the top of the recent list and make it the one reopened at start."""
    path = Path(path).resolve()
    data = load()
    recent = [p for p in data.get("recent_projects", []) if p != str(path)]
    data["recent_projects"] = [str(path), *recent][:MAX_RECENT]
    data["last_project"] = str(path)
    save(data)


def last_project() -> Path | None:
    value = load().get("last_project")
    if isinstance(value, str) and Path(value).is_file():
        return Path(value)
    return None



def annotator() -> str:
    """The name labels are committed under on this machine ('' until the user gives one)."""
    value = load().get("annotator", "")
    return value.strip() if isinstance(value, str) else ""


def set_annotator(name: str) -> None:
    data = load()
    data["annotator"] = name.strip()
    save(data)
