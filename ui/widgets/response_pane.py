"""One response column on the ranking page: its number key, its place in the ranking being
made, the text (markdown and code shown as such), its length, and, only when asked for after
labeling, which model wrote it."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QTextBrowser, QVBoxLayout

STYLE = """
QFrame#responsePane { border: 1px solid #c9ccd1; border-radius: 6px; background: #fbfbfc; }
QFrame#responsePane[placed="true"] { border: 2px solid #2d6cdf; background: #f3f7ff; }
QLabel#paneKey { font-size: 18px; font-weight: bold; color: #2d6cdf; min-width: 22px; }
QLabel#panePlace { font-weight: bold; color: #1b4fb0; }
QLabel#paneFooter { color: #666; }
"""


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


class ResponsePane(QFrame):
    picked = Signal(int)  # pane index
    edit_requested = Signal(int)

    def __init__(self, index: int):
        super().__init__()
        self.index = index
        self.setObjectName("responsePane")
        self.setStyleSheet(STYLE)
        self.key = QLabel(str(index + 1))
        self.key.setObjectName("paneKey")
        self.key.setToolTip(f"Press {index + 1} to pick this response next")
        self.place = QLabel()
        self.place.setObjectName("panePlace")
        self.text = QTextBrowser()
        self.text.setOpenExternalLinks(False)
        self.text.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keys go to the page, not the text
        self.footer = QLabel()
        self.footer.setObjectName("paneFooter")
        self.footer.setWordWrap(True)
        self.pick_button = QPushButton("Pick")
        self.pick_button.setToolTip(f"Place this response next in the ranking ({index + 1})")
        self.edit_button = QPushButton("Make ideal…")
        self.edit_button.setToolTip("Edit this response into an ideal answer, saved as an SFT example")
        for button in (self.pick_button, self.edit_button):
            button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        header = QHBoxLayout()
        header.addWidget(self.key)
        header.addWidget(self.place, 1)
        header.addWidget(self.pick_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.addLayout(header)
        layout.addWidget(self.text, 1)
        footer = QHBoxLayout()
        footer.addWidget(self.footer, 1)
        footer.addWidget(self.edit_button)
        layout.addLayout(footer)
        self.pick_button.clicked.connect(lambda: self.picked.emit(self.index))
        self.edit_button.clicked.connect(lambda: self.edit_requested.emit(self.index))
        self._shown = None

    def show_response(self, text: str, streaming: bool = False, tokens: int | None = None,
                      source: str = "", cut_off: bool = False, score: float | None = None) -> None:
        if (text, streaming, tokens, source, cut_off, score) == self._shown:
            return
        self._shown = (text, streaming, tokens, source, cut_off, score)
        scroll = self.text.verticalScrollBar()
        at_end = scroll.value() >= scroll.maximum() - 4
        self.text.setMarkdown(text)
        if streaming and at_end:
            scroll.setValue(scroll.maximum())  # follow the text as it grows, unless scrolled up
        words = len(text.split())
        parts = [f"{words:,} words", f"{len(text):,} chars"] + ([f"{tokens:,} tokens"] if tokens else [])
        if streaming:
            parts.append("writing…")
        if cut_off:
            parts.append("cut off at max tokens")
        if source:
            parts.append(f"model: {source}")
        if score is not None:
            parts.append(f"reward {score:+.2f}")
        self.footer.setText(" · ".join(parts))
        self.pick_button.setEnabled(not streaming)
        self.edit_button.setEnabled(not streaming and bool(text))

    def clear(self, message: str = "") -> None:
        self._shown = None
        self.text.setPlainText(message)
        self.footer.setText("")
        self.set_place(None)
        self.pick_button.setEnabled(False)
        self.edit_button.setEnabled(False)

    def set_place(self, place: int | None, tied: bool = False, all_bad: bool = False) -> None:
        text = "" if place is None else ("tied " if tied else "") + ordinal(place)
        if all_bad and place is not None:
            text += " · all bad"
        self.place.setText(text)
        self.setProperty("placed", place is not None)
        self.style().unpolish(self)
        self.style().polish(self)
