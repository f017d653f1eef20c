"""The SFT page, driven through its real widgets: edit, undo, import, export, flags, 100k rows."""

import json
import re
import time

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QApplication, QMessageBox

from workbench.config import ModelSpec
from workbench.data.sft_formats import read_sft_file
from workbench.data.sft_store import SftStore
from workbench.models.loading import ModelSession
from workbench.errors import ProjectError
from workbench.project import Project
from ui.pages import sft_page
from ui.pages.sft_page import SftPage
from ui.qt_models.sft_table import FLAGS, MAX_PAGES, PAGE_SIZE, PROMPT, RESPONSE, TOKENS
from ui.session import WorkbenchSession


def chat(prompt, reply, *more):
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
    for index, text in enumerate(more):
        messages.append({"role": "user" if index % 2 == 0 else "assistant", "content": text})
    return messages


@pytest.fixture
def session(tmp_path):
    session = WorkbenchSession(remember_projects=False)
    session.new_project(tmp_path / "sft.rlhf")
    yield session
    session.shutdown()


@pytest.fixture
def page(session, qtbot):
    page = SftPage(session)
    qtbot.addWidget(page)
    page.resize(1200, 700)
    page.show()
    yield page
    page.close()  # saves anything still pending while the project is open


def fill(page, *examples, source=""):
    ids = SftStore(page.session.project).add_many(examples, source)
    page.model.requery()
    return ids


def column(page, col):
    return [page.model.index(row, col).data() for row in range(page.model.rowCount())]


def select_rows(page, qtbot, *rows):
    """Click the first row, Ctrl+click the others, as a user would."""
    for number, row in enumerate(rows):
        rect = page.table.visualRect(page.model.index(row, PROMPT))
        modifier = Qt.KeyboardModifier.ControlModifier if number else Qt.KeyboardModifier.NoModifier
        qtbot.mouseClick(page.table.viewport(), Qt.MouseButton.LeftButton, modifier, rect.center())


def type_at_end(qtbot, edit, text):
    edit.setFocus()
    edit.moveCursor(QTextCursor.MoveOperation.End)
    qtbot.keyClicks(edit, text)


def test_typing_is_saved_after_a_pause_and_undone_as_one_step(page, qtbot):
    (first, second) = fill(page, chat("Where is my parcel?", "Check the tracking link."),
                           chat("Refund?", "Yes."))
    page.table.selectRow(0)
    assert page.editing_id == first
    reply = page.editor.rows[1].content
    type_at_end(qtbot, reply, " Sorry")
    qtbot.waitUntil(lambda: page.store.messages(first)[1]["content"].endswith(" Sorry"), timeout=2000)
    type_at_end(qtbot, reply, " about that.")
    qtbot.waitUntil(lambda: page.store.messages(first)[1]["content"].endswith("about that."), timeout=2000)
    assert page.undo_stack.count() == 1  # one burst of typing in one field: one step
    assert page.model.index(0, RESPONSE).data() == "Check the tracking link. Sorry about that."

    page.undo_action.trigger()
    assert page.store.messages(first)[1]["content"] == "Check the tracking link."
    assert page.editor.messages()[1]["content"] == "Check the tracking link."
    assert page.model.index(0, RESPONSE).data() == "Check the tracking link."
    page.redo_action.trigger()
    assert page.store.messages(first)[1]["content"] == "Check the tracking link. Sorry about that."
    assert page.editor.rows[1].content.toPlainText() == "Check the tracking link. Sorry about that."

    # Selecting another row saves at once (no waiting for the pause), as a new step.
    type_at_end(qtbot, page.editor.rows[0].content, " Please")
    page.table.selectRow(1)
    assert page.store.messages(first)[0]["content"] == "Where is my parcel? Please"
    assert page.editing_id == second and page.undo_stack.count() == 2


