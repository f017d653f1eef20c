"""Rank from the keyboard on the tiny model: generate, rank, change a label, make an ideal answer,
and find all of it in the project after reopening."""

from PySide6.QtCore import Qt

from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.data.sft_store import SftStore
from workbench.project import Project

FIRST = "My order hasn't arrived. What should I do?"  # the tiny project's own prompt
PROMPTS = ["I want a refund.", "The box was damaged.", "Can I change my address?"]


def prepare(window, tiny_project, qtbot, annotator="ana"):
    project = Project.open(tiny_project)
    for text in PROMPTS:
        PromptStore(project).add(text)
    project.close()
    session = window.session
    session.open_project(tiny_project)
    session.load_model(session.project.base_model)
    qtbot.waitUntil(lambda: session.models.loaded and not session.loading, timeout=30_000)
    page = window.rank_page
    page.ask_name = lambda current: annotator
    page.settings.max_tokens.setValue(12)
    page.settings.k.setValue(3)
    window.show_page("Rank")
    return page


def press(qtbot, page, *keys):
    for key in keys:
        qtbot.keyClick(page.board, key)


def test_rank_with_keys_change_a_label_and_reopen(window, tiny_project, qtbot):
    page = prepare(window, tiny_project, qtbot)
    assert page.annotator == "ana"
    qtbot.waitUntil(lambda: page.batch is not None, timeout=30_000)
    first = page.prompt_id
    assert len(page.panes) == 3 and all(pane.text.toPlainText() for pane in page.panes)

    # Full order from the keys: 2 then 3; the last place is implied and the label is committed.
    press(qtbot, page, Qt.Key.Key_2, Qt.Key.Key_3)
    qtbot.waitUntil(lambda: page.prompt_id != first, timeout=5_000)
    second = page.prompt_id
    project = window.session.project
    batch = RankingStore(project).latest_batch(first)
    ranking = RankingStore(project).ranking(batch.uid, "ana")
    shown = ranking.shown_order
    assert ranking.groups == [[shown[1]], [shown[2]], [shown[0]]] and not ranking.all_bad
    assert ranking.seconds_spent > 0

    # Best-of-K with a tie, submitted with Enter; then "all bad" with 0 on the third prompt.
    qtbot.waitUntil(lambda: page.batch is not None, timeout=30_000)
    press(qtbot, page, Qt.Key.Key_1, Qt.Key.Key_Equal, Qt.Key.Key_3, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: page.prompt_id not in (first, second), timeout=5_000)
    third = page.prompt_id
    qtbot.waitUntil(lambda: page.batch is not None, timeout=30_000)
    press(qtbot, page, Qt.Key.Key_0)
    qtbot.waitUntil(lambda: page.prompt_id != third, timeout=5_000)
    batch3 = RankingStore(project).latest_batch(third)
    assert RankingStore(project).ranking(batch3.uid, "ana").all_bad

    # S skips (here there is nowhere else to go); ← goes back to change the first label,
    # shown in the order it was labeled.
    fourth = page.prompt_id
    press(qtbot, page, Qt.Key.Key_S)
    assert page.prompt_id == fourth and "last prompt you have not labeled" in page.status.text()
    while page.prompt_id != first:
        press(qtbot, page, Qt.Key.Key_Left)
    assert page.draft.final_groups() == [[1], [2], [0]]
    assert page.panes[1].place.text() == "1st"
    press(qtbot, page, Qt.Key.Key_Escape, Qt.Key.Key_3, Qt.Key.Key_Return)
    changed = RankingStore(project).ranking(batch.uid, "ana")
    assert changed.groups == [[shown[2]], [shown[0], shown[1]]]
    assert project.counts()["rankings"] == 3

    # E turns the best response into an SFT example, edited.
    press(qtbot, page, Qt.Key.Key_Left)  # back to the first prompt once more
    while page.prompt_id != first:
        press(qtbot, page, Qt.Key.Key_Left)
    page.edit_ideal = lambda prompt, text: "I'm sorry it is late. Here is the tracking link."
    press(qtbot, page, Qt.Key.Key_E)
    assert "Saved as SFT example" in page.status.text()
    assert f"3 / 4 labeled by {page.annotator}" in page.progress.text()
    assert "labels/hour" not in page.progress.text()  # three labels make no labeling speed yet

    path = project.path
    window.session.shutdown()
    reopened = Project.open(path)
    try:
        store = RankingStore(reopened)
        assert {r.prompt_id for r in store.rankings()} == {first, second, third}
        assert store.ranking(batch.uid, "ana").groups == changed.groups
        second_label = store.ranking(store.latest_batch(second).uid, "ana")
        shown2 = second_label.shown_order
        assert second_label.groups == [[shown2[0], shown2[2]], [shown2[1]]]
        examples = list(SftStore(reopened).all_messages())
        assert examples[-1] == [{"role": "user", "content": FIRST},
                                {"role": "assistant", "content": "I'm sorry it is late. Here is the tracking link."}]
        generator = store.latest_batch(first).responses[0].generator
        assert generator["source"] == "base" and generator["max_new_tokens"] == 12
    finally:
        reopened.close()


