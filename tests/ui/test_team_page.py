"""Team page: a pack goes to a teammate and comes back labeled; agreement and disagreements show;
a disagreement opens on the Rank page; preferences export from the page."""

import json

from PySide6.QtWidgets import QMessageBox

from workbench import app_settings
from workbench.data.packs import export_pack, import_pack
from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.project import Project


def labeled_project(path, annotator, orders):
    """A project with one 3-response batch per order, ranked by `annotator` in that order."""
    project = Project.create(path)
    store = RankingStore(project)
    for i, order in enumerate(orders):
        prompt = PromptStore(project).add(f"question {i}")
        batch = store.add_batch(prompt, [f"answer {i}.{j}" for j in range(3)], [{"source": "base"}] * 3)
        ids = [r.id for r in batch.responses]
        store.save_ranking(batch.uid, annotator, [[ids[p]] for p in order], seconds_spent=10)
    return project


def test_a_pack_round_trip_shows_agreement_and_opens_a_disagreement(window, tmp_path, qtbot, monkeypatch):
    shown = []
    monkeypatch.setattr(QMessageBox, "information", lambda parent, title, text, *a: shown.append(text))
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text, *a: shown.append(text))
    mine = labeled_project(tmp_path / "mine.rlhf", "ana", [[0, 1, 2], [0, 1, 2], [2, 1, 0]])
    mine.close()
    window.session.open_project(tmp_path / "mine.rlhf")
    app_settings.set_annotator("ana")
    window.show_page("Team")
    page = window.team_page
    assert "No prompt has been ranked by two annotators" in page.summary.text()

    # Out to a teammate without labels; they label in their own project and send theirs back.
    page.export_pack_to(str(tmp_path / "out.rlhfpack"))
    assert json.loads((tmp_path / "out.rlhfpack").read_text())["labels"] is False
    theirs = Project.create(tmp_path / "theirs.rlhf")
    import_pack(theirs, tmp_path / "out.rlhfpack")
    store = RankingStore(theirs)
    for prompt, order in zip(PromptStore(theirs).rows(), ([0, 1, 2], [1, 0, 2], [2, 1, 0])):
        batch = store.latest_batch(prompt.id)
        store.save_ranking(batch.uid, "bo", [[batch.responses[p].id] for p in order], seconds_spent=8)
    export_pack(theirs, tmp_path / "back.rlhfpack", with_labels=True, annotator="bo")
    theirs.close()

    page.import_pack_from(str(tmp_path / "back.rlhfpack"))
    page.import_pack_from(str(tmp_path / "back.rlhfpack"))  # twice: nothing new
    assert shown[-2:] == ["Imported: 3 labels added.", "Imported: 3 labels already here."]
    project = window.session.project
    assert project.counts()["rankings"] == 6 and project.counts()["prompts"] == 3
    assert "<b>3 prompts</b>" in page.summary.text() and "Cohen's κ" in page.summary.text()
    assert "From 3 shared prompts these figures are rough" in page.summary.text()  # a small-sample warning
    assert page.annotators.rowCount() == 2 and page.pairs.item(0, 2).text() == "9"
    assert page.pairs.item(0, 3).text() == "0.89"  # 8 of 9 response pairs judged alike
    assert page.disagreements.rowCount() == 1 and page.disagreements.item(0, 0).text() == "question 1"

    window.rank_page.ask_name = lambda current: "ana"
    page._open_disagreement(0, 0)
    assert window.stack.currentWidget() is window.rank_page
    assert window.rank_page.prompt_view.toPlainText().endswith("question 1")

    # Preferences: pairs for TRL, from every annotator's ranking.
    window.show_page("Team")
    page.prefs_format.setCurrentIndex(page.prefs_format.findData("standard"))
    page.export_prefs_to(str(tmp_path / "prefs.jsonl"))
    rows = [json.loads(line) for line in (tmp_path / "prefs.jsonl").read_text().splitlines()]
    assert len(rows) == 18 and set(rows[0]) == {"prompt", "chosen", "rejected"}

    # A broken pack is refused with a message and changes nothing.
    (tmp_path / "broken.rlhfpack").write_text('{"format": "something else"}')
    page.import_pack_from(str(tmp_path / "broken.rlhfpack"))
    assert "nothing was changed" in shown[-1]
    assert project.counts()["rankings"] == 6


def test_a_pack_over_the_size_cap_is_merged_only_if_the_user_says_so(window, tmp_path, monkeypatch):
    from workbench.data import untrusted

    mine = labeled_project(tmp_path / "mine.rlhf", "ana", [[0, 1, 2], [0, 1, 2], [2, 1, 0]])
    export_pack(mine, tmp_path / "all.rlhfpack", with_labels=True)
    mine.close()
    Project.create(tmp_path / "empty.rlhf").close()
    window.session.open_project(tmp_path / "empty.rlhf")
    page = window.team_page
    monkeypatch.setattr(untrusted, "MAX_IMPORT_ROWS", 5)
    shown, answers = [], [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    monkeypatch.setattr(QMessageBox, "information", lambda parent, title, text, *a: shown.append(text))
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text, *a: shown.append(text) or answers.pop(0))
    page.import_pack_from(str(tmp_path / "all.rlhfpack"))
    assert window.session.project.counts()["prompts"] == 0 and "Import it anyway?" in shown[-1]
    page.import_pack_from(str(tmp_path / "all.rlhfpack"))
    assert window.session.project.counts()["prompts"] == 3 and shown[-1].startswith("Imported")
