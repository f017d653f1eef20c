"""The SFT training page: SFT settings, Start, and the live view of the running SFT run."""

from __future__ import annotations

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QWidget

from workbench.data.sft_store import SftStore
from workbench.train.sft import SftConfig
from ui.change_flow import follow
from ui.run_manager import RunManager
from ui.run_view import RunMonitor, RunSettings, lay_out_run_page
from ui.session import WorkbenchSession


class SftTrainingPage(QWidget):
    def __init__(self, session: WorkbenchSession, runs: RunManager):
        super().__init__()
        self.session, self.runs = session, runs
        self.settings = RunSettings("SFT settings", SftConfig, "Start SFT run", "sft_settings")
        self.form, self.start_button, self.hint = self.settings.form, self.settings.start_button, self.settings.hint
        self.monitor = RunMonitor(runs)
        lay_out_run_page(self, "SFT training", "Supervised fine-tuning: a LoRA adapter on the loaded base, learning the "
                         "assistant replies of the SFT examples.", self.settings, self.monitor)

        self.start_button.clicked.connect(self.start)
        self.form.changed.connect(lambda: self.settings.show_time_estimate(self.session.project, "sft"))
        session.project_changed.connect(lambda: self.settings.restore(session.project))
        session.project_changed.connect(self._update_enabled)
        session.model_changed.connect(self._update_enabled)
        runs.state_changed.connect(self._update_enabled)
        follow(session, self, {"sft"}, self._update_enabled)  # examples added on the SFT data page
        self._update_enabled()

    @Slot()
    def start(self) -> None:
        config = self.settings.config(self.session.project)
        if config is not None:
            self.runs.start("sft", config)

    @Slot()
    def _update_enabled(self) -> None:
        project, models = self.session.project, self.session.models
        examples = SftStore(project).count() if project is not None else 0
        reason = ("Open a project first." if project is None else
                  "Load a base model on the Model page first." if not models.loaded else
                  "Add SFT examples on the SFT data page first." if examples == 0 else
                  "A run is in progress." if self.runs.running else "")
        ready = f"{examples:,} examples, {models.info.name} on {models.info.device}." if models.info else ""
        self.settings.set_ready(reason, ready, self.session.loading)
        self.settings.show_time_estimate(project, "sft")