def test_mouse_picks_and_the_next_prompts_are_made_ahead(window, tiny_project, qtbot):
    page = prepare(window, tiny_project, qtbot, annotator="bo")
    qtbot.waitUntil(lambda: page.batch is not None, timeout=30_000)
    # While the first prompt is shown, the next ones get their responses in the background.
    project = window.session.project
    qtbot.waitUntil(lambda: all(RankingStore(project).latest_batch(row.id) for row in PromptStore(project).rows()),
                    timeout=60_000)
    first = page.prompt_id
    qtbot.mouseClick(page.panes[2].pick_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(page.submit_button, Qt.MouseButton.LeftButton)
    assert page.prompt_id != first and page.batch is not None  # ready at once: no wait
    assert page.labeling.stats.waits_all[-1] == 0.0  # the first prompt's own wait came before
    ranking = RankingStore(project).rankings()[0]
    assert ranking.groups[0] == [ranking.shown_order[2]] and len(ranking.groups) == 2
    # Revealing the models is offered only for labeled prompts.
    assert not page.reveal.isEnabled()
    qtbot.keyClick(page.board, Qt.Key.Key_Left)
    assert page.reveal.isEnabled()
    page.reveal.setChecked(True)
    assert "model: base" in page.panes[0].footer.text()


def test_no_model_says_so_and_keys_do_nothing(window, tiny_project, qtbot):
    window.session.open_project(tiny_project)
    page = window.rank_page
    page.ask_name = lambda current: "ana"
    window.show_page("Rank")
    assert "Load a model" in page.panes[0].text.toPlainText()
    qtbot.keyClick(page.board, Qt.Key.Key_1)
    qtbot.keyClick(page.board, Qt.Key.Key_Return)
    assert window.session.project.counts()["rankings"] == 0


def test_drag_reorders_r_makes_new_responses_and_a_busy_model_is_reported(window, tiny_project, qtbot):
    page = prepare(window, tiny_project, qtbot)
    qtbot.waitUntil(lambda: page.batch is not None, timeout=30_000)
    page.auto_submit.setChecked(False)
    press(qtbot, page, Qt.Key.Key_1, Qt.Key.Key_3)
    assert [page.strip.item(i).text().strip() for i in range(page.strip.count())] == ["1", "3", "2"]
    page.strip.model().moveRow(page.strip.rootIndex(), 1, page.strip.rootIndex(), 0)  # a drag of "3" to the front
    assert page.draft.groups == [[2], [0], [1]] and page.panes[2].place.text() == "1st"

    old = page.batch.uid
    press(qtbot, page, Qt.Key.Key_R)
    assert page.batch is None  # the panes wait for the new responses
    qtbot.waitUntil(lambda: page.batch is not None, timeout=30_000)
    assert page.batch.uid != old and page.draft.groups == []
    assert len(RankingStore(window.session.project).latest_batch(page.prompt_id).responses) == 3

    # Another job holds the model: generation says so instead of hanging, and retries later.
    window.session.release_model()  # what a training run does first: stop making responses ahead
    with window.session.models.hold("SFT training"):
        press(qtbot, page, Qt.Key.Key_R)
        qtbot.waitUntil(lambda: "busy" in page.status.text(), timeout=10_000)
    press(qtbot, page, Qt.Key.Key_Right, Qt.Key.Key_Left)  # moving on asks again
    qtbot.waitUntil(lambda: page.batch is not None, timeout=30_000)
