"""The over-optimisation view of a PPO run (Gao et al. 2022's curves, from ppo_heldout.py).

Two plots share one x axis, √KL from the reference: above, the reward model's score of the
policy's answers to held-out prompts; below, how often the policy agrees with the team's
held-out rankings. A dashed line marks the step to stop at, and a sentence says what the
curves mean and which checkpoint is nearest.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from ui.plots import AXIS_PEN, TEXT_COLOUR
from workbench.train.ppo_heldout import Curve, curve
from workbench.train.runs import RunRecord

SCORE_COLOUR, AGREEMENT_COLOUR, STOP_COLOUR = "#1c7ed6", "#2b8a3e", "#e8590c"


def _plot(title: str, y_label: str) -> pg.PlotWidget:
    widget = pg.PlotWidget(background="w")
    plot = widget.getPlotItem()
    plot.setTitle(title, color=TEXT_COLOUR, size="10pt")
    plot.showGrid(x=True, y=True, alpha=0.15)
    plot.setLabel("left", y_label, color=TEXT_COLOUR)
    plot.setLabel("bottom", "√KL from the reference (nats½)", color=TEXT_COLOUR)
    for name in ("left", "bottom"):
        plot.getAxis(name).setPen(pg.mkPen(AXIS_PEN))
        plot.getAxis(name).setTextPen(pg.mkPen(TEXT_COLOUR))
    widget.setMinimumHeight(170)
    return widget


def explain(shape: Curve | None, checkpoints: list[int]) -> str:
    """What the curves say, in a sentence or three."""
    if shape is None:
        return ("This run has no held-out evaluations: runs record them every eval_every steps when some "
                "prompts are held out (heldout_fraction above 0).")
    first, last = shape.points[0], shape.points[-1]
    rise = last.score - first.score
    text = (f"{len(shape.points)} evaluations, step {first.step} to {last.step}: the reward model's score moved "
            f"{rise:+.3f} while the policy went √KL {last.sqrt_kl:.2f} from its reference.")
    stop = shape.stop_point()
    if stop is None:
        return text + (" There are no held-out human pairs to check it against (the reward model has no validation "
                       "pairs, or the reward is a Python function), so the score alone cannot show over-optimisation.")
    text += (f" Agreement with your held-out rankings was best at step {stop.step} "
             f"({stop.pair_accuracy:.0%} at √KL {stop.sqrt_kl:.2f}).")
    if stop.step == last.step:
        text += " It was still at its best at the end: more steps may help."
    elif stop.step == first.step and last.score <= first.score:
        text += (" Neither the score nor the agreement rose: this run made the policy worse. Look at the live "
                 "run's response length and EOS rate: a policy that learns to stop early to escape the "
                 "no-end-token penalty loses what the rankings rewarded.")
    elif last.score > stop.score and last.pair_accuracy is not None and last.pair_accuracy < stop.pair_accuracy:
        text += (f" After it the score kept rising but agreement fell to {last.pair_accuracy:.0%}: the policy is "
                 "learning what the reward model likes rather than what you ranked. Stop there.")
    if checkpoints:
        nearest = min(checkpoints, key=lambda s: abs(s - stop.step))
        text += f" Nearest kept checkpoint: step {nearest}."
    return text


class OveroptimisationView(QWidget):
    def __init__(self):
        super().__init__()
        self.score_plot = _plot("Reward-model score on held-out prompts", "score")
        self.agreement_plot = _plot("Agreement with held-out human rankings", "pair accuracy")
        self.agreement_plot.getPlotItem().setYRange(0.0, 1.0)
        self.agreement_plot.setXLink(self.score_plot)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._items = []
        self.shape: Curve | None = None
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.score_plot, 1)
        layout.addWidget(self.agreement_plot, 1)
        self.show_run(None)

    def show_run(self, record: RunRecord | None) -> None:
        for plot, item in self._items:
            plot.removeItem(item)
        self._items = []
        self.shape = curve(record) if record is not None else None
        if record is None:
            self.summary.setText("No PPO run yet. Each run measures its policy on held-out prompts as it trains; "
                                 "the curves appear here.")
            return
        self.summary.setText(explain(self.shape, [step for step, _ in record.checkpoints()]))
        if self.shape is None:
            return
        points = self.shape.points
        x = [p.sqrt_kl for p in points]
        self._add(self.score_plot, pg.PlotDataItem(x, [p.score for p in points], pen=pg.mkPen(SCORE_COLOUR, width=2),
                                                   symbol="o", symbolSize=6, symbolBrush=SCORE_COLOUR))
        rated = [p for p in points if p.pair_accuracy is not None]
        if rated:
            self._add(self.agreement_plot, pg.PlotDataItem(
                [p.sqrt_kl for p in rated], [p.pair_accuracy for p in rated], pen=pg.mkPen(AGREEMENT_COLOUR, width=2),
                symbol="o", symbolSize=6, symbolBrush=AGREEMENT_COLOUR))
            chance = pg.InfiniteLine(0.5, angle=0, pen=pg.mkPen("#adb5bd", style=Qt.PenStyle.DotLine))
            self._add(self.agreement_plot, chance)
        stop = self.shape.stop_point()
        if stop is not None:
            for plot in (self.score_plot, self.agreement_plot):
                line = pg.InfiniteLine(stop.sqrt_kl, angle=90, pen=pg.mkPen(STOP_COLOUR, width=2,
                                                                            style=Qt.PenStyle.DashLine),
                                       label=f"stop: step {stop.step}", labelOpts={"color": STOP_COLOUR,
                                                                                   "position": 0.9})
                self._add(plot, line)

    def _add(self, widget: pg.PlotWidget, item) -> None:
        widget.addItem(item)
        self._items.append((widget, item))
