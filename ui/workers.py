"""Run any core generator in a background thread and deliver its items to the GUI thread.

One worker object, moved to a QThread (never a QThread subclass, never terminate()): it pulls
items from the generator, batches those that arrive within `interval_s` into one signal (so a
token stream is not a signal per token), and stops cooperatively when asked. `BackgroundTask`
lives in the GUI thread, so its callbacks always run there.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from workbench.errors import Cancelled, WorkbenchError

log = logging.getLogger("workbench.ui")
GeneratorFactory = Callable[[Callable[[], bool]], Iterator]
# How much lower than the GUI thread a background thread runs (a Linux nice value; 10 gives the
# GUI about nine times the worker's share of a contended core). Training and generation keep
# every core busy; at equal priority the GUI thread waited its turn, and a plot's repaint took
# three to five times as long as on an idle machine. When the GUI is idle this costs nothing.
BACKGROUND_NICE = 10


def lower_this_threads_priority() -> None:
    """Run the calling thread, and the threads it starts from now on (PyTorch's OpenMP team,
    made by the first parallel operation in a thread), below the GUI thread."""
    QThread.currentThread().setPriority(QThread.Priority.LowPriority)  # Windows and macOS
    if sys.platform.startswith("linux"):  # Qt ignores priorities there; the nice value is per thread
        try:
            thread = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + BACKGROUND_NICE))
        except OSError as error:  # a sandbox may refuse: then the work runs at normal priority
            log.info("could not lower a background thread's priority: %s", error)


class GeneratorWorker(QObject):
    items = Signal(list)
    failed = Signal(str)
    finished = Signal(str)  # "done", "cancelled" or "failed"

    def __init__(self, factory: GeneratorFactory, interval_s: float = 0.05):
        super().__init__()
        self._factory = factory
        self._interval_s = interval_s
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    @Slot()
    def run(self) -> None:
        """Pull every item; a helper thread delivers what has arrived every `interval_s`, so
        items are batched (a token stream is not a signal per token) yet none waits long when
        the generator then blocks (a training step). After stop() the generator is still
        drained: it sees should_stop(), saves what it must and ends, all in this thread."""
        lower_this_threads_priority()
        pending: list = []
        lock, done = threading.Lock(), threading.Event()

        def deliver() -> None:
            with lock:
                batch = pending[:]
                pending.clear()
            if batch:
                self.items.emit(batch)

        def deliver_periodically() -> None:
            while not done.wait(self._interval_s):
                deliver()

        courier = threading.Thread(target=deliver_periodically, name="deliver-items", daemon=True)
        courier.start()
        outcome, failure = "done", None
        items = self._factory(self.should_stop)
        try:
            for item in items:
                with lock:
                    pending.append(item)
        except Cancelled:
            outcome = "cancelled"
        except WorkbenchError as error:
            outcome, failure = "failed", str(error)
        except Exception as error:  # noqa: BLE001 - shown to the user and logged, never swallowed
            log.exception("background task failed")
            outcome, failure = "failed", f"Unexpected error: {type(error).__name__}: {error} (details in the log)"
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # run the generator's cleanup here, never in a later garbage collection
            done.set()
            courier.join()
        if outcome == "done" and self._stop.is_set():
            outcome = "cancelled"
        deliver()  # items first, so a late progress message never hides the failure
        if failure is not None:
            self.failed.emit(failure)
        self.finished.emit(outcome)


class BackgroundTask(QObject):
    """Handle on one running generator: stop() asks it to end; callbacks run in the GUI thread."""

    def __init__(self, parent: QObject, factory: GeneratorFactory,
                 on_item: Callable[[object], None] | None = None,
                 on_error: Callable[[str], None] | None = None,
                 on_finished: Callable[[str], None] | None = None):
        super().__init__(parent)
        self._on_item, self._on_error, self._on_finished = on_item, on_error, on_finished
        self.outcome: str | None = None
        self._thread = QThread()
        self._worker = GeneratorWorker(factory)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        self._worker.items.connect(self._deliver)
        self._worker.failed.connect(self._fail)
        # Direct: quit the thread's event loop from the worker thread itself, so wait() never
        # depends on the GUI thread being free to process a queued call.
        self._worker.finished.connect(self._thread.quit, Qt.ConnectionType.DirectConnection)
        self._worker.finished.connect(self._finish)

    def start(self) -> "BackgroundTask":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._worker.stop()

    @property
    def running(self) -> bool:
        return self.outcome is None

    def wait(self, timeout_ms: int = 10_000) -> bool:
        """Stop and block until the thread is gone (used when the app closes)."""
        self.stop()
        return self._thread.wait(timeout_ms)

    @Slot(list)
    def _deliver(self, items: list) -> None:
        if self._on_item is not None:
            for item in items:
                self._on_item(item)

    @Slot(str)
    def _fail(self, message: str) -> None:
        if self._on_error is not None:
            self._on_error(message)
        else:  # a caller that shows no errors still never loses one
            log.error("background task failed: %s", message)

    @Slot(str)
    def _finish(self, outcome: str) -> None:
        self.outcome = outcome
        self._thread.wait()
        if self._on_finished is not None:
            self._on_finished(outcome)
