"""Agreement statistics and the agreement report, against values worked out by hand."""

import pytest

from workbench.data.agreement import PairAgreement, agreement_report, krippendorff_alpha
from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.project import Project


def test_krippendorff_alpha_by_hand_with_missing_values():
    # unit  A       B       C
    #  1    first   first   second
    #  2    second  second  -
    #  3    tie     first   first
    #  4    first   -       -        one value: pairs with nothing, left out
    #  5    tie     tie     tie
    # Coincidences (each ordered pair of values in a unit of m values weighs 1/(m-1)):
    #   u1: ff 1, fs 1, sf 1   u2: ss 2   u3: ff 1, ft 1, tf 1   u5: tt 3
    # n_first = 2+1+1 = 4, n_second = 2+1 = 3, n_tie = 3+1 = 4, n = 11
    # disagreeing coincidences: fs+sf+ft+tf = 4; sum of n_c*n_k over c != k: 2*(4*3 + 4*4 + 3*4) = 80
    # alpha = 1 - (n-1) * 4 / 80 = 1 - 40/80 = 0.5
    units = [{"A": "first", "B": "first", "C": "second"}, {"A": "second", "B": "second"},
             {"A": "tie", "B": "first", "C": "first"}, {"A": "first"}, {"A": "tie", "B": "tie", "C": "tie"}]
    assert krippendorff_alpha(units) == pytest.approx(0.5)


def test_krippendorff_alpha_two_annotators_and_edge_cases():
    # xx, yy, xy: o_xx 2, o_yy 2, o_xy = o_yx 1; n_x = n_y = 3, n = 6 -> 1 - 5*2/18 = 4/9
    assert krippendorff_alpha([{"a": "x", "b": "x"}, {"a": "y", "b": "y"}, {"a": "x", "b": "y"}]) \
        == pytest.approx(4 / 9)
    assert krippendorff_alpha([{"a": "x", "b": "y"}, {"a": "y", "b": "x"}]) < 0
    assert krippendorff_alpha([{"a": "x", "b": "x"}, {"a": "x", "c": "x"}]) == 1.0  # one category: perfect
    assert krippendorff_alpha([]) is None
    assert krippendorff_alpha([{"a": "x"}, {"b": "y"}]) is None


# ---------------------------------------------------------------- the report


def make_batch(project, prompt: str, k: int):
    prompt_id = PromptStore(project).add(prompt)
    batch = RankingStore(project).add_batch(prompt_id, [f"{prompt} reply {i}" for i in range(k)],
                                            [{"source": "base", "seed": i} for i in range(k)])
    return batch, [r.id for r in batch.responses]


def rank(project, batch, annotator, groups, ids, all_bad=False):
    """Rank by generation positions; shown in reverse so the blind order differs from generation."""
    RankingStore(project).save_ranking(batch.uid, annotator, [[ids[p] for p in g] for g in groups],
                                       all_bad=all_bad, shown_order=list(reversed(ids)))


def test_report_with_two_annotators(tmp_path):
    project = Project.create(tmp_path / "p.rlhf")
    one, ids1 = make_batch(project, "first", 3)
    two, ids2 = make_batch(project, "second", 2)
    three, ids3 = make_batch(project, "third", 2)
    rank(project, one, "ann", [[0], [1], [2]], ids1)
    rank(project, one, "bo", [[1], [0, 2]], ids1)
    rank(project, two, "ann", [[1], [0]], ids2)
    rank(project, two, "bo", [[1], [0]], ids2)
    rank(project, three, "ann", [[0], [1]], ids3)  # one annotator only: not part of agreement
    report = agreement_report(project)
    # units: batch 1 (0,1) first/second, (0,2) first/tie, (1,2) first/first; batch 2 (0,1) second/second
    assert report.annotators == {"ann": 3, "bo": 2}
    assert (report.items, report.units) == (2, 4)
    assert report.pairwise == pytest.approx(0.5)
    # ann: f f f s, bo: s t f s. observed 1/2; chance (3*1 + 1*2)/16 = 5/16 -> (1/2 - 5/16)/(11/16) = 3/11
    assert report.cohen == pytest.approx(3 / 11)
    assert report.fleiss is None  # two raters per unit
    # coincidences ff 2, ss 2, fs=sf 1, ft=tf 1: n_f 4, n_s 3, n_t 1, n 8 -> 1 - 7*4/38 = 5/19
    assert report.alpha == pytest.approx(5 / 19)
    assert report.pairs == [PairAgreement("ann", "bo", 4, 0.5, pytest.approx(3 / 11))]
    [item] = report.disagreements
    assert (item.batch, item.prompt_id, item.prompt) == (one.uid, one.prompt_id, "first")
    assert item.share == pytest.approx(2 / 3)
    # generation positions counted from 1, never the (reversed) order they were shown in
    assert item.rankings == {"ann": "1 > 2 > 3", "bo": "2 > 1 = 3"}
    assert item.all_bad == {"ann": False, "bo": False}


