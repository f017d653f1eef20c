"""The settings form built from a config dataclass: small and large numbers survive a round
trip and can be typed in scientific notation."""

from PySide6.QtCore import Qt

from ui.config_form import ConfigForm
from workbench.train.ppo import PpoConfig


def test_a_tiny_learning_rate_is_shown_and_kept_exactly(qtbot):
    form = ConfigForm(PpoConfig)
    qtbot.addWidget(form)
    form.set_value(PpoConfig(learning_rate=5e-7, kl_coef=0.0141, temperature=0.7))
    rate = form.editors["learning_rate"]
    assert rate.text() == "5e-07" and form.editors["temperature"].text() == "0.7"
    value = form.value()
    assert (value.learning_rate, value.kl_coef, value.temperature) == (5e-7, 0.0141, 0.7)


def test_typing_scientific_notation_sets_the_value(qtbot):
    form = ConfigForm(PpoConfig)
    qtbot.addWidget(form)
    form.show()
    rate = form.editors["learning_rate"]
    rate.lineEdit().selectAll()
    qtbot.keyClicks(rate, "2.5e-6")
    qtbot.keyClick(rate, Qt.Key.Key_Return)
    assert form.value().learning_rate == 2.5e-6
    rate.lineEdit().selectAll()
    qtbot.keyClicks(rate, "abc")  # letters other than e are refused as typed
    qtbot.keyClick(rate, Qt.Key.Key_Return)
    assert form.value().learning_rate == 2.5e-6 and rate.text() == "2.5e-06"
