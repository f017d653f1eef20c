"""Where the workbench keeps files outside projects: a cache (converted models, logs) and settings.

Both follow the XDG conventions and can be moved with WORKBENCH_CACHE / WORKBENCH_CONFIG
(the tests point them at temporary folders).
"""

from __future__ import annotations

import os
from pathlib import Path

from workbench.errors import first_line

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
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves neither a half file nor a temporary one
        raise


def disk_problem(folder: Path, error: BaseException) -> str:
    """Why writing into `folder` failed, in words: a full disk is named as such, whichever
    library raised (safetensors and torch do not raise OSError for it)."""
    import errno
    import shutil

    try:
        free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
    except OSError:
        free = None
    full = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    if full or (free is not None and free < 16 << 20):
        return f"the disk is full ({free // (1 << 20) if free is not None else 0} MB free on the disk holding {folder})"
    return getattr(error, "strerror", None) or first_line(error)


def copy_tree(source: Path, target: Path, skip: tuple[str, ...] = (), dirs_exist_ok: bool = False) -> None:
    """Copy the folder `source` to `target`, leaving out links (and names in `skip`). A folder
    from someone else may hold a link to a file elsewhere on this machine: following it would
    copy that file into an export the user then shares."""
    import shutil

    def ignored(folder: str, names: list[str]) -> set[str]:
        return {name for name in names if name in skip or os.path.islink(os.path.join(folder, name))}

    shutil.copytree(source, target, ignore=ignored, dirs_exist_ok=dirs_exist_ok)