def test_ctrl_z_while_typing_takes_back_the_typing(page, qtbot):
    (example,) = fill(page, chat("Hello", "Hi"))
    page.activateWindow()
    qtbot.waitUntil(page.isActiveWindow)
    reply = page.editor.rows[1].content
    type_at_end(qtbot, reply, " there")
    qtbot.keyClick(reply, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # before the save pause
    assert page.store.messages(example)[1]["content"] == "Hi"
    assert reply.toPlainText() == "Hi" and reply.hasFocus()  # the same field, still being typed in
    qtbot.keyClick(reply, Qt.Key.Key_Z,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert page.store.messages(example)[1]["content"] == "Hi there"


def test_add_message_role_change_and_remove_are_steps(page, qtbot):
    (example,) = fill(page, chat("Hello", "Hi"))
    page.editor.add_message_button.click()
    page.editor.add_message_button.click()
    assert [m["role"] for m in page.store.messages(example)] == ["user", "assistant", "user", "assistant"]
    page.editor.rows[2].role.setCurrentIndex(page.editor.rows[2].role.findData("system"))
    assert page.store.messages(example)[2]["role"] == "system"
    page.editor.rows[3].remove.click()
    assert len(page.store.messages(example)) == 3
    assert page.model.index(0, 0).sibling(0, 3).data() == 3  # Turns
    for _ in range(4):
        page.undo_action.trigger()
    assert page.store.messages(example) == chat("Hello", "Hi")
    assert len(page.editor.rows) == 2


def test_add_duplicate_and_delete_undo_and_redo(page, qtbot):
    ids = fill(page, chat("a", "1"), chat("b", "2"), chat("c", "3"))
    page.add_button.click()
    assert page.model.rowCount() == 4 and page.editing_id not in ids
    new_id = page.editing_id
    assert page.editor.messages() == chat("", "")
    page.undo_action.trigger()
    assert page.store.count() == 3
    page.redo_action.trigger()
    assert page.store.count() == 4 and page.store.messages(new_id) == chat("", "")  # the same id again

    select_rows(page, qtbot, 0, 1)
    assert sorted(page.selected_ids()) == ids[:2]
    page.duplicate_button.click()
    assert page.store.count() == 6 and len(page.store.duplicate_digests()) == 2
    page.undo_action.trigger()
    assert page.store.count() == 4

    select_rows(page, qtbot, 1, 2)
    page.delete_button.click()
    assert page.store.count() == 2 and page.status.text() == "Deleted 2 examples (Ctrl+Z to undo)"
    assert page.editing_id is not None  # the row that took their place is shown
    page.undo_action.trigger()
    assert page.store.count() == 4 and sorted(page.selected_ids()) == ids[1:]
    assert page.store.messages(ids[1]) == chat("b", "2")


def test_import_is_one_step_and_export_round_trips(page, tmp_path, warnings):
    path = tmp_path / "support.jsonl"
    rows = [{"messages": chat("Lost parcel", "Let me check.")},
            {"prompt": "Refund?", "completion": "Refunds take 5 days."},
            {"messages": chat("Hi", "Hello!", "Thanks", "You're welcome.")}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    assert page.import_file(path) == 3
    assert page.store.count() == 3 and page.undo_stack.count() == 1
    assert page.undo_stack.undoText() == "Import 3 examples from support.jsonl"
    assert column(page, 7) == ["support.jsonl"] * 3  # Source
    page.undo_action.trigger()
    assert page.store.count() == 0 and page.model.rowCount() == 0
    page.redo_action.trigger()
    assert page.store.count() == 3

    out = tmp_path / "out.jsonl"
    assert page.export_file(out) == 3
    assert page.status.text() == "Exported 3 examples to out.jsonl"
    assert read_sft_file(out).examples == list(page.store.all_messages())
    assert page.export_file(tmp_path / "out.txt") == 0
    assert "Cannot tell the format" in warnings[0] and not (tmp_path / "out.txt").exists()


def test_a_large_file_is_read_in_the_background(page, tmp_path, qtbot, monkeypatch):
    monkeypatch.setattr(sft_page, "LARGE_FILE_BYTES", 0)
    monkeypatch.setattr(sft_page, "LARGE_EXPORT", 0)
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{n}", "completion": f"a{n}"}) + "\n" for n in range(50)))
    assert page.import_file(path, valid_only=True) is None  # still reading
    qtbot.waitUntil(lambda: page.store.count() == 50, timeout=5000)
    assert page.undo_stack.count() == 1 and page.model.rowCount() == 50
    assert page.export_file(tmp_path / "out.csv") is None
    qtbot.waitUntil(lambda: page.status.text() == "Exported 50 examples to out.csv", timeout=5000)
    assert len(read_sft_file(tmp_path / "out.csv").examples) == 50


def test_a_failed_save_is_reported_and_leaves_no_undo_step(page, qtbot, warnings, monkeypatch):
    (example,) = fill(page, chat("Hi", "Hello"))

    def disk_full(*_args):
        raise ProjectError("could not save to sft.rlhf: database or disk is full.")

    with monkeypatch.context() as patch:
        patch.setattr(page.store, "update", disk_full)
        type_at_end(qtbot, page.editor.rows[1].content, "!")
        page.save_edit()
    assert warnings == ["could not save to sft.rlhf: database or disk is full."]
    assert page.undo_stack.count() == 0 and page.status.text() == "Not saved."
    assert page.editor.messages()[1]["content"] == "Hello!"  # the text stays, to save again
    page.save_edit()
    assert page.store.messages(example)[1]["content"] == "Hello!" and page.undo_stack.count() == 1


def test_a_malformed_import_lists_the_bad_lines(page, tmp_path, warnings):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}\n'
                    '{"prompt": "no completion"\n'
                    '{"prompt": "Where?", "completion": "Here."}\n'
                    '{"prompt": "only a prompt"}\n', encoding="utf-8")
    assert page.import_file(path, valid_only=False) == 0
    assert page.store.count() == 0 and page.undo_stack.count() == 0
    assert len(warnings) == 1 and "line 2:" in warnings[0] and "line 4:" in warnings[0]
    assert "2 are valid" in warnings[0]

    assert page.import_file(path, valid_only=True) == 2
    assert page.store.count() == 2 and "skipped 2 rows" in page.status.text()

    assert page.import_file(tmp_path / "missing.jsonl") == 0
    assert "does not exist" in warnings[-1]


def test_search_filter_flags_and_header_sort(page, qtbot):
    fill(page, chat("Where is my order?", "On its way."), chat("Can I get a refund?", "Yes."),
         chat("Can I get a refund?", "Yes."), chat("Broken zipper", ""), source="seed")
    flags = column(page, FLAGS)
    assert flags == ["", "duplicate", "duplicate", "empty"]
    assert page.model.index(3, FLAGS).data(Qt.ItemDataRole.ForegroundRole).name() == "#c62828"
    assert "no assistant reply" in page.model.index(3, FLAGS).data(Qt.ItemDataRole.ToolTipRole)
    assert page.summary.text() == "4 examples  ·  1 empty  ·  2 duplicates"
    assert column(page, TOKENS) == [""] * 4  # no model loaded

    page.filter.setCurrentIndex(page.filter.findData("duplicates"))
    assert page.model.rowCount() == 2
    page.filter.setCurrentIndex(page.filter.findData("empty"))
    assert column(page, PROMPT) == ["Broken zipper"]
    page.filter.setCurrentIndex(page.filter.findData("all"))

    qtbot.keyClicks(page.search, "order")
    qtbot.waitUntil(lambda: page.model.rowCount() == 1, timeout=2000)
    assert column(page, PROMPT) == ["Where is my order?"] and "1 shown" in page.summary.text()
    page.search.clear()
    qtbot.waitUntil(lambda: page.model.rowCount() == 4, timeout=2000)

    header = page.table.horizontalHeader()
    prompt_header = QPoint(header.sectionViewportPosition(PROMPT) + 10, header.height() // 2)
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=prompt_header)
    assert column(page, PROMPT) == sorted(column(page, PROMPT), key=str.lower)
    assert column(page, PROMPT)[0] == "Broken zipper"
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=prompt_header)
    assert column(page, PROMPT)[0] == "Where is my order?"
    flags_header = QPoint(header.sectionViewportPosition(FLAGS) + 10, header.height() // 2)
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=flags_header)
    assert column(page, PROMPT)[0] == "Where is my order?"  # not sortable: order and arrow stay
    assert header.sortIndicatorSection() == PROMPT


