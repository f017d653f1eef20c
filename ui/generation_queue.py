"""Responses made ahead of the annotator: while one prompt is being ranked, the next ones'
responses are generated in the background, one prompt at a time, so moving on never waits.

The page says which prompts it wants ready, in order (`want`). The queue runs the core's
`generate_responses` for one prompt at a time and then takes the next wanted prompt that still has
no responses; a change of mind never interrupts a prompt half-way (that work would be lost),
except for an explicit `stop_now` (the model is needed for something else).
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

    def stop_now(self) -> None:
        """Drop the queue and wait for the model to be free (the prompt in progress is discarded)."""
        self.wanted = []
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
        if self.running or self.error or self.session.project is None or not self.session.models.loaded:
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
