"""The Runs page: every run of the project, its figures and artifacts; select runs to compare.

Selecting one run shows its curves and log; selecting two or more overlays their curves.
Curves come from the metrics saved in the project, so past runs look the same after reopening.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QUrl, Qt, Slot
from PySide6.QtGui import QColor, QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QPlainTextEdit, QPushButton, QSplitter,
    QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from workbench.train.runs import RunRecord, run_summaries
from ui.plots import MetricsView
from ui.run_manager import TRAINERS, RunManager
from ui.change_flow import follow
from ui.session import WorkbenchSession
from ui.widgets.job_transfer import ExportJobDialog, ImportAdapterDialog

COLUMNS = ("Run", "Kind", "Status", "Steps", "Train loss", "Validation loss", "Started", "Adapter", "Message")
STATUS_COLOURS = {"running": "#1f6feb", "paused": "#9a6700", "finished": "#1a7f37",
                  "stopped": "#57606a", "failed": "#cf222e"}


def _figure(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


class RunsPage(QWidget):
    def __init__(self, session: WorkbenchSession, runs: RunManager):
        super().__init__()
        self.session, self.runs = session, runs
        self.summaries: list[dict] = []
        title = QLabel("Runs")
        title.setObjectName("pageTitle")
        hint = QLabel("Select a run to see its curves and log; select several to compare them.")

        # A handful of rows that are rebuilt from the project: a QTableWidget is the simple fit.
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Continue the selected stopped or failed run from its last checkpoint.")
        self.folder_button = QPushButton("Open folder")
        self.folder_button.setToolTip("Show the run's adapter and checkpoints in the file manager.")
        self.export_button = QPushButton("Export as job…")
        self.export_button.setToolTip("Write a folder that trains a stage on TRL or OpenRLHF (more GPUs, another "
                                      "machine) from this project's data and settings.")
        self.import_button = QPushButton("Import adapter…")
        self.import_button.setToolTip("Bring an adapter or merged model trained elsewhere into the project as a run.")
        self.status = QLabel("")
        buttons = QHBoxLayout()
        buttons.addWidget(self.resume_button)
        buttons.addWidget(self.folder_button)
        buttons.addWidget(self.status, 1)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.import_button)

        self.plots = MetricsView()
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setPlaceholderText("The selected run's log.")
        splitter = QSplitter(Qt.Orientation.Vertical)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.table)
        top_layout.addLayout(buttons)
        splitter.addWidget(top)
        splitter.addWidget(self.plots)
        splitter.addWidget(self.log)
        splitter.setSizes([220, 420, 120])
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(hint)
        layout.addWidget(splitter, 1)

        self.table.itemSelectionChanged.connect(self._show_selected)
        self.resume_button.clicked.connect(self.resume_selected)
        self.folder_button.clicked.connect(self._open_folder)
        self.export_button.clicked.connect(lambda: self._open_dialog(ExportJobDialog))
        self.import_button.clicked.connect(lambda: self._open_dialog(ImportAdapterDialog))
        session.project_changed.connect(self.refresh)
        # Hidden, the table waits: a refresh reloads the selected run's curves, a visible stall
        # when a run starts on another page. showEvent catches up.
        follow(session, self, {"runs"}, self.refresh)  # started, paused, ended, a checkpoint
        runs.state_changed.connect(self._update_buttons)
        session.model_changed.connect(self._update_buttons)  # no resume while a model loads
        runs.step.connect(self._follow_active)
        self.refresh()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.refresh()

    # ---- the table ----------------------------------------------------------------------

    @Slot()
    def refresh(self) -> None:
        selected = self.selected_ids()
        project = self.session.project
        self.summaries = run_summaries(project) if project is not None else []
        self.table.setRowCount(len(self.summaries))
        for row, run in enumerate(reversed(self.summaries)):  # newest first
            values = (str(run["id"]), run["kind"].upper(), run["status"], str(run["last_step"] or 0),
                      _figure(run["loss/train"]), _figure(run["loss/validation"]),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(run["created_at"])),
                      "yes" if run["artifact"] else "", run["message"] or "")
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setData(Qt.ItemDataRole.UserRole, run["id"])
                if column == 2:
                    item.setForeground(QColor(STATUS_COLOURS.get(value, "#000000")))
                if column == 8:
                    item.setToolTip(value)
                self.table.setItem(row, column, item)
        self.table.blockSignals(True)
        for row in range(self.table.rowCount()):
            if int(self.table.item(row, 0).text()) in selected:
                self.table.selectRow(row)
        self.table.blockSignals(False)
        if not selected and self.summaries:
            self.table.selectRow(0)
        self._show_selected()

    def selected_ids(self) -> list[int]:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        return [int(self.table.item(row, 0).text()) for row in rows]

    def select_runs(self, run_ids: list[int]) -> None:
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for row in range(self.table.rowCount()):
            if int(self.table.item(row, 0).text()) in run_ids:
                self.table.selectRow(row)
        self.table.setSelectionMode(mode)

    # ---- curves, log, actions --------------------------------------------------------------

    @Slot()
    def _show_selected(self) -> None:
        ids = self.selected_ids()
        project = self.session.project
        for run_id in ids:
            if project is not None:
                self.plots.set_run_history(run_id, f"run {run_id}", RunRecord(project, run_id).metrics())
        self.plots.show_runs(ids)
        self.log.clear()
        if len(ids) == 1 and project is not None:
            lines = [f"{time.strftime('%H:%M:%S', time.localtime(at))}  {level.upper():7} {message}"
                     for at, level, message in RunRecord(project, ids[0]).logs()]
            self.log.setPlainText("\n".join(lines))
        self._update_buttons()

    @Slot(object)
    def _follow_active(self, log) -> None:
        """Live points for the active run when it is among the selected ones."""
        if log.metrics and log.run_id in self.selected_ids():
            self.plots.add_points(log.run_id, [(key, log.step, value) for key, value in log.metrics.items()])

    def _selected_summary(self) -> dict | None:
        ids = self.selected_ids()
        if len(ids) != 1:
            return None
        return next((run for run in self.summaries if run["id"] == ids[0]), None)

    @Slot()
    def resume_selected(self) -> None:
        run = self._selected_summary()
        if run is None or not run["resumable"] or self.runs.running or self.session.loading:
            return
        if not self.session.models.loaded:
            self.status.setText("Load the base model on the Model page first.")
            return
        self.status.setText(f"Resuming run {run['id']}…")
        self.runs.start(run["kind"], None, resume_run_id=run["id"])

    @Slot()
    def _open_folder(self) -> None:
        run = self._selected_summary()
        if run is not None and self.session.project is not None:
            folder = RunRecord(self.session.project, run["id"]).folder
            if folder.is_dir():
                QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def _open_dialog(self, dialog_class) -> None:
        if self.session.project is not None:
            self.dialog = dialog_class(self.session, self)
            self.dialog.show()

    @Slot()
    def _update_buttons(self) -> None:
        run = self._selected_summary()
        self.resume_button.setEnabled(run is not None and run["resumable"] and run["kind"] in TRAINERS
                                      and not self.runs.running and not self.session.loading)
        self.folder_button.setEnabled(run is not None)
        for button in (self.export_button, self.import_button):
            button.setEnabled(self.session.project is not None)
