"""Render every page of the main window offscreen to PNG files (`workbench screenshots`)."""

from __future__ import annotations

import os
from pathlib import Path

from workbench.errors import WorkbenchError

SAMPLE_PROMPT = "My order hasn't arrived. What should I do?"


def render_screenshots(project: Path, outdir: Path, load_model: bool = True,
                       prompt: str = SAMPLE_PROMPT, size: tuple[int, int] = (1280, 820)) -> list[Path]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from ui.app import application
    from ui.main_window import MainWindow
    from ui.session import WorkbenchSession
    from ui.waiting import wait_until

    application()
    session = WorkbenchSession(remember_projects=False)
    session.open_project(project)
    window = MainWindow(session)
    window.resize(*size)
    window.show()
    try:
        spec = session.project.base_model
        if load_model and spec is not None:
            session.load_model(spec)
            wait_until(lambda: not session.loading, timeout_s=600)
            if not session.models.loaded:
                raise WorkbenchError(f"the project's model did not load: {window.model_page.status.text()}")
            try_it = window.model_page.try_it
            try_it.prompt.setPlainText(prompt)
            try_it.seed.setValue(0)
            try_it.max_tokens.setValue(120)
            try_it.generate()
            wait_until(lambda: not try_it.generating, timeout_s=300)
        outdir.mkdir(parents=True, exist_ok=True)
        written = []
        for index, name in enumerate(window.pages, start=1):
            window.show_page(name)
            wait_until(lambda: True, 0)
            path = outdir / f"{index:02d}-{name.lower().replace(' ', '-')}.png"
            if not window.grab().save(str(path)):
                raise WorkbenchError(f"could not write {path}")
            written.append(path)
        return written
    finally:
        window.close()
