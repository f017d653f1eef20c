"""LabelingSession without Qt: next prompt, prefetch, the clock that pauses, picking while the
rest stream, submit, waits, and the reward model's ordering (issue 15)."""

import pytest

from workbench.data.labeling_session import MAX_SECONDS_PER_LABEL, LabelingSession
from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.project import Project

TEXTS = ["Check the tracking link.", "Wait a week.", "Ask the courier.", "Sorry about that."]


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def project(tmp_path):
    project = Project.create(tmp_path / "label.rlhf")
    for text in ("Where is my parcel?", "I want a refund.", "Change my address.", "Cancel my order."):
        PromptStore(project).add(text)
    yield project
    project.close()


@pytest.fixture
def clock():
    return FakeClock()


def labeling(project, clock, annotator="ana") -> LabelingSession:
    session = LabelingSession(project, annotator, clock=clock)
    session.set_visible(True)
    return session


def write_batch(project, prompt_id, texts=TEXTS) -> str:
    return RankingStore(project).add_batch(prompt_id, texts, [{} for _ in texts]).uid


def stream(session, prompt_id, uid, finished, tokens=None):
    texts = [text if done else text[:5] for text, done in zip(TEXTS, finished)]
    return session.on_streaming(prompt_id, uid, texts, finished, tokens or [10] * len(TEXTS))


def test_the_clock_counts_reading_time_only(project, clock):
    session = labeling(project, clock)
    assert session.next_unlabeled() == "" and session.prompt_id == 1 and session.batch is None
    clock.wait(40)  # the model writes; the annotator can only wait
    assert session.label_clock.seconds == 0
    stream(session, 1, "b1", [False, True, False, False])
    clock.wait(5)  # one pane readable: reading counts
    session.set_visible(False)
    clock.wait(600)  # on another page
    session.set_visible(True)
    clock.wait(3)
    assert session.label_clock.seconds == pytest.approx(8)
    uid = write_batch(project, 1)
    session.on_saved(1, uid)
    clock.wait(2)
    assert session.pick(0) is False and session.pick(1) is False
    message = session.submit()
    ranking = RankingStore(project).ranking(uid, "ana")
    assert ranking.seconds_spent == pytest.approx(10) and message.startswith("Saved prompt 1:")
    assert session.prompt_id == 2  # moved on to the next unlabeled prompt


def test_the_clock_is_capped_for_someone_who_walked_away(project, clock):
    session = labeling(project, clock)
    uid = write_batch(project, 1)
    session.next_unlabeled()
    assert session.batch.uid == uid
    clock.wait(3 * 3600)
    session.pick(0)
    session.submit()
    assert RankingStore(project).ranking(uid, "ana").seconds_spent == MAX_SECONDS_PER_LABEL


def test_a_finished_pane_is_picked_while_the_others_stream(project, clock):
    session = labeling(project, clock)
    session.next_unlabeled()
    stream(session, 1, "b1", [False, False, False, False])
    assert not any(session.readable(p) for p in range(4)) and "Writing 4 responses" in session.waiting_for()
    clock.wait(2)
    stream(session, 1, "b1", [True, False, True, False], tokens=[30, 30, 30, 30])
    readable = [p for p in range(4) if session.readable(p)]
    assert len(readable) == 2 and "2 of 4 responses complete" in session.waiting_for()
    assert "60 tokens/s" in session.waiting_for()  # 120 tokens in 2 s
    unreadable = next(p for p in range(4) if p not in readable)
    assert session.pick(unreadable) is False and session.draft.groups == []
    session.pick(readable[0])
    session.pick(readable[1])
    assert session.submit() == ""  # nothing to save until the batch is
    uid = write_batch(project, 1)
    # The saved batch keeps the blind order and the picks made while it streamed.
    session.streaming.batch_uid = uid
    assert session.on_saved(1, uid) and session.draft.groups == [[readable[0]], [readable[1]]]
    assert session.submit().startswith("Saved prompt 1")


def test_a_ranking_completed_while_streaming_is_saved_with_the_batch(project, clock):
    session = labeling(project, clock)
    session.next_unlabeled()
    stream(session, 1, "b1", [True, True, True, False])
    for pane in [p for p in range(4) if session.readable(p)]:
        complete = session.pick(pane)
    assert complete  # the fourth place is implied
    assert session.submit() == "Saved when the last response is complete." and session.submit_when_saved


def test_waits_are_measured_from_moving_on_to_readable_and_to_saved(project, clock):
    session = labeling(project, clock)
    session.next_unlabeled()
    clock.wait(4)
    stream(session, 1, "b1", [True, False, False, False])
    clock.wait(6)
    uid = write_batch(project, 1)
    session.streaming.batch_uid = uid
    session.on_saved(1, uid)
    write_batch(project, 2)  # made ahead while prompt 1 was ranked
    session.pick(0)
    session.submit()
    assert session.prompt_id == 2 and session.batch is not None
    assert session.stats.waits_first == [4, 0] and session.stats.waits_all == [10, 0]
    session.step(1)  # looking around is not waiting
    assert session.stats.waits_first == [4, 0]


def test_prefetch_wants_the_shown_prompt_then_the_next_unlabeled_without_responses(project, clock):
    session = labeling(project, clock)
    write_batch(project, 3)
    session.next_unlabeled()
    assert session.wanted(ahead=2) == [1, 2, 4]  # 3 has responses already
    assert session.wanted(ahead=0) == [1]
    uid = write_batch(project, 1)
    session.on_saved(1, uid)
    assert session.wanted(ahead=2) == [2, 4]


def test_an_empty_project_and_the_last_prompt(project, clock, tmp_path):
    empty = Project.create(tmp_path / "empty.rlhf")
    session = labeling(empty, clock)
    assert "No prompts yet" in session.next_unlabeled() and session.prompt_id is None
    assert not session.can_submit() and session.submit() == ""
    empty.close()
    session = labeling(project, clock)
    for prompt in range(1, 5):
        write_batch(project, prompt)
    session.next_unlabeled()
    messages = []
    for _ in range(4):
        session.pick(0)
        messages.append(session.submit())
    assert "Every prompt is labeled" in messages[-1]


def test_least_sure_first_orders_by_the_score_gap_and_ignores_late_scores(project, clock):
    session = labeling(project, clock)
    uids = {prompt: write_batch(project, prompt) for prompt in (1, 2, 3)}
    session.set_least_sure_first(True)
    assert set(session.unscored_batches()) == set(uids.values())
    session.scores = {uids[1]: [3.0, 0.0], uids[2]: [1.0, 0.9], uids[3]: [2.0, 1.0]}
    assert session.order_by_uncertainty() == 3 and session.priority == [2, 3, 1]
    session.next_unlabeled()
    assert session.prompt_id == 2
    session.set_least_sure_first(False)  # a scoring task still running reports afterwards
    assert session.order_by_uncertainty() == 0 and session.priority == []
