"""DPO from the GUI on the tiny model: the memory estimate, launch, points of TRL's statistics
arriving, stop, reopen the project and find the run, resume it to the end, the implicit-reward
verdict, then "Did it work?" without a reward model: compare on held-out prompts, send them to
the Rank page and read the human win rate back."""

from PySide6.QtCore import Qt

from workbench.data.rankings import RankingStore
from workbench.train.ppo_eval import POLICY, REFERENCE
from workbench.train.runs import RunRecord
from tests.core.test_reward import synthetic_project


def test_launch_watch_stop_reopen_resume_and_compare(window, tmp_path, tiny_model_dir, qtbot):
    project = synthetic_project(tmp_path / "dpo.rlhf", tiny_model_dir, prompts=10)
    path = project.path
    project.close()
    session = window.session
    session.open_project(path)
    window.show_page("DPO")
    page = window.dpo_page
    assert not page.start_button.isEnabled() and "Load a base model" in page.hint.text()
    assert "Load a model" in page.memory.text()
    session.load_model(session.project.base_model)
    qtbot.waitUntil(lambda: session.models.loaded and not session.loading, timeout=30_000)
    assert page.start_button.isEnabled(), page.hint.text()
    assert "20 preference pairs" in page.hint.text() and "Only 10 prompts are ranked" in page.hint.text()
    box = page.form.editors["loss_type"]
    assert [box.itemText(i) for i in range(box.count())] == ["sigmoid", "ipo", "simpo"]

    form = page.form.editors
    before = page.memory.text()
    assert before.startswith("<b>Estimated memory, at most:</b> about")
    form["batch_size"].setValue(32)
    assert page.memory.text() != before
    for name, value in (("batch_size", 4), ("grad_accum", 1), ("max_steps", 200), ("checkpoint_every", 2),
                        ("eval_every", 2),
                        ("learning_rate", 2e-3), ("warmup_steps", 0), ("max_new_tokens", 6),
                        ("validation_fraction", 0.3)):
        form[name].setValue(value)
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)

    # TRL's statistics arrive on the live plots.
    qtbot.waitUntil(lambda: window.runs.run_id is not None, timeout=30_000)
    run_id = window.runs.run_id
    plots = page.monitor.plots
    qtbot.waitUntil(lambda: all(key in plots.keys() and len(plots.curve_data(run_id, key)[0]) >= 3
                                for key in ("loss/train", "rewards/margins")), timeout=120_000)
    assert {"rewards/chosen", "rewards/rejected", "logps/chosen", "eval/rewards/accuracies"} <= set(plots.keys())
    assert not page.start_button.isEnabled()
    qtbot.mouseClick(page.monitor.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.runs.running, timeout=60_000)
    record = RunRecord(session.project, run_id)
    assert record.status == "stopped" and record.last_checkpoint() is not None
    stopped_at = record.last_checkpoint()[0]

    # Reopen: the settings and the run are there; resume it from the Runs page to a near end.
    session.open_project(path)
    assert form["max_new_tokens"].value() == 6 and form["loss_type"].currentText() == "sigmoid"
    window.show_page("Runs")
    runs_page = window.runs_page
    rows = {int(runs_page.table.item(r, 0).text()): r for r in range(runs_page.table.rowCount())}
    assert set(rows) == {run_id} and runs_page.table.item(rows[run_id], 2).text() == "stopped"
    RunRecord(session.project, run_id).set_config({**RunRecord(session.project, run_id).config,
                                                   "max_steps": stopped_at + 2})
    runs_page.refresh()
    runs_page.table.selectRow(rows[run_id])
    qtbot.mouseClick(runs_page.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: RunRecord(session.project, run_id).status == "finished", timeout=120_000)
    qtbot.waitUntil(lambda: not window.runs.running, timeout=10_000)

    # The finished policy's implicit reward on the held-out pairs, then Did it work?
    window.show_page("DPO")
    qtbot.waitUntil(lambda: f"Run {run_id}: its implicit reward prefers" in page.verdict.text(), timeout=5000)
    view = page.comparison
    page.tabs.setCurrentIndex(1)
    assert view.run.currentData() == run_id and view.against.currentText() == "its reference"
    qtbot.mouseClick(view.compare_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.comparison is not None and view.task is None, timeout=60_000)
    assert view.table.rowCount() == 6  # 3 held-out prompts x 2 answers
    assert "no reward model" in view.summary.text() and view.table.item(0, 4).text() == "—"
    window.rank_page.ask_name = lambda current: "ana"
    qtbot.mouseClick(view.send_button, Qt.MouseButton.LeftButton)
    assert window.stack.currentWidget() is window.rank_page
    store = RankingStore(session.project)
    for uid in view.comparison.sent_batches:
        responses = store.batch(uid).responses
        store.save_ranking(uid, "ana", [[r.id for r in responses if r.generator["role"] == POLICY],
                                        [r.id for r in responses if r.generator["role"] == REFERENCE]])
    window.show_page("DPO")
    qtbot.waitUntil(lambda: f"Human win rate of dpo-run-{run_id} over base: 100%" in view.human.text(), timeout=5000)
