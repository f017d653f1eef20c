"""The Quick start's setup step: it must pick the right torch build and skip work when done."""

from workbench import bootstrap


def test_cpu_and_cuda_machines_get_different_stamps():
    assert bootstrap.wanted_stamp(cuda=False) != bootstrap.wanted_stamp(cuda=True)


def test_no_gpu_means_the_cpu_build(monkeypatch):
    monkeypatch.setattr(bootstrap.shutil, "which", lambda name: None)
    assert bootstrap.has_cuda_gpu() is False
    calls = []
    monkeypatch.setattr(bootstrap, "pip", lambda *args: calls.append(args) or 0)
    bootstrap.install_torch(cuda=False)
    assert calls == [("install", "--no-index", "--no-deps", "torch==2.13.0+cpu"), ("install", "torch==2.13.0+cpu")]


def test_cpu_build_falls_back_to_the_cpu_index_never_plain_pypi(monkeypatch):
    calls = []
    monkeypatch.setattr(bootstrap, "pip", lambda *args: calls.append(args) or (1 if "--no-index" in args else 0))
    bootstrap.install_torch(cuda=False)
    assert calls[-1] == ("install", "torch==2.13.0", "--index-url", bootstrap.CPU_TORCH_INDEX,
                         "--extra-index-url", bootstrap.PYPI)


def test_every_pinned_dependency_is_locked():
    import tomllib

    pyproject = tomllib.loads((bootstrap.ROOT / "pyproject.toml").read_text())
    locked = {line.split("==")[0].lower().replace("_", "-")
              for line in bootstrap.CONSTRAINTS.read_text().splitlines() if "==" in line}
    pinned = pyproject["project"]["dependencies"] + pyproject["project"]["optional-dependencies"]["test"]
    for requirement in pinned:
        name = requirement.split("==")[0].lower()
        assert name == "torch" or name in locked, f"{name} is pinned but not in the lock file"
