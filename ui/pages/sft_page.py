"""SFT data page: a table of every example, an editor for the selected one, import and export.

The table is SftTableModel, a thin model over the project's SftStore. Every change goes through
the page's QUndoStack as a command that writes to the store at once (ui/qt_models/sft_commands.py),
so nothing is lost if the app is killed and every change can be undone. Typing is saved after a
short pause, and at once when the selection changes, a field loses focus or the page hides.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QItemSelection, QItemSelectionModel, QModelIndex, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QHideEvent, QKeySequence, QUndoStack
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMessageBox,
    QPushButton, QSpinBox, QSplitter, QTableView, QVBoxLayout, QWidget,
)

from workbench.data.sft_formats import ImportResult, read_sft_file, write_sft_file
from workbench.data.untrusted import ImportTooLarge
from workbench.data.sft_store import SftStore
from workbench.errors import WorkbenchError
from ui.change_flow import follow
from ui.formatting import plural
from ui.widgets.sft_editor import ExampleEditor
from ui.qt_models.sft_commands import AddExamples, DeleteExamples, EditExample, StoreCommand
from ui.qt_models.sft_table import FLAGS, ID, LENGTH, PROMPT, RESPONSE, SORT_KEYS, SOURCE, TOKENS, TURNS, SftTableModel
from ui.session import WorkbenchSession
from ui.text_views import ElidedLabel

SAVE_DELAY_MS = 400
SEARCH_DELAY_MS = 250
# Past these sizes, reading an import or writing an export takes long enough to freeze the
# window, so it runs in a worker thread instead.
LARGE_FILE_BYTES = 4 * 2**20
LARGE_EXPORT = 20_000
ERRORS_LISTED = 10
FILTER_LABELS = {"all": "All", "empty": "Empty fields", "duplicates": "Duplicates"}
IMPORT_FILTER = "SFT data (*.jsonl *.json *.ndjson *.csv *.parquet);;All files (*)"
# Export choices: (label, format, suffix); the format is TRL's row shape, the suffix the container.
EXPORT_CHOICES = [
    (f"{shape} {container} (*{suffix})", fmt, suffix)
    for shape, fmt in (("Messages", "messages"), ("Prompt/completion", "prompt-completion"))
    for container, suffix in (("JSON Lines", ".jsonl"), ("CSV", ".csv"), ("Parquet", ".parquet"))
]
STYLE = "QLabel#pageSummary, QLabel#sftStatus { color: #555; }"


def error_listing(result: ImportResult) -> str:
    lines = [str(error) for error in result.errors[:ERRORS_LISTED]]
    if len(result.errors) > ERRORS_LISTED:
        lines.append(f"… and {len(result.errors) - ERRORS_LISTED:,} more")
    return "\n".join(lines)


def once(work):
    """A one-item generator, so a single blocking call can run through session.run_task."""
    yield work()


class SftPage(QWidget):
    def __init__(self, session: WorkbenchSession):
        super().__init__()
        self.session = session
        self.setObjectName("SftPage")
        self.setStyleSheet(STYLE)
        self.store: SftStore | None = None
        self.editing_id: int | None = None
        self._saved: list[dict] = []  # the edited example as stored: the "old" side of the next edit
        self._select_after_reset: list[int] | None = None
        self._fallback_row = 0
        self._shown_revision = -1  # the project's "sft" revision the table shows
        self.undo_stack = QUndoStack(self)
        self.model = SftTableModel(parent=self)

        self.title = QLabel("SFT data")
        self.title.setObjectName("pageTitle")
        self.summary = QLabel()
        self.summary.setObjectName("pageSummary")
        self.status = ElidedLabel()
        self.status.setObjectName("sftStatus")
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search messages and sources")
        self.search.setClearButtonEnabled(True)
        self.filter = QComboBox()
        for name, label in FILTER_LABELS.items():
            self.filter.addItem(label, name)
        self.max_length = QSpinBox(minimum=1, maximum=1_000_000, value=1024, singleStep=128)
        self.max_length.setSuffix(" tokens")
        self.max_length.setGroupSeparatorShown(True)
        self.max_length.setToolTip("Examples with more tokens than this are flagged \"too long\"")
        self.add_button = QPushButton("Add")
        self.add_button.setToolTip("Add an empty user/assistant example")
        self.duplicate_button = QPushButton("Duplicate")
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Delete the selected examples (Del); Ctrl+Z brings them back")
        self.import_button = QPushButton("Import…")
        self.import_button.setToolTip("JSONL, CSV or Parquet in TRL's messages, prompt/completion or text shape")
        self.export_button = QPushButton("Export…")
        self.table = QTableView()
        self.editor = ExampleEditor()
        self.undo_action = self._stack_action(self.undo_stack.createUndoAction(self, "&Undo"),
                                              QKeySequence.StandardKey.Undo, self.undo)
        self.redo_action = self._stack_action(self.undo_stack.createRedoAction(self, "&Redo"),
                                              QKeySequence.StandardKey.Redo, self.redo)
        self.delete_action = QAction("Delete examples", self.table)
        self.delete_action.setShortcut(QKeySequence.StandardKey.Delete)
        self.delete_action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        self.table.addAction(self.delete_action)
        self.save_timer = QTimer(self, singleShot=True, interval=SAVE_DELAY_MS)
        self.search_timer = QTimer(self, singleShot=True, interval=SEARCH_DELAY_MS)
        self._setup_table()
        self._layout()

        self.save_timer.timeout.connect(self.save_edit)
        self.search_timer.timeout.connect(lambda: self.model.set_search(self.search.text()))
        self.search.textChanged.connect(self.search_timer.start)
        self.filter.currentIndexChanged.connect(lambda: self.model.set_filter(self.filter.currentData()))
        self.max_length.valueChanged.connect(self._max_length_changed)
        self.add_button.clicked.connect(self.add_example)
        self.duplicate_button.clicked.connect(self.duplicate_selected)
        self.delete_button.clicked.connect(self.delete_selected)
        self.delete_action.triggered.connect(self.delete_selected)
        self.import_button.clicked.connect(self._choose_import)
        self.export_button.clicked.connect(self._choose_export)
        self.editor.changed.connect(self.save_timer.start)
        # Unsaved typing can be undone too (undo saves it first), even before the stack has a step.
        self.editor.changed.connect(lambda: self.undo_action.setEnabled(True))
        self.editor.save_now.connect(self.save_edit)
        self.model.modelAboutToBeReset.connect(self._remember_selection)
        self.model.modelReset.connect(self._restore_selection)
        self.table.selectionModel().currentRowChanged.connect(self._current_changed)
        self.table.selectionModel().selectionChanged.connect(self._update_buttons)
        self.table.horizontalHeader().sortIndicatorChanged.connect(self._keep_sortable_indicator)
        session.project_closing.connect(self.save_edit)  # typing within the debounce is kept
        session.project_changed.connect(self._project_changed)
        session.model_changed.connect(self._model_changed)
        follow(session, self, {"sft"}, self._records_changed)  # e.g. "Make ideal" on the Rank page
        self._project_changed()
        self._model_changed()

    def _stack_action(self, action: QAction, key: QKeySequence.StandardKey, slot) -> QAction:
        # The stack's own trigger connection goes; ours first saves what is being typed, so
        # Ctrl+Z right after typing takes back that typing rather than the step before it.
        action.triggered.disconnect()
        action.triggered.connect(slot)
        shortcuts = QKeySequence.keyBindings(key)
        if key == QKeySequence.StandardKey.Redo and QKeySequence("Ctrl+Shift+Z") not in shortcuts:
            shortcuts.append(QKeySequence("Ctrl+Shift+Z"))
        action.setShortcuts(shortcuts)
        action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.addAction(action)
        return action

    def _setup_table(self) -> None:
        table = self.table
        table.setModel(self.model)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setAlternatingRowColors(True)
        table.setWordWrap(False)
        table.setTextElideMode(Qt.TextElideMode.ElideRight)
        rows = table.verticalHeader()
        rows.hide()
        # Fixed, uniform row heights: the view never measures rows, so 100k rows cost nothing.
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(table.fontMetrics().height() + 10)
        header = table.horizontalHeader()
        header.setHighlightSections(False)
        header.setStretchLastSection(False)
        for column, width in {ID: 46, TURNS: 46, LENGTH: 58, TOKENS: 58, FLAGS: 74, SOURCE: 90}.items():
            header.resizeSection(column, width)
        for column in (PROMPT, RESPONSE):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(40)
        header.setSortIndicator(ID, Qt.SortOrder.AscendingOrder)
        table.setSortingEnabled(True)

    def _layout(self) -> None:
        heading = QHBoxLayout()
        heading.addWidget(self.title)
        heading.addSpacing(12)
        heading.addWidget(self.summary, 0, Qt.AlignmentFlag.AlignBaseline)
        heading.addSpacing(24)
        heading.addWidget(self.status, 1, Qt.AlignmentFlag.AlignBaseline)
        toolbar = QHBoxLayout()
        toolbar.addWidget(self.search, 3)
        toolbar.addWidget(self.filter)
        toolbar.addWidget(QLabel("Max length"))
        toolbar.addWidget(self.max_length)
        toolbar.addSpacing(16)
        for button in (self.add_button, self.duplicate_button, self.delete_button):
            toolbar.addWidget(button)
        toolbar.addSpacing(16)
        toolbar.addWidget(self.import_button)
        toolbar.addWidget(self.export_button)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(self.editor)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([780, 480])
        split.setChildrenCollapsible(False)
        self.body = QWidget()
        body = QVBoxLayout(self.body)
        body.setContentsMargins(0, 0, 0, 0)
        body.addLayout(toolbar)
        body.addWidget(split, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(heading)
        layout.addWidget(self.body, 1)

    # ---- the open project and model --------------------------------------------------------

    @Slot()
    def _project_changed(self) -> None:
        self.undo_stack.clear()  # its steps belong to the old project
        project = self.session.project
        self.store = SftStore(project) if project is not None else None
        self._show_example(None)
        self.model.set_store(self.store)
        self._shown_revision = project.revision("sft") if project is not None else -1
        self.body.setEnabled(self.store is not None)
        self.status.setText("")  # "Redone: …" spoke of the old project
        self._update_summary()

    @Slot()
    def _records_changed(self) -> None:
        """Examples written elsewhere (not by this page's own commands): show them."""
        if self.store is None or self.session.project.revision("sft") == self._shown_revision:
            return
        self.save_edit()
        self._shown_revision = self.session.project.revision("sft")
        if self.editing_id is not None and not self.store.rows([self.editing_id]):
            self._show_example(None)  # deleted elsewhere
        self.model.requery()

    @Slot()
    def _model_changed(self) -> None:
        models = self.session.models
        tokenizer = models.tokenizer if models.loaded else None
        self.model.set_tokenizer(tokenizer)
        self.editor.set_tokenizer(tokenizer)

    def set_max_length(self, max_length: int) -> None:
        self.max_length.setValue(max_length)

    @Slot(int)
    def _max_length_changed(self, value: int) -> None:
        self.model.set_max_length(value)
        self.editor.set_max_length(value)

    # ---- editing ---------------------------------------------------------------------------

    @Slot()
    def save_edit(self) -> None:
        """Commit what the editor shows as one undoable step (merged with the typing before it)."""
        self.save_timer.stop()
        if self.editing_id is None or self.store is None:
            return
        messages = self.editor.messages()
        if messages != self._saved:
            self.undo_stack.push(EditExample(self.store, self._examples_changed, self._failed,
                                             self.editing_id, self._saved, messages, self.editor.edit_key))

    @Slot()
    def undo(self) -> None:
        self.save_edit()
        self.status.setText(f"Undone: {self.undo_stack.undoText()}" if self.undo_stack.canUndo() else "")
        self.undo_stack.undo()

    @Slot()
    def redo(self) -> None:
        self.save_edit()
        self.status.setText(f"Redone: {self.undo_stack.redoText()}" if self.undo_stack.canRedo() else "")
        self.undo_stack.redo()

    @Slot()
    def add_example(self) -> None:
        blank = [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]
        self._push(self._command(AddExamples, [blank], text="Add an example"))
        if self.editor.rows:
            self.editor.rows[0].content.setFocus()

    @Slot()
    def duplicate_selected(self) -> None:
        ids = self.selected_ids()
        if not ids or self.store is None:
            return
        self.save_edit()  # copy what the editor shows, not what it showed 400 ms ago
        sources = {row.source for row in self.store.rows(ids).values()}
        copies = [self.store.messages(example_id) for example_id in ids]
        self._push(self._command(AddExamples, copies, sources.pop() if len(sources) == 1 else "",
                                 text=f"Duplicate {plural(len(ids), 'example')}"))

    @Slot()
    def delete_selected(self) -> None:
        ids = self.selected_ids()
        if ids:
            self._push(self._command(DeleteExamples, ids))
            self.status.setText(f"Deleted {plural(len(ids), 'example')} (Ctrl+Z to undo)")

    def selected_ids(self) -> list[int]:
        rows = sorted(index.row() for index in self.table.selectionModel().selectedRows())
        return [self.model.example_id(row) for row in rows]

    def _command(self, kind: type[StoreCommand], *args, **kwargs) -> StoreCommand:
        return kind(self.store, self._examples_changed, self._failed, *args, **kwargs)

    def _push(self, command: StoreCommand) -> None:
        self.save_edit()  # typing first, so it is its own step and the order of steps stays true
        self.undo_stack.push(command)

    def _examples_changed(self, ids: list[int], reset: bool) -> None:
        """A command wrote to the store: show the result and the examples it touched."""
        self._shown_revision = self.session.project.revision("sft")  # this page shows its own writes
        if reset:
            self._select_after_reset = ids
            self._fallback_row = max(self.table.currentIndex().row(), 0)  # a deleted row's successor
            self.model.requery()
        else:
            self.model.refresh_rows(ids)
            self._update_summary()
        if self.editing_id in ids:
            self._reload_editor()
        elif ids and not reset and self.model.row_of(ids[0]) is not None:
            self.table.selectRow(self.model.row_of(ids[0]))  # undoing an edit elsewhere: go there

    def _reload_editor(self) -> None:
        self._saved = self.store.messages(self.editing_id)
        if self.editor.messages() != self._saved:  # an undo or redo, not the typing just saved
            self.editor.set_messages(self._saved)

    def _failed(self, message: str) -> None:
        self.status.setText("Not saved.")
        QMessageBox.warning(self, "SFT data", message)

    # ---- selection ---------------------------------------------------------------------------

    @Slot(QModelIndex, QModelIndex)
    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self.save_edit()
        self._show_example(self.model.example_id(current.row()) if current.isValid() else None)

    def _show_example(self, example_id: int | None) -> None:
        if example_id == self.editing_id:
            return
        self.editing_id = example_id
        if example_id is None:
            self._saved = []
            self.editor.clear()
            return
        self._saved = self.store.messages(example_id)
        source = self.store.rows([example_id])[example_id].source
        self.editor.set_messages(self._saved, f"Example {example_id}" + (f"  ·  {source}" if source else ""))

    @Slot()
    def _remember_selection(self) -> None:
        if self._select_after_reset is None:  # a search, filter or sort: keep what was selected
            self._select_after_reset = self.selected_ids()
            self._fallback_row = 0

    @Slot()
    def _restore_selection(self) -> None:
        wanted, self._select_after_reset = self._select_after_reset or [], None
        rows = sorted(row for row in map(self.model.row_of, wanted) if row is not None)
        if not rows and self.model.rowCount():
            rows = [min(self._fallback_row, self.model.rowCount() - 1)]
        self._select_rows(rows)
        if not rows:
            self._show_example(None)
        self._update_summary()
        self._update_buttons()

    def _select_rows(self, rows: list[int]) -> None:
        selection = QItemSelection()
        last = self.model.columnCount() - 1
        start = None
        for position, row in enumerate(rows):  # contiguous runs: one range each, not one per row
            start = row if start is None else start
            if position + 1 == len(rows) or rows[position + 1] != row + 1:
                selection.select(self.model.index(start, 0), self.model.index(row, last))
                start = None
        if rows:
            current = self.model.index(rows[0], 0)
            selections = self.table.selectionModel()
            selections.setCurrentIndex(current, QItemSelectionModel.SelectionFlag.NoUpdate)
            selections.select(selection, QItemSelectionModel.SelectionFlag.ClearAndSelect)
            self.table.scrollTo(current)

    @Slot(int, Qt.SortOrder)
    def _keep_sortable_indicator(self, column: int, _order: Qt.SortOrder) -> None:
        if column not in SORT_KEYS:  # Tokens and Flags: the table keeps its order, so must the arrow
            header = self.table.horizontalHeader()
            header.blockSignals(True)
            header.setSortIndicator(self.model.sort_column, self.model.sort_order)
            header.blockSignals(False)

    @Slot()
    def _update_buttons(self) -> None:
        has_selection = self.table.selectionModel().hasSelection()
        self.duplicate_button.setEnabled(has_selection)
        self.delete_button.setEnabled(has_selection)
        self.export_button.setEnabled(self.store is not None and self.store.count() > 0)

    def _update_summary(self) -> None:
        if self.store is None:
            self.summary.setText("Open or create a project to edit its SFT examples.")
            return
        total = self.store.count()
        parts = [plural(total, "example"), f"{self.store.count(filter='empty'):,} empty",
                 plural(self.store.count(filter="duplicates"), "duplicate")]
        if self.model.rowCount() != total:
            parts.append(f"{self.model.rowCount():,} shown")
        self.summary.setText("  ·  ".join(parts))

    def hideEvent(self, event: QHideEvent) -> None:
        self.save_edit()  # leaving the page must not leave typing unsaved
        super().hideEvent(event)

    # ---- import and export ---------------------------------------------------------------------

    @Slot()
    def _choose_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import SFT examples", "", IMPORT_FILTER)
        if path:
            self.import_file(path)

    def import_file(self, path: str | Path, valid_only: bool | None = None, allow_large: bool = False) -> int | None:
        """Import a file as one undoable step. Rows with errors: ask (valid_only=None), skip them
        (True), or import nothing and list them (False). A file over the size cap of one import
        is imported only if the user says so. Returns how many were imported, or None when a
        large file is still being read in the background."""
        path = Path(path)
        if self.store is None:
            return 0
        self.save_edit()

        def read() -> ImportResult | ImportTooLarge:
            try:
                return read_sft_file(path, allow_large=allow_large)
            except ImportTooLarge as refusal:  # an answer to ask for, not an error to show
                return refusal

        if path.is_file() and path.stat().st_size > LARGE_FILE_BYTES:
            self.status.setText(f"Reading {path.name}…")
            self.session.run_task(lambda _should_stop: once(read),
                                  on_item=lambda result: self._add_imported(path, result, valid_only),
                                  on_error=self._warn)
            return None
        try:
            result = read()
        except WorkbenchError as error:
            self._warn(str(error))
            return 0
        return self._add_imported(path, result, valid_only)

    def _add_imported(self, path: Path, result: ImportResult | ImportTooLarge, valid_only: bool | None) -> int | None:
        if isinstance(result, ImportTooLarge):
            answer = QMessageBox.question(self, "Import SFT examples", result.question,
                                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                          QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                self.status.setText(f"Not imported: {path.name} is over the size of one import.")
                return 0
            return self.import_file(path, valid_only, allow_large=True)
        if result.errors and not self._accept_valid_rows(path, result, valid_only):
            return 0
        if not result.examples:
            self._warn(f"{path.name} holds no examples.")
            return 0
        count = len(result.examples)
        self._push(self._command(AddExamples, result.examples, path.name,
                                 text=f"Import {plural(count, 'example')} from {path.name}"))
        skipped = f", skipped {plural(len(result.errors), 'row')} with errors" if result.errors else ""
        self.status.setText(f"Imported {plural(count, 'example')} from {path.name}{skipped}")
        return count

    def _accept_valid_rows(self, path: Path, result: ImportResult, valid_only: bool | None) -> bool:
        problem = (f"{len(result.errors):,} of {result.total_rows:,} rows in {path.name} cannot be imported; "
                   f"{len(result.examples):,} are valid.")
        if valid_only is False or not result.examples:
            self._warn(f"Nothing was imported. {problem}\n\n{error_listing(result)}")
            return False
        if valid_only:
            return True
        box = QMessageBox(QMessageBox.Icon.Question, "Import SFT examples", problem, parent=self)
        box.setInformativeText(error_listing(result))
        accept = box.addButton("Import valid rows", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return box.clickedButton() is accept

    @Slot()
    def _choose_export(self) -> None:
        labels = {label: (fmt, suffix) for label, fmt, suffix in EXPORT_CHOICES}
        path, chosen = QFileDialog.getSaveFileName(self, "Export SFT examples", "sft.jsonl", ";;".join(labels))
        if path:
            fmt, suffix = labels.get(chosen, ("messages", ".jsonl"))
            self.export_file(path if Path(path).suffix else path + suffix, fmt)

    def export_file(self, path: str | Path, fmt: str = "messages") -> int | None:
        """Write every example to `path` in TRL's `fmt` row shape; the suffix picks the container.
        Returns how many were written, or None when a large export goes on in the background."""
        if self.store is None:
            return 0
        self.save_edit()
        path, store = Path(path), self.store

        def write() -> int:
            return write_sft_file(list(store.all_messages()), path, fmt)

        if store.count() > LARGE_EXPORT:
            self.status.setText(f"Exporting to {path.name}…")
            self.session.run_task(lambda _should_stop: once(write),
                                  on_item=lambda count: self._exported(count, path), on_error=self._warn)
            return None
        try:
            count = write()
        except WorkbenchError as error:
            self._warn(str(error))
            return 0
        self._exported(count, path)
        return count

    def _exported(self, count: int, path: Path) -> None:
        self.status.setText(f"Exported {plural(count, 'example')} to {path.name}")

    def _warn(self, message: str) -> None:
        QMessageBox.warning(self, "SFT data", message)
