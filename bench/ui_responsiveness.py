"""Event-loop stall in the GUI while the demo model loads and while Try-it streams a reply.

    .venv/bin/python bench/ui_responsiveness.py

A 10 ms QTimer heartbeat runs in the GUI thread; each tick's lateness (how much later than
10 ms after the previous one it fired) is what a user feels as a frozen window. Prints p50,
p99 and max lateness per phase. Offscreen, so it runs on a headless machine.
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QTimer  # noqa: E402

from workbench.config import ModelSpec  # noqa: E402
from ui.app import application  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402
from ui.session import WorkbenchSession  # noqa: E402
from ui.waiting import wait_until  # noqa: E402

INTERVAL_MS = 10


class Heartbeat:
    def __init__(self) -> None:
        self.lateness_ms: list[float] = []
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.lateness_ms.append(max(0.0, (now - self._last) * 1000 - INTERVAL_MS))
        self._last = now

    def take(self) -> list[float]:
        values, self.lateness_ms = self.lateness_ms, []
        return values


def report(name: str, values: list[float]) -> None:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{name:34} ticks {len(values):5}  p50 {statistics.median(values):6.1f} ms  "
          f"p99 {p99:6.1f} ms  max {ordered[-1]:6.1f} ms")


def main() -> None:
    application()
    session = WorkbenchSession(remember_projects=False)
    window = MainWindow(session)
    window.show()
    beat = Heartbeat()
    wait_until(lambda: False, 1.0)
    report("idle", beat.take())

    session.load_model(ModelSpec(kind="demo"))
    wait_until(lambda: not session.loading, 600)
    report("loading the demo model", beat.take())

    box = window.model_page.try_it
    box.prompt.setPlainText("My order hasn't arrived. What should I do?")
    box.max_tokens.setValue(96)
    box.seed.setValue(0)
    box.generate()
    wait_until(lambda: not box.generating, 600)
    report("Try-it streaming 96 tokens", beat.take())
    session.shutdown()


if __name__ == "__main__":
    main()
