from PySide6.QtCore import Qt

from workbench.config import ModelSpec


def fill_folder(page, folder):
    page.source.setCurrentIndex(page.source.findData("folder"))
    page.location.setText(str(folder))


def test_load_a_model_through_the_page(window, tiny_project, tiny_model_dir, qtbot):
    window.session.open_project(tiny_project)
    page = window.model_page
    window.show_page("Model")
    fill_folder(page, tiny_model_dir)
    qtbot.mouseClick(page.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.info_labels["architecture"].text() == "LlamaForCausalLM", timeout=30_000)
    assert page.load_button.isEnabled() and not page.cancel_button.isEnabled()
    assert page.info_labels["device"].text() == "cpu"
    assert page.info_labels["prompt_format"].text() == "the model's chat template"
    assert page.info_labels["ignored_generation_defaults"].text() == "none shipped"
    assert "tiny-llama" in window.model_label.text()
    assert window.device_label.text() == "Device: cpu · full precision"
    assert window.session.project.base_model == ModelSpec(kind="folder", location=str(tiny_model_dir))


def test_a_refused_model_shows_the_reason_and_the_app_goes_on(window, pickle_model_dir, tiny_model_dir, qtbot):
    page = window.model_page
    fill_folder(page, pickle_model_dir)
    qtbot.mouseClick(page.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Could not load" in page.status.text(), timeout=30_000)
    assert "pickle" in page.status.text()
    qtbot.waitUntil(lambda: page.load_button.isEnabled())
    page.allow_pickle.setChecked(True)
    qtbot.mouseClick(page.load_button, Qt.MouseButton.LeftButton)  # nobody to ask: still refused
    qtbot.waitUntil(lambda: "never a project file's" in page.status.text(), timeout=30_000)
    qtbot.waitUntil(lambda: page.load_button.isEnabled())
    asked = []
    window.session.confirm_trust = lambda text: asked.append(text) or True  # the user answers Yes
    qtbot.mouseClick(page.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.info_labels["architecture"].text() == "LlamaForCausalLM", timeout=30_000)
    assert "pytorch_model.bin" in asked[0]


def test_an_empty_location_is_explained_without_loading(window):
    page = window.model_page
    page.source.setCurrentIndex(page.source.findData("gguf"))
    page.location.setText("")
    page.load_button.click()
    assert "needs a location" in page.status.text()
    assert not window.session.loading


def test_try_it_streams_a_reply(window, tiny_project, qtbot):
    window.session.open_project(tiny_project)
    window.session.load_model(window.session.project.base_model)
    qtbot.waitUntil(lambda: window.session.models.loaded and not window.session.loading, timeout=30_000)
    box = window.model_page.try_it
    qtbot.waitUntil(box.send.isEnabled)
    assert box.status.text().startswith("Ready")
    qtbot.keyClicks(box.prompt, "My order hasn't arrived.")
    box.max_tokens.setValue(25)
    box.seed.setValue(3)
    qtbot.keyClick(box.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not box.generating and box.status.text() == "Done.", timeout=30_000)
    assert box.reply.toPlainText().strip()
    assert box.send.isEnabled() and not box.stop.isEnabled()


def test_project_model_is_restored_in_the_form(window, tiny_project, tiny_model_dir):
    window.session.open_project(tiny_project)
    spec = window.model_page.spec()
    assert spec.kind == "folder" and spec.location == str(tiny_model_dir)
    assert window.model_page.browse.isEnabled() and window.model_page.location.isEnabled()


def test_cancel_during_a_gguf_conversion_through_the_page(window, tmp_path, monkeypatch, qtbot):
    from workbench.errors import ModelLoadError
    from workbench.models.sources import demo_gguf_path

    try:
        gguf = demo_gguf_path()
    except ModelLoadError:
        import pytest
        pytest.skip("demo model package not installed")
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))  # force a fresh conversion
    page = window.model_page
    page.source.setCurrentIndex(page.source.findData("gguf"))
    page.location.setText(str(gguf))
    qtbot.mouseClick(page.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.status.text().startswith("Converting"), timeout=30_000)
    assert page.cancel_button.isEnabled() and page.progress.maximum() == 0  # busy indicator
    qtbot.mouseClick(page.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.status.text() == "Loading cancelled.", timeout=10_000)
    assert not window.session.models.loaded and page.load_button.isEnabled()
    assert list((tmp_path / "cache" / "models").iterdir()) == []
