"""The Runs page's two ways off and back onto this machine: export a stage as a ready-to-run job
for TRL or OpenRLHF, and import an adapter or merged model trained there as a run. Both do
their work in a background task (an export may merge the reward model into the base) and show
the core's message, success or error, in the dialog."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Slot
from PySide6.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton,
    QVBoxLayout, QWidget,
)

from workbench.errors import WorkbenchError
from workbench.jobs.openrlhf_job import OPENRLHF_VERSION
from workbench.jobs.trl_job import TRL_VERSION
from ui.session import WorkbenchSession

STAGES = (("sft", "SFT: fine-tune on the SFT examples"), ("rm", "Reward model: on the rankings"),
          ("dpo", "DPO: a policy on the rankings"), ("ppo", "PPO: a policy against the reward model (RLOO on TRL)"))
ENGINES = (("trl", f"TRL {TRL_VERSION} with accelerate"), ("openrlhf", f"OpenRLHF {OPENRLHF_VERSION} with Ray"))
AS_KINDS = (("sft", "an SFT adapter"), ("policy", "a policy (compared with PPO and DPO)"),
            ("rm", "a reward model (with its score head)"))


def _path_row(edit: QLineEdit, browse) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(edit, 1)
    button = QPushButton("Browse…")
    button.clicked.connect(browse)
    layout.addWidget(button)
    return row


class _TransferDialog(QDialog):
    """A form, an OK button that starts the task, and the outcome beneath."""

    def __init__(self, session: WorkbenchSession, title: str, intro: str, ok_text: str, parent=None):
        super().__init__(parent)
        self.session = session
        self.setWindowTitle(title)
        self.setMinimumWidth(560)
        self.form = QFormLayout()
        self.outcome = QLabel("")
        self.outcome.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.ok = self.buttons.addButton(ok_text, QDialogButtonBox.ButtonRole.ActionRole)
        self.ok.clicked.connect(self._start)
        self.buttons.rejected.connect(self.reject)
        text = QLabel(intro)
        text.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(text)
        layout.addLayout(self.form)
        layout.addWidget(self.outcome)
        layout.addWidget(self.buttons)
        self.task = None

    def work(self) -> str:
        raise NotImplementedError

    @Slot()
    def _start(self) -> None:
        if self.session.project is None or (self.task is not None and self.task.running):
            return
        self.ok.setEnabled(False)
        self.outcome.setText("Working…")

        def factory(should_stop):
            yield self.work()

        self.task = self.session.run_task(factory, on_item=self._done, on_error=self._failed,
                                          on_finished=lambda _: self.ok.setEnabled(True))

    def _done(self, message: str) -> None:
        self.outcome.setText(message)

    def _failed(self, message: str) -> None:
        self.outcome.setText(f"<b>Could not do it:</b> {message}")


class ExportJobDialog(_TransferDialog):
    def __init__(self, session: WorkbenchSession, parent=None):
        super().__init__(session, "Export a training job", (
            "Write a folder that trains on another engine as it is: the same data and split as this project's "
            "trainer, the stage's last settings translated, a run.sh for 1, 8 or N GPUs and a README. "
            "job.json lists the settings that engine has no equivalent for."), "Export", parent)
        self.engine, self.stage = QComboBox(), QComboBox()
        for value, text in ENGINES:
            self.engine.addItem(text, value)
        for value, text in STAGES:
            self.stage.addItem(text, value)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("a new folder, e.g. ~/jobs/support-dpo")
        self.form.addRow("Engine", self.engine)
        self.form.addRow("Stage", self.stage)
        self.form.addRow("Folder", _path_row(self.folder, self._browse))

    @Slot()
    def _browse(self) -> None:
        chosen, _ = QFileDialog.getSaveFileName(self, "New job folder", str(Path.home() / "job"))
        if chosen:
            self.folder.setText(chosen)

    def work(self) -> str:
        from workbench.jobs.export_job import export_job

        if not self.folder.text().strip():
            raise WorkbenchError("choose a folder to write the job to")
        job = export_job(self.session.project, Path(self.folder.text().strip()).expanduser(),
                         self.engine.currentData(), self.stage.currentData())
        return (f"Wrote the {job.stage} job to {job.folder}: {job.train_rows} training and {job.test_rows} test "
                f"rows; {len(job.unmapped)} of our settings have no equivalent (see job.json). Start it with "
                f"run.sh; bring its output back with Import adapter.")


class ImportAdapterDialog(_TransferDialog):
    def __init__(self, session: WorkbenchSession, parent=None):
        super().__init__(session, "Import a model trained elsewhere", (
            "A LoRA adapter folder (adapter_config.json and adapter_model.safetensors), or a merged model's "
            "folder, trained from this project's base model becomes a finished run: it answers in Try it, "
            "starts PPO or DPO, and is compared in Did it work? and ranked blind like the project's own. Its "
            "layers are checked against the base first; only safetensors are read."), "Import", parent)
        self.kind, self.as_kind = QComboBox(), QComboBox()
        self.kind.addItem("A LoRA adapter", "adapter")
        self.kind.addItem("A merged model (stored as a rank-64 LoRA)", "model")
        for value, text in AS_KINDS:
            self.as_kind.addItem(text, value)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("e.g. the output/ folder of an exported job")
        self.form.addRow("Folder", _path_row(self.folder, self._browse))
        self.form.addRow("It is", self.kind)
        self.form.addRow("Use it as", self.as_kind)

    @Slot()
    def _browse(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Adapter or model folder", str(Path.home()))
        if chosen:
            self.folder.setText(chosen)

    def work(self) -> str:
        from workbench.jobs.import_run import import_adapter, import_merged_model

        folder = Path(self.folder.text().strip()).expanduser()
        if not self.folder.text().strip():
            raise WorkbenchError("choose the adapter's folder")
        project = self.session.project
        if self.kind.currentData() == "adapter":
            run_id = import_adapter(project, folder, self.as_kind.currentData())
        else:
            run_id = import_merged_model(project, folder, self.as_kind.currentData())
        return f"Imported {folder.name} as run {run_id}; it is on the Runs page."
