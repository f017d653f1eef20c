"""Small pieces for showing texts: read-only row tables, one-line cells, a dialog that shows a
markdown text whole. Shared by the Reward and PPO pages."""

from __future__ import annotations

from PySide6.QtWidgets import QAbstractItemView, QDialog, QTableWidget, QTextBrowser, QVBoxLayout, QWidget


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
