"""Train from the GUI: start a run, see the plot fill, stop, reopen, resume, use the adapter."""

import pytest
from PySide6.QtCore import Qt

from workbench.errors import ProjectError

from workbench.data.sft_store import SftStore
from workbench.project import Project
from workbench.train.runs import RunRecord

EXAMPLE = [{"role": "user", "content": "My order hasn't arrived."},
           {"role": "assistant", "content": "I'm sorry your order is late. Check the tracking link."}]


def prepare(window, tiny_project, qtbot):
    project = Project.open(tiny_project)
    SftStore(project).add_many([EXAMPLE] * 6)
    project.close()
    session = window.session
    session.open_project(tiny_project)
    session.load_model(session.project.base_model)
    qtbot.waitUntil(lambda: session.models.loaded and not session.loading, timeout=30_000)
    return session


def test_start_watch_stop_reopen_and_resume(window, tiny_project, qtbot):
    session = prepare(window, tiny_project, qtbot)
    window.show_page("SFT training")
    page = window.sft_training_page
    assert page.start_button.isEnabled(), page.hint.text()
    page.form.editors["max_steps"].setValue(400)
    page.form.editors["batch_size"].setValue(2)
    page.form.editors["eval_every"].setValue(2)
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)

    # The live plot receives points while the run goes on.
    qtbot.waitUntil(lambda: window.runs.run_id is not None, timeout=30_000)
    run_id = window.runs.run_id
    plots = page.monitor.plots
    qtbot.waitUntil(lambda: len(plots.curve_data(run_id, "loss/train")[0]) >= 3 if "loss/train" in plots.keys()
                    else False, timeout=60_000)
    assert "loss/validation" in plots.keys() and page.monitor.progress.maximum() == 400
    assert not page.start_button.isEnabled()
    with pytest.raises(ProjectError, match="busy \\(SFT run|training run is in progress"):
        session.open_project(tiny_project)  # the run writes to this project: it stays open

    # Pause holds it; Stop saves a checkpoint and ends it as "stopped".
    qtbot.mouseClick(page.monitor.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: RunRecord(session.project, run_id).status == "paused", timeout=30_000)
    assert page.monitor.pause_button.text() == "Resume"
    qtbot.mouseClick(page.monitor.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.runs.running, timeout=60_000)
    record = RunRecord(session.project, run_id)
    assert record.status == "stopped" and record.last_checkpoint() is not None
    stopped_at = record.last_checkpoint()[0]

    # Reopen the project: the settings come back, the Runs page lists the run with its curves.
    page.form.editors["max_steps"].setValue(1)
    session.open_project(tiny_project)
    assert page.form.editors["max_steps"].value() == 400 and page.form.editors["batch_size"].value() == 2
    page.form.editors["max_length"].setValue(300)
    assert window.sft_page.max_length.value() == 300  # the data page flags against the same length
    window.show_page("Runs")
    runs_page = window.runs_page
    assert runs_page.table.rowCount() == 1 and runs_page.table.item(0, 2).text() == "stopped"
    assert runs_page.selected_ids() == [run_id]
    qtbot.waitUntil(lambda: len(runs_page.plots.curve_data(run_id, "loss/train")[0]) == stopped_at)
    assert "Stopped at step" in runs_page.log.toPlainText()

    # Resume from the Runs page; lower the remaining work so the test stays short.
    project = session.project
    config = RunRecord(project, run_id).config
    RunRecord(project, run_id).set_config({**config, "max_steps": stopped_at + 3})
    runs_page.refresh()
    assert runs_page.resume_button.isEnabled()
    qtbot.mouseClick(runs_page.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: RunRecord(project, run_id).status == "finished", timeout=60_000)
    qtbot.waitUntil(lambda: not window.runs.running, timeout=10_000)
    assert runs_page.table.item(0, 2).text() == "finished" and runs_page.table.item(0, 7).text() == "yes"

    # The adapter is offered in Try it (on the Model page, which re-reads when shown) and answers there.
    window.show_page("Model")
    try_it = window.model_page.try_it
    assert try_it.source.count() == 2 and "run %d" % run_id in try_it.source.itemText(1)
    try_it.source.setCurrentIndex(1)
    try_it.prompt.setPlainText("My order hasn't arrived.")
    try_it.max_tokens.setValue(8)
    try_it.generate()
    qtbot.waitUntil(lambda: try_it.status.text() == "Done.", timeout=30_000)
    assert try_it.reply.toPlainText()


def test_out_of_memory_ends_the_run_with_advice_and_the_app_goes_on(window, tiny_project, qtbot, monkeypatch):
    import torch

    import workbench.train.sft as sft

    session = prepare(window, tiny_project, qtbot)
    calls = []

    def collate_then_run_out_of_memory(examples, pad_id):
        calls.append(1)
        if len(calls) == 3:  # the third batch does not fit
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_collate(examples, pad_id)

    real_collate = sft.collate
    monkeypatch.setattr(sft, "collate", collate_then_run_out_of_memory)
    page = window.sft_training_page
    page.form.editors["max_steps"].setValue(50)
    page.start()
    qtbot.waitUntil(lambda: not window.runs.running and window.runs.run_id is not None, timeout=60_000)
    record = RunRecord(session.project, window.runs.run_id)
    assert record.status == "failed" and "Out of memory" in record.message and "batch_size" in record.message
    assert "failed" in page.monitor.title.text() and "Out of memory" in page.monitor.log.toPlainText()
    # The base is free again, without the failed adapter, and a new run can start.
    assert session.models.busy_with is None and session.models.peft is None
    assert page.start_button.isEnabled()


def test_opening_another_project_drops_the_adapters_of_the_first(window, tiny_project, tmp_path, qtbot):
    session = prepare(window, tiny_project, qtbot)
    page = window.sft_training_page
    page.form.editors["max_steps"].setValue(2)
    page.start()
    qtbot.waitUntil(lambda: window.runs.run_id is not None and not window.runs.running, timeout=60_000)
    assert "sft-run-1" in session.models.adapters
    other = Project.create(tmp_path / "other")
    other.close()
    session.open_project(other.path)
    # Its run 1 would reuse the name: nothing of the first project's adapter may answer there.
    assert session.models.adapters == {} and session.models.peft is None
    assert window.model_page.try_it.source.count() == 1
