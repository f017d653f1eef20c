"""Training runs as records in the project: status, config, metrics, logs, checkpoints.

Shared by SFT, reward-model and PPO training. A trainer is a generator of `StepLog`s that
records everything through a `RunRecord` as it goes, so the GUI and the command line leave the
same trace, and a run killed at any moment can be listed, plotted and resumed afterwards.

Checkpoints are folders written under a temporary name and renamed into place once complete,
so a kill mid-write never damages the last good checkpoint: a half-written one is simply not
there (its `.partial` folder is removed the next time the run saves).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.paths import disk_problem
from workbench.project import Project

STATUSES = ("running", "paused", "finished", "stopped", "failed")
ACTIVE = ("running", "paused")
COMPLETE_MARKER = "COMPLETE"


class TrainingError(WorkbenchError):
    """A run cannot go on (out of memory, a non-finite loss, no usable data); says what to change."""


@dataclass(frozen=True)
class StepLog:
    """One report from a running trainer: plain numbers and strings for the GUI and the CLI."""

    run_id: int
    step: int
    total_steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""
    status: str = "running"
    elapsed_s: float = 0.0
    eta_s: float | None = None
    samples: tuple[dict, ...] = ()  # a few of this step's generated samples (PPO): plain strings and floats


class RunControl:
    """The user's stop and pause requests, read by a trainer between steps (any thread)."""

    def __init__(self, should_stop: Callable[[], bool] = lambda: False):
        self._external_stop = should_stop
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def also_stop_when(self, should_stop: Callable[[], bool]) -> None:
        """Add another stop source (the GUI worker's, known only once it starts)."""
        self._external_stop = should_stop

    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # wake a paused trainer so it can save and end

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def pause_requested(self) -> bool:
        return not self._running.is_set()

    def should_stop(self) -> bool:
        return self._stop.is_set() or self._external_stop()

    def wait_while_paused(self) -> None:
        while not self._running.wait(0.1):
            if self.should_stop():
                return


