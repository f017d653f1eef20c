"""The ranking page's list of prompts: which are labeled, search and filters, and edits
(add, edit text and tags, delete, import a file, take the SFT examples' prompts)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox, QFileDialog, QHBoxLayout, QInputDialog, QLineEdit, QListWidget, QListWidgetItem, QMessageBox,
    QPushButton, QVBoxLayout, QWidget,
)

from workbench.data.prompts import PROMPT_FILTERS, PromptRow, PromptStore, read_prompt_file
from workbench.errors import WorkbenchError
from ui.formatting import plural

FILTER_LABELS = {"all": "All prompts", "unlabeled": "Not labeled by me", "labeled": "Labeled by me",
                 "no responses": "No responses yet"}
PROMPT_FILE_FILTER = "Prompts (*.jsonl *.json *.csv);;All files (*)"
MARKS = {"labeled": "✓", "ready": "●", "none": "○"}


def mark(row: PromptRow) -> str:
    return MARKS["labeled"] if row.labeled_by_me else MARKS["ready"] if row.responses else MARKS["none"]


class PromptList(QWidget):
    prompt_selected = Signal(int)
    prompts_changed = Signal()  # added, edited or deleted: the page refreshes what depends on them

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.store: PromptStore | None = None
        self.annotator = ""
        self.search = QLineEdit(placeholderText="Search prompts", clearButtonEnabled=True)
        self.filter = QComboBox()
        for name in PROMPT_FILTERS:
            self.filter.addItem(FILTER_LABELS[name], name)
        self.tag = QComboBox()
        self.list = QListWidget()
        self.list.setWordWrap(True)
        self.list.setToolTip(f"{MARKS['labeled']} labeled by you · {MARKS['ready']} responses ready · "
                             f"{MARKS['none']} no responses yet")
        self.add_button = QPushButton("Add…")
        self.edit_button = QPushButton("Edit…")
        self.delete_button = QPushButton("Delete")
        self.import_button = QPushButton("Import…")
        self.import_button.setToolTip("Prompts from JSONL/JSON (prompt, text, question or messages) or CSV")
        self.from_sft_button = QPushButton("From SFT")
        self.from_sft_button.setToolTip("Add the prompt of every SFT example (those already here are skipped)")
        for button in (self.add_button, self.edit_button, self.delete_button, self.import_button,
                       self.from_sft_button):
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # the ranking keys stay with the panes

        filters = QHBoxLayout()
        filters.addWidget(self.filter, 1)
        filters.addWidget(self.tag, 1)
        buttons = QHBoxLayout()
        for button in (self.add_button, self.edit_button, self.delete_button):
            buttons.addWidget(button)
        more = QHBoxLayout()
        more.addWidget(self.import_button)
        more.addWidget(self.from_sft_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.search)
        layout.addLayout(filters)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)
        layout.addLayout(more)

        self.search.textChanged.connect(self.refresh)
        self.filter.currentIndexChanged.connect(self.refresh)
        self.tag.currentIndexChanged.connect(self.refresh)
        self.list.currentItemChanged.connect(self._current_changed)
        self.list.itemDoubleClicked.connect(self.edit_current)
        self.add_button.clicked.connect(self.add_prompt)
        self.edit_button.clicked.connect(self.edit_current)
        self.delete_button.clicked.connect(self.delete_current)
        self.import_button.clicked.connect(self.import_file)
        self.from_sft_button.clicked.connect(self.add_from_sft)

    def set_store(self, store: PromptStore | None, annotator: str) -> None:
        self.store, self.annotator = store, annotator
        self._refresh_tags()
        self.refresh()

    # ---- showing -----------------------------------------------------------------------

    @Slot()
    def refresh(self) -> None:
        """Re-read the prompts, keeping the current one selected if it is still listed."""
        current = self.current_id()
        self.list.blockSignals(True)
        self.list.clear()
        if self.store is not None:
            for row in self.store.rows(self.annotator, self.filter.currentData() or "all",
                                       self.search.text(), self.tag.currentData() or ""):
                tags = f"   [{', '.join(row.tags)}]" if row.tags else ""
                item = QListWidgetItem(f"{mark(row)}  {row.text.strip()[:160]}{tags}")
                item.setData(Qt.ItemDataRole.UserRole, row.id)
                self.list.addItem(item)
        self.list.blockSignals(False)
        if current is not None:
            self.select(current, announce=False)

    def _refresh_tags(self) -> None:
        chosen = self.tag.currentData()
        self.tag.blockSignals(True)
        self.tag.clear()
        self.tag.addItem("Any tag", "")
        for tag in self.store.tags() if self.store else []:
            self.tag.addItem(tag, tag)
        index = self.tag.findData(chosen)
        self.tag.setCurrentIndex(max(index, 0))
        self.tag.blockSignals(False)

    def ids(self) -> list[int]:
        return [self.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.list.count())]

    def current_id(self) -> int | None:
        item = self.list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item else None

    def select(self, prompt_id: int, announce: bool = True) -> bool:
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == prompt_id:
                self.list.blockSignals(not announce)
                self.list.setCurrentRow(i)
                self.list.blockSignals(False)
                return True
        return False

    @Slot()
    def _current_changed(self, current: QListWidgetItem | None, _previous=None) -> None:
        if current is not None:
            self.prompt_selected.emit(current.data(Qt.ItemDataRole.UserRole))

    # ---- edits -------------------------------------------------------------------------

    @Slot()
    def add_prompt(self) -> None:
        if self.store is None:
            return
        text, ok = QInputDialog.getMultiLineText(self, "Add a prompt", "What the user asks:")
        if ok and text.strip():
            prompt_id = self.store.add(text.strip())
            self._changed()
            self.select(prompt_id)

    @Slot()
    def edit_current(self) -> None:
        prompt_id = self.current_id()
        if self.store is None or prompt_id is None:
            return
        row = self.store.row(prompt_id, self.annotator)
        text, ok = QInputDialog.getMultiLineText(self, "Edit the prompt", "What the user asks:", row.text)
        if not ok:
            return
        tags, ok = QInputDialog.getText(self, "Tags", "Tags, separated by commas:", text=", ".join(row.tags))
        try:
            self.store.update(prompt_id, text=text if text.strip() != row.text else None,
                              tags=tags.split(",") if ok else None)
        except ValueError as error:
            QMessageBox.warning(self, "Edit prompt", str(error).capitalize() + ".")
        self._changed()

    @Slot()
    def delete_current(self) -> None:
        prompt_id = self.current_id()
        if self.store is None or prompt_id is None:
            return
        row = self.store.row(prompt_id, self.annotator)
        answer = QMessageBox.question(
            self, "Delete prompt", f"Delete this prompt with its {plural(row.responses, 'response')} and "
            f"{plural(row.labels, 'label')}?\n\n{row.text[:300]}")
        if answer == QMessageBox.StandardButton.Yes:
            self.store.delete([prompt_id])
            self._changed()

    @Slot()
    def import_file(self) -> None:
        if self.store is None:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Import prompts", "", PROMPT_FILE_FILTER)
        if path:
            self.import_path(path)

    def import_path(self, path: str) -> None:
        try:
            result = read_prompt_file(path)
            added, skipped = self.store.add_many(result.prompts, source=path.rsplit("/", 1)[-1])
        except WorkbenchError as error:
            QMessageBox.warning(self, "Import prompts", str(error))
            return
        report = f"Added {plural(added, 'prompt')}; {skipped:,} were already here."
        if result.errors:
            report += f"\n\n{plural(len(result.errors), 'row')} could not be read:\n" + "\n".join(result.errors[:10])
        QMessageBox.information(self, "Import prompts", report)
        self._changed()

    @Slot()
    def add_from_sft(self) -> None:
        if self.store is not None:
            added, skipped = self.store.add_from_sft()
            QMessageBox.information(self, "Prompts from SFT examples",
                                    f"Added {plural(added, 'prompt')}; {skipped:,} were already here.")
            self._changed()

    def _changed(self) -> None:
        self._refresh_tags()
        self.refresh()
        self.prompts_changed.emit()