def test_the_models_chat_template_and_token_counts(page, session, tiny_model_dir):
    fill(page, chat("My order hasn't arrived.", "Sorry! Send me the order number and I will check."))
    assert page.editor.token_label.text() == "Load a model to see the chat template and token count"
    models = ModelSession()
    for _ in models.load(ModelSpec(kind="folder", location=str(tiny_model_dir), device="cpu")):
        pass
    session.models = models
    session.model_changed.emit()

    assert "<|im_start|>assistant\nSorry!" in page.editor.preview.toPlainText()
    match = re.fullmatch(r"(\d+) tokens \(max 1,024\)", page.editor.token_label.text())
    assert match and int(match[1]) == int(page.model.index(0, TOKENS).data())
    assert page.model.index(0, FLAGS).data() == ""
    page.set_max_length(5)
    assert page.model.index(0, FLAGS).data() == "too long"
    assert page.editor.token_label.text().endswith("tokens (max 5)")
    assert "c62828" in page.editor.token_label.styleSheet()


def test_100k_examples_load_fast_and_only_displayed_rows_are_fetched(page, qtbot):
    examples = [chat(f"Question {n}: where is order {n}?", f"Answer {n}.") for n in range(100_000)]
    SftStore(page.session.project).add_many(examples)
    QApplication.processEvents()  # the page hears of the import (one change) and shows it
    assert page.model.rowCount() == 100_000
    started = time.perf_counter()
    page.model.requery()
    assert time.perf_counter() - started < 2.0
    assert page.model.rowCount() == 100_000

    fetched = []
    rows = page.model.store.rows
    page.model.store.rows = lambda ids: fetched.extend(ids) or rows(ids)
    page.table.scrollToBottom()
    qtbot.wait(50)
    QApplication.processEvents()
    last_visible = page.table.rowAt(page.table.viewport().height() - 2)
    assert last_visible >= 99_990
    assert page.model.index(99_999, PROMPT).data() == "Question 99999: where is order 99999?"
    assert 0 < len(fetched) <= 2 * PAGE_SIZE
    assert page.model.cached_row_count() <= MAX_PAGES * PAGE_SIZE


