"""TensorBoard event files beside every run, so a user can open our runs in the tool they already use:
`tensorboard --logdir ARTIFACTS/runs` lists each run as `run-0003/tensorboard/sft-run-3`.

The project's metrics table stays the record; these files are a copy written as the run goes
(`torch.utils.tensorboard`). They are best effort: without the tensorboard package, or on a
disk that refuses the write, the run trains on and says once in its log why there are none.
A resumed run purges the steps after its checkpoint (they are trained again), as the metrics
table does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from workbench.train.runs import RunRecord, StepLog

FOLDER = "tensorboard"


def log_folder(record: RunRecord) -> Path:
    return record.folder / FOLDER / f"{record.kind}-run-{record.id}"


class TensorBoardLog:
    """Scalars of one run; every failure turns it off instead of reaching the training loop."""

    def __init__(self, record: RunRecord, resumed_at: int | None):
        self.record, self.writer = record, None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_folder(record)), purge_step=resumed_at or None, flush_secs=10)
        except Exception as error:  # ImportError without the package, OSError on a full or read-only disk
            self._give_up(error)

    def add(self, log: StepLog) -> None:
        if self.writer is None or not log.metrics:
            return
        try:
            for key, value in log.metrics.items():
                self.writer.add_scalar(key, value, log.step)
        except Exception as error:
            self._give_up(error)

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception as error:
                self._give_up(error)
            self.writer = None

    def _give_up(self, error: Exception) -> None:
        self.writer = None
        try:
            self.record.log(f"No TensorBoard event files for this run: {type(error).__name__}: {error}", "warning")
        except Exception:
            pass  # the run's own error handling reports a project that cannot be written


def with_tensorboard(record: RunRecord, steps: Iterator[StepLog]) -> Iterator[StepLog]:
    """`steps`, with each step's metrics also written to the run's TensorBoard folder."""
    board: TensorBoardLog | None = None
    try:
        for log in steps:
            if board is None and log.metrics:
                # The first step with metrics follows any checkpoint the run resumed from: events
                # from that step on, written before the run stopped, are dropped.
                board = TensorBoardLog(record, log.step if log.step > 1 else None)
            if board is not None:
                board.add(log)
            yield log
    finally:
        if board is not None:
            board.close()
