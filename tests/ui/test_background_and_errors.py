import logging
import os
import sys
import threading

import pytest

from PySide6.QtWidgets import QWidget

from workbench.errors import WorkbenchError
from ui.error_reporting import ErrorReporter
from ui.workers import BackgroundTask


def run(qtbot, factory):
    items, errors, outcome = [], [], []
    parent = QWidget()
    qtbot.addWidget(parent)
    task = BackgroundTask(parent, factory, items.append, errors.append, outcome.append).start()
    qtbot.waitUntil(lambda: bool(outcome), timeout=10_000)
    return items, errors, outcome[0], task


def test_items_arrive_in_order_in_the_gui_thread(qtbot):
    def numbers(should_stop):
        yield from range(2000)

    items, errors, outcome, _ = run(qtbot, numbers)
    assert items == list(range(2000)) and errors == [] and outcome == "done"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_background_work_runs_below_the_gui_threads_priority(qtbot):
    """Training keeps every core busy; below the GUI thread, it cannot slow the window's repaints."""
    def niceness(should_stop):
        yield os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        # Threads the task starts (PyTorch's OpenMP team) inherit it.
        seen = []
        helper = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        helper.start()
        helper.join()
        yield seen[0]

    gui = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    items, errors, outcome, _ = run(qtbot, niceness)
    assert outcome == "done" and items == [min(19, gui + 10)] * 2


def test_stop_is_cooperative(qtbot):
    def forever(should_stop):
        i = 0
        while not should_stop():
            i += 1
            yield i

    parent = QWidget()
    qtbot.addWidget(parent)
    outcome = []
    task = BackgroundTask(parent, forever, on_finished=outcome.append).start()
    qtbot.wait(50)
    task.stop()
    qtbot.waitUntil(lambda: outcome == ["done"] or outcome == ["cancelled"], timeout=5000)
    assert not task.running


def test_errors_reach_the_page_as_messages(qtbot, caplog):
    def refuses(should_stop):
        yield 1
        raise WorkbenchError("That folder has no config.json.")

    items, errors, outcome, _ = run(qtbot, refuses)
    assert items == [1] and errors == ["That folder has no config.json."] and outcome == "failed"

    def crashes(should_stop):
        raise ZeroDivisionError("boom")
        yield

    with caplog.at_level(logging.ERROR, logger="workbench"):
        _, errors, outcome, _ = run(qtbot, crashes)
    assert outcome == "failed" and "ZeroDivisionError: boom" in errors[0]
    assert "Traceback" in caplog.text  # logged with its traceback, not swallowed


def test_uncaught_exceptions_from_any_thread_are_shown_and_logged(qtbot, caplog):
    parent = QWidget()
    qtbot.addWidget(parent)
    reporter = ErrorReporter(parent)

    def fail_in_a_thread():
        try:
            raise RuntimeError("worker exploded")
        except RuntimeError as error:
            reporter.handle(type(error), error, error.__traceback__)

    with caplog.at_level(logging.ERROR, logger="workbench"):
        thread = threading.Thread(target=fail_in_a_thread)
        thread.start()
        thread.join()
        qtbot.waitUntil(lambda: reporter.dialog is not None and reporter.dialog.isVisible(), timeout=5000)
    assert "RuntimeError: worker exploded" in reporter.dialog.text()
    assert "still running" in reporter.dialog.text()
    assert "worker exploded" in caplog.text
    reporter.handle(ValueError, ValueError("second"), None)
    qtbot.waitUntil(lambda: "2 errors so far" in reporter.dialog.text(), timeout=5000)


class Cycle:
    """An object that refers to itself: only the cycle collector frees it."""

    def __init__(self):
        self.me = self


def test_cycles_are_collected_in_the_gui_thread_and_only_young_ones_while_a_model_loads(qtbot, tiny_model_dir,
                                                                                         tmp_path):
    import gc
    import weakref

    from workbench.config import ModelSpec
    from ui import garbage
    from ui.session import WorkbenchSession

    assert not gc.isenabled()  # never automatically, so never in a worker thread
    collector = garbage._collector
    session = WorkbenchSession(remember_projects=False)
    session.load_model(ModelSpec(kind="folder", location=str(tiny_model_dir)))
    assert collector.young_only == 1 and collector.timer.interval() == garbage.LOADING_INTERVAL_MS
    # Garbage made during the load is freed, not frozen with the load's survivors.
    cycles = [Cycle() for _ in range(3 * gc.get_threshold()[0])]
    refs = [weakref.ref(cycle) for cycle in cycles]
    del cycles
    qtbot.waitUntil(lambda: not session.loading, timeout=60_000)
    assert collector.young_only == 0 and collector.timer.interval() == garbage.INTERVAL_MS
    qtbot.waitUntil(lambda: all(ref() is None for ref in refs), timeout=3000)
    # After the load, cycles that have grown old are collected too.
    old = Cycle()
    ref = weakref.ref(old)
    gc.collect(0)
    gc.collect(1)  # `old` is now in the oldest generation
    del old
    # Every generation past its threshold, as after a while of work: the oldest is due.
    for _ in range(gc.get_threshold()[2] + 1):
        gc.collect(1)
    for _ in range(gc.get_threshold()[1] + 1):
        gc.collect(0)
    young = [Cycle() for _ in range(2 * gc.get_threshold()[0])]
    qtbot.waitUntil(lambda: ref() is None, timeout=3000)
    del young
    # A load that fails ends its young-only time too.
    session.load_model(ModelSpec(kind="folder", location=str(tmp_path / "no-such-model")))
    qtbot.waitUntil(lambda: not session.loading, timeout=60_000)
    assert collector.young_only == 0
    session.shutdown()
