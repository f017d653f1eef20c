"""A full disk is named as such, leaves no half-written files, and marks the run (issue 19).

Where the tests may mount a small tmpfs (root), the disk is really full; elsewhere the same
paths are driven by the errors a full disk raises."""

from __future__ import annotations

import errno
import shutil
import sqlite3
import subprocess
from collections import namedtuple

import pytest

from workbench.cli import main
from workbench.data.sft_store import SftStore
from workbench.errors import ProjectError
from workbench.paths import write_atomically
from workbench.project import Project
from workbench.train.runs import RunRecord, TrainingError
from workbench.train.sft import SftConfig, train_sft

EXAMPLE = [{"role": "user", "content": "Where is my order?"}, {"role": "assistant", "content": "It ships today."}]
Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs, or a skip where this process may not mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("needs permission to mount a tmpfs")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder, leave: int = 0) -> None:
    """Fill the disk holding `folder` until `leave` bytes are free."""
    free = shutil.disk_usage(folder).free - leave
    with open(folder / "filler", "wb") as handle:
        while free > 0:
            chunk = min(free, 1 << 20)
            try:
                handle.write(b"\0" * chunk)
                handle.flush()
            except OSError:
                break
            free -= chunk


def test_a_checkpoint_that_does_not_fit_fails_the_run_and_leaves_nothing(tmp_path, models, monkeypatch):
    import torch

    project = Project.create(tmp_path / "p")
    SftStore(project).add_many([EXAMPLE] * 4)

    def disk_full(*args, **kwargs):  # what torch raises when its writer hits ENOSPC
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", disk_full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10 << 30, 10 << 30, 4096))
    with pytest.raises(TrainingError, match=r"checkpoint at step 2: the disk is full \(0 MB free"):
        list(train_sft(project, models, SftConfig(max_steps=4, checkpoint_every=2, batch_size=2,
                                                  validation_fraction=0.0)))
    record = RunRecord(project, 1)
    assert record.status == "failed" and "disk is full" in record.message
    assert not list(record.folder.rglob("*.partial")) and models.busy_with is None
    project.close()


def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    import os

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError):
        write_atomically(tmp_path / "out.jsonl", b"x" * 1000)
    assert list(tmp_path.iterdir()) == []


def test_new_on_a_full_disk_leaves_no_empty_project(tmp_path, monkeypatch):
    def full(self, from_version):
        error = sqlite3.OperationalError("database or disk is full")
        error.sqlite_errorcode = 13
        raise error

    monkeypatch.setattr(Project, "_migrate", full)
    with pytest.raises(ProjectError, match="could not create p.rlhf: the disk is full"):
        Project.create(tmp_path / "p")
    assert list(tmp_path.iterdir()) == []


def test_an_io_error_is_not_called_damage(tmp_path):
    from workbench.project import explain_sqlite_error

    error = sqlite3.OperationalError("disk I/O error")
    error.sqlite_errorcode = 10 | (13 << 8)  # SQLITE_IOERR_WRITE
    message = str(explain_sqlite_error(error, tmp_path / "p.rlhf", "open"))
    assert "damaged" not in message and "disk I/O error" in message


# ---- a really full disk --------------------------------------------------------------------------

def test_really_full_new_info_and_export(small_disk, tmp_path, capsys):
    healthy = Project.create(small_disk / "healthy")
    SftStore(healthy).add_many([EXAMPLE] * 20)
    healthy.close()
    fill(small_disk)

    assert main(["new", str(small_disk / "empty")]) == 1
    assert "disk is full" in capsys.readouterr().err
    assert not (small_disk / "empty.rlhf").exists() and not (small_disk / "empty.artifacts").exists()

    before = (small_disk / "healthy.rlhf").read_bytes()
    code = main(["info", str(small_disk / "healthy.rlhf")])
    err = capsys.readouterr().err
    assert code == 0 or ("damaged" not in err and "disk" in err), err

    out = small_disk / "out.jsonl"
    assert main(["export", str(small_disk / "healthy.rlhf"), str(out)]) == 1
    err = capsys.readouterr().err  # at opening (no room for SQLite's -shm) or at writing
    assert ("disk is full" in err or "No space left" in err) and "damaged" not in err, err
    assert not out.exists() and not list(small_disk.glob(".*.tmp"))
    (small_disk / "filler").unlink()
    assert (small_disk / "healthy.rlhf").read_bytes() == before or Project.open(small_disk / "healthy.rlhf")


def test_a_project_on_a_full_disk_is_still_read(small_disk, capsys):
    healthy = Project.create(small_disk / "healthy")
    SftStore(healthy).add_many([EXAMPLE] * 20)
    healthy.close()
    fill(small_disk)
    before = sorted(p.name for p in small_disk.iterdir())
    assert main(["info", str(small_disk / "healthy.rlhf")]) == 0  # before: "could not open", exit 1
    assert "opened healthy.rlhf read-only" in capsys.readouterr().err
    assert sorted(p.name for p in small_disk.iterdir()) == before  # no -wal or -shm left behind
    with pytest.raises(ProjectError, match="disk is full"):
        Project.open(small_disk / "healthy.rlhf")  # a command that writes is still refused, clearly
    assert sorted(p.name for p in small_disk.iterdir()) == before
