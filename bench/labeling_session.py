"""A labeling session on the Rank page with the demo model, timed as a user would feel it.

    .venv/bin/python bench/labeling_session.py [--prompts 24] [--think 12] [--k 4] [--ahead 3]

Works on a temporary copy of the demo project. A scripted annotator reads each prompt's
responses for `--think` seconds, then ranks them with the number keys (a full order, one key
per place), exactly as the keys reach the page. With --pick-while-streaming (the default) it
starts reading as soon as one response is complete, as the page allows, and picks the complete
ones while the rest are written; without, it waits for all of them. Its preference is a simple
stand-in for a person: replies that apologise and stay on the customer's problem first,
cut-off replies last.

Prints, per prompt, how long the annotator waited (to a first readable response, and to the
whole batch) and the seconds the page's label clock recorded; then labels per hour from the
recorded time against the wall clock, the p50/p95 waits from the LabelingSession, the tokens/s
the page showed, and the GUI heartbeat stall while generation ran ahead.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).parent))

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from ui_responsiveness import Heartbeat, report  # noqa: E402
from workbench.config import ModelSpec  # noqa: E402
from workbench.data.rankings import RankingStore  # noqa: E402
from workbench.demo_project import ensure_demo_project  # noqa: E402
from workbench.project import Project  # noqa: E402
from ui.app import application  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402
from ui.session import WorkbenchSession  # noqa: E402
from ui.waiting import wait_until  # noqa: E402

KIND_WORDS = re.compile(r"\b(sorry|apolog\w*|understand|help|happy to)\b", re.IGNORECASE)


def preference(prompt: str, text: str, finished: bool) -> float:
    """Higher is better: polite, on topic, complete."""
    prompt_words = {w for w in re.findall(r"[a-z]{4,}", prompt.lower())}
    overlap = len(prompt_words & set(re.findall(r"[a-z]{4,}", text.lower())))
    return 2.0 * bool(KIND_WORDS.search(text)) + overlap + (0 if finished else -3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24, help="prompts to label")
    parser.add_argument("--think", type=float, default=12.0, help="seconds the annotator reads each prompt")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--ahead", type=int, default=3, help="prompts generated ahead")
    parser.add_argument("--max-tokens", type=int, default=120)
    parser.add_argument("--pick-while-streaming", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()

    application()
    scratch = Path(tempfile.mkdtemp(prefix="wb-label-"))
    demo = Project.open(ensure_demo_project())
    demo.save_as(scratch / "demo.rlhf").close()
    demo.close()
    session = WorkbenchSession(remember_projects=False)
    session.open_project(scratch / "demo.rlhf")
    window = MainWindow(session)
    window.resize(1280, 820)
    window.show()
    session.load_model(ModelSpec(kind="demo"))
    wait_until(lambda: not session.loading, 600)
    page = window.rank_page
    page.set_annotator("bench", remember=False)
    page.settings.k.setValue(args.k)
    page.settings.ahead.setValue(args.ahead)
    page.settings.max_tokens.setValue(args.max_tokens)
    beat = Heartbeat()
    window.show_page("Rank")
    started = time.monotonic()
    store = RankingStore(session.project)
    labeling = page.labeling
    speeds = []
    for number in range(1, args.prompts + 1):
        asked = time.monotonic()
        readable = (lambda: page.labeling.k and any(page.labeling.readable(p) for p in range(page.labeling.k))) \
            if args.pick_while_streaming else (lambda: page.batch is not None)
        wait_until(readable, 900)
        waited = time.monotonic() - asked
        if page.labeling.streaming is not None and page.labeling.streaming.tokens_per_s:
            speeds.append(page.labeling.streaming.tokens_per_s)
        wait_until(lambda: False, args.think)  # reading, with the event loop running
        labeling = page.labeling
        prompt = page.prompt_view.toPlainText()
        labeled = page.prompt_id
        picked: list[int] = []
        while len(picked) < labeling.k - 1:  # the last place is implied
            wait_until(lambda: any(labeling.readable(p) for p in range(labeling.k) if p not in picked), 900)
            candidates = [p for p in range(labeling.k) if p not in picked and labeling.readable(p)]
            best = max(candidates, key=lambda p: preference(prompt, labeling.pane_text(p), True))
            QTest.keyClick(page.board, Qt.Key(Qt.Key.Key_1 + best))
            picked.append(best)
            if page.prompt_id != labeled or labeling.submit_when_saved:
                break
        wait_until(lambda: page.prompt_id != labeled, 900)  # saved with the batch if it was still being written
        batch = RankingStore(session.project).latest_batch(labeled)
        recorded = RankingStore(session.project).ranking(batch.uid, "bench").seconds_spent
        print(f"prompt {number:2} (id {labeled:3}): waited {waited:5.1f} s to read, label clock {recorded:5.1f} s, "
              f"ranked {' > '.join(str(p + 1) for p in picked)} > …", flush=True)
    elapsed = time.monotonic() - started
    generation = beat.take()
    progress = store.progress("bench")
    stats = page.labeling.stats
    print()
    print(f"{progress['labeled']} prompts labeled in {elapsed / 60:.1f} min of wall clock "
          f"(K={args.k}, {args.max_tokens} max tokens, {args.think:.0f} s reading each, {args.ahead} ahead, "
          f"{'picking while the rest stream' if args.pick_while_streaming else 'waiting for every response'})")
    print(f"labels per hour (the label clock, as saved with the labels): {progress['labels_per_hour']:.0f}")
    print(f"labels per hour (wall clock, waits included): {3600 * progress['labeled'] / elapsed:.0f}")
    for name, waits in (("a first readable response", stats.waits_first), ("the whole batch", stats.waits_all)):
        summary = stats.summary(waits)
        if summary:
            print(f"wait after moving on for {name}: n={len(waits)} p50 {summary[0]:.2f} s  p95 {summary[1]:.2f} s  "
                  f"max {max(waits):.2f} s")
    if speeds:
        print(f"tokens/s shown while the shown prompt streamed: median {statistics.median(speeds):.1f}")
    report("GUI heartbeat during the session", generation)
    session.shutdown()


if __name__ == "__main__":
    main()
