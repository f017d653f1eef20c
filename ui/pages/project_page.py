"""Project page: the open project's name and description (edited in place), what it holds,
and the recent projects to switch to."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem, QPlainTextEdit,
    QVBoxLayout, QWidget,
)

from workbench import app_settings
from workbench.errors import WorkbenchError
from ui.change_flow import follow
from ui.session import WorkbenchSession

COUNT_LABELS = {
    "sft_examples": "SFT examples", "prompts": "Prompts", "responses": "Generated responses",
    "rankings": "Rankings", "runs": "Training runs",
}


class ProjectPage(QWidget):
    open_requested = Signal(Path)

    def __init__(self, session: WorkbenchSession):
        super().__init__()
        self.session = session
        self.title = QLineEdit()
        self.title.setObjectName("pageTitle")
        self.title.setFrame(False)
        self.title.setPlaceholderText("Project name")
        self.title.setToolTip("The project's name; click to rename it (saved when you press Enter or leave)")
        self.description = QPlainTextEdit()
        self.description.setPlaceholderText("What this project is for: the task, the data, notes for teammates")
        self.description.setMaximumHeight(90)
        self.description.installEventFilter(self)  # saved when it loses focus
        self.message = QLabel()
        self.path = QLabel()
        self.path.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.base_model = QLabel()
        self.format_version = QLabel()
        self.count_labels = {key: QLabel() for key in COUNT_LABELS}

        details = QGroupBox("Project")
        form = QFormLayout(details)
        form.addRow("File", self.path)
        form.addRow("Base model", self.base_model)
        form.addRow("Format version", self.format_version)
        contents = QGroupBox("Contents")
        counts = QFormLayout(contents)
        for key, label in COUNT_LABELS.items():
            counts.addRow(label, self.count_labels[key])
        self.recent = QListWidget()
        self.recent.setToolTip("Double-click to open")
        self.recent.setMaximumHeight(240)
        recent_box = QGroupBox("Recent projects")
        QVBoxLayout(recent_box).addWidget(self.recent)

        row = QHBoxLayout()
        row.addWidget(details, 3)
        row.addWidget(contents, 2)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.description)
        layout.addWidget(self.message)
        layout.addLayout(row)
        layout.addWidget(recent_box)
        layout.addStretch(1)

        self.recent.itemActivated.connect(self._open_recent)
        self.title.editingFinished.connect(self._save_name)
        session.project_closing.connect(self._save_description)
        session.project_changed.connect(self.refresh)
        session.model_changed.connect(self.refresh)
        follow(session, self, {"sft", "prompts", "responses", "rankings", "runs", "settings"}, self.refresh)
        self.refresh()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.description and event.type() == QEvent.Type.FocusOut:
            self._save_description()
        return False

    @Slot()
    def _save_name(self) -> None:
        project = self.session.project
        if project is None or self.title.text().strip() == project.name:
            return
        try:
            project.rename(self.title.text())
        except WorkbenchError as error:
            self.message.setText(f"Not renamed: {error}")
            self.title.setText(project.name)
            return
        self.message.setText("")

    @Slot()
    def _save_description(self) -> None:
        project = self.session.project
        if project is None or project.read_only or self.description.toPlainText().strip() == project.description:
            return
        try:
            project.set_description(self.description.toPlainText())
        except WorkbenchError as error:
            self.message.setText(f"Description not saved: {error}")

    @Slot()
    def refresh(self) -> None:
        project = self.session.project
        self.recent.clear()
        for path in app_settings.recent_projects():
            item = QListWidgetItem(f"{path.stem}    {path.parent}")
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            self.recent.addItem(item)
        if self.recent.count() == 0:
            placeholder = QListWidgetItem("No recent projects yet.")
            placeholder.setFlags(Qt.ItemFlag.NoItemFlags)
            self.recent.addItem(placeholder)
        for editor in (self.title, self.description):
            editor.setReadOnly(project is None or project.read_only)
        if project is None:
            self.title.setText("No project open")
            self.description.setPlainText("Use File ▸ New project or File ▸ Open project.")
            return
        spec = project.base_model
        if not self.title.hasFocus():
            self.title.setText(project.name)
        if not self.description.hasFocus() and self.description.toPlainText() != project.description:
            self.description.setPlainText(project.description)
        self.path.setText(str(project.path))
        self.base_model.setText(spec.display_name if spec else "none chosen yet (Model page)")
        self.format_version.setText(str(project.schema_version))
        for key, count in project.counts().items():
            self.count_labels[key].setText(f"{count:,}")

    @Slot(QListWidgetItem)
    def _open_recent(self, item: QListWidgetItem) -> None:
        if item.data(Qt.ItemDataRole.UserRole):
            self.open_requested.emit(Path(item.data(Qt.ItemDataRole.UserRole)))
