"""Rankings to preference pairs and agreement statistics, against hand-computed values."""

import pytest

from workbench.data.preferences import (
    Pair, cohens_kappa, fleiss_kappa, judgment, judgment_units, pairwise_agreement, ranking_to_pairs,
)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_a_strict_order_of_k_gives_every_ordered_pair(k):
    pairs = ranking_to_pairs([[r] for r in range(k)])
    assert len(pairs) == k * (k - 1) // 2
    assert all(p.chosen < p.rejected and p.rank_distance == p.rejected - p.chosen for p in pairs)


def test_ties_give_no_pair_between_them_but_pairs_with_the_others():
    pairs = ranking_to_pairs([[10], [11, 12], [13]])
    assert set(pairs) == {Pair(10, 11, 1), Pair(10, 12, 1), Pair(10, 13, 2), Pair(11, 13, 1), Pair(12, 13, 1)}
    assert ranking_to_pairs([[1, 2, 3]]) == []


def test_all_bad_gives_no_pairs():
    assert ranking_to_pairs([[1], [2], [3]], all_bad=True) == []


@pytest.mark.parametrize("groups", [[], [[1], []], [[1], [1]], [[1, 2], [2]]])
def test_malformed_rankings_are_refused(groups):
    with pytest.raises(ValueError):
        ranking_to_pairs(groups)


def test_judgments_and_units():
    assert judgment([[1], [2]], 1, 2) == "first" and judgment([[2], [1]], 1, 2) == "second"
    assert judgment([[1, 2]], 1, 2) == "tie" and judgment([[1]], 1, 2) is None
    units = judgment_units({"ann": [[1], [2], [3]], "bo": [[2], [1, 3]]})
    # pairs (1,2), (1,3), (2,3): ann says first, first, first; bo says second, tie, first
    assert units == [{"ann": "first", "bo": "second"}, {"ann": "first", "bo": "tie"},
                     {"ann": "first", "bo": "first"}]
    assert pairwise_agreement(units) == pytest.approx(1 / 3)


def test_cohens_kappa_by_hand():
    # observed 3/4; chance: A half x/half y, B a quarter x -> 0.5*0.25 + 0.5*0.75 = 0.5
    assert cohens_kappa(["x", "x", "y", "y"], ["x", "y", "y", "y"]) == pytest.approx(0.5)
    assert cohens_kappa(["x", "y"], ["x", "y"]) == pytest.approx(1.0)
    assert cohens_kappa(["x", "y"], ["y", "x"]) == pytest.approx(-1.0)
    assert cohens_kappa([], []) is None


def test_fleiss_kappa_by_hand():
    # units [3,0], [0,3], [2,1]: P_i = 1, 1, 1/3 -> 7/9; p = 5/9, 4/9 -> Pe = 41/81; kappa = 22/40
    assert fleiss_kappa([[3, 0], [0, 3], [2, 1]]) == pytest.approx(0.55)
    with pytest.raises(ValueError):
        fleiss_kappa([[2, 0], [1, 2]])
