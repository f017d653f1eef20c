"""Reward page: train a reward model on the rankings, watch it learn, and see how good it is.

Left: the settings (RewardConfig) and Start. Middle: the live run (the monitor every training page has,
following reward-model runs). Right: the evaluation of a finished run, read from its validation
pairs: accuracy with its 95% interval, accuracy per annotator, chosen vs rejected score
histograms, the score/length correlation (flagged when high), and the pairs it gets most wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QComboBox, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QSplitter, QTableWidgetItem, QVBoxLayout, QWidget,
)

from workbench.train.reward import METRIC_KEYS, RewardConfig, reward_runs
from workbench.train.reward_data import preference_pairs
from workbench.train.reward_eval import LENGTH_WARNING, RewardEvaluation, evaluate_run
from ui.run_view import RunMonitor, RunSettings, lay_out_run_page
from ui.run_manager import RunManager
from workbench.train.guidance import reward_data_advice, reward_verdict
from ui.change_flow import follow
from ui.session import WorkbenchSession
from ui.text_views import TextDialog, one_line, read_only_table

PROGRESS_KEYS = ("loss/train", "loss/validation", "reward/accuracy")
CHOSEN, REJECTED = (46, 125, 50), (198, 40, 40)


class EvaluationView(QWidget):
    def __init__(self):
        super().__init__()
        self.evaluation: RewardEvaluation | None = None
        self.run = QComboBox()
        self.run.setToolTip("A finished reward-model run")
        self.summary = QLabel("No finished reward model yet.")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.histogram = pg.PlotWidget()
        self.histogram.setBackground("w")
        self.histogram.setMinimumHeight(170)
        self.histogram.setLabel("bottom", "score")
        self.histogram.setLabel("left", "pairs")
        self.histogram.addLegend(offset=(5, 5))
        self.chosen_bars = pg.PlotDataItem(stepMode="center", fillLevel=0, fillOutline=True,
                                           brush=(*CHOSEN, 90), pen=pg.mkPen(CHOSEN, width=2), name="chosen")
        self.rejected_bars = pg.PlotDataItem(stepMode="center", fillLevel=0, fillOutline=True,
                                             brush=(*REJECTED, 90), pen=pg.mkPen(REJECTED, width=2), name="rejected")
        self.histogram.addItem(self.chosen_bars)
        self.histogram.addItem(self.rejected_bars)
        self.annotators = read_only_table(["Annotator", "Pairs", "Accuracy"])
        self.worst = read_only_table(["Margin", "Prompt", "Chosen", "Rejected"])
        self.worst.setToolTip("The validation pairs it gets most wrong; double-click to read one")
        for table in (self.annotators, self.worst):
            table.horizontalHeader().setStretchLastSection(True)
        self.annotators.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.worst.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.worst.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.annotators.setMaximumHeight(110)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Run"))
        row.addWidget(self.run, 1)
        layout.addLayout(row)
        layout.addWidget(self.summary)
        layout.addWidget(self.histogram, 2)
        layout.addWidget(self.annotators)
        layout.addWidget(QLabel("Validation pairs it gets most wrong:"))
        layout.addWidget(self.worst, 3)
        self.worst.cellDoubleClicked.connect(self.open_pair)

    def show_evaluation(self, evaluation: RewardEvaluation | None) -> None:
        self.evaluation = evaluation
        if evaluation is None:
            self.summary.setText("This run has no validation pairs to judge it by (validation_fraction 0, or "
                                 "too few prompts).")
            self.chosen_bars.setData([], [])
            self.rejected_bars.setData([], [])
            self.annotators.setRowCount(0)
            self.worst.setRowCount(0)
            return
        e = evaluation
        warning = ""
        if e.length_warning:
            warning = (f"<br><span style='color:#b00020'><b>Warning:</b> scores follow response length "
                       f"(r = {e.length_correlation:+.2f}, |r| ≥ {LENGTH_WARNING}). The model may reward length "
                       "rather than quality; PPO would exploit this.</span>")
        length = "" if e.length_correlation is None else f" · score vs length r = {e.length_correlation:+.2f}"
        self.summary.setText(
            f"Validation accuracy <b>{e.accuracy:.1%}</b> (95% CI {e.ci_low:.1%}–{e.ci_high:.1%}) on "
            f"{e.pairs:,} pairs from {e.prompts:,} prompts it never trained on · mean margin {e.mean_margin:+.3f}{length}"
            f"<br>{reward_verdict(e)}{warning}")
        everything = e.chosen_scores + e.rejected_scores
        edges = np.histogram_bin_edges(everything, bins=min(30, max(5, len(everything) // 3)))
        self.chosen_bars.setData(edges, np.histogram(e.chosen_scores, edges)[0])
        self.rejected_bars.setData(edges, np.histogram(e.rejected_scores, edges)[0])
        self.annotators.setRowCount(len(e.per_annotator))
        for row, (name, (pairs, accuracy)) in enumerate(e.per_annotator.items()):
            for column, text in enumerate((name, f"{pairs:,}", f"{accuracy:.1%}")):
                self.annotators.setItem(row, column, QTableWidgetItem(text))
        self.worst.setRowCount(len(e.worst))
        for row, pair in enumerate(e.worst):
            margin = pair["chosen_score"] - pair["rejected_score"]
            for column, text in enumerate((f"{margin:+.3f}", pair["prompt"], pair["chosen"], pair["rejected"])):
                self.worst.setItem(row, column, QTableWidgetItem(one_line(text)))

    @Slot(int, int)
    def open_pair(self, row: int, _column: int = 0) -> None:
        if self.evaluation is not None and row < len(self.evaluation.worst):
            pair = self.evaluation.worst[row]
            TextDialog(self, "Validation pair",
                       f"**Prompt:** {pair['prompt']}\n\n**Annotator:** {pair['annotator']}\n\n---\n\n"
                       f"**Chosen** (score {pair['chosen_score']:.3f})\n\n{pair['chosen']}\n\n---\n\n"
                       f"**Rejected** (score {pair['rejected_score']:.3f})\n\n{pair['rejected']}").open()


class RewardPage(QWidget):
    def __init__(self, session: WorkbenchSession, runs: RunManager):
        super().__init__()
        self.session, self.runs = session, runs
        self._listed: list = []  # the finished reward-model runs offered for evaluation
        self.settings = RunSettings("Reward-model settings", RewardConfig, "Start reward-model run", "rm_settings")
        self.form, self.start_button, self.hint = self.settings.form, self.settings.start_button, self.settings.hint
        self.monitor = RunMonitor(runs, kind="rm", keys=METRIC_KEYS, progress_keys=PROGRESS_KEYS)
        self.evaluation = EvaluationView()
        evaluation_box = QGroupBox("How good is it?")
        QVBoxLayout(evaluation_box).addWidget(self.evaluation)
        splitter = QSplitter()
        splitter.addWidget(self.monitor)
        splitter.addWidget(evaluation_box)
        splitter.setSizes([520, 480])
        lay_out_run_page(self, "Reward model", "A LoRA adapter and a scalar head on the loaded base, trained on the "
                         "preference pairs of your rankings (Bradley-Terry), with whole prompts held out to validate it.",
                         self.settings, splitter)

        self.start_button.clicked.connect(self.start)
        self.form.changed.connect(lambda: self.settings.show_time_estimate(self.session.project, "rm"))
        self.evaluation.run.currentIndexChanged.connect(self._show_selected_run)
        session.project_changed.connect(lambda: self.settings.restore(session.project))
        session.project_changed.connect(self.refresh)
        session.model_changed.connect(self._update_enabled)
        follow(session, self, {"runs"}, self._runs_changed)
        runs.state_changed.connect(self._update_enabled)
        self.refresh()

    @Slot()
    def start(self) -> None:
        config = self.settings.config(self.session.project)
        if config is not None:
            self.runs.start("rm", config)

    @Slot()
    def _runs_changed(self) -> None:
        project = self.session.project
        if project is not None and self._listed != reward_runs(project):
            self.refresh()  # a reward model finished (a run's status or its log alone is not news)

    @Slot()
    def refresh(self) -> None:
        """The finished runs to evaluate (newest first), then the buttons."""
        project = self.session.project
        runs = reward_runs(project) if project is not None else []
        self._listed = runs
        self.evaluation.run.blockSignals(True)
        self.evaluation.run.clear()
        for run_id, folder in runs:
            self.evaluation.run.addItem(f"run {run_id}", (run_id, str(folder.parent)))
        self.evaluation.run.blockSignals(False)
        self._show_selected_run()
        self._update_enabled()

    @Slot()
    def _show_selected_run(self) -> None:
        chosen = self.evaluation.run.currentData()
        if chosen is None:
            self.evaluation.summary.setText("No finished reward model yet. Rank responses, then start a run.")
            return
        run_id, folder = chosen
        self.evaluation.show_evaluation(evaluate_run(Path(folder)))
        self.monitor.show_finished(run_id)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._update_enabled()  # counted when shown (rankings, the model and runs change while hidden)

    @Slot()
    def _update_enabled(self) -> None:
        if not self.isVisible() and self.session.project is not None:
            return  # counting pairs reads every ranking: done when the page is shown, not on each run event
        project, models = self.session.project, self.session.models
        pairs = len(preference_pairs(project)) if project is not None else 0
        reason = ("Open a project first." if project is None else
                  "Load a base model on the Model page first." if not models.loaded else
                  "Rank some responses first: there are no preference pairs." if pairs == 0 else
                  "A run is in progress." if self.runs.running else "")
        ready = f"{pairs:,} preference pairs, {models.info.name} on {models.info.device}." if models.info else ""
        advice = reward_data_advice(project) if project is not None and pairs else ""
        self.settings.set_ready(reason, f"{ready} {advice}".strip(), self.session.loading)
        self.settings.show_time_estimate(project, "rm")
