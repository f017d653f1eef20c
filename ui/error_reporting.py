"""Uncaught exceptions, from slots or any thread, are logged with their traceback and shown.

Installed once by the app: sys.excepthook (which PySide6 calls for exceptions in slots and
virtual methods) and threading.excepthook. The dialog is opened non-modally from the GUI
thread, and repeated errors update one dialog instead of stacking many.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from logging.handlers import RotatingFileHandler

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtWidgets import QMessageBox, QWidget

from workbench import library_logs
from workbench.paths import log_file

log = logging.getLogger("workbench")


def setup_logging() -> None:
    path = log_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("workbench")
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    library_logs.route_to(handler)  # library warnings and progress bars: the log, not the terminal


class ErrorReporter(QObject):
    """Receives exceptions from anywhere and shows them in the GUI thread."""

    reported = Signal(str, str)  # summary, traceback text

    def __init__(self, window: QWidget):
        super().__init__(window)
        self._window = window
        self._box: QMessageBox | None = None
        self._count = 0
        self.reported.connect(self._show)

    def install(self) -> None:
        sys.excepthook = self.handle
        threading.excepthook = lambda args: self.handle(args.exc_type, args.exc_value, args.exc_traceback)

    def handle(self, exc_type, exc, tb) -> None:
        details = "".join(traceback.format_exception(exc_type, exc, tb))
        log.error("uncaught exception\n%s", details)
        self.reported.emit(f"{exc_type.__name__}: {exc}", details)  # queued when off the GUI thread

    @Slot(str, str)
    def _show(self, summary: str, details: str) -> None:
        self._count += 1
        if self._box is None:
            self._box = QMessageBox(QMessageBox.Icon.Critical, "Something went wrong", "", parent=self._window)
            self._box.finished.connect(self._forget_box)
        more = f"\n\n({self._count} errors so far.)" if self._count > 1 else ""
        self._box.setText(f"{summary}\n\nThe workbench is still running; nothing saved was lost. "
                          f"Details are in {log_file()}.{more}")
        self._box.setDetailedText(details)
        self._box.open()

    @Slot()
    def _forget_box(self) -> None:
        self._box, self._count = None, 0

    @property
    def dialog(self) -> QMessageBox | None:
        return self._box
