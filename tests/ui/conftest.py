import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QMenu, QMessageBox  # noqa: E402

from ui.garbage import collect_in_gui_thread  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402
from ui.session import WorkbenchSession  # noqa: E402


@pytest.fixture(autouse=True)
def gui_thread_garbage_collection(qapp):
    """As in the app: cycles are collected in the GUI thread only, never in a worker."""
    collect_in_gui_thread(qapp)


@pytest.fixture
def window(qtbot):
    session = WorkbenchSession()
    main = MainWindow(session)
    qtbot.addWidget(main)
    main.show()
    yield main
    session.shutdown()


@pytest.fixture
def warnings(monkeypatch):
    """Collect QMessageBox.warning calls instead of blocking on a modal dialog."""
    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text, *a, **k: shown.append(text))
    return shown


def menu_action(window, *path):
    """The QAction reached through the real menu bar by its visible texts, e.g. ("File", "Open project…")."""
    actions = window.menuBar().actions()
    for depth, text in enumerate(path):
        action = next(a for a in actions if a.text().replace("&", "") == text)
        if depth == len(path) - 1:
            return action
        menu: QMenu = action.menu()
        menu.aboutToShow.emit()
        actions = menu.actions()
    raise LookupError(path)
