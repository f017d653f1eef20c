"""Opening a shared project in the GUI never runs its model's code without asking (issue 19)."""

from workbench.config import ModelSpec
from workbench.models import trust
from workbench.project import Project
from ui.app import open_first_project


def shared_project(tmp_path, folder):
    project = Project.create(tmp_path / "shared")
    project.set_base_model(ModelSpec(kind="folder", location=str(folder), trust_remote_code=True))
    project.close()
    return project.path


def open_and_wait(qtbot, window, path):
    session = window.session
    failures = []
    session.model_failed.connect(failures.append)
    open_first_project(session, window, path)
    qtbot.waitUntil(lambda: not session.loading, timeout=60_000)
    return failures


def test_start_up_without_anyone_to_ask_refuses_the_code(qtbot, window, code_model_dir, tmp_path):
    folder, marker = code_model_dir
    assert window.session.confirm_trust is None  # as in `workbench screenshots` and every test
    failures = open_and_wait(qtbot, window, shared_project(tmp_path, folder))
    assert not marker.exists()
    assert failures and "never a project file's" in failures[0]
    qtbot.waitUntil(lambda: window.statusBar().currentMessage() == "The model did not load; the Model page says why.")


def test_the_user_is_asked_and_no_refuses(qtbot, window, code_model_dir, tmp_path):
    folder, marker = code_model_dir
    asked = []
    window.session.confirm_trust = lambda text: asked.append(text) or False
    failures = open_and_wait(qtbot, window, shared_project(tmp_path, folder))
    assert len(asked) == 1 and "configuration_evil.py" in asked[0] and "can never grant it" in asked[0]
    assert not marker.exists() and failures


def test_yes_is_remembered_for_these_files(qtbot, window, code_model_dir, tmp_path):
    folder, marker = code_model_dir
    window.session.confirm_trust = lambda text: True
    open_and_wait(qtbot, window, shared_project(tmp_path, folder))
    assert marker.exists()  # the user allowed it: the model's code ran
    spec = ModelSpec(kind="folder", location=str(folder), trust_remote_code=True)
    assert trust.pending(spec, folder) == []
