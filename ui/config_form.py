"""A form built from a config dataclass: one editor per field, its docstring as the tooltip.

Used for the SFT, reward-model and PPO settings, so a new field in a core config shows up in
the GUI without touching this code. `changed` fires on any edit (the PPO page re-estimates
memory); `set_choices` refills a field's combo box (adapters that exist in the project).
"""

from __future__ import annotations

from dataclasses import fields

from PySide6.QtCore import Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLineEdit, QSpinBox, QWidget,
)

from workbench.config import field_docs


class ConfigForm(QWidget):
    changed = Signal()

    def __init__(self, config_class, choices: dict[str, tuple[str, ...]] | None = None,
                 labels: dict[str, str] | None = None, hidden: tuple[str, ...] = (),
                 blank_texts: dict[str, str] | None = None):
        """`hidden`: fields a kind of run ignores; they get no editor and keep their defaults.
        `blank_texts`: what a combo box shows for its empty value ("" -> "newest"), which a
        blank line would leave the user to guess."""
        super().__init__()
        self.config_class = config_class
        self.editors: dict[str, QWidget] = {}
        self.blank_texts = blank_texts or {}
        docs, choices, labels = field_docs(config_class), choices or {}, labels or {}
        layout = QFormLayout(self)
        layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        for field in fields(config_class):
            if field.name in hidden:
                continue
            editor = self._editor(field.name, str(field.type), choices.get(field.name))
            editor.setToolTip(docs.get(field.name, ""))
            self.editors[field.name] = editor
            layout.addRow(labels.get(field.name, field.name.replace("_", " ").capitalize()), editor)
        self.set_value(config_class())
        for editor in self.editors.values():
            signal = (editor.currentIndexChanged if isinstance(editor, QComboBox) else
                      editor.toggled if isinstance(editor, QCheckBox) else
                      editor.valueChanged if isinstance(editor, (QSpinBox, QDoubleSpinBox)) else editor.textChanged)
            signal.connect(self.changed)

    def set_choices(self, name: str, options: list[str]) -> None:
        """Refill field `name`'s combo box, keeping its value when it is still an option."""
        box = self.editors[name]
        current = box.currentData()
        box.blockSignals(True)
        self._fill(box, name, options)
        box.setCurrentIndex(max(0, box.findData(current)))
        box.blockSignals(False)
        if box.currentData() != current:
            self.changed.emit()

    def _fill(self, box: QComboBox, name: str, options) -> None:
        """Each item shows its value (or the field's blank text) and holds the value as its data."""
        box.clear()
        for option in options:
            box.addItem(self.blank_texts.get(name, "") if option == "" else option, option)

    def _editor(self, name: str, type_name: str, options: tuple[str, ...] | None) -> QWidget:
        if options:
            box = QComboBox()
            self._fill(box, name, options)
            return box
        if type_name.startswith("bool"):
            return QCheckBox()
        if type_name.startswith("int"):
            return QSpinBox(minimum=0, maximum=1_000_000)
        if type_name.startswith("float"):
            return FloatBox(step=1e-5 if "rate" in name else 0.05)
        return QLineEdit()

    def value(self):
        """The config the form shows; raises ValueError with the config's own message."""
        values = {}
        for name, editor in self.editors.items():
            if isinstance(editor, QComboBox):
                values[name] = editor.currentData()
            elif isinstance(editor, QCheckBox):
                values[name] = editor.isChecked()
            elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
                values[name] = editor.value()
            else:
                values[name] = editor.text()
        return self.config_class(**values)

    def set_value(self, config) -> None:
        """Show `config`; listeners hear one `changed`, not one per editor."""
        self.blockSignals(True)
        try:
            self._set_editors(config)
        finally:
            self.blockSignals(False)
        self.changed.emit()

    def _set_editors(self, config) -> None:
        for name, editor in self.editors.items():
            value = getattr(config, name)
            if isinstance(editor, QComboBox):
                index = editor.findData(str(value))
                if index >= 0:  # a value not offered (yet) leaves the box as it is
                    editor.setCurrentIndex(index)
            elif isinstance(editor, QCheckBox):
                editor.setChecked(bool(value))
            elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
                editor.setValue(value)
            else:
                editor.setText(str(value))


class FloatBox(QDoubleSpinBox):
    """A number as Python writes it (1e-05, 0.2, 64), typed the same way, scientific notation
    included. A plain QDoubleSpinBox rounds to a fixed number of decimals: with six, a learning
    rate of 5e-7 became 0.000001 and 1.41e-5 became 1.4e-5, silently."""

    SIGNIFICANT = 6

    def __init__(self, step: float):
        # Twelve decimals only bound the rounding; what is shown comes from textFromValue.
        super().__init__(minimum=0.0, maximum=1e6, decimals=12, singleStep=step)

    def textFromValue(self, value: float) -> str:
        return f"{value:.{self.SIGNIFICANT}g}"

    def valueFromText(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, position: int):
        try:
            number = float(text)
        except ValueError:  # on the way to a number ("", "1e", "2.5e-") or not a number at all
            partial = all(c in "0123456789.eE+-" for c in text)
            return QValidator.State.Intermediate if partial else QValidator.State.Invalid, text, position
        inside = self.minimum() <= number <= self.maximum()
        return QValidator.State.Acceptable if inside else QValidator.State.Intermediate, text, position
