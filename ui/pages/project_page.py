"""Project page: what the open project holds, and the recent projects to switch to."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QFormLayout, QGroupBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget,
)

from workbench import app_settings
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
        self.title = QLabel()
        self.title.setObjectName("pageTitle")
        self.description = QLabel()
        self.description.setWordWrap(True)
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
        layout.addLayout(row)
        layout.addWidget(recent_box)
        layout.addStretch(1)

        self.recent.itemActivated.connect(self._open_recent)
        session.project_changed.connect(self.refresh)
        session.model_changed.connect(self.refresh)
        self.refresh()

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
        if project is None:
            self.title.setText("No project open")
            self.description.setText("Use File ▸ New project or File ▸ Open project.")
            return
        spec = project.base_model
        self.title.setText(project.name)
        self.description.setText(project.get_meta("description", ""))
        self.path.setText(str(project.path))
        self.base_model.setText(spec.display_name if spec else "none chosen yet (Model page)")
        self.format_version.setText(str(project.schema_version))
        for key, count in project.counts().items():
            self.count_labels[key].setText(f"{count:,}")

    @Slot(QListWidgetItem)
    def _open_recent(self, item: QListWidgetItem) -> None:
        if item.data(Qt.ItemDataRole.UserRole):
            self.open_requested.emit(Path(item.data(Qt.ItemDataRole.UserRole)))
