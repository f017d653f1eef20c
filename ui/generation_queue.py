"""Responses made ahead of the annotator: while one prompt is being ranked, the next ones'
responses are generated in the background, one prompt at a time, so moving on never waits.

The page says which prompts it wants ready, in order (`want`). The queue runs the core's
`generate_responses` for one prompt at a time and then takes the next wanted prompt that still has
no responses; a change of mind never interrupts a prompt half-way (that work would be lost),
except for an explicit `stop_now` (the model is needed for something else).

Other model work the page asks for while responses are being written (reward scores) waits its
turn through `run_when_free`: it starts when the prompt in progress is done, and the next prompt
starts after it, so neither finds the model busy.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Signal

from workbench.data.rankings import RankingStore
from workbench.data.response_generation import GenerationConfig, GenerationEvent, generate_responses
from ui.session import WorkbenchSession
from ui.workers import BackgroundTask


class GenerationQueue(QObject):
    streaming = Signal(object)  # GenerationEvent, while a prompt's responses grow
    ready = Signal(int, str)  # prompt id, batch uid: a prompt's responses are saved
    failed = Signal(str)
    state_changed = Signal()

    def __init__(self, session: WorkbenchSession):
        super().__init__(session)
        self.session = session
        self.config = GenerationConfig()
        self.wanted: list[int] = []
        self.forced: set[int] = set()  # prompts to generate again even though they have responses
        self.task: BackgroundTask | None = None
        self.prompt_id: int | None = None  # the prompt being generated now
        self.started_at: float | None = None
        self.error: str | None = None
        self.jobs: list[QueuedJob] = []  # other model work waiting for the prompt in progress
        self.job: BackgroundTask | None = None  # the one running now
        session.model_releasers.append(self.stop_now)

    @property
    def running(self) -> bool:
        return self.task is not None and self.task.running

    def want(self, prompt_ids: list[int]) -> None:
        """Generate for these prompts, in this order, skipping those that have responses."""
        self.wanted = list(dict.fromkeys(prompt_ids))
        self.error = None
        self._start_next()

    def regenerate(self, prompt_id: int) -> None:
        self.forced.add(prompt_id)
        self.wanted = [prompt_id, *[p for p in self.wanted if p != prompt_id]]
        self.error = None
        self._start_next()

    def run_when_free(self, factory, on_item=None, on_error=None, on_finished=None) -> "QueuedJob":
        """Run `factory` (as for session.run_task) once the prompt being written is done, before
        the next one. Returns a handle whose stop() cancels it, waiting or running."""
        job = QueuedJob(self, factory, on_item, on_error, on_finished)
        self.jobs.append(job)
        self._start_next()
        return job

    def stop_now(self) -> None:
        """Drop the queue and wait for the model to be free (the prompt in progress is discarded)."""
        self.wanted = []
        for job in self.jobs:
            job.never_ran()
        self.jobs = []
        for task in (self.job, self.task):
            if task is not None:
                task.stop()
        if self.job is not None and self.job.wait(30_000):
            self.job = None
        if self.task is not None and self.task.wait(30_000):
            self.task, self.prompt_id = None, None  # its finished report arrives later and is ignored
            self.state_changed.emit()

    def pending(self) -> list[int]:
        return ([self.prompt_id] if self.running else []) + [p for p in self.wanted if p != self.prompt_id]

    # ---- internals -----------------------------------------------------------------

    def _needs_responses(self, prompt_id: int) -> bool:
        if prompt_id in self.forced:
            return True
        return RankingStore(self.session.project).latest_batch(prompt_id) is None

    def _start_next(self) -> None:
        if self.running or (self.job is not None and self.job.running):
            return
        if self.jobs and self.session.project is not None:
            self._start_job(self.jobs.pop(0))
            return
        if self.error or self.session.project is None or not self.session.models.loaded:
            return
        while self.wanted and not self._needs_responses(self.wanted[0]):
            self.wanted.pop(0)
        if not self.wanted:
            self.state_changed.emit()
            return
        prompt_id = self.wanted.pop(0)
        self.forced.discard(prompt_id)
        project, models, config = self.session.project, self.session.models, self.config
        self.prompt_id, self.started_at = prompt_id, time.monotonic()
        task = self.session.run_task(
            lambda should_stop: generate_responses(project, models, [prompt_id], config, should_stop),
            on_item=self._on_event, on_error=self._on_error,
            on_finished=lambda outcome: self._on_finished(task, outcome))
        self.task = task
        self.state_changed.emit()

    def _start_job(self, job: "QueuedJob") -> None:
        def finished(outcome: str) -> None:
            if task is self.job:
                self.job = None
            if job.on_finished is not None:
                job.on_finished(outcome)
            self._start_next()

        task = self.session.run_task(job.factory, on_item=job.on_item, on_error=job.on_error, on_finished=finished)
        self.job = job.task = task

    def _on_event(self, event: GenerationEvent) -> None:
        if event.saved:
            self.ready.emit(event.prompt_id, event.batch_uid)
        else:
            self.streaming.emit(event)

    def _on_error(self, message: str) -> None:
        self.error = message  # e.g. the model is busy training: wait for the page to ask again
        self.failed.emit(message)

    def _on_finished(self, task: BackgroundTask, outcome: str) -> None:
        if task is self.task:
            self.task, self.prompt_id = None, None
        self.state_changed.emit()
        self._start_next()  # a stop empties the queue first, and a failure sets self.error


class QueuedJob:
    """Work given to `run_when_free`: waiting, then running as a BackgroundTask."""

    def __init__(self, queue: GenerationQueue, factory, on_item, on_error, on_finished):
        self.queue, self.factory = queue, factory
        self.on_item, self.on_error, self.on_finished = on_item, on_error, on_finished
        self.task: BackgroundTask | None = None

    def never_ran(self) -> None:
        if self.on_finished is not None:
            self.on_finished("stopped")

    def stop(self) -> None:
        if self in self.queue.jobs:  # still waiting: it never runs
            self.queue.jobs.remove(self)
            self.never_ran()
        elif self.task is not None:
            self.task.stop()
