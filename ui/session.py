"""The GUI's state: the open project and the loaded model, announced to pages by signals.

Pages take a WorkbenchSession in their constructor and subscribe to it (as napari's views do
to their models); no page talks to another. All real work is in the core.

Changes flow one way. A store writes to the project; the project reports the kinds of record
each commit changed, on whatever thread committed; the session gathers those into one
`changed(kinds)` signal, queued on the GUI thread; each page re-reads what it shows of those
kinds (ui/change_flow.py). Nobody emits "data changed" by hand, so no write can be missed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QTimer, Signal

from workbench import app_settings
from workbench.config import ModelSpec
from workbench.errors import ProjectError, WorkbenchError
from workbench.models import trust
from workbench.models.loading import ModelSession
from workbench.models.sources import grant_requested, model_folder
from workbench.progress import Progress
from workbench.project import Project
from workbench.train.runs import mark_interrupted
from ui.garbage import collect_all_generations, collect_young_only, freeze_long_lived_objects
from ui.workers import BackgroundTask

log = logging.getLogger("workbench.session")
STOP_WAIT_MS = 120_000


class WorkbenchSession(QObject):
    project_closing = Signal()  # the current project is about to close: save pending edits now
    project_changed = Signal()
    model_loading = Signal(object)  # Progress
    model_changed = Signal()  # loaded, unloaded, or a load ended (models.info tells which)
    model_failed = Signal(str)
    changed = Signal(object)  # frozenset of record kinds (workbench.project.KINDS) commits changed
    _committed = Signal(object, object)  # (project, kinds) from any thread; queued to the GUI thread

    def __init__(self, parent: QObject | None = None, remember_projects: bool = True):
        super().__init__(parent)
        self.remember_projects = remember_projects  # off for screenshots: leave the recent list alone
        self.project: Project | None = None
        self.models = ModelSession()
        self.load_task: BackgroundTask | None = None
        self.tasks: list[BackgroundTask] = []  # every running task, so closing can stop them all
        # Reasons not to switch projects now (a run writing to this one), asked before switching.
        self.switch_blockers: list[Callable[[], str | None]] = [
            lambda: f"The model is busy ({self.models.busy_with})" if self.models.busy_with else None]
        # Background model work that may simply be dropped (responses made ahead of the
        # annotator): each callable stops it and waits until the model is free.
        self.model_releasers: list[Callable[[], None]] = []
        # Asks the user whether a model may run its own code or unpickle its weights (text ->
        # yes/no); set by the interactive app only, so rendering and tests never grant anything.
        self.confirm_trust: Callable[[str], bool] | None = None
        self._pending_kinds: set[str] = set()
        self._flush_timer = QTimer(self, singleShot=True, interval=0)
        self._flush_timer.timeout.connect(self._flush_changes)
        self._committed.connect(self._collect_changes, Qt.ConnectionType.QueuedConnection)

    # ---- projects: each raises WorkbenchError with a user message, leaving the current one open

    def open_project(self, path: Path | str) -> None:
        self._check_can_switch()
        self._switch_to(Project.open(path))

    def new_project(self, path: Path | str) -> None:
        self._check_can_switch()
        self._switch_to(Project.create(path))

    def save_project_as(self, path: Path | str) -> None:
        if self.project is not None:
            self._check_can_switch()
            self._switch_to(self.project.save_as(path))

    def release_model(self) -> None:
        """Free the model from optional background work before a job that needs it."""
        for release in self.model_releasers:
            release()

    def _check_can_switch(self) -> None:
        self.release_model()
        for blocker in self.switch_blockers:
            reason = blocker()
            if reason:
                raise ProjectError(f"{reason}; stop it before opening another project.")

    def _switch_to(self, project: Project) -> None:
        if self.project is not None and self.project is not project:
            self.project_closing.emit()
            self.project.on_change.clear()
            self.project.close()
            # Adapters are named after their run ids, which the next project reuses.
            self.models.remove_all_adapters()
        self.project = project
        self._pending_kinds.clear()  # the old project's: pages re-read everything on project_changed
        project.on_change.append(lambda kinds: self._committed.emit(project, kinds))
        log.info("opened project %s", project.path)
        interrupted = mark_interrupted(project)  # runs cut off by a crash or kill of this app
        if interrupted:
            log.info("runs %s were interrupted; they can be resumed", interrupted)
        if self.remember_projects:
            app_settings.remember_project(project.path)
        self.project_changed.emit()

    # ---- changes to the project's records -------------------------------------------------

    def _collect_changes(self, project: Project, kinds: frozenset[str]) -> None:
        """On the GUI thread: gather what commits changed until control returns to the event loop,
        then tell the pages once (an import of 10,000 rows is one signal, not 10,000)."""
        if project is not self.project:
            return  # committed just before a switch; the new project's pages re-read anyway
        self._pending_kinds |= kinds
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    def _flush_changes(self) -> None:
        kinds, self._pending_kinds = frozenset(self._pending_kinds), set()
        if kinds:
            self.changed.emit(kinds)

    # ---- the model ---------------------------------------------------------------------

    @property
    def loading(self) -> bool:
        return self.load_task is not None and self.load_task.running

    def load_model(self, spec: ModelSpec) -> None:
        """Load in the background; on success the spec is recorded in the project."""
        if self.loading:
            self.load_task.stop()
        self._ask_trust(spec)
        collect_young_only()  # until this load ends, however it ends
        self.load_task = self.run_task(
            lambda should_stop: self.models.load(spec, should_stop),
            on_item=self.model_loading.emit,
            on_error=self.model_failed.emit,
            on_finished=lambda outcome: self._load_finished(spec, outcome),
        )

    def _ask_trust(self, spec: ModelSpec) -> None:
        """Before the load starts, ask the user (in this, the GUI thread) for what the model asks
        of this machine: its own code, pickle weights. Without `confirm_trust` (off-screen
        rendering, tests) nothing is granted and the load refuses with a message."""
        if self.confirm_trust is None:
            return
        try:
            folder = model_folder(spec)
            missing = trust.pending(spec, folder) if folder is not None and folder.is_dir() else []
        except (WorkbenchError, OSError):
            return  # the load itself reports what is wrong with the folder
        if missing and self.confirm_trust(trust.describe_for_dialog(missing)):
            grant_requested(spec, {request.what for request in missing})

    def cancel_model_load(self) -> None:
        if self.loading:
            self.load_task.stop()

    def _load_finished(self, spec: ModelSpec, outcome: str) -> None:
        collect_all_generations()  # from the next timer tick, after the freeze below
        info = self.models.info
        log.info("model load %s: %s", outcome, info.to_dict() if outcome == "done" and info else spec)
        if outcome == "done" and self.project is not None:
            self.project.set_base_model(spec)
        if outcome == "done":
            freeze_long_lived_objects()
        if outcome == "cancelled":
            self.model_loading.emit(Progress("Loading cancelled.", 0.0))
        self.model_changed.emit()

    # ---- background work ---------------------------------------------------------------

    def run_task(self, factory, on_item=None, on_error=None, on_finished=None) -> BackgroundTask:
        def finished(outcome: str) -> None:
            self.tasks.remove(task)
            if on_finished is not None:
                on_finished(outcome)

        task = BackgroundTask(self, factory, on_item, on_error, finished)
        self.tasks.append(task)
        return task.start()

    def shutdown(self) -> None:
        """Stop every task and close the project (on window close)."""
        # A training step must finish before its run can save a checkpoint and stop.
        unfinished = [task for task in list(self.tasks) if not task.wait(STOP_WAIT_MS)]
        if unfinished:
            # Never close the file under a worker that may still write: the process exit will.
            log.warning("%d background tasks did not stop in time; leaving the project open", len(unfinished))
            return
        if self.project is not None:
            self.project_closing.emit()
            self.project.on_change.clear()
            self.project.close()
            self.project = None
