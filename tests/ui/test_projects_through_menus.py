from PySide6.QtWidgets import QFileDialog

from ui.app import open_first_project
from ui.main_window import MainWindow
from ui.session import WorkbenchSession

from workbench.data.prompts import PromptStore

from .conftest import menu_action


def choose_file(monkeypatch, path):
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))


def test_new_save_as_open_and_recent_through_the_menus(window, tmp_path, monkeypatch, qtbot):
    choose_file(monkeypatch, tmp_path / "first")
    menu_action(window, "File", "New project…").trigger()
    session = window.session
    assert session.project.path == (tmp_path / "first.rlhf").resolve()
    assert "first" in window.project_label.text() and window.project_page.title.text() == "first"
    PromptStore(session.project).add("Where is my parcel?")

    choose_file(monkeypatch, tmp_path / "second.rlhf")
    menu_action(window, "File", "Save project as…").trigger()
    assert session.project.path.name == "second.rlhf"
    assert window.project_page.count_labels["prompts"].text() == "1"

    choose_file(monkeypatch, tmp_path / "first.rlhf")
    menu_action(window, "File", "Open project…").trigger()
    assert session.project.path.name == "first.rlhf"

    recent = menu_action(window, "File", "Open recent").menu().actions()
    assert [a.text().split()[0] for a in recent] == ["first", "second"]
    recent[1].trigger()
    assert session.project.path.name == "second.rlhf"
    assert session.project.counts()["prompts"] == 1


def test_the_last_project_reopens_at_start(window, tmp_path, monkeypatch, qtbot):
    choose_file(monkeypatch, tmp_path / "kept")
    menu_action(window, "File", "New project…").trigger()
    PromptStore(window.session.project).add("saved at once")
    window.close()  # closes the project too

    session = WorkbenchSession()
    again = MainWindow(session)
    qtbot.addWidget(again)
    open_first_project(session, again, None, load_model=False)
    assert session.project.path.name == "kept.rlhf"
    assert session.project.counts()["prompts"] == 1
    session.shutdown()


def test_opening_a_bad_file_warns_and_keeps_the_current_project(window, tmp_path, monkeypatch, warnings):
    choose_file(monkeypatch, tmp_path / "good")
    menu_action(window, "File", "New project…").trigger()
    bad = tmp_path / "bad.rlhf"
    bad.write_text("this is not a database")
    choose_file(monkeypatch, bad)
    menu_action(window, "File", "Open project…").trigger()
    assert warnings and "not an SQLite file" in warnings[0]
    assert window.session.project.path.name == "good.rlhf"
    assert bad.read_text() == "this is not a database"


def test_a_missing_last_project_falls_back_to_the_demo(tmp_path, qtbot, monkeypatch, warnings):
    demo = tmp_path / "demo.rlhf"
    monkeypatch.setattr("ui.app.ensure_demo_project", lambda: _make(demo))
    session = WorkbenchSession()
    main = MainWindow(session)
    qtbot.addWidget(main)
    open_first_project(session, main, tmp_path / "gone.rlhf", load_model=False)
    assert warnings and "does not exist" in warnings[0]
    assert session.project.path == demo.resolve()
    session.shutdown()


def _make(path):
    from workbench.project import Project

    Project.create(path).close()
    return path


def test_help_lists_every_shortcut_and_about_names_the_versions(window, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    shown = []
    monkeypatch.setattr(QMessageBox, "information", lambda parent, title, text, *a: shown.append(text))
    monkeypatch.setattr(QMessageBox, "about", lambda parent, title, text: shown.append(text))
    menu_action(window, "Help", "Keyboard shortcuts").trigger()
    assert "Go › Rank" in shown[-1] and "Ctrl+5" in shown[-1] and "Enter submit" in shown[-1]
    menu_action(window, "Help", "About RLHF Workbench").trigger()
    for name in ("torch", "transformers", "peft", "bitsandbytes", "no model loaded yet"):
        assert name in shown[-1]
