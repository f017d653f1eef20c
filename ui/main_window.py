"""The main window composes the pages, the menus and the status bar; it holds no logic."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Slot
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog, QHBoxLayout, QListWidget, QMainWindow, QMessageBox, QSizePolicy, QStackedWidget, QWidget,
)

from workbench import app_settings
from workbench.errors import WorkbenchError
from workbench.project import SUFFIX
from ui.pages.model_page import ModelPage
from ui.pages.dpo_page import DpoPage
from ui.pages.ppo_page import PpoPage
from ui.pages.project_page import ProjectPage
from ui.pages.ranking_page import RankingPage
from ui.pages.reward_page import RewardPage
from ui.pages.runs_page import RunsPage
from ui.pages.sft_page import SftPage
from ui.pages.sft_training_page import SftTrainingPage
from ui.pages.team_page import TeamPage
from ui.change_flow import follow
from ui.run_manager import RunManager
from ui.help_menu import add_help_menu
from ui.session import WorkbenchSession
from ui.text_views import ElidedLabel

FILE_FILTER = f"Workbench projects (*{SUFFIX})"


class MainWindow(QMainWindow):
    def __init__(self, session: WorkbenchSession):
        super().__init__()
        self.session = session
        self.setWindowTitle("RLHF Workbench")
        self.resize(1280, 820)

        self.runs = RunManager(session)
        self.project_page = ProjectPage(session)
        self.model_page = ModelPage(session)
        self.sft_page = SftPage(session)
        self.rank_page = RankingPage(session)
        self.team_page = TeamPage(session)
        self.sft_training_page = SftTrainingPage(session, self.runs)
        self.reward_page = RewardPage(session, self.runs)
        self.ppo_page = PpoPage(session, self.runs)
        self.dpo_page = DpoPage(session, self.runs)
        self.runs_page = RunsPage(session, self.runs)
        # One maximum length: the SFT data page flags what the SFT training settings would cut.
        train_length = self.sft_training_page.form.editors["max_length"]
        train_length.valueChanged.connect(self.sft_page.max_length.setValue)
        self.sft_page.max_length.valueChanged.connect(train_length.setValue)
        self.sft_page.max_length.setValue(train_length.value())
        # In the order of the loop: data and SFT, ranking, the reward model, PPO (or DPO, straight
        # from the rankings), then every run.
        self.pages: dict[str, QWidget] = {"Project": self.project_page, "Model": self.model_page,
                                          "SFT data": self.sft_page, "SFT training": self.sft_training_page,
                                          "Rank": self.rank_page, "Team": self.team_page,
                                          "Reward": self.reward_page, "PPO": self.ppo_page,
                                          "DPO": self.dpo_page, "Runs": self.runs_page}
        self.nav = QListWidget()
        self.nav.setObjectName("navigation")
        self.nav.setFixedWidth(170)
        self.stack = QStackedWidget()
        for name, page in self.pages.items():
            self.nav.addItem(name)
            self.stack.addWidget(page)
        self.nav.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.nav.setCurrentRow(0)
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.nav)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self._build_menus()
        self.project_label, self.model_label, self.device_label = ElidedLabel(), ElidedLabel(), ElidedLabel()
        for label in (self.project_label, self.model_label, self.device_label):
            label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)  # up to 400 px
            self.statusBar().addPermanentWidget(label)

        self.project_page.open_requested.connect(self.open_project)
        self.team_page.open_prompt.connect(self.review_prompt)
        self.ppo_page.review_prompt.connect(self.review_prompt)
        self.dpo_page.review_prompt.connect(self.review_prompt)
        session.project_changed.connect(self._update_status)
        session.project_changed.connect(self._rebuild_recent_menu)
        session.model_changed.connect(self._update_status)
        follow(session, self, {"settings"}, self._update_status)  # the project renamed
        session.model_loading.connect(lambda progress: self.statusBar().showMessage(progress.message, 4000))
        # Replaces the last progress line ("Checking the model source..."), which would stay.
        session.model_failed.connect(lambda _message: self.statusBar().showMessage(
            "The model did not load; the Model page says why.", 10_000))
        self._update_status()
        self._rebuild_recent_menu()

    def show_page(self, name: str) -> None:
        self.nav.setCurrentRow(list(self.pages).index(name))

    def review_prompt(self, prompt_id: int) -> None:
        self.show_page("Rank")
        self.rank_page.show_prompt(prompt_id)

    # ---- menus ----------------------------------------------------------------------------

    def _build_menus(self) -> None:
        menu = self.menuBar().addMenu("&File")
        self.new_action = self._action(menu, "&New project…", QKeySequence.StandardKey.New, self.new_project)
        self.open_action = self._action(menu, "&Open project…", QKeySequence.StandardKey.Open, self.open_project)
        self.recent_menu = menu.addMenu("Open &recent")
        self.save_as_action = self._action(menu, "Save project &as…", QKeySequence.StandardKey.SaveAs,
                                           self.save_project_as)
        menu.addSeparator()
        self._action(menu, "&Quit", QKeySequence.StandardKey.Quit, self.close)
        # The SFT data page's undo stack (its shortcuts work while the page has focus).
        edit = self.menuBar().addMenu("&Edit")
        edit.addAction(self.sft_page.undo_action)
        edit.addAction(self.sft_page.redo_action)
        view = self.menuBar().addMenu("&Go")
        for index, name in enumerate(self.pages):
            self._action(view, name, QKeySequence(f"Ctrl+{index + 1}"), lambda _=False, n=name: self.show_page(n))
        add_help_menu(self, self.session.models)

    def _action(self, menu, text, shortcut, slot) -> QAction:
        action = QAction(text, self)
        action.setShortcut(shortcut)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    @Slot()
    def _rebuild_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = app_settings.recent_projects()
        for path in recent:
            action = self.recent_menu.addAction(f"{path.stem}  —  {path.parent}")
            action.triggered.connect(lambda _=False, p=path: self.open_project(p))
        self.recent_menu.setEnabled(bool(recent))

    # ---- project actions: ask for a path, call the session, report a refusal --------------

    @Slot()
    def new_project(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "New project", str(Path.home()), FILE_FILTER)
        if path:
            self._attempt(self.session.new_project, path)

    @Slot()
    def open_project(self, path: Path | str | None = None) -> None:
        if not path:
            path, _ = QFileDialog.getOpenFileName(self, "Open project", str(Path.home()), FILE_FILTER)
        if path:
            self._attempt(self.session.open_project, path)

    @Slot()
    def save_project_as(self) -> None:
        if self.session.project is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save project as", str(self.session.project.path), FILE_FILTER)
        if path:
            self._attempt(self.session.save_project_as, path)

    def _attempt(self, action, path) -> bool:
        try:
            action(path)
        except WorkbenchError as error:
            QMessageBox.warning(self, "RLHF Workbench", str(error))
            return False
        return True

    # ---- status bar -----------------------------------------------------------------------

    @Slot()
    def _update_status(self) -> None:
        project, info = self.session.project, self.session.models.info
        self.project_label.setText(f"Project: {project.name}" if project else "No project")
        self.model_label.setText(f"Model: {info.name}" if info else "No model loaded")
        weights = {"nf4": "4-bit NF4", "int8": "8-bit"}.get(info.quantization, "full precision") if info else ""
        self.device_label.setText(f"Device: {info.device} · {weights}" if info else "")
        self.setWindowTitle(f"{project.name} — RLHF Workbench" if project else "RLHF Workbench")
        self.save_as_action.setEnabled(project is not None)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.session.shutdown()
        super().closeEvent(event)