def test_report_with_three_annotators_and_all_bad(tmp_path):
    project = Project.create(tmp_path / "p.rlhf")
    batch, ids = make_batch(project, "three", 3)
    rank(project, batch, "ann", [[0], [1], [2]], ids)
    rank(project, batch, "bo", [[0], [1], [2]], ids)
    rank(project, batch, "cy", [[2], [1], [0]], ids, all_bad=True)  # its order still counts
    report = agreement_report(project)
    # every unit: ann first, bo first, cy second
    assert (report.items, report.units) == (1, 3)
    assert report.pairwise == pytest.approx(1 / 3)
    assert report.cohen is None  # three annotators
    # counts [2, 1, 0] per unit: P_i = 1/3; p = 2/3, 1/3 -> Pe = 5/9; kappa = (1/3 - 5/9)/(4/9) = -1/2
    assert report.fleiss == pytest.approx(-0.5)
    # per unit ff 1, fs 1, sf 1 -> n_f 6, n_s 3, n 9: 1 - 8*6/36 = -1/3
    assert report.alpha == pytest.approx(-1 / 3)
    assert [(p.first, p.second, p.units, p.agreement) for p in report.pairs] == [
        ("ann", "bo", 3, 1.0), ("ann", "cy", 3, 0.0), ("bo", "cy", 3, 0.0)]
    assert report.pairs[0].kappa == 1.0
    [item] = report.disagreements
    assert item.share == 1.0 and item.all_bad == {"ann": False, "bo": False, "cy": True}
    assert item.rankings["cy"] == "3 > 2 > 1"

    # A batch ranked by two of them: units no longer all have three raters, so no Fleiss.
    other, other_ids = make_batch(project, "two", 2)
    rank(project, other, "ann", [[0], [1]], other_ids)
    rank(project, other, "cy", [[0], [1]], other_ids)
    report = agreement_report(project)
    assert report.fleiss is None and report.cohen is None and report.alpha is not None
    assert (report.items, report.units) == (2, 4)
    # ann-cy: ann f f f f, cy s s s f: agreement 1/4; chance 4*1/16 = 1/4 -> kappa 0
    assert report.pairs[1] == PairAgreement("ann", "cy", 4, 0.25, pytest.approx(0.0))


def test_disagreements_are_sorted_most_disagreeing_first(tmp_path):
    project = Project.create(tmp_path / "p.rlhf")
    mild, ids_mild = make_batch(project, "mild", 3)
    strong, ids_strong = make_batch(project, "strong", 2)
    agreed, ids_agreed = make_batch(project, "agreed", 2)
    rank(project, mild, "ann", [[0], [1], [2]], ids_mild)
    rank(project, mild, "bo", [[0], [2], [1]], ids_mild)  # 1 of 3 units differs
    rank(project, strong, "ann", [[0], [1]], ids_strong)
    rank(project, strong, "bo", [[1], [0]], ids_strong)  # 1 of 1
    rank(project, agreed, "ann", [[0, 1]], ids_agreed)
    rank(project, agreed, "bo", [[0, 1]], ids_agreed)
    report = agreement_report(project)
    assert [(d.prompt, d.share) for d in report.disagreements] == [("strong", 1.0), ("mild", pytest.approx(1 / 3))]
    assert report.disagreements[1].rankings == {"ann": "1 > 2 > 3", "bo": "1 > 3 > 2"}


def test_report_without_shared_items(tmp_path):
    project = Project.create(tmp_path / "p.rlhf")
    batch, ids = make_batch(project, "alone", 2)
    rank(project, batch, "ann", [[0], [1]], ids)
    report = agreement_report(project)
    assert report.annotators == {"ann": 1} and (report.items, report.units) == (0, 0)
    assert (report.pairwise, report.cohen, report.fleiss, report.alpha) == (None, None, None, None)
    assert report.pairs == [] and report.disagreements == []
