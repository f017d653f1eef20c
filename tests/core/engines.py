"""The other engines the job tests need, pinned and kept out of our own environment:

- TRL in a virtual environment of its own (`.engines/trl-VERSION`), which borrows torch,
  transformers, peft, accelerate and datasets from our .venv through a .pth file (TRL's own
  requirements, all present there) so that making it takes seconds, not a torch download;
- OpenRLHF's pinned wheel, unpacked (`.engines/openrlhf-VERSION`), read as source: its argument
  parsers and data loaders are run on their own (OpenRLHF itself needs CUDA, DeepSpeed and Ray).

Both come from the package index on first use; without it the tests that need them skip."""

from __future__ import annotations

import ast
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from workbench.jobs.openrlhf_job import OPENRLHF_VERSION
from workbench.jobs.trl_job import TRL_VERSION

ENGINES = Path(__file__).resolve().parents[2] / ".engines"


def trl_python() -> Path:
    venv = ENGINES / f"trl-{TRL_VERSION}"
    python = venv / "bin" / "python"
    check = [str(python), "-c", f"import trl, sys; sys.exit(trl.__version__ != '{TRL_VERSION}')"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    own = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    Path(own, "workbench-venv.pth").write_text(site.getsitepackages()[0] + "\n")
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", f"trl=={TRL_VERSION}"],
                          capture_output=True, text=True)
    if done.returncode != 0 or subprocess.run(check, capture_output=True).returncode != 0:
        pytest.skip(f"trl {TRL_VERSION} could not be installed: {done.stderr.strip()[-300:]}")
    return python


def openrlhf_source() -> Path:
    """The unpacked package folder `openrlhf/` of the pinned wheel."""
    root = ENGINES / f"openrlhf-{OPENRLHF_VERSION}"
    package = root / "openrlhf"
    if (package / "cli" / "train_ppo_ray.py").is_file():
        return package
    wheels = root / "wheel"
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                           "--python-version", "3.11", "--dest", str(wheels), f"openrlhf=={OPENRLHF_VERSION}"],
                          capture_output=True, text=True)
    found = sorted(wheels.glob("openrlhf-*.whl"))
    if done.returncode != 0 or not found:
        pytest.skip(f"openrlhf {OPENRLHF_VERSION} could not be downloaded: {done.stderr.strip()[-300:]}")
    with zipfile.ZipFile(found[0]) as wheel:
        for name in wheel.namelist():
            inside = name.split("purelib/", 1)[-1] if ".data/purelib/" in name else name
            if inside.startswith("openrlhf/") and inside.endswith(".py"):
                target = root / inside
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(wheel.read(name))
    return package


def openrlhf_parser(module: str):
    """The argparse parser OpenRLHF's `module` (e.g. "train_dpo") builds under `if __name__ ==
    "__main__":`, made by running that block's statements up to `parse_args()` on their own."""
    import argparse
    import datetime

    source = (openrlhf_source() / "cli" / f"{module}.py").read_text()
    tree = ast.parse(source)
    main = next(node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test))
    body = []
    for statement in main.body:
        if "parse_args" in ast.unparse(statement):
            break
        body.append(statement)
    namespace = {"argparse": argparse, "datetime": datetime.datetime, "os": __import__("os")}
    exec(compile(ast.Module(body=body, type_ignores=[]), f"openrlhf/cli/{module}.py", "exec"), namespace)
    return namespace["parser"]


def openrlhf_preprocess(dataset_module: str):
    """`preprocess_data` of OpenRLHF's `openrlhf/datasets/<dataset_module>.py`, on its own."""
    import copy

    source = (openrlhf_source() / "datasets" / f"{dataset_module}.py").read_text()
    tree = ast.parse(source)
    wanted = [node for node in tree.body if isinstance(node, ast.FunctionDef)
              and node.name in ("preprocess_data", "_str_to_content_list")]

    def exist_and_not_none(d, key):
        return key in d and d[key] is not None

    namespace = {"copy": copy, "exist_and_not_none": exist_and_not_none}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), f"openrlhf/datasets/{dataset_module}.py", "exec"), namespace)
    return namespace["preprocess_data"]
