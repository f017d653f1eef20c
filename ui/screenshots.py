"""Render every page of the main window offscreen to PNG files (`workbench screenshots`)."""

from __future__ import annotations

import os
from pathlib import Path

from workbench.errors import WorkbenchError

SAMPLE_PROMPT = "My order hasn't arrived. What should I do?"


DEFAULT_SIZE = (1280, 820)  # the main window's own size


def render_screenshots(project: Path, outdir: Path, load_model: bool = True, prompt: str = SAMPLE_PROMPT,
                       size: tuple[int, int] = DEFAULT_SIZE, train_steps: int = 0,
                       sizes: list[tuple[int, int]] | None = None, reward_steps: int = 0) -> list[Path]:
    """One PNG per page. With a model, the pages work on a temporary copy of the project (never
    on the user's file): the Rank page generates and ranks, and with `train_steps` a short SFT
    run is made first, so the SFT training and Runs pages show real curves. With several `sizes`
    each gets a folder (e.g. 1366x768/); with `reward_steps` every page is rendered again after
    a reward-model run of that many steps on synthetic rankings (folders ending -after-reward)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from ui.app import application
    from ui.main_window import MainWindow
    from ui.session import WorkbenchSession
    from ui.waiting import wait_until

    application()
    session = WorkbenchSession(remember_projects=False)
    session.open_project(project)
    if load_model:
        import tempfile

        scratch = Path(tempfile.mkdtemp(prefix="workbench-screenshots-"))
        session.save_project_as(scratch / Path(project).name)
    window = MainWindow(session)
    # Offscreen nobody can answer the Rank page's name dialog: without a model the page shows
    # its no-name state (with one, rank_for_screenshots labels as "screenshots").
    window.rank_page.ask_name = lambda current: current
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
            if train_steps:
                train_for_screenshots(window, train_steps)
            rank_for_screenshots(window)
        if window.sft_page.model.rowCount() > 0:
            window.sft_page.table.selectRow(0)
        sizes = sizes or [size]
        folders = lambda tag: [(outdir / f"{w}x{h}{tag}" if len(sizes) > 1 or tag else outdir, (w, h))
                               for w, h in sizes]
        written = []
        for folder, (w, h) in folders(""):
            window.resize(w, h)
            written += grab_pages(window, folder)
        if reward_steps and load_model:
            train_reward_for_screenshots(window, reward_steps)
            for folder, (w, h) in folders("-after-reward"):
                window.resize(w, h)
                written += grab_pages(window, folder)
        return written
    finally:
        window.close()


def grab_pages(window, outdir: Path) -> list[Path]:
    from ui.plots import MetricsView
    from ui.waiting import wait_until

    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, name in enumerate(window.pages, start=1):
        window.show_page(name)
        page = window.pages[name]
        tabs = getattr(page, "tabs", None)  # a page with tabs gets one picture per tab
        for tab in range(tabs.count() if tabs is not None else 1):
            suffix = ""
            if tabs is not None:
                tabs.setCurrentIndex(tab)
                suffix = "" if tab == 0 else "-" + "".join(c for c in tabs.tabText(tab).lower().replace(" ", "-")
                                                           if c.isalnum() or c == "-")
            # Plots on a page that was hidden draw when shown, one per timer pass.
            views = page.findChildren(MetricsView)
            wait_until(lambda: not any(view.pending for view in views), timeout_s=10)
            path = outdir / f"{index:02d}-{name.lower().replace(' ', '-')}{suffix}.png"
            if not window.grab().save(str(path)):
                raise WorkbenchError(f"could not write {path}")
            written.append(path)
        if tabs is not None:
            tabs.setCurrentIndex(0)
    return written


def train_reward_for_screenshots(window, steps: int) -> None:
    """Rankings of every prompt with responses (the longer response first, as a hurried annotator
    might), then a short reward-model run, so the Reward page shows a real evaluation."""
    from workbench.data.rankings import RankingStore

    project = window.session.project
    store = RankingStore(project)
    for uid in store.batches():
        batch = store.batch(uid)
        if batch is not None and store.ranking(uid, "screenshots") is None:
            ordered = sorted(batch.responses, key=lambda r: -len(r.text))
            store.save_ranking(uid, "screenshots", [[r.id] for r in ordered], seconds_spent=8.0,
                               shown_order=[r.id for r in batch.responses])
    window.show_page("Reward")
    run_to_the_end(window, window.reward_page, steps, evaluations=3)


def train_for_screenshots(window, steps: int) -> None:
    run_to_the_end(window, window.sft_training_page, steps, evaluations=4)


def run_to_the_end(window, page, steps: int, evaluations: int) -> None:
    """Start `page`'s run for `steps` steps, evaluated `evaluations` times, and wait for its end."""
    from ui.waiting import wait_until

    page.form.editors["max_steps"].setValue(steps)
    page.form.editors["eval_every"].setValue(max(1, steps // evaluations))
    page.start()
    wait_until(lambda: window.runs.run_id is not None, timeout_s=120)
    wait_until(lambda: not window.runs.running, timeout_s=1800)
    wait_until(lambda: False, 0.5)  # the plots redraw on a timer


def rank_for_screenshots(window) -> None:
    """Label the first prompt, then show the next one with its responses ready and one pick made."""
    from ui.waiting import wait_until

    page = window.rank_page
    page.set_annotator("screenshots", remember=False)
    page.settings.max_tokens.setValue(120)
    page.settings.seed.setValue(0)
    window.show_page("Rank")
    wait_until(lambda: page.batch is not None, timeout_s=600)
    wait_until(lambda: False, 3.0)  # reading time, so the page's labels/hour is a plausible figure
    for pane in (2, 1, 4):
        page.pick(pane - 1)
    wait_until(lambda: page.batch is not None, timeout_s=600)
    page.pick(1)
    wait_until(lambda: False, 0.3)