def test_edits_survive_closing_and_reopening(page, session, tmp_path, qtbot):
    (example,) = fill(page, chat("Damaged box", "We will replace it."))
    type_at_end(qtbot, page.editor.rows[1].content, " Today.")
    page.hide()  # leaving the page saves at once
    path = session.project.path
    session.shutdown()
    reopened = Project.open(path)
    try:
        assert SftStore(reopened).messages(example)[1]["content"] == "We will replace it. Today."
    finally:
        reopened.close()
    session.open_project(path)
    assert page.undo_stack.count() == 0
    assert page.model.rowCount() == 1 and page.editor.messages()[1]["content"] == "We will replace it. Today."


def test_without_a_project_the_page_explains_itself(qtbot):
    session = WorkbenchSession(remember_projects=False)
    page = SftPage(session)
    qtbot.addWidget(page)
    assert not page.body.isEnabled()
    assert "Open or create a project" in page.summary.text()


def test_the_edit_menu_undoes_a_delete_on_the_data_page(window, tiny_project, qtbot):
    from tests.ui.conftest import menu_action

    project = Project.open(tiny_project)
    SftStore(project).add_many([chat("Where is it?", "On its way."), chat("Refund?", "Yes.")])
    project.close()
    window.session.open_project(tiny_project)
    window.show_page("SFT data")
    page = window.sft_page
    page.table.selectRow(0)
    page.delete_selected()
    assert page.store.count() == 1
    undo = menu_action(window, "Edit", page.undo_action.text().replace("&", ""))
    assert undo is page.undo_action and undo.text().replace("&", "") == "Undo Delete 1 example"
    undo.trigger()
    assert page.store.count() == 2


@pytest.mark.parametrize("answer, imported", [(QMessageBox.StandardButton.No, 0), (QMessageBox.StandardButton.Yes, 4)])
def test_an_import_over_the_size_cap_asks_first(page, tmp_path, monkeypatch, answer, imported):
    from workbench.data import untrusted

    monkeypatch.setattr(untrusted, "MAX_IMPORT_ROWS", 3)
    asked = []
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text, *a: asked.append(text) or answer)
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"messages": chat(f"q{i}", "a")}) + "\n" for i in range(4)), encoding="utf-8")
    assert page.import_file(path) == imported
    assert page.store.count() == imported
    assert len(asked) == 1 and "more than the 3 rows one import normally takes" in asked[0] and "--allow" not in asked[0]