class RunRecord:
    """One row of the runs table and everything that hangs off it."""

    def __init__(self, project: Project, run_id: int):
        self.project = project
        self.id = run_id

    @classmethod
    def create(cls, project: Project, kind: str, config: dict) -> "RunRecord":
        now = time.time()
        with project.transaction():
            run_id = project.execute(
                "INSERT INTO runs(kind, status, config, created_at, updated_at) VALUES (?, 'running', ?, ?, ?)",
                (kind, json.dumps(config), now, now))
            # A hand-made file can hold rows for a run id not yet used (foreign keys are only
            # checked on our writes): a new run must never inherit a planted checkpoint or curve.
            for table in ("checkpoints", "metrics", "run_logs"):
                project.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
        return cls(project, run_id)

    @classmethod
    def open(cls, project: Project, run_id: int) -> "RunRecord":
        if not project.query("SELECT 1 FROM runs WHERE id = ?", (run_id,)):
            raise WorkbenchError(f"there is no run {run_id} in {project.path.name}.")
        return cls(project, run_id)

    def _field(self, name: str):
        return self.project.query(f"SELECT {name} FROM runs WHERE id = ?", (self.id,))[0][0]

    @property
    def kind(self) -> str:
        return self._field("kind")

    @property
    def status(self) -> str:
        return self._field("status")

    @property
    def message(self) -> str | None:
        return self._field("message")

    @property
    def config(self) -> dict:
        return json.loads(self._field("config"))

    @property
    def artifact(self) -> Path | None:
        value = self._field("artifact")
        return self.project.inside_artifacts(value) if value else None

    @property
    def folder(self) -> Path:
        return self.project.inside_artifacts(f"runs/run-{self.id:04d}")

    def checkpoint_folder(self, step: int) -> Path:
        return self.folder / "checkpoints" / f"step-{step:06d}"

    def set_status(self, status: str, message: str | None = None) -> None:
        assert status in STATUSES, status
        self.project.execute("UPDATE runs SET status = ?, message = ?, updated_at = ? WHERE id = ?",
                             (status, message, time.time(), self.id))

    def set_artifact(self, path: Path) -> None:
        """Stored relative to the artifacts folder, so Save As copies keep working."""
        relative = path.relative_to(self.project.artifacts_dir).as_posix()
        self.project.execute("UPDATE runs SET artifact = ?, updated_at = ? WHERE id = ?",
                             (relative, time.time(), self.id))

    def set_config(self, config: dict) -> None:
        self.project.execute("UPDATE runs SET config = ? WHERE id = ?", (json.dumps(config), self.id))

    # ---- metrics and logs ------------------------------------------------------------------

    def add_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.project.execute_many(
            "INSERT OR REPLACE INTO metrics(run_id, key, step, value) VALUES (?, ?, ?, ?)",
            [(self.id, key, step, float(value)) for key, value in metrics.items()])

    def metrics(self) -> dict[str, tuple[list[int], list[float]]]:
        series: dict[str, tuple[list[int], list[float]]] = {}
        for key, step, value in self.project.query(
                "SELECT key, step, value FROM metrics WHERE run_id = ? ORDER BY key, step", (self.id,)):
            steps, values = series.setdefault(key, ([], []))
            steps.append(step)
            values.append(value)
        return series

    def forget_metrics_after(self, step: int) -> None:
        """On resume, steps after the checkpoint are trained again; drop their old values."""
        self.project.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", (self.id, step))

    def log(self, message: str, level: str = "info") -> None:
        self.project.execute("INSERT INTO run_logs(run_id, at, level, message) VALUES (?, ?, ?, ?)",
                             (self.id, time.time(), level, message))

    def logs(self) -> list[tuple[float, str, str]]:
        return self.project.query("SELECT at, level, message FROM run_logs WHERE run_id = ? ORDER BY id",
                                  (self.id,))

    # ---- checkpoints -----------------------------------------------------------------------

    def save_checkpoint(self, step: int, write: Callable[[Path], None], keep: int = 2) -> Path:
        """Write a checkpoint folder with `write(folder)`, atomically, then prune older ones."""
        root = self.folder / "checkpoints"
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob("*.partial"):
            shutil.rmtree(stale, ignore_errors=True)
        final = self.checkpoint_folder(step)
        partial = final.with_name(final.name + ".partial")
        try:
            partial.mkdir()
            write(partial)
            (partial / COMPLETE_MARKER).write_text(str(step))
            _fsync_tree(partial)
        except Exception as error:  # noqa: BLE001 - torch and safetensors raise their own types
            shutil.rmtree(partial, ignore_errors=True)
            raise TrainingError(f"Could not write the checkpoint at step {step}: {disk_problem(root, error)}. "
                                + self.kept_checkpoint("No earlier checkpoint exists.")) from None
        if final.exists():  # the same step saved again (stop right after an interval save)
            shutil.rmtree(final)
        os.replace(partial, final)
        _fsync_dir(root)
        self.project.execute(
            "INSERT OR REPLACE INTO checkpoints(run_id, step, path, created_at) VALUES (?, ?, ?, ?)",
            (self.id, step, final.relative_to(self.project.artifacts_dir).as_posix(), time.time()))
        self._prune(keep)
        return final

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints on disk, oldest first. Only the run's own folders count: a row
        naming any other path (another run's checkpoint, a folder elsewhere) is ignored, so it
        is never loaded and never pruned."""
        rows = self.project.query("SELECT step, path FROM checkpoints WHERE run_id = ? ORDER BY step",
                                  (self.id,))
        found = []
        for step, path in rows:
            own = self.checkpoint_folder(step)
            if isinstance(step, int) and path == own.relative_to(self.project.artifacts_dir).as_posix() \
                    and (own / COMPLETE_MARKER).is_file():
                found.append((step, own))
        return found

    def last_checkpoint(self) -> tuple[int, Path] | None:
        complete = self.checkpoints()
        return complete[-1] if complete else None

    def kept_checkpoint(self, otherwise: str = "") -> str:
        """After a failed write: which checkpoint the run can still resume from (or `otherwise`)."""
        last = self.last_checkpoint()
        return f"The checkpoint at step {last[0]} is kept; resume from it once there is room." if last else otherwise

    def _prune(self, keep: int) -> None:
        for step, path in self.checkpoints()[:-keep] if keep > 0 else []:
            shutil.rmtree(path, ignore_errors=True)
            self.project.execute("DELETE FROM checkpoints WHERE run_id = ? AND step = ?", (self.id, step))


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    if os.name == "posix":  # directory entries are made durable by syncing the directory itself
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class RunLock:
    """Held by the process that trains a run, for as long as it trains.

    A lock file in the run folder, locked with flock: the kernel releases it when the process
    dies, however it dies, so "running, but nobody holds the lock" means it was cut off.
    """

    def __init__(self, record: RunRecord):
        self.path = record.folder / "LOCK"
        self._handle = None

    def acquire(self) -> bool:
        try:
            import fcntl
        except ImportError:  # not POSIX: fall back to trusting the status alone
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the lock
            self._handle = None

    def held_elsewhere(self) -> bool:
        if not self.path.exists():
            return False
        if self.acquire():
            self.release()
            return False
        return True


def mark_interrupted(project: Project) -> list[int]:
    """Runs still marked running/paused when a project is opened were cut off by a crash or kill,
    unless another process is training them right now (it holds their lock)."""
    ids = []
    for (run_id,) in project.query("SELECT id FROM runs WHERE status IN ('running', 'paused')"):
        record = RunRecord(project, run_id)
        if RunLock(record).held_elsewhere():
            continue
        last = record.last_checkpoint()
        where = f"the checkpoint at step {last[0]}" if last else "the start (no checkpoint was saved)"
        record.set_status("stopped", f"Interrupted (the app closed or was killed). Resume continues from {where}.")
        ids.append(run_id)
    return ids


def run_summaries(project: Project) -> list[dict]:
    """Every run with the figures the Runs page lists: last step, last train and validation loss."""
    summaries = project.runs()
    for summary in summaries:
        for key in ("loss/train", "loss/validation"):
            row = project.query("SELECT value FROM metrics WHERE run_id = ? AND key = ? ORDER BY step DESC LIMIT 1",
                                (summary["id"], key))
            summary[key] = row[0][0] if row else None
        summary["resumable"] = summary["status"] in ("stopped", "failed")
    return summaries


def finished_adapters(project: Project, kind: str = "sft") -> list[tuple[int, Path]]:
    """(run id, adapter folder) of finished runs whose adapter is still on disk, newest first."""
    found = []
    for summary in reversed(project.runs()):
        if summary["kind"] == kind and summary["status"] == "finished" and summary["artifact"]:
            try:
                folder = project.inside_artifacts(summary["artifact"])
            except WorkbenchError:
                continue  # a path leading out of the project is never used (see inside_artifacts)
            if (folder / "adapter_config.json").is_file():
                found.append((summary["id"], folder))
    return found


def choose_run(runs: list[tuple[int, Path]], run_id: int | None, none_yet: str, what: str) -> tuple[int, Path]:
    """(run id, folder) of run `run_id` among finished `runs` (newest first), or the newest one;
    `none_yet` is the error when there are none, `what` names the kind ("PPO run")."""
    if not runs:
        raise WorkbenchError(none_yet)
    if run_id is None:
        return runs[0]
    for found, folder in runs:
        if found == run_id:
            return found, folder
    raise WorkbenchError(f"run {run_id} is not a finished {what}; finished ones: "
                         f"{', '.join(str(r) for r, _ in runs)}.")
