"""Whether this machine lets a model run the code it ships or unpickle its weights.

Both are this machine's decision, never a project file's: a project (which may come from
someone else) only says what its owner asked for. The user grants a request once, for one model
folder and the exact files it covers (the folder's Python files for remote code, its pickle
weights for pickle loading); the grant lives in this machine's settings, and a changed or added
file asks again. Headless commands refuse with a message unless a flag grants the request.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from workbench import app_settings
from workbench.config import ModelSpec
from workbench.errors import ModelLoadError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Files that decide which code transformers imports for a folder (their auto_map entries).
CODE_CONFIGS = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")

WHAT = {
    "trust_remote_code": ("run the Python code shipped with the model", "--trust-remote-code",
                          "Trust remote code"),
    "allow_pickle": ("unpickle its .bin/.pt weights, which can run any code", "--allow-pickle",
                     "Allow pickle weights"),
}


@dataclass(frozen=True)
class TrustRequest:
    """One thing a model asks for, for one folder and the exact files it covers."""

    what: str  # "trust_remote_code" or "allow_pickle"
    folder: Path
    files: tuple[str, ...]

    def fingerprint(self) -> dict[str, list]:
        """name -> [size, mtime_ns, sha256] of each covered file; the hash is reused from a grant
        while size and modification time are unchanged, so a 10 GB pickle is read once."""
        granted = _grants().get(self.key, {}).get("files", {})
        result = {}
        for name in self.files:
            stat = (self.folder / name).stat()
            old = granted.get(name)
            same = old and old[:2] == [stat.st_size, stat.st_mtime_ns]
            result[name] = [stat.st_size, stat.st_mtime_ns, old[2] if same else _sha256(self.folder / name)]
        return result

    @property
    def key(self) -> str:
        return f"{self.what}:{self.folder.resolve()}"

    def describe(self) -> str:
        shown = ", ".join(self.files[:4]) + (f" and {len(self.files) - 4} more" if len(self.files) > 4 else "")
        return f"{WHAT[self.what][0]} ({shown} in {self.folder})"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _grants() -> dict:
    grants = app_settings.load().get("trusted_models", {})
    return grants if isinstance(grants, dict) else {}


def requests(spec: ModelSpec, folder: Path) -> list[TrustRequest]:
    """What loading `folder` the way `spec` asks would need from this machine. Only real needs
    count: remote code with no code files and pickle loading with safetensors present ask nothing."""
    if spec.kind not in ("folder", "hub"):
        return []  # GGUF files are converted by our own code; nothing of theirs runs
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    found = []
    if spec.trust_remote_code:
        code = [n for n in names if n.endswith(".py")]
        if code:
            found.append(TrustRequest("trust_remote_code", folder, tuple(code + [n for n in names if n in CODE_CONFIGS])))
    if spec.allow_pickle and not any(n.endswith(".safetensors") for n in names):
        pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
        if pickles:
            found.append(TrustRequest("allow_pickle", folder, tuple(pickles)))
    return found


def is_granted(request: TrustRequest) -> bool:
    grant = _grants().get(request.key)
    if not isinstance(grant, dict) or set(grant.get("files", {})) != set(request.files):
        return False
    try:
        return request.fingerprint() == grant["files"]
    except OSError:
        return False


def pending(spec: ModelSpec, folder: Path) -> list[TrustRequest]:
    return [request for request in requests(spec, folder) if not is_granted(request)]


def grant(request: TrustRequest) -> None:
    """Remember that this machine's user allowed `request`, for exactly its files as they are now."""
    data = app_settings.load()
    grants = data.get("trusted_models") if isinstance(data.get("trusted_models"), dict) else {}
    grants[request.key] = {"files": request.fingerprint()}
    data["trusted_models"] = grants
    app_settings.save(data)


def revoke_all() -> None:
    data = app_settings.load()
    data.pop("trusted_models", None)
    app_settings.save(data)


def effective_flags(spec: ModelSpec, folder: Path) -> tuple[bool, bool]:
    """(allow_pickle, trust_remote_code) to load `folder` with: what `spec` asks for and this
    machine has granted. Raises ModelLoadError naming what is missing and how to grant it."""
    needed = requests(spec, folder)
    missing = [request for request in needed if not is_granted(request)]
    if missing:
        raise ModelLoadError(refusal(missing))
    granted = {request.what for request in needed}
    return "allow_pickle" in granted, "trust_remote_code" in granted


def refusal(missing: list[TrustRequest]) -> str:
    asks = "; and to ".join(request.describe() for request in missing)
    flags = " and ".join(WHAT[request.what][1] for request in missing)
    boxes = " and ".join(f"'{WHAT[request.what][2]}'" for request in missing)
    return (f"This model asks to {asks}. That is this machine's decision, never a project file's, and "
            f"it has not been allowed here. If you trust these files: in the workbench, keep {boxes} "
            f"ticked, press Load model and answer Yes; on the command line, pass {flags}. The answer is "
            "remembered for these exact files.")


def describe_for_dialog(missing: list[TrustRequest]) -> str:
    lines = [f"- {request.describe()}" for request in missing]
    return ("The model you are loading asks to:\n" + "\n".join(lines) + "\n\nThis can run any program "
            "on this computer. Allow it only for files you trust. The answer is remembered for these "
            "exact files on this machine; a project file can never grant it.")

