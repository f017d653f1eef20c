"""How much annotators agree, over the batches that two or more of them ranked.

The unit of agreement is a pair of responses of one batch (see `preferences.judgment_units`):
each annotator's judgment of it is "first", "second" or "tie". Statistics:

- pairwise agreement: share of annotator pairs, over all units, that gave the same judgment;
- Cohen's kappa: only when exactly two annotators took part (it is defined for two);
- Fleiss' kappa: only when every unit has the same number (3 or more) of judgments;
- Krippendorff's alpha (nominal): whenever two or more annotators took part; it allows each
  unit to be judged by a different set of annotators, which is the usual case in a team.

All-bad rankings count like any other: the annotator still ordered the responses, and how
they ordered bad answers is still a judgment two people can agree or disagree on. (They give
no training pairs; see `preferences.py`.)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations

from workbench.data.preferences import (
    JUDGMENTS, cohens_kappa, fleiss_kappa, judgment_units, pairwise_agreement,
)
from workbench.data.rankings import RankingStore, positions
from workbench.project import Project


def krippendorff_alpha(units: list[dict[str, str]]) -> float | None:
    """Nominal Krippendorff's alpha; each unit maps annotator -> category.

    Built from the coincidence matrix: within a unit of m values, every ordered pair of values
    from different annotators adds 1/(m-1). Units with fewer than two values pair with nothing
    and are left out. alpha = 1 - (n-1) * (disagreeing coincidences) / (sum of n_c * n_k, c != k).
    None when no unit has two values. When every value is the same category the expected
    disagreement is zero; like the kappas in `preferences.py`, that perfect agreement gives 1.0.
    """
    coincidences: Counter[tuple[str, str]] = Counter()
    for unit in units:
        values = list(unit.values())
        if len(values) < 2:
            continue
        weight = 1 / (len(values) - 1)
        for i, j in combinations(range(len(values)), 2):
            coincidences[values[i], values[j]] += weight
            coincidences[values[j], values[i]] += weight
    if not coincidences:
        return None
    totals: Counter[str] = Counter()
    for (category, _), weight in coincidences.items():
        totals[category] += weight
    n = sum(totals.values())
    observed = sum(weight for (c, k), weight in coincidences.items() if c != k)
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
    if expected == 0:
        return 1.0  # one category only, so no disagreement either
    return 1 - (n - 1) * observed / expected


@dataclass(frozen=True)
class PairAgreement:
    first: str
    second: str
    units: int                 # response pairs both judged
    agreement: float           # share of those they judged the same
    kappa: float | None        # Cohen's kappa on those units


@dataclass(frozen=True)
class Disagreement:
    batch: str
    prompt_id: int
    prompt: str                # the prompt's last user message
    share: float               # share of the batch's units where the annotators do not all agree
    rankings: dict[str, str]   # annotator -> generation positions (from 1) best first: "2 > 1 = 3 > 4"
    all_bad: dict[str, bool]   # annotator -> marked every response bad


@dataclass
class AgreementReport:
    annotators: dict[str, int] = field(default_factory=dict)  # every annotator -> batches they ranked
    items: int = 0             # batches ranked by two or more annotators
    units: int = 0             # response pairs judged in those batches
    pairwise: float | None = None
    cohen: float | None = None
    fleiss: float | None = None
    alpha: float | None = None
    pairs: list[PairAgreement] = field(default_factory=list)
    disagreements: list[Disagreement] = field(default_factory=list)  # most disagreeing first


def agreement_report(project: Project) -> AgreementReport:
    store = RankingStore(project)
    rankings = store.rankings()
    report = AgreementReport(annotators=dict(sorted(Counter(r.annotator for r in rankings).items())))
    by_batch = defaultdict(list)
    for ranking in rankings:
        by_batch[ranking.batch].append(ranking)
    all_units, raters = [], set()
    for batch_uid, labels in by_batch.items():
        if len(labels) < 2:
            continue
        units = judgment_units({r.annotator: r.groups for r in labels})
        report.items += 1
        all_units += units
        raters.update(r.annotator for r in labels)
        disagreeing = sum(len(set(unit.values())) > 1 for unit in units)
        if disagreeing:
            report.disagreements.append(_disagreement(project, store, batch_uid, labels, disagreeing / len(units)))
    report.units = len(all_units)
    if not all_units:
        return report
    report.pairwise = pairwise_agreement(all_units)
    report.alpha = krippendorff_alpha(all_units)
    report.pairs = _pairs(all_units, sorted(raters))
    if len(raters) == 2:
        report.cohen = report.pairs[0].kappa if report.pairs else None
    sizes = {len(unit) for unit in all_units}
    if len(sizes) == 1 and min(sizes) >= 3:
        report.fleiss = fleiss_kappa([[list(unit.values()).count(j) for j in JUDGMENTS] for unit in all_units])
    # Most disagreeing first; equal shares keep the batches' order (stable sort).
    report.disagreements.sort(key=lambda d: -d.share)
    return report


def _pairs(units: list[dict[str, str]], annotators: list[str]) -> list[PairAgreement]:
    pairs = []
    for a, b in combinations(annotators, 2):
        shared = [unit for unit in units if a in unit and b in unit]
        if shared:
            first, second = [u[a] for u in shared], [u[b] for u in shared]
            same = sum(x == y for x, y in zip(first, second))
            pairs.append(PairAgreement(a, b, len(shared), same / len(shared), cohens_kappa(first, second)))
    return pairs


def _disagreement(project: Project, store: RankingStore, batch_uid: str, labels, share: float) -> Disagreement:
    batch = store.batch(batch_uid)
    text = project.query("SELECT text FROM prompts WHERE id = ?", (batch.prompt_id,))[0][0]
    shown = {r.annotator: " > ".join(" = ".join(str(p + 1) for p in sorted(group))
                                     for group in positions(r, batch)) for r in labels}
    return Disagreement(batch_uid, batch.prompt_id, text, share, dict(sorted(shown.items())),
                        {r.annotator: r.all_bad for r in sorted(labels, key=lambda r: r.annotator)})
