"""The one training run the GUI has going: start, pause, resume, stop, and its step reports.

Pages never hold the run themselves: the training pages start it, the Runs page lists it, and
both follow it through these signals. The run is a core generator (train_sft, train_rm,
train_ppo) run by the generic worker; pause and stop go through a RunControl that the
generator reads between steps, so a stop always ends with a checkpoint.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from workbench.train.runs import RunControl, StepLog
from workbench.train.dpo import train_dpo
from workbench.train.ppo import train_ppo
from workbench.train.reward import train_rm
from workbench.train.sft import train_sft
from ui.garbage import freeze_long_lived_objects
from ui.session import WorkbenchSession
from ui.workers import BackgroundTask


TRAINERS = {"sft": train_sft, "rm": train_rm, "ppo": train_ppo, "dpo": train_dpo}


class RunManager(QObject):
    step = Signal(object)  # StepLog, for every report of the active run
    started = Signal(int)  # run id, once the run record exists
    ended = Signal(int, str)  # run id, final status: finished, stopped or failed
    failed = Signal(str)  # the message of a failed run (out of memory, non-finite loss, ...)
    state_changed = Signal()  # running / paused / idle changed

    def __init__(self, session: WorkbenchSession):
        super().__init__(session)
        self.session = session
        self.task: BackgroundTask | None = None
        self.control: RunControl | None = None
        self.run_id: int | None = None
        self.last: StepLog | None = None
        self.kind: str | None = None  # of the active (or last) run
        session.switch_blockers.append(lambda: "A training run is in progress" if self.running else None)

    @property
    def running(self) -> bool:
        return self.task is not None and self.task.running

    @property
    def paused(self) -> bool:
        return self.running and self.control is not None and self.control.pause_requested

    def start(self, kind: str, config, resume_run_id: int | None = None) -> None:
        """Start a new `kind` run ("sft", "rm", "ppo" or "dpo") with `config`, or resume run `resume_run_id`
        with its own config."""
        if self.running:
            return
        project, models, control = self.session.project, self.session.models, RunControl()
        train = TRAINERS[kind]

        def factory(should_stop):
            control.also_stop_when(should_stop)  # closing the app stops the run too
            return train(project, models, config, control, resume_run_id)

        self.kind, self.control, self.run_id, self.last = kind, control, resume_run_id, None
        self.session.release_model()
        freeze_long_lived_objects()
        self.task = self.session.run_task(factory, on_item=self._on_step, on_error=self.failed.emit,
                                          on_finished=self._on_finished)
        self.state_changed.emit()

    def pause(self) -> None:
        if self.running:
            self.control.pause()
            self.state_changed.emit()

    def resume(self) -> None:
        if self.running:
            self.control.resume()
            self.state_changed.emit()

    def stop(self) -> None:
        if self.running:
            self.control.stop()
            self.state_changed.emit()

    def _on_step(self, log: StepLog) -> None:
        if self.run_id != log.run_id or self.last is None:
            self.run_id = log.run_id
            self.started.emit(log.run_id)
        self.last = log
        self.step.emit(log)

    def _on_finished(self, outcome: str) -> None:
        run_id = self.run_id
        status = self.last.status if self.last is not None and outcome != "failed" else "failed"
        self.task = None
        self.state_changed.emit()
        if run_id is not None:
            self.ended.emit(run_id, status)  # the finished adapter reaches pages as a "runs" change
