"""Every page showing a kind of record is fresh after any store changes it, whoever wrote it
(issue 15): changes flow from the stores through the project to one queued signal."""

from PySide6.QtWidgets import QApplication

from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.data.sft_store import SftStore
from workbench.train.runs import RunRecord

TURNS = [{"role": "user", "content": "Where is my parcel?"}, {"role": "assistant", "content": "On its way."}]


def settle():
    for _ in range(3):
        QApplication.processEvents()


def test_each_store_change_reaches_every_page_showing_it(window, tiny_project, qtbot):
    session = window.session
    window.rank_page.ask_name = lambda current: "ana"
    session.open_project(tiny_project)
    session.load_model(session.project.base_model)
    qtbot.waitUntil(lambda: session.models.loaded and not session.loading, timeout=30_000)
    project = session.project
    PromptStore(project).delete([row.id for row in PromptStore(project).rows()])  # start with none

    # SFT examples written outside the SFT page (as "Make ideal" on the Rank page does).
    window.show_page("Rank")
    example = SftStore(project).add(TURNS, source="ranking: prompt 1")
    settle()
    window.show_page("SFT data")
    assert window.sft_page.model.rowCount() == 1 and window.sft_page.summary.text().startswith("1 example")
    window.show_page("SFT training")
    training = window.sft_training_page
    assert training.start_button.isEnabled() and training.hint.text().startswith("1 examples")
    SftStore(project).delete([example])
    settle()
    assert not training.start_button.isEnabled() and "Add SFT examples" in training.hint.text()

    # Prompts, responses and rankings (as a pack import on the Team page writes them).
    window.show_page("Team")
    prompt = PromptStore(project).add("I want a refund.")
    other = PromptStore(project).add("Change my address.")
    settle()
    window.show_page("Rank")
    rank = window.rank_page
    rank.set_annotator("ana", remember=False)
    assert "0 / 2 labeled" in rank.progress.text()
    RankingStore(project).add_batch(other, ["Sure.", "No."], [{}, {}])  # from a pack, say
    qtbot.waitUntil(lambda: rank.prompt_id == prompt and rank.batch is not None, timeout=30_000)
    batch = rank.batch
    ids = [r.id for r in batch.responses]
    RankingStore(project).save_ranking(batch.uid, "ana", [[ids[0]], ids[1:]])
    settle()
    assert "1 / 2 labeled" in rank.progress.text()
    window.show_page("Project")
    counts = window.project_page.count_labels
    responses = len(batch.responses) + 2
    assert counts["prompts"].text() == "2" and counts["responses"].text() == str(responses)
    assert counts["rankings"].text() == "1"

    # A deleted prompt leaves the Rank page (its responses and rankings go with it).
    window.show_page("Rank")
    rank.show_prompt(prompt)
    PromptStore(project).delete([prompt])
    settle()
    assert rank.prompt_id == other
    window.show_page("Project")
    assert counts["responses"].text() != str(responses) and counts["rankings"].text() == "0"

    # Runs: the Runs page lists a run created and finished elsewhere (the CLI, a resumed run).
    record = RunRecord.create(project, "sft", {})
    record.set_status("finished")
    settle()
    window.show_page("Runs")
    assert window.runs_page.table.rowCount() == 1 and window.runs_page.table.item(0, 2).text() == "finished"

    # Settings: a rename shows in the window title and on the Project page.
    project.rename("Support bot")
    settle()
    assert window.windowTitle().startswith("Support bot")
    window.show_page("Project")
    assert window.project_page.title.text() == "Support bot"


def test_a_new_project_leaves_nothing_of_the_old_one_on_screen(window, tmp_path):
    session = window.session
    window.rank_page.ask_name = lambda current: "ana"
    session.new_project(tmp_path / "first.rlhf")
    window.show_page("SFT data")
    sft = window.sft_page
    sft.add_example()
    sft.undo()
    assert sft.status.text().startswith("Undone")
    rank = window.rank_page
    rank.status.setText("Saved prompt 9: 1 > 2")
    session.new_project(tmp_path / "empty.rlhf")
    settle()
    assert sft.status.text() == "" and rank.status.text() == ""
    window.show_page("Rank")
    for button in (rank.tie_button, rank.undo_button, rank.submit_button, rank.all_bad_button, rank.skip_button):
        assert not button.isEnabled(), button.text()


def test_save_as_keeps_the_name_and_the_project_page_renames(window, tmp_path):
    session = window.session
    session.new_project(tmp_path / "support.rlhf")
    session.project.rename("Customer support")
    session.save_project_as(tmp_path / "copy.rlhf")
    assert session.project.path.name == "copy.rlhf" and session.project.name == "Customer support"
    window.show_page("Project")
    page = window.project_page
    page.title.setText("Refunds only")
    page.title.editingFinished.emit()
    page.description.setPlainText("Answers about refunds, labeled by ana and bo.")
    page._save_description()
    assert session.project.name == "Refunds only"
    assert session.project.description == "Answers about refunds, labeled by ana and bo."
    page.title.setText("   ")
    page.title.editingFinished.emit()
    assert session.project.name == "Refunds only" and "needs a name" in page.message.text()


def test_long_status_texts_never_widen_the_window(window, tmp_path):
    session = window.session
    window.rank_page.ask_name = lambda current: "ana"
    session.new_project(tmp_path / "wide.rlhf")
    window.resize(1366, 768)
    settle()
    width = window.width()
    long = "Could not score: " + "the reward model says something very long " * 20
    for name in window.pages:
        window.show_page(name)
        settle()
    window.model_label.setText("Model: " + "a-very-long-model-folder-name-" * 10)
    window.show_page("Rank")
    for label in (window.rank_page.status, window.rank_page.progress, window.rank_page.waiting):
        label.setText(long)
    settle()
    assert window.width() == width
    assert window.rank_page.status.text() == long and window.rank_page.status.toolTip() == long
    window.show_page("SFT data")
    window.sft_page.status.setText(long)
    settle()
    assert window.width() == width
