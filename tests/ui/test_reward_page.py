"""Reward page: train from the GUI on the tiny model, see accuracy plotted and judged, then see
the scores under the responses on the Rank page (off until asked for)."""

from tests.core.test_reward import synthetic_project


def test_train_see_accuracy_then_scores_on_the_rank_page(window, tmp_path, tiny_model_dir, qtbot):
    project = synthetic_project(tmp_path / "rm", tiny_model_dir, prompts=16)
    path = project.path
    project.close()
    session = window.session
    session.open_project(path)
    session.load_model(session.project.base_model)
    qtbot.waitUntil(lambda: session.models.loaded and not session.loading, timeout=30_000)
    window.show_page("Reward")
    page = window.reward_page
    assert "32 preference pairs" in page.hint.text()
    form = page.form.editors
    form["max_steps"].setValue(12)
    form["learning_rate"].setValue(0.002)
    form["batch_size"].setValue(8)
    form["eval_every"].setValue(4)
    form["warmup_steps"].setValue(0)
    page.start_button.click()
    qtbot.waitUntil(lambda: window.runs.run_id is not None, timeout=30_000)
    qtbot.waitUntil(lambda: not window.runs.running, timeout=120_000)
    plots = page.monitor.plots
    qtbot.waitUntil(lambda: not plots.pending, timeout=10_000)
    steps, accuracy = plots.curve_data(window.runs.run_id, "reward/accuracy")
    assert list(steps) == [4, 8, 12] and accuracy[-1] >= 0.75
    assert "Run 1 · reward-model · finished" in page.monitor.title.text()
    # The evaluation of the finished run: accuracy with its interval, the annotator, worst pairs.
    assert page.evaluation.run.count() == 1
    summary = page.evaluation.summary.text()
    assert "Validation accuracy" in summary and "95% CI" in summary
    assert page.evaluation.annotators.item(0, 0).text() == "ana"
    assert page.evaluation.worst.rowCount() > 0

    # Rank page: scores are off by default, shown when asked for.
    rank = window.rank_page
    rank.ask_name = lambda current: "bo"  # a second annotator: every prompt is still to label
    window.show_page("Rank")
    qtbot.waitUntil(lambda: rank.batch is not None, timeout=30_000)
    assert not rank.show_scores.isChecked() and rank.show_scores.isEnabled()
    assert "reward" not in rank.panes[0].footer.text()
    rank.show_scores.setChecked(True)
    qtbot.waitUntil(lambda: "reward" in rank.panes[0].footer.text(), timeout=30_000)
    assert len(rank.labeling.scores[rank.batch.uid]) == 3
    # Least sure first: the queue is reordered by the gap between the two best scores.
    rank.least_sure_first.setChecked(True)
    qtbot.waitUntil(lambda: "Least sure first:" in rank.status.text(), timeout=60_000)
    assert rank.labeling.priority and rank.prompt_id == rank.labeling.priority[0]
