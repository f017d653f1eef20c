"""One annotator ranking prompts one after another: which prompt is next, which prompts to
generate ahead, the draft ranking, the time the label took and how long the annotator waited.

Plain logic without Qt, so every rule here is tested on its own (tests/core/test_labeling_session.py)
and measured (bench/labeling_session.py); the Rank page only lays it out and maps keys to it.

Time spent on a label counts only while the page is shown and at least one response can be
read: not while the annotator waits for responses to be written, not while they are on another
page, and never more than MAX_SECONDS_PER_LABEL (someone who walks away is not still labeling).
A pane can be read and picked as soon as its own response is complete, while the others are
still being written; the ranking is saved once the whole batch is.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from workbench.data.prompts import PromptRow, PromptStore
from workbench.data.ranking_draft import RankingDraft
from workbench.data.rankings import Batch, RankingStore, blind_order
from workbench.project import Project

MAX_SECONDS_PER_LABEL = 300.0
MIN_LABELS_FOR_RATE = 5  # a labeling speed from fewer labels is noise


class LabelClock:
    """Seconds spent on one label: runs only while told to, and is capped."""

    def __init__(self, clock: Callable[[], float], cap_s: float = MAX_SECONDS_PER_LABEL):
        self.clock, self.cap_s = clock, cap_s
        self.spent = 0.0
        self.since: float | None = None  # running since

    def run(self, running: bool) -> None:
        if running and self.since is None:
            self.since = self.clock()
        elif not running and self.since is not None:
            self.spent += self.clock() - self.since
            self.since = None

    @property
    def running(self) -> bool:
        return self.since is not None

    @property
    def seconds(self) -> float:
        extra = self.clock() - self.since if self.since is not None else 0.0
        return min(self.spent + extra, self.cap_s)

    def restart(self) -> None:
        running = self.running
        self.spent, self.since = 0.0, None
        self.run(running)


@dataclass
class Streaming:
    """A batch being written: its texts so far, in generation order."""

    batch_uid: str
    texts: list[str]
    finished: list[bool]
    tokens: list[int]
    started_at: float
    updated_at: float

    @property
    def tokens_per_s(self) -> float | None:
        seconds = self.updated_at - self.started_at
        return sum(self.tokens) / seconds if seconds > 0.5 and any(self.tokens) else None


@dataclass
class Stats:
    labels: int = 0                 # labels submitted in this session
    seconds: float = 0.0            # time counted for them (see LabelClock)
    waits_first: list[float] = field(default_factory=list)  # moving on -> a first response readable
    waits_all: list[float] = field(default_factory=list)    # moving on -> every response saved

    @property
    def labels_per_hour(self) -> float | None:
        if self.labels < MIN_LABELS_FOR_RATE or self.seconds <= 0:
            return None
        return 3600.0 * self.labels / self.seconds

    @staticmethod
    def summary(waits: Sequence[float]) -> tuple[float, float] | None:
        """(median, 95th percentile) of `waits`, None without any."""
        if not waits:
            return None
        ordered = sorted(waits)
        return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


class LabelingSession:
    def __init__(self, project: Project | None, annotator: str, clock: Callable[[], float] = time.monotonic,
                 cap_s: float = MAX_SECONDS_PER_LABEL):
        self.project, self.annotator, self.clock = project, annotator, clock
        self.prompt_id: int | None = None
        self.messages: list[dict] = []         # the shown prompt's conversation
        self.batch: Batch | None = None        # the shown prompt's saved batch
        self.streaming: Streaming | None = None  # or the one being written for it
        self.order: list[int] = []             # generation positions, left to right on screen
        self.draft = RankingDraft(0)
        self.all_bad = False
        self.submit_when_saved = False         # the ranking was complete before the batch was saved
        self.label_clock = LabelClock(clock, cap_s)
        self.visible = False
        self.stats = Stats()
        self._waiting_since: float | None = None
        self._waited_first = False
        self.least_sure_first = False
        self.priority: list[int] = []          # prompt ids, least sure first, while that is on
        self.scores: dict[str, list[float]] = {}  # batch uid -> reward score per response

    # ---- stores --------------------------------------------------------------------

    def _prompts(self) -> PromptStore:
        return PromptStore(self.project)

    def _rankings(self) -> RankingStore:
        return RankingStore(self.project)

    def rows(self) -> list[PromptRow]:
        return self._prompts().rows(self.annotator) if self.project is not None else []

    # ---- which prompt is shown ---------------------------------------------------------

    def show(self, prompt_id: int, moving_on: bool = False) -> None:
        """Show `prompt_id` with its latest saved batch, or wait for one to be written. Raises
        WorkbenchError if the prompt is gone. `moving_on` (to the next unlabeled prompt, not a
        step back or a click in the list): the time until its responses can be read is a wait."""
        messages = self._prompts().messages(prompt_id)  # raises WorkbenchError if it is gone
        self.prompt_id, self.messages = prompt_id, messages
        self.batch = self._rankings().latest_batch(prompt_id)
        self.streaming, self.submit_when_saved = None, False
        self._load_draft()
        self.label_clock = LabelClock(self.clock, self.label_clock.cap_s)
        self._waiting_since = None
        if moving_on and self.visible:
            self._start_waiting()
        self._update_clock()

    def next_unlabeled(self, after: int | None = None) -> str:
        """Show the next prompt this annotator has not labeled (least sure first when asked),
        after `after`; returns what to tell the annotator ("" when there is nothing to say)."""
        rows = self.rows()
        if not rows:
            self.clear()
            return "No prompts yet: add some, import a file, or take the SFT examples' prompts."
        ids = [r.id for r in rows]
        start = ids.index(after) + 1 if after in ids else 0
        by_id = {r.id: r for r in rows}
        first = [by_id[p] for p in self.priority if p in by_id] if self.least_sure_first else []
        for row in first + rows[start:] + rows[:start]:
            if not row.labeled_by_me and row.id != after:
                self.show(row.id, moving_on=True)
                return ""
        self.show(after if after in ids else ids[0], moving_on=True)
        if after in ids and not by_id[after].labeled_by_me:
            return "This is the last prompt you have not labeled."
        return "Every prompt is labeled. Add prompts, or go back to change a label."

    def step(self, delta: int) -> None:
        ids = [r.id for r in self.rows()]
        if ids:
            index = ids.index(self.prompt_id) + delta if self.prompt_id in ids else 0
            self.show(ids[index % len(ids)])

    def clear(self) -> None:
        """Nothing shown (no project, or no prompts)."""
        self.prompt_id, self.batch, self.streaming, self.messages = None, None, None, []
        self.draft, self.order, self.all_bad, self.submit_when_saved = RankingDraft(0), [], False, False
        self._waiting_since = None
        self._update_clock()

    def wanted(self, ahead: int) -> list[int]:
        """Prompts whose responses should be written now, in order: the shown one if it has none,
        then the next `ahead` unlabeled prompts without responses."""
        if self.project is None:
            return []
        rows = self.rows()
        ids = [r.id for r in rows]
        start = ids.index(self.prompt_id) if self.prompt_id in ids else 0
        upcoming = [r.id for r in rows[start + 1:] + rows[:start] if not r.labeled_by_me and not r.responses]
        if self.least_sure_first:
            upcoming.sort(key=lambda p: self.priority.index(p) if p in self.priority else len(self.priority))
        current = [self.prompt_id] if self.prompt_id is not None and self.batch is None else []
        return current + upcoming[:ahead]

    def forget_batch(self) -> None:
        """New responses were asked for: show the shown prompt as waiting for them."""
        self.batch, self.streaming, self.submit_when_saved = None, None, False
        self._load_draft()
        if self.visible:
            self._start_waiting()
        self._update_clock()

    # ---- responses arriving --------------------------------------------------------------

    def on_streaming(self, prompt_id: int, batch_uid: str, texts: Sequence[str], finished: Sequence[bool],
                     tokens: Sequence[int] = ()) -> bool:
        """Responses growing for `prompt_id`; True if they are the shown prompt's."""
        if prompt_id != self.prompt_id or self.batch is not None:
            return False
        now = self.clock()
        if self.streaming is None or self.streaming.batch_uid != batch_uid:
            self.streaming = Streaming(batch_uid, list(texts), list(finished), list(tokens) or [0] * len(texts),
                                       now, now)
            self.order = blind_order(batch_uid, self.annotator, range(len(texts)))
            self.draft, self.all_bad = RankingDraft(len(texts)), False
        else:
            self.streaming.texts, self.streaming.finished = list(texts), list(finished)
            self.streaming.tokens = list(tokens) or self.streaming.tokens
            self.streaming.updated_at = now
        if any(finished):
            self._first_readable()
        self._update_clock()
        return True

    def on_saved(self, prompt_id: int, batch_uid: str) -> bool:
        """A batch was saved for `prompt_id`; True if it is now the shown one (keeping any picks
        made while it streamed)."""
        if prompt_id != self.prompt_id or (self.batch is not None and self.batch.uid == batch_uid):
            return False
        was_streaming = self.streaming is not None and self.streaming.batch_uid == batch_uid
        batch = self._rankings().batch(batch_uid)
        if batch is None:
            return False
        self.batch, self.streaming = batch, None
        if not was_streaming:
            self._load_draft()
        self._first_readable()
        if self._waiting_since is not None:
            self.stats.waits_all.append(self.clock() - self._waiting_since)
            self._waiting_since = None
        self._update_clock()
        return True

    def _start_waiting(self) -> None:
        """The annotator is ready for the shown prompt: a wait begins, unless it is ready too."""
        if self.batch is None:
            self._waiting_since, self._waited_first = self.clock(), False
        else:
            self.stats.waits_first.append(0.0)
            self.stats.waits_all.append(0.0)

    def _first_readable(self) -> None:
        if self._waiting_since is not None and not self._waited_first:
            self.stats.waits_first.append(self.clock() - self._waiting_since)
            self._waited_first = True

    # ---- what each pane shows ------------------------------------------------------------

    @property
    def k(self) -> int:
        if self.batch is not None:
            return len(self.batch.responses)
        return len(self.streaming.texts) if self.streaming is not None else 0

    def pane_text(self, pane: int) -> str:
        position = self.order[pane]
        if self.batch is not None:
            return self.batch.responses[position].text
        return self.streaming.texts[position] if self.streaming is not None else ""

    def readable(self, pane: int) -> bool:
        """Whether the response in `pane` is complete, so it can be judged and picked."""
        if not 0 <= pane < self.k:
            return False
        return self.batch is not None or self.streaming.finished[self.order[pane]]

    def waiting_for(self) -> str:
        """What the annotator is waiting for, in plain words ("" when nothing)."""
        if self.prompt_id is None or self.batch is not None:
            return ""
        if self.streaming is None:
            return "Waiting for the model to start on this prompt's responses…"
        done = sum(self.streaming.finished)
        speed = self.streaming.tokens_per_s
        rate = f" at {speed:.0f} tokens/s" if speed else ""
        if done:
            return (f"{done} of {self.k} responses complete, the rest being written{rate}: "
                    "read and pick the complete ones now.")
        return f"Writing {self.k} responses{rate}…"

    # ---- the draft ------------------------------------------------------------------------

    def _load_draft(self) -> None:
        """Start from the annotator's saved ranking of the shown batch, if there is one."""
        k = len(self.batch.responses) if self.batch else 0
        self.draft, self.all_bad = RankingDraft(k), False
        self.order = blind_order(self.batch.uid, self.annotator, range(k)) if self.batch else []
        if self.batch is None:
            return
        saved = self._rankings().ranking(self.batch.uid, self.annotator)
        if saved is not None:  # shown as it was labeled, whatever order the label came with
            pane_of = {response: pane for pane, response in enumerate(saved.shown_order)}
            position = {r.id: r.position for r in self.batch.responses}
            self.order = [position[r] for r in saved.shown_order]
            self.draft.load([[pane_of[r] for r in group] for group in saved.groups])
            self.all_bad = saved.all_bad

    @property
    def labeled(self) -> bool:
        return self.batch is not None and self._rankings().ranking(self.batch.uid, self.annotator) is not None

    def pick(self, pane: int) -> bool:
        """Place `pane` next if its response is complete; True once the ranking is complete."""
        if not self.readable(pane):
            return False
        return self.draft.pick(pane)

    def can_submit(self) -> bool:
        return self.batch is not None and (bool(self.draft.groups) or self.all_bad)

    def submit(self, all_bad: bool = False) -> str:
        """Save the draft as this annotator's ranking and move on; returns what to tell them.
        Before the batch is saved, a complete ranking is kept and saved with it (see on_saved)."""
        if all_bad:
            self.all_bad = True
        if self.batch is None:
            if self.streaming is not None and (self.draft.complete or self.all_bad):
                self.submit_when_saved = True
                return "Saved when the last response is complete."
            return ""
        if not self.draft.groups and not self.all_bad:
            return f"Pick at least the best response (1–{self.k}) before submitting."
        shown = [self.batch.responses[p].id for p in self.order]
        groups = [[shown[pane] for pane in group] for group in self.draft.final_groups()]
        seconds = self.label_clock.seconds
        self._rankings().save_ranking(self.batch.uid, self.annotator, groups, self.all_bad, seconds, shown)
        self.stats.labels += 1
        self.stats.seconds += seconds
        prompt = self.prompt_id
        label = f"{'all bad · ' if self.all_bad else ''}{self.draft.describe()}"
        said = self.next_unlabeled(after=prompt)
        return f"Saved prompt {prompt}: {label}" + (f". {said}" if said else "")

    def skip(self) -> str:
        said = self.next_unlabeled(after=self.prompt_id)
        return "Skipped; it stays unlabeled." + (f" {said}" if said else "")

    # ---- visibility and the clock ------------------------------------------------------------

    def set_visible(self, visible: bool) -> None:
        """The page was shown or hidden: the clock stops while hidden, and a wait for responses
        that the hidden page stopped making is not the annotator's."""
        if visible == self.visible:
            return
        self.visible = visible
        if not visible:
            self._waiting_since = None
        elif self.batch is None and self.prompt_id is not None:
            self._start_waiting()
        self._update_clock()

    def _update_clock(self) -> None:
        readable = self.batch is not None or (self.streaming is not None and any(self.streaming.finished))
        self.label_clock.run(self.visible and self.prompt_id is not None and readable)

    # ---- the reward model's view ---------------------------------------------------------------

    def set_least_sure_first(self, on: bool) -> None:
        self.least_sure_first = on
        self.priority = []

    def unscored_batches(self) -> dict[str, int]:
        """Batch uid -> prompt id of the unlabeled prompts with responses but no scores yet."""
        store = self._rankings()
        found = {}
        for row in self.rows():
            if not row.labeled_by_me and row.responses:
                batch = store.latest_batch(row.id)
                if batch is not None and batch.uid not in self.scores:
                    found[batch.uid] = row.id
        return found

    def order_by_uncertainty(self) -> int:
        """Put the prompts the reward model is least sure about first (the smallest gap between
        its two best scores). Ignored once "least sure first" is off, so a late scoring task
        cannot reorder the queue. Returns how many prompts were ordered."""
        if not self.least_sure_first:
            return 0
        from workbench.train.reward import uncertainty  # the reward model's side, loaded when asked

        store, scored = self._rankings(), []
        for row in self.rows():
            if not row.labeled_by_me and row.responses:
                batch = store.latest_batch(row.id)
                if batch is not None and batch.uid in self.scores:
                    scored.append((uncertainty(self.scores[batch.uid]), row.id))
        self.priority = [prompt for _, prompt in sorted(scored)]
        return len(self.priority)

    def new_reward_model(self) -> None:
        """Scores from another reward model are not comparable: forget them."""
        self.scores = {}
        self.priority = []

    # ---- progress ---------------------------------------------------------------------------

    def progress(self) -> dict:
        """The project's figures for this annotator, plus this session's wait figures."""
        if self.project is None:
            return {}
        figures = self._rankings().progress(self.annotator)
        figures["waits_first"] = Stats.summary(self.stats.waits_first)
        figures["waits_all"] = Stats.summary(self.stats.waits_all)
        return figures

