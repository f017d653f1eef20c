"""How the ranking page generates: K, the model of each slot, sampling, and how far ahead."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QSpinBox, QWidget

from workbench.config import field_docs
from workbench.data.response_generation import BASE, K_RANGE, GenerationConfig

DOCS = field_docs(GenerationConfig)


class GenerationSettings(QWidget):
    changed = Signal()

    def __init__(self):
        super().__init__()
        defaults = GenerationConfig()
        self.k = QSpinBox(minimum=K_RANGE[0], maximum=K_RANGE[1], value=defaults.k)
        self.temperature = QDoubleSpinBox(minimum=0.0, maximum=2.0, singleStep=0.1, value=defaults.temperature)
        self.top_p = QDoubleSpinBox(minimum=0.05, maximum=1.0, singleStep=0.05, value=defaults.top_p)
        self.max_tokens = QSpinBox(minimum=8, maximum=4096, singleStep=32, value=defaults.max_new_tokens)
        self.seed = QSpinBox(minimum=-1, maximum=2**31 - 1, value=defaults.seed)
        self.seed.setSpecialValueText("random")
        self.ahead = QSpinBox(minimum=0, maximum=20, value=3)
        self.ahead.setToolTip("How many of the next prompts get their responses made while you label")
        for name, editor in (("k", self.k), ("temperature", self.temperature), ("top_p", self.top_p),
                             ("max_new_tokens", self.max_tokens), ("seed", self.seed)):
            editor.setToolTip(DOCS.get(name, ""))
        self.sources: list[QComboBox] = []
        self.sources_row = QHBoxLayout()
        self.sources_row.setSpacing(2)
        self._available = [BASE]

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for label, editor in (("K", self.k), ("Temperature", self.temperature), ("Top-p", self.top_p),
                              ("Max tokens", self.max_tokens), ("Seed", self.seed), ("Ahead", self.ahead)):
            layout.addWidget(QLabel(label))
            layout.addWidget(editor)
        models = QLabel("Models")
        models.setToolTip("The model behind each slot. Slots are shown in a random order, so you never know "
                          "which one you are looking at while labeling.")
        layout.addWidget(models)
        layout.addLayout(self.sources_row)
        layout.addStretch(1)
        for editor in (self.k, self.temperature, self.top_p, self.max_tokens, self.seed, self.ahead):
            editor.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
            editor.valueChanged.connect(self.changed)
        self.k.valueChanged.connect(self._rebuild_sources)
        self._rebuild_sources()

    def set_available(self, names: list[str]) -> None:
        """The models a slot may use: the base and the project's finished adapters."""
        chosen = [box.currentText() for box in self.sources]
        self._available = names or [BASE]
        self._rebuild_sources(chosen)

    def _rebuild_sources(self, chosen: list[str] | None = None) -> None:
        chosen = chosen if isinstance(chosen, list) else [box.currentText() for box in self.sources]
        for box in self.sources:
            self.sources_row.removeWidget(box)
            box.hide()  # gone now; deleteLater only runs once the event loop is idle
            box.deleteLater()
        self.sources = []
        for slot in range(self.k.value()):
            box = QComboBox()
            box.addItems(self._available)
            box.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
            box.setToolTip(f"Model of slot {slot + 1}")
            if slot < len(chosen) and chosen[slot] in self._available:
                box.setCurrentText(chosen[slot])
            box.currentIndexChanged.connect(self.changed)
            self.sources_row.addWidget(box)
            self.sources.append(box)
        self.changed.emit()

    def set_sources(self, names: list[str]) -> None:
        for box, name in zip(self.sources, names):
            box.setCurrentText(name)

    def value(self) -> GenerationConfig:
        return GenerationConfig(k=self.k.value(), sources=tuple(box.currentText() for box in self.sources),
                                temperature=self.temperature.value(), top_p=self.top_p.value(),
                                max_new_tokens=self.max_tokens.value(), seed=self.seed.value())
