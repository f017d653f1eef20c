"""The Runs page's Export as job and Import adapter, driven through the real dialogs: a DPO job
written for TRL, an error shown for a stage without data, an adapter brought back as a run that
the table lists, and another base's adapter refused in the dialog."""

import json

from PySide6.QtCore import Qt

from tests.core.test_reward import synthetic_project
from workbench.train.runs import RunRecord


def test_export_a_job_then_import_its_adapter_from_the_runs_page(window, tmp_path, tiny_model_dir, qtbot):
    project = synthetic_project(tmp_path / "p.rlhf", tiny_model_dir, prompts=8)
    path = project.path
    project.close()
    session = window.session
    session.open_project(path)
    window.show_page("Runs")
    page = window.runs_page
    assert page.export_button.isEnabled() and page.import_button.isEnabled()

    qtbot.mouseClick(page.export_button, Qt.MouseButton.LeftButton)
    dialog = page.dialog
    dialog.engine.setCurrentIndex(dialog.engine.findData("trl"))
    dialog.stage.setCurrentIndex(dialog.stage.findData("sft"))  # the project has no SFT examples
    dialog.folder.setText(str(tmp_path / "sft-job"))
    qtbot.mouseClick(dialog.ok, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Could not do it" in dialog.outcome.text(), timeout=20_000)
    assert "no usable SFT examples" in dialog.outcome.text() and not (tmp_path / "sft-job").exists()
    dialog.stage.setCurrentIndex(dialog.stage.findData("dpo"))
    dialog.folder.setText(str(tmp_path / "dpo-job"))
    qtbot.waitUntil(dialog.ok.isEnabled, timeout=5000)
    qtbot.mouseClick(dialog.ok, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Wrote the dpo job" in dialog.outcome.text(), timeout=20_000)
    job = json.loads((tmp_path / "dpo-job" / "job.json").read_text())
    assert job["engine"] == "trl" and job["stage"] == "dpo" and job["data"]["train_rows"] > 0
    dialog.close()

    # "trained elsewhere": an adapter of the right shapes, and one for another base
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(tmp_path / "output")
    other = LlamaConfig(vocab_size=base.config.vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=2)
    get_peft_model(AutoModelForCausalLM.from_config(other), LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(
        tmp_path / "other")

    qtbot.mouseClick(page.import_button, Qt.MouseButton.LeftButton)
    dialog = page.dialog
    dialog.folder.setText(str(tmp_path / "other"))
    qtbot.mouseClick(dialog.ok, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Could not do it" in dialog.outcome.text(), timeout=20_000)
    assert "trained on another base" in dialog.outcome.text()
    dialog.folder.setText(str(tmp_path / "output"))
    dialog.as_kind.setCurrentIndex(dialog.as_kind.findData("policy"))
    qtbot.waitUntil(dialog.ok.isEnabled, timeout=5000)
    qtbot.mouseClick(dialog.ok, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Imported output as run" in dialog.outcome.text(), timeout=20_000)
    run_id = int(dialog.outcome.text().split("as run ")[1].split(";")[0])
    assert RunRecord(session.project, run_id).kind == "policy"
    page.refresh()
    kinds = {page.table.item(r, 1).text() for r in range(page.table.rowCount())}
    assert any("policy" in kind.lower() for kind in kinds)
    dialog.close()
