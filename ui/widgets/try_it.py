"""The Try-it box: a prompt in, a streamed chat reply out, with sampling settings."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QKeyEvent, QTextCursor
from PySide6.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit,
    QPushButton, QSpinBox, QVBoxLayout,
)

from workbench.models.generation import SamplingSettings, stream_chat
from workbench.train.runs import finished_adapters
from workbench.train.sft import adapter_name
from workbench.progress import TextChunk
from ui.change_flow import follow
from ui.session import WorkbenchSession


class PromptEdit(QPlainTextEdit):
    """A prompt field that sends on Ctrl+Enter (a QShortcut never sees it: the editor eats Return)."""

    submitted = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and \
                event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.submitted.emit()
            return
        super().keyPressEvent(event)


class TryItBox(QGroupBox):
    def __init__(self, session: WorkbenchSession):
        super().__init__("Try it")
        self.session = session
        self.task = None

        self.source = QComboBox()
        self.source.setToolTip("Answer with the plain base model, or with the adapter a finished SFT run made.")
        self.system = QLineEdit()
        self.system.setPlaceholderText("Optional system prompt")
        self.prompt = PromptEdit()
        self.prompt.setPlaceholderText("Type a prompt and press Ctrl+Enter")
        self.prompt.setMaximumHeight(110)
        self.temperature = QDoubleSpinBox(minimum=0.0, maximum=2.0, singleStep=0.1, value=0.7)
        self.temperature.setToolTip("0 = greedy decoding")
        self.top_p = QDoubleSpinBox(minimum=0.05, maximum=1.0, singleStep=0.05, value=0.9)
        self.max_tokens = QSpinBox(minimum=1, maximum=4096, value=200)
        self.seed = QSpinBox(minimum=-1, maximum=2**31 - 1, value=-1)
        self.seed.setSpecialValueText("random")
        self.send = QPushButton("Send")
        self.send.setToolTip("Ctrl+Enter")
        self.stop = QPushButton("Stop")
        self.reply = QPlainTextEdit()
        self.reply.setReadOnly(True)
        self.reply.setPlaceholderText("The reply streams here.")
        self.status = QLabel("")

        settings = QHBoxLayout()
        for label, widget in (("Temperature", self.temperature), ("Top-p", self.top_p),
                              ("Max tokens", self.max_tokens), ("Seed", self.seed)):
            form = QFormLayout()
            form.addRow(label, widget)
            settings.addLayout(form)
        buttons = QHBoxLayout()
        buttons.addWidget(self.send)
        buttons.addWidget(self.stop)
        buttons.addWidget(self.status, 1)
        source_row = QFormLayout()
        source_row.addRow("Answer with", self.source)
        layout = QVBoxLayout(self)
        layout.addLayout(source_row)
        layout.addWidget(self.system)
        layout.addWidget(self.prompt)
        layout.addLayout(settings)
        layout.addLayout(buttons)
        layout.addWidget(self.reply, 1)

        self.send.clicked.connect(self.generate)
        self.stop.clicked.connect(self._stop)
        self.prompt.submitted.connect(self.generate)
        session.model_changed.connect(self._update_enabled)
        session.model_changed.connect(self._list_sources)
        follow(session, self, {"runs"}, self._list_sources)  # a run finished with an adapter
        session.project_changed.connect(self._list_sources)
        self._list_sources()
        self._update_enabled()

    @Slot()
    def _list_sources(self) -> None:
        """The base, then every finished SFT adapter of the project, newest first."""
        chosen = self.source.currentText()
        self.source.clear()
        self.source.addItem("Base model", None)
        project = self.session.project
        for run_id, folder in finished_adapters(project) if project is not None else []:
            self.source.addItem(f"SFT adapter of run {run_id}", (adapter_name(run_id), folder))
        if self.source.findText(chosen) >= 0:
            self.source.setCurrentText(chosen)

    def settings(self) -> SamplingSettings:
        seed = self.seed.value()
        return SamplingSettings(temperature=self.temperature.value(), top_p=self.top_p.value(),
                                max_new_tokens=self.max_tokens.value(), seed=None if seed < 0 else seed)

    def messages(self) -> list[dict]:
        messages = [{"role": "system", "content": self.system.text().strip()}] if self.system.text().strip() else []
        return [*messages, {"role": "user", "content": self.prompt.toPlainText().strip()}]

    @Slot()
    def generate(self) -> None:
        if self.generating or not self.session.models.loaded or not self.prompt.toPlainText().strip():
            return
        self.session.release_model()
        models, messages, settings = self.session.models, self.messages(), self.settings()
        adapter, folder = self.source.currentData() or (None, None)

        def reply(should_stop):
            with models.using(adapter, "answering in Try it", folder) as model:
                yield from stream_chat(model, models.tokenizer, messages, settings, should_stop)

        self.reply.clear()
        self.status.setText("Generating…")
        self.task = self.session.run_task(reply, on_item=self._append, on_error=self._failed,
                                          on_finished=self._finished)
        self._update_enabled()

    @property
    def generating(self) -> bool:
        return self.task is not None and self.task.running

    @Slot()
    def _stop(self) -> None:
        if self.generating:
            self.task.stop()

    def _append(self, chunk: TextChunk) -> None:
        cursor = self.reply.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(chunk.text)

    def _failed(self, message: str) -> None:
        self.status.setText(message)

    def _finished(self, outcome: str) -> None:
        if outcome != "failed":
            self.status.setText({"done": "Done.", "cancelled": "Stopped."}[outcome])
        self._update_enabled()

    @Slot()
    def _update_enabled(self) -> None:
        ready = self.session.models.loaded and not self.session.loading
        self.send.setEnabled(ready and not self.generating)
        self.stop.setEnabled(self.generating)
        if not self.session.models.loaded:
            self.status.setText("Load a model to try it.")
        elif not self.generating and self.status.text() == "Load a model to try it.":
            self.status.setText("Ready: Ctrl+Enter sends.")
