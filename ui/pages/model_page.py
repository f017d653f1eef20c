"""Model page: choose a base model and load options, load it in the background, see what loaded."""

from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QCompleter, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
    QLineEdit, QProgressBar, QPushButton, QVBoxLayout, QWidget,
)

from workbench.config import DEVICES, DTYPES, QUANTIZATIONS, ModelSpec
from workbench.models.sources import cached_hub_ids
from workbench.progress import Progress
from ui.formatting import human_bytes, human_count
from ui.widgets.try_it import TryItBox
from ui.session import WorkbenchSession

SOURCE_LABELS = {
    "demo": "Demo model (SmolLM2-135M-Instruct)",
    "folder": "Hugging Face folder",
    "gguf": "GGUF file",
    "hub": "Hub id from the local cache",
}
OPTION_LABELS = {
    "auto": "Auto", "cuda": "CUDA", "mps": "Apple MPS", "cpu": "CPU",
    "nf4": "4-bit NF4", "int8": "8-bit", "none": "None (full precision)",
    "bfloat16": "bfloat16", "float16": "float16", "float32": "float32",
}
INFO_ROWS = [
    ("name", "Model"), ("architecture", "Architecture"), ("parameters", "Parameters"),
    ("memory_bytes", "Memory used"), ("device", "Device"), ("quantization", "Quantization"),
    ("dtype", "Dtype"), ("prompt_format", "Prompt format"),
    ("ignored_generation_defaults", "Model's sampling defaults"), ("context_length", "Context length"),
    ("vocab_size", "Vocabulary"), ("load_seconds", "Load time"),
]


def combo(values: tuple[str, ...], labels: dict[str, str]) -> QComboBox:
    box = QComboBox()
    for value in values:
        box.addItem(labels.get(value, value), value)
    return box


