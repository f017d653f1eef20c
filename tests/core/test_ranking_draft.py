"""The ranking being made from keys: picks, ties, the implied last place, undo, best-of-K."""

from workbench.data.ranking_draft import RankingDraft
from workbench.data.preferences import ranking_to_pairs


def test_a_full_order_completes_after_k_minus_one_picks():
    draft = RankingDraft(4)
    assert not draft.pick(1) and not draft.pick(3)
    assert draft.pick(0)  # the last pane's place is implied
    assert draft.groups == [[1], [3], [0], [2]] and draft.describe() == "2 > 4 > 1 > 3"


def test_ties_join_the_previous_pick_and_undo_steps_back():
    draft = RankingDraft(4)
    draft.pick(2)
    draft.tie()
    assert draft.describe() == "3 = …"
    draft.pick(0)
    assert draft.groups == [[2, 0]] and draft.place_of(0) == draft.place_of(2) == 1
    draft.undo()
    assert draft.groups == [[2]]
    draft.tie()
    draft.undo()  # first undo cancels the pending tie, the pick stays
    assert draft.groups == [[2]] and not draft.tie_next
    draft.pick(2)  # a pane already placed is ignored
    assert draft.groups == [[2]]


def test_best_of_k_ties_the_rest_at_the_bottom():
    draft = RankingDraft(5)
    draft.pick(3)
    assert draft.final_groups() == [[3], [0, 1, 2, 4]]
    assert len(ranking_to_pairs(draft.final_groups())) == 4  # best over each other, no pairs among the rest


def test_dragging_sets_a_strict_order_and_clear_starts_over():
    draft = RankingDraft(3)
    draft.pick(0)
    draft.tie()
    draft.pick(1)
    draft.set_order([1, 0])
    assert draft.final_groups() == [[1], [0], [2]]
    draft.clear()
    assert draft.groups == [] and draft.final_groups() == [[0, 1, 2]] and draft.describe() == ""
    draft.pick(7)  # no such pane
    assert draft.groups == []
