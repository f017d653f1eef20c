"""Where the workbench keeps files outside projects: a cache (converted models, logs) and settings.

Both follow the XDG conventions and can be moved with WORKBENCH_CACHE / WORKBENCH_CONFIG
(the tests point them at temporary folders).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_PROJECT_SEED = REPO_ROOT / "projects" / "customer-support.json"


def _base(env_var: str, xdg_var: str, fallback: str) -> Path:
    if os.environ.get(env_var):
        return Path(os.environ[env_var])
    xdg = os.environ.get(xdg_var)
    return (Path(xdg) if xdg else Path.home() / fallback) / "rlhf-workbench"


def cache_dir() -> Path:
    return _base("WORKBENCH_CACHE", "XDG_CACHE_HOME", ".cache")


def config_dir() -> Path:
    return _base("WORKBENCH_CONFIG", "XDG_CONFIG_HOME", ".config")


def log_file() -> Path:
    return cache_dir() / "logs" / "workbench.log"


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync it, then rename over: never a half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