class ModelPage(QWidget):
    def __init__(self, session: WorkbenchSession):
        super().__init__()
        self.session = session
        self.setObjectName("ModelPage")

        self.source = combo(tuple(SOURCE_LABELS), SOURCE_LABELS)
        self.location = QLineEdit()
        self.location.setPlaceholderText("Folder, .gguf file, or organisation/name")
        self.browse = QPushButton("Browse…")
        self.device = combo(DEVICES, OPTION_LABELS)
        self.quantization = combo(QUANTIZATIONS, OPTION_LABELS)
        self.quantization.setItemText(0, "Auto (4-bit NF4 on CUDA, else none)")
        self.dtype = combo(DTYPES, OPTION_LABELS)
        self.dtype.setItemText(0, "Auto (bfloat16 on GPU, float32 on CPU)")
        self.allow_pickle = QCheckBox("Allow pickle weights (.bin/.pt)")
        self.allow_pickle.setToolTip("Pickle files can run arbitrary code when loaded. Only for models you trust. "
                                     "Loading asks you once for these exact files; a project file never allows it.")
        self.trust_remote_code = QCheckBox("Trust remote code")
        self.trust_remote_code.setToolTip("Runs Python code shipped with the model. Only for models you trust. "
                                          "Loading asks you once for these exact files; a project file never allows it.")
        self.load_button = QPushButton("Load model")
        self.load_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel")
        self.progress = QProgressBar()
        self.progress.setTextVisible(False)
        self.status = QLabel("No model loaded.")
        self.status.setWordWrap(True)
        self.status.setObjectName("loadStatus")

        location_row = QHBoxLayout()
        location_row.addWidget(self.location, 1)
        location_row.addWidget(self.browse)
        form = QFormLayout()
        form.addRow("Source", self.source)
        form.addRow("Location", location_row)
        form.addRow("Device", self.device)
        form.addRow("Quantization", self.quantization)
        form.addRow("Dtype", self.dtype)
        form.addRow("", self.allow_pickle)
        form.addRow("", self.trust_remote_code)
        buttons = QHBoxLayout()
        buttons.addWidget(self.load_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        source_box = QGroupBox("Base model")
        source_layout = QVBoxLayout(source_box)
        source_layout.addLayout(form)
        source_layout.addLayout(buttons)
        source_layout.addWidget(self.progress)
        source_layout.addWidget(self.status)

        self.info_labels: dict[str, QLabel] = {}
        info_box = QGroupBox("Loaded")
        info_form = QFormLayout(info_box)
        for key, label in INFO_ROWS:
            value = QLabel("—")
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setWordWrap(True)  # the prompt format and sampling defaults run long
            self.info_labels[key] = value
            info_form.addRow(label, value)

        left = QVBoxLayout()
        left.addWidget(source_box)
        left.addWidget(info_box)
        left.addStretch(1)
        self.try_it = TryItBox(session)
        layout = QHBoxLayout(self)
        layout.addLayout(left, 2)
        layout.addWidget(self.try_it, 3)

        self.source.currentIndexChanged.connect(self._source_changed)
        self.browse.clicked.connect(self._browse)
        self.load_button.clicked.connect(self.load)
        self.cancel_button.clicked.connect(session.cancel_model_load)
        session.project_changed.connect(self._show_project_spec)
        session.model_loading.connect(self._show_progress)
        session.model_failed.connect(self._show_failure)
        session.model_changed.connect(self._show_model)
        self._show_project_spec()
        self._show_model()

    def spec(self) -> ModelSpec:
        """The form as a ModelSpec (raises ValueError with a message when incomplete)."""
        return ModelSpec(
            kind=self.source.currentData(), location=self.location.text().strip(),
            device=self.device.currentData(), quantization=self.quantization.currentData(),
            dtype=self.dtype.currentData(), allow_pickle=self.allow_pickle.isChecked(),
            trust_remote_code=self.trust_remote_code.isChecked(),
        )

    def set_spec(self, spec: ModelSpec) -> None:
        for box, value in ((self.source, spec.kind), (self.device, spec.device),
                           (self.quantization, spec.quantization), (self.dtype, spec.dtype)):
            box.setCurrentIndex(box.findData(value))
        self.location.setText(spec.location)
        self.allow_pickle.setChecked(spec.allow_pickle)
        self.trust_remote_code.setChecked(spec.trust_remote_code)

    @Slot()
    def load(self) -> None:
        try:
            spec = self.spec()
        except ValueError as error:
            self._show_failure(str(error).capitalize() + ".")
            return
        self.session.load_model(spec)
        self._set_busy(True)

    @Slot()
    def _source_changed(self) -> None:
        kind = self.source.currentData()
        self.location.setEnabled(kind != "demo")
        self.browse.setEnabled(kind in ("folder", "gguf"))
        self.location.setCompleter(QCompleter(cached_hub_ids(), self) if kind == "hub" else None)

    @Slot()
    def _browse(self) -> None:
        if self.source.currentData() == "folder":
            path = QFileDialog.getExistingDirectory(self, "Choose a Hugging Face model folder")
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Choose a GGUF file", "", "GGUF files (*.gguf)")
        if path:
            self.location.setText(path)

    @Slot()
    def _show_project_spec(self) -> None:
        project = self.session.project
        self.set_spec(project.base_model if project and project.base_model else ModelSpec())
        self._source_changed()

    @Slot(object)
    def _show_progress(self, progress: Progress) -> None:
        self._set_busy(self.session.loading)
        self.status.setText(progress.message)
        if progress.fraction is None:
            self.progress.setRange(0, 0)  # busy indicator while a stage has no known length
        else:
            self.progress.setRange(0, 100)
            self.progress.setValue(int(progress.fraction * 100))

    @Slot(str)
    def _show_failure(self, message: str) -> None:
        self.status.setText(f"<b>Could not load:</b> {message}")
        self.progress.setRange(0, 100)
        self.progress.setValue(0)

    @Slot()
    def _show_model(self) -> None:
        self._set_busy(self.session.loading)
        info = self.session.models.info
        values = info.to_dict() if info else {}
        for key, label in self.info_labels.items():
            label.setText(self._format(key, values.get(key)) if info else "—")

    def _set_busy(self, busy: bool) -> None:
        self.load_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    @staticmethod
    def _format(key: str, value) -> str:
        if value is None:
            return "unknown"
        if key == "parameters":
            return human_count(value)
        if key == "memory_bytes":
            return human_bytes(value)
        if key == "ignored_generation_defaults":
            # Every generation uses the workbench's own settings (models/generation.sampling_config).
            return f"not applied: {value}" if value else "none shipped"
        if key == "load_seconds":
            return f"{value:.1f} s"
        if key in ("context_length", "vocab_size"):
            return f"{value:,} tokens" if key == "context_length" else f"{value:,}"
        return str(value)
