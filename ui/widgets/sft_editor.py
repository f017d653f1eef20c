"""The SFT example editor: one chat as a list of messages, and the text the model will see.

Each message is a role and its text; "Add message" appends the next turn (user and assistant
alternate), so a single-turn example is just a user and an assistant message. Below them, the
chat as the loaded model's chat template renders it, with its token count against the max length.
The editor only shows and reports changes (`changed`, `save_now`); the page saves them.
"""

from __future__ import annotations

from functools import partial

from PySide6.QtCore import QEvent, QRect, QSignalBlocker, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QFontDatabase, QKeySequence, QResizeEvent
from PySide6.QtWidgets import (
    QComboBox, QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QScrollArea, QSplitter, QToolButton,
    QVBoxLayout, QWidget,
)

from workbench.data.sft_store import ROLES
from workbench.models.chat_format import TemplateRefused, render
from workbench.train.sft_data import token_count

PREVIEW_DELAY_MS = 150
ROLE_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}
WARNING_COLOR = "#c62828"
STYLE = """
QFrame#messageRow { border: 1px solid #d9dce1; border-radius: 6px; background: palette(base); }
QLabel#tokenCount { color: #555; }
QLabel#editorHeading { font-weight: 600; }
"""


class MessageText(QPlainTextEdit):
    """A message's text: grows with its content (up to a limit), and leaves Ctrl+Z to the page,
    whose undo stack holds every edit, instead of keeping a second, per-field undo history."""

    left = Signal()  # focus moved away: time to save

    MIN_LINES, MAX_LINES = 2, 14

    def __init__(self, text: str):
        super().__init__()
        self.setPlainText(text)
        self.setTabChangesFocus(True)
        self.document().setUndoRedoEnabled(False)
        self.textChanged.connect(self.fit)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ShortcutOverride and (
                event.matches(QKeySequence.StandardKey.Undo) or event.matches(QKeySequence.StandardKey.Redo)):
            event.ignore()
            return True
        return super().event(event)

    def focusOutEvent(self, event) -> None:
        super().focusOutEvent(event)
        self.left.emit()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if event.oldSize().width() != event.size().width():
            self.fit()

    @Slot()
    def fit(self) -> None:
        metrics, margin = self.fontMetrics(), self.document().documentMargin()
        width = max(self.viewport().width() - 2 * int(margin), 50)
        text = self.toPlainText() or " "
        height = metrics.boundingRect(QRect(0, 0, width, 10**6), Qt.TextFlag.TextWordWrap, text).height()
        lines = min(max(height // metrics.lineSpacing() + 1, self.MIN_LINES), self.MAX_LINES)
        self.setFixedHeight(lines * metrics.lineSpacing() + 2 * int(margin) + 2 * self.frameWidth())


class MessageRow(QFrame):
    edited = Signal(str)  # "content" or "role"
    remove_requested = Signal()

    def __init__(self, message: dict):
        super().__init__()
        self.setObjectName("messageRow")
        self.role = QComboBox()
        for role in ROLES:
            self.role.addItem(ROLE_LABELS[role], role)
        self.role.setCurrentIndex(self.role.findData(message["role"]))
        self.content = MessageText(message["content"])
        self._update_placeholder()
        self.remove = QToolButton()
        self.remove.setText("✕")
        self.remove.setAutoRaise(True)
        self.remove.setToolTip("Remove this message")

        header = QHBoxLayout()
        header.addWidget(self.role)
        header.addStretch(1)
        header.addWidget(self.remove)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        layout.addLayout(header)
        layout.addWidget(self.content)

        self.role.currentIndexChanged.connect(self._update_placeholder)
        self.role.currentIndexChanged.connect(lambda _index: self.edited.emit("role"))
        self.content.textChanged.connect(lambda: self.edited.emit("content"))
        self.remove.clicked.connect(self.remove_requested)

    @Slot()
    def _update_placeholder(self) -> None:
        self.content.setPlaceholderText(f"{self.role.currentText()} message")

    def set_message(self, message: dict) -> None:
        """Show another message in place, without announcing it as an edit."""
        with QSignalBlocker(self.role), QSignalBlocker(self.content):
            self.role.setCurrentIndex(self.role.findData(message["role"]))
            if message["content"] != self.content.toPlainText():
                position = self.content.textCursor().position()
                self.content.setPlainText(message["content"])
                cursor = self.content.textCursor()
                cursor.setPosition(min(position, len(message["content"])))
                self.content.setTextCursor(cursor)
        self._update_placeholder()
        self.content.fit()

    def message(self) -> dict:
        return {"role": self.role.currentData(), "content": self.content.toPlainText()}


class ExampleEditor(QWidget):
    """One example as a list of messages, with the text the model will see after its chat template.

    `edit_key` names the field and typing burst of the latest change: saves with the same key
    merge into one undo step. A burst ends when a field loses focus or the example is reloaded.
    """

    changed = Signal()
    save_now = Signal()  # a discrete change (a role, a message added or removed) or focus left a field

    def __init__(self):
        super().__init__()
        self.setStyleSheet(STYLE)
        self.rows: list[MessageRow] = []
        self.tokenizer = None
        self.max_length = 1024
        self.edit_key: tuple = ()
        self._burst, self._field = 0, None

        self.heading = QLabel()
        self.heading.setObjectName("editorHeading")
        self.add_message_button = QPushButton("Add message")
        self.add_message_button.setToolTip("Add a user or assistant turn (they alternate)")
        self._list = QVBoxLayout()
        self._list.setSpacing(8)
        holder = QWidget()
        outer = QVBoxLayout(holder)
        outer.setContentsMargins(0, 0, 4, 0)
        outer.addLayout(self._list)
        outer.addWidget(self.add_message_button, 0, Qt.AlignmentFlag.AlignLeft)
        outer.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidget(holder)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)

        self.preview = QPlainTextEdit()
        self.preview.setReadOnly(True)
        self.preview.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.preview.setPlaceholderText("The text the model trains on appears here.")
        self.token_label = QLabel()
        self.token_label.setObjectName("tokenCount")
        self.token_label.setWordWrap(True)  # a template's error message can be long
        preview_box = QWidget()
        preview_layout = QVBoxLayout(preview_box)
        preview_layout.setContentsMargins(0, 6, 0, 0)
        preview_layout.addWidget(QLabel("<b>After the chat template</b>"))
        preview_layout.addWidget(self.preview, 1)
        preview_layout.addWidget(self.token_label)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.scroll)
        split.addWidget(preview_box)
        split.setSizes([600, 400])  # proportions: the messages being edited get the larger share
        split.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.heading)
        layout.addWidget(split, 1)

        self._preview_timer = QTimer(self, singleShot=True, interval=PREVIEW_DELAY_MS)
        self._preview_timer.timeout.connect(self._update_preview)
        self.add_message_button.clicked.connect(self.add_message)
        self.clear()

    # ---- contents ----------------------------------------------------------------------

    def messages(self) -> list[dict]:
        return [row.message() for row in self.rows]

    def set_messages(self, messages: list[dict], heading: str | None = None) -> None:
        if len(messages) == len(self.rows):  # same shape (an undo of typing): keep focus and cursor
            for row, message in zip(self.rows, messages):
                row.set_message(message)
        else:
            for row in self.rows:
                self._drop(row)
            self.rows = []
            for message in messages:
                self._append_row(message)
        self._field = None  # whatever is typed next is a new undo step
        if heading is not None:
            self.heading.setText(heading)
        self.setEnabled(True)
        self._update_preview()

    def clear(self) -> None:
        self.set_messages([], "No example selected: pick one on the left, or add one.")
        self.setEnabled(False)

    def set_tokenizer(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._update_preview()

    def set_max_length(self, max_length: int) -> None:
        self.max_length = max_length
        self._update_preview()

    @Slot()
    def add_message(self) -> None:
        role = "assistant" if self.rows and self.rows[-1].role.currentData() == "user" else "user"
        row = self._append_row({"role": role, "content": ""})
        row.content.setFocus()
        self._edited("add", alone=True)

    # ---- internals ---------------------------------------------------------------------

    def _append_row(self, message: dict) -> MessageRow:
        row = MessageRow(message)
        row.edited.connect(partial(self._row_edited, row))
        row.remove_requested.connect(partial(self._remove_row, row))
        row.content.left.connect(self._field_left)
        self._list.addWidget(row)
        self.rows.append(row)
        return row

    def _row_edited(self, row: MessageRow, part: str) -> None:
        self._edited((part, self.rows.index(row)), alone=part == "role")

    def _remove_row(self, row: MessageRow) -> None:
        self.rows.remove(row)
        self._drop(row)
        self._edited("remove", alone=True)

    def _drop(self, row: MessageRow) -> None:
        self._list.removeWidget(row)
        row.hide()  # deleteLater waits for the event loop; until then it must not show
        row.deleteLater()

    def _edited(self, field, alone: bool = False) -> None:
        if alone or field != self._field:
            self._burst += 1
        self._field = None if alone else field
        self.edit_key = (self._burst, field)
        self._preview_timer.start()
        self.changed.emit()
        if alone:
            self.save_now.emit()

    @Slot()
    def _field_left(self) -> None:
        self._field = None
        self.save_now.emit()

    @Slot()
    def _update_preview(self) -> None:
        self._preview_timer.stop()
        if self.tokenizer is None:
            self.preview.setPlainText("")
            self._set_token_text("Load a model to see the chat template and token count", False)
            return
        messages = self.messages()
        try:
            self.preview.setPlainText(render(self.tokenizer, messages))
            tokens = token_count(self.tokenizer, messages)
        except TemplateRefused as error:  # its rules (strict alternation, say): the message says which
            self.preview.setPlainText("")
            self._set_token_text(f"{str(error)[:1].upper()}{str(error)[1:]}.", True)
            return
        except Exception as error:  # noqa: BLE001 - the template is the model's code and may fail otherwise
            self.preview.setPlainText("")
            self._set_token_text(f"The chat template failed on this chat: {error}", True)
            return
        self._set_token_text(f"{tokens:,} tokens (max {self.max_length:,})", tokens > self.max_length)

    def _set_token_text(self, text: str, warn: bool) -> None:
        self.token_label.setText(text)
        self.token_label.setStyleSheet(f"color: {WARNING_COLOR};" if warn else "")
