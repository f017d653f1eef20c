"""Small pieces for showing texts: read-only row tables, one-line cells, a dialog that shows a
markdown text whole, and a status line that never widens the window."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView, QDialog, QLabel, QSizePolicy, QTableWidget, QTextBrowser, QVBoxLayout, QWidget,
)


class ElidedLabel(QLabel):
    """One line of plain text that takes the width it is given and no more: a long text is cut
    with "…" and shown whole in the tooltip. For status and progress lines, whose growing texts
    would otherwise make the layout ask for more width until the window grows off screen."""

    def __init__(self, text: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self._full = ""
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        self._full = text
        self._elide()

    def text(self) -> str:
        return self._full

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(0, super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(min(self.fontMetrics().horizontalAdvance(self._full), 400), super().sizeHint().height())

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, max(self.width(), 1))
        super().setText(shown)
        self.setToolTip(self._full if shown != self._full else "")


def read_only_table(headers: list[str]) -> QTableWidget:
    """A table of whole-row selection that the user reads and clicks but never edits."""
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    return table


def one_line(text: str, limit: int = 200) -> str:
    """A cell's text: whitespace collapsed, at most `limit` characters."""
    return " ".join(text.split())[:limit]


class TextDialog(QDialog):
    """A text (a sample, a pair of answers) in full, as markdown."""

    def __init__(self, parent: QWidget, title: str, markdown: str):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.view = QTextBrowser()
        self.view.setMarkdown(markdown)
        QVBoxLayout(self).addWidget(self.view)
        self.resize(760, 560)
