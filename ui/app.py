"""Start the GUI: the application object, logging, the error hook, and the first project."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtWidgets import QApplication, QMessageBox

import workbench.models  # noqa: F401 - offline settings before anything imports transformers
from workbench import app_settings
from workbench.demo_project import ensure_demo_project
from workbench.errors import WorkbenchError
from workbench.paths import REPO_ROOT
from ui.error_reporting import ErrorReporter, setup_logging
from ui.garbage import collect_in_gui_thread
from ui.main_window import MainWindow
from ui.session import WorkbenchSession

STYLESHEET = REPO_ROOT / "resources" / "style.qss"


def application() -> QApplication:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("RLHF Workbench")
    # A worker thread running Python between torch calls keeps the GIL for up to the switch
    # interval each time the GUI thread asks for it; painting asks often. 1 ms instead of 5 ms
    # cut the window's stalls during training (bench/ui_responsiveness.py).
    sys.setswitchinterval(0.001)
    collect_in_gui_thread(app)  # never in a worker thread: see ui/garbage.py
    if STYLESHEET.is_file():
        app.setStyleSheet(STYLESHEET.read_text(encoding="utf-8"))
    return app


def open_first_project(session: WorkbenchSession, window: MainWindow, path: Path | None,
                       load_model: bool = True) -> None:
    """Open `path`, else the last project, else the demo; then load the project's base model."""
    candidates = [p for p in (path, None if path else app_settings.last_project()) if p]
    for candidate in candidates:
        try:
            session.open_project(candidate)
            break
        except WorkbenchError as error:
            QMessageBox.warning(window, "RLHF Workbench", f"{error}\n\nOpening the demo project instead.")
    if session.project is None:
        session.open_project(ensure_demo_project())
    spec = session.project.base_model
    if load_model and spec is not None:
        session.load_model(spec)


def ask_trust(window: MainWindow, text: str) -> bool:
    """Yes only if the user says so; No is the default button, so Enter refuses."""
    answer = QMessageBox.warning(window, "Allow this model's code?", text,
                                 QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                 QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def run_gui(project: str | None = None) -> int:
    app = application()
    setup_logging()
    session = WorkbenchSession()
    window = MainWindow(session)
    ErrorReporter(window).install()
    session.confirm_trust = lambda text: ask_trust(window, text)
    window.show()
    open_first_project(session, window, Path(project) if project else None)
    if session.project is not None and session.project.base_model is not None:
        window.show_page("Model")
    return app.exec()
