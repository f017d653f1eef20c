"""Rankings as preference pairs, and how much annotators agree (issue 4's core, no storage yet).

A ranking is a list of groups of response ids, best group first; responses in one group are
tied. From a ranking of K responses:

- every response in an earlier group is preferred to every response in a later group, which
  gives one (chosen, rejected) pair per ordered pair: K*(K-1)/2 pairs for a strict order;
- tied responses give no pair (they say nothing about which is better);
- an "all bad" ranking gives no pairs at all: the annotator said none is acceptable, so
  preferring one of them would teach the reward model to reward a bad answer. It stays in the
  lossless K-way export.

Agreement is measured on the same pairs: for every two responses of an item that two or more
annotators ranked, each annotator's judgment is "first better", "second better" or "tie".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

JUDGMENTS = ("first", "second", "tie")


@dataclass(frozen=True)
class Pair:
    chosen: int
    rejected: int
    rank_distance: int  # how many groups apart: a margin the reward model may use


def check_ranking(groups: Sequence[Sequence[int]]) -> None:
    """A ranking must name each response once, in at least one non-empty group."""
    seen = [response for group in groups for response in group]
    if not seen or any(not group for group in groups):
        raise ValueError("a ranking needs at least one response and no empty groups")
    if len(seen) != len(set(seen)):
        raise ValueError("a ranking names a response more than once")


def ranking_to_pairs(groups: Sequence[Sequence[int]], all_bad: bool = False) -> list[Pair]:
    check_ranking(groups)
    if all_bad:
        return []
    return [Pair(chosen, rejected, later - earlier)
            for earlier, better in enumerate(groups)
            for later in range(earlier + 1, len(groups))
            for chosen in better
            for rejected in groups[later]]


def judgment(groups: Sequence[Sequence[int]], first: int, second: int) -> str | None:
    """How one ranking orders two responses; None when it does not contain both."""
    position = {response: index for index, group in enumerate(groups) for response in group}
    if first not in position or second not in position:
        return None
    if position[first] == position[second]:
        return "tie"
    return "first" if position[first] < position[second] else "second"


def judgment_units(rankings_by_annotator: dict[str, Sequence[Sequence[int]]]) -> list[dict[str, str]]:
    """For one item: every pair of responses, with each annotator's judgment of it."""
    responses = sorted({r for groups in rankings_by_annotator.values() for group in groups for r in group})
    units = []
    for first, second in combinations(responses, 2):
        judged = {annotator: judgment(groups, first, second)
                  for annotator, groups in rankings_by_annotator.items()}
        judged = {annotator: value for annotator, value in judged.items() if value is not None}
        if len(judged) >= 2:
            units.append(judged)
    return units


def pairwise_agreement(units: Iterable[dict[str, str]]) -> float | None:
    """Share of annotator pairs, over all units, that gave the same judgment."""
    agree = total = 0
    for unit in units:
        for a, b in combinations(sorted(unit), 2):
            total += 1
            agree += unit[a] == unit[b]
    return agree / total if total else None


def cohens_kappa(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Agreement of two annotators on the same units, corrected for chance."""
    if len(first) != len(second):
        raise ValueError("Cohen's kappa needs the two annotators' judgments of the same units")
    if not first:
        return None
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second)) / n
    counts_a, counts_b = Counter(first), Counter(second)
    expected = sum(counts_a[c] * counts_b[c] for c in set(first) | set(second)) / (n * n)
    if expected == 1:
        return 1.0 if observed == 1 else None  # both used one category only: kappa is undefined
    return (observed - expected) / (1 - expected)


def fleiss_kappa(unit_counts: Sequence[Sequence[int]]) -> float | None:
    """Agreement of several annotators: per unit, how many chose each category (same total n)."""
    if not unit_counts:
        return None
    raters = sum(unit_counts[0])
    if raters < 2 or any(sum(counts) != raters for counts in unit_counts):
        raise ValueError("Fleiss' kappa needs the same number (2 or more) of judgments per unit")
    units = len(unit_counts)
    per_unit = [(sum(c * c for c in counts) - raters) / (raters * (raters - 1)) for counts in unit_counts]
    observed = sum(per_unit) / units
    shares = [sum(counts[j] for counts in unit_counts) / (units * raters) for j in range(len(unit_counts[0]))]
    expected = sum(share * share for share in shares)
    if expected == 1:
        return 1.0 if observed == 1 else None
    return (observed - expected) / (1 - expected)
