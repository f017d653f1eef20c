"""Event-loop stall in the GUI while the demo model loads, Try-it streams, SFT trains, a
reward model trains and PPO runs.

    .venv/bin/python bench/ui_responsiveness.py [--sft-steps 20] [--rm-steps 6] [--ppo-steps 10]

Every phase works on a temporary copy of the demo project through the pages, exactly as a user
would start it. The reward model learns from synthetic rankings made for the bench (apologetic
answers first); PPO then runs on it from the PPO page, and its curves are printed too.

A 10 ms QTimer heartbeat runs in the GUI thread; each tick's lateness (how much later than
10 ms after the previous one it fired) is what a user feels as a frozen window. Prints p50,
p99 and max lateness per phase. Offscreen, so it runs on a headless machine.

--trace-stalls FILE: at every tick the heartbeat arms faulthandler's watchdog, a C thread that
needs no GIL; when the next tick is more than --trace-after-ms late, it writes every thread's
Python stack to FILE at that moment (once per stall), after a line naming the phase. What the
GUI thread was doing then, and what the thread holding the GIL was doing, is the cause.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QTimer  # noqa: E402

from workbench.config import ModelSpec  # noqa: E402
from workbench.data.prompts import PromptStore  # noqa: E402
from workbench.data.rankings import RankingStore  # noqa: E402
from workbench.demo_project import ensure_demo_project  # noqa: E402
from workbench.project import Project  # noqa: E402
from workbench.train.runs import RunRecord  # noqa: E402
from ui.app import application  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402
from ui.session import WorkbenchSession  # noqa: E402
from ui.waiting import wait_until  # noqa: E402

INTERVAL_MS = 10


class Heartbeat:
    def __init__(self, trace=None, trace_after_ms: float = 40.0) -> None:
        self.trace, self.trace_after_s = trace, (INTERVAL_MS + trace_after_ms) / 1000
        self.lateness_ms: list[float] = []
        self.stalls: list[tuple[float, float]] = []  # (when, ms) of ticks later than 30 ms
        self.phase_stalls: list[tuple[float, float]] = []
        self.events: list[tuple[float, str]] = []    # what the GUI was told, to explain the stalls
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        late = max(0.0, (now - self._last) * 1000 - INTERVAL_MS)
        self.lateness_ms.append(late)
        if late > 30:
            self.stalls.append((now, late))
        self._last = now
        if self.trace is not None:  # re-armed each tick: it fires only if the next tick is late
            faulthandler.dump_traceback_later(self.trace_after_s, file=self.trace)

    def phase(self, name: str) -> None:
        """Name the phase in the stall trace, so its stacks can be told apart."""
        if self.trace is not None:
            self.trace.write(f"\n==== phase: {name} ====\n")
            self.trace.flush()

    def note(self, event: str) -> None:
        self.events.append((time.perf_counter(), event))

    def take(self) -> list[float]:
        """This phase's lateness values; its stalls are kept for explain_stalls."""
        values, self.lateness_ms = self.lateness_ms, []
        self.phase_stalls, self.stalls = self.stalls, []
        return values

    def explain_stalls(self, top: int = 3) -> None:
        """The worst stalls since the last call, each after the last event before it."""
        for when, late in sorted(self.phase_stalls, key=lambda s: -s[1])[:top]:
            before = [(at, event) for at, event in self.events if at <= when]
            at, event = before[-1] if before else (when, "start")
            print(f"    stall {late:6.1f} ms, {when - at:5.2f} s after: {event}")
        self.events = [event for event in self.events if event[0] > time.perf_counter() - 1]


