"""Python's cycle collector: run in the GUI thread only, and kept from freezing the window.

- Automatic collection is off. It could run in a worker thread and finalise Qt objects there,
  which crashes Qt; a GUI timer collects instead (as pyqtgraph's GarbageCollector does).
- A full collection walks every tracked object: with a model, its tokenizer and the training
  machinery loaded, that took 50-150 ms in the GUI thread during a run. Objects alive after a
  model load or at the start of a run are long-lived, so they are moved out of the
  collector's view with `gc.freeze()`.
- While a model loads, its worker creates about 100,000 objects a second (imports, modules,
  tensors), and the timed collections of the older generations walked them all again and
  again: the window froze for 60-380 ms at a time (bench/ui_responsiveness.py). During a load
  only the youngest generation is collected, four times a second, so each pass walks a
  quarter second's new objects; the garbage among them is freed, the survivors are frozen
  when the load ends.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

INTERVAL_MS = 1000
LOADING_INTERVAL_MS = 250


class GuiThreadCollector(QObject):
    """On a GUI timer, collects the generations whose thresholds are passed, as CPython's own
    collector would; only the youngest while `young_only` loads are under way."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.thresholds = gc.get_threshold()
        self.young_only = 0
        gc.disable()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.collect)
        self.timer.start(INTERVAL_MS)

    def collect(self) -> None:
        # The oldest generation due: one that passed its threshold, as did every younger one.
        due = -1
        for generation, (count, threshold) in enumerate(zip(gc.get_count(), self.thresholds)):
            if count <= threshold or (self.young_only and generation > 0):
                break
            due = generation
        if due >= 0:
            gc.collect(due)  # the younger generations with it

    def set_young_only(self, loads: int) -> None:
        self.young_only = max(0, loads)
        self.timer.setInterval(LOADING_INTERVAL_MS if self.young_only else INTERVAL_MS)


_collector: GuiThreadCollector | None = None


def collect_in_gui_thread(app: QObject) -> None:
    """Turn automatic collection off and collect on a GUI timer (once per application)."""
    global _collector
    if _collector is None:
        _collector = GuiThreadCollector(parent=app)


def collect_young_only() -> None:
    """A model load starts: only the youngest generation until `collect_all_generations`."""
    if _collector is not None:
        _collector.set_young_only(_collector.young_only + 1)


def collect_all_generations() -> None:
    """The load that called `collect_young_only` ended."""
    if _collector is not None:
        _collector.set_young_only(_collector.young_only - 1)


def freeze_long_lived_objects() -> None:
    """Move every object alive now out of the collector's view; the youngest generation is
    collected first, so that fresh garbage is not frozen for good (a quarter second's objects
    during a load, a few milliseconds)."""
    gc.collect(0)
    gc.freeze()