def report(name: str, values: list[float]) -> None:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{name:34} ticks {len(values):5}  p50 {statistics.median(values):6.1f} ms  "
          f"p99 {p99:6.1f} ms  max {ordered[-1]:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft-steps", type=int, default=20, help="SFT steps to time (0 skips SFT)")
    parser.add_argument("--rm-steps", type=int, default=6, help="reward-model steps (0 skips RM and PPO)")
    parser.add_argument("--ppo-steps", type=int, default=10, help="PPO steps to time (0 skips PPO)")
    parser.add_argument("--trace-stalls", type=Path, help="write every thread's stack at each stall here")
    parser.add_argument("--trace-after-ms", type=float, default=40.0, help="how late a tick is a traced stall")
    args = parser.parse_args()
    application()
    session = WorkbenchSession(remember_projects=False)
    scratch = Path(tempfile.mkdtemp(prefix="wb-bench-"))
    demo = Project.open(ensure_demo_project())
    demo.save_as(scratch / "demo.rlhf").close()
    demo.close()
    session.open_project(scratch / "demo.rlhf")
    window = MainWindow(session)
    window.show()
    trace = args.trace_stalls.open("w", encoding="utf-8") if args.trace_stalls else None
    beat = Heartbeat(trace, args.trace_after_ms)
    window.runs.step.connect(lambda log: beat.note(f"step {log.step} report" + (" (finished)" if log.status ==
                                                                                "finished" else "")))
    window.runs.ended.connect(lambda *_: beat.note("run ended"))
    wait_until(lambda: False, 1.0)
    report("idle", beat.take())

    beat.phase("loading the demo model")
    session.load_model(ModelSpec(kind="demo"))
    wait_until(lambda: not session.loading, 600)
    report("loading the demo model", beat.take())

    box = window.model_page.try_it
    box.prompt.setPlainText("My order hasn't arrived. What should I do?")
    box.max_tokens.setValue(96)
    box.seed.setValue(0)
    beat.phase("Try-it streaming")
    box.generate()
    wait_until(lambda: not box.generating, 600)
    report("Try-it streaming 96 tokens", beat.take())

    if args.sft_steps:
        window.show_page("SFT training")
        form = window.sft_training_page.form
        form.editors["max_steps"].setValue(args.sft_steps)
        form.editors["batch_size"].setValue(4)
        form.editors["eval_every"].setValue(5)
        wait_until(lambda: False, 1.0)  # the page's first paint is a page switch, not training
        report("showing the SFT training page", beat.take())
        started = time.perf_counter()
        beat.phase("SFT")
        window.sft_training_page.start()
        wait_until(lambda: window.runs.run_id is not None, 60)
        wait_until(lambda: not window.runs.running, 3600)
        seconds = time.perf_counter() - started
        report(f"SFT, {args.sft_steps} steps", beat.take())
        record = RunRecord(session.project, window.runs.run_id)
        metrics = record.metrics()
        print(f"SFT run {record.id}: {record.status} in {seconds:.1f} s "
              f"({seconds / args.sft_steps:.2f} s/step, batch 4, demo model on CPU)")
        for key in ("loss/train", "loss/validation"):
            steps, values = metrics.get(key, ([], []))
            print(f"  {key:16}", "  ".join(f"{s}:{v:.3f}" for s, v in zip(steps, values)))
    if args.rm_steps:
        add_synthetic_rankings(session.project)  # the pages hear of them from the project
        window.show_page("Reward")
        form = window.reward_page.form
        form.editors["max_steps"].setValue(args.rm_steps)
        form.editors["eval_every"].setValue(args.rm_steps)
        wait_until(lambda: False, 1.0)
        beat.take()
        run_phase(window, window.reward_page.start, f"reward model, {args.rm_steps} steps", beat)
    if args.rm_steps and args.ppo_steps:
        window.show_page("PPO")
        form = window.ppo_page.form
        form.editors["max_steps"].setValue(args.ppo_steps)
        form.editors["max_new_tokens"].setValue(48)
        wait_until(lambda: False, 1.0)
        beat.take()
        record = run_phase(window, window.ppo_page.start, f"PPO, {args.ppo_steps} steps (batch 8)", beat)
        metrics = record.metrics()
        for key in ("objective/score", "objective/kl", "time/generate_s", "time/logprobs_s", "time/score_s", "time/train_s"):
            steps, values = metrics.get(key, ([], []))
            print(f"  {key:16}", "  ".join(f"{s}:{v:.2f}" for s, v in zip(steps, values)))
    faulthandler.cancel_dump_traceback_later()
    session.shutdown()


def run_phase(window, start, name: str, beat: Heartbeat) -> RunRecord:
    """Start a run from its page, wait for its end, report the heartbeat and the run's time."""
    started = time.perf_counter()
    beat.note("start pressed")
    beat.phase(name)
    start()
    wait_until(lambda: window.runs.run_id is not None, 60)
    wait_until(lambda: not window.runs.running, 3600)
    seconds = time.perf_counter() - started
    report(name, beat.take())
    beat.explain_stalls()
    record = RunRecord(window.session.project, window.runs.run_id)
    print(f"{name}: run {record.id} {record.status} in {seconds:.1f} s ({record.message})")
    return record


def add_synthetic_rankings(project: Project) -> None:
    """Two answers per prompt, the apologetic one ranked first, so a reward model has pairs."""
    store, rankings = PromptStore(project), RankingStore(project)
    for row in store.rows():
        batch = rankings.add_batch(row.id, ["I'm sorry about that. Let me check your order right away.",
                                            "Read the FAQ."], [{"source": "bench"}] * 2)
        rankings.save_ranking(batch.uid, "bench", [[batch.responses[0].id], [batch.responses[1].id]])


if __name__ == "__main__":
    main()
