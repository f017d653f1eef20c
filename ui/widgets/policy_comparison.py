"""Did it work? A finished policy (PPO or DPO) against its reference or another policy, on
held-out prompts: the reward model's win rate where the project has one, the KL from the
baseline, both answers side by side, and a button that sends them blind to the Rank page,
whose human win rate shows here once they are ranked."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox, QHBoxLayout, QHeaderView, QLabel, QPushButton, QSpinBox, QSplitter, QTableWidgetItem, QTextBrowser,
    QVBoxLayout, QWidget,
)

from workbench.train.loop import LABELS
from workbench.train.ppo_eval import Comparison, compare_policy, human_win_rate, policy_runs, send_to_ranking
from workbench.train.runs import RunRecord
from ui.change_flow import follow
from ui.session import WorkbenchSession
from ui.text_views import TextDialog, one_line, read_only_table


def score_text(score: float | None) -> str:
    return "—" if score is None else f"{score:+.3f}"


class ComparisonView(QWidget):
    """A finished run's policy (of the page's `kinds`) against its reference, or against another
    finished policy, on held-out prompts."""

    review_prompt = Signal(int)  # open the Rank page on this prompt

    def __init__(self, session: WorkbenchSession, kinds: tuple[str, ...] = ("ppo",)):
        super().__init__()
        self.session, self.kinds = session, kinds
        self.comparison: Comparison | None = None
        self.task = None
        self._policies: list = []            # finished policy runs (run id, folder), newest first
        self._kind_of: dict[int, str] = {}   # run id -> kind
        self.run = QComboBox()
        self.run.setToolTip(f"A finished {' or '.join(LABELS[k] for k in kinds)} run")
        self.against = QComboBox()
        self.against.setToolTip("What the policy is compared with: its own reference (the SFT adapter it started "
                                "from, or the base), or another finished policy, on prompts neither trained on")
        self.answers = QSpinBox(minimum=1, maximum=3, value=2)
        self.answers.setToolTip("Answers per held-out prompt from each side (one batched call per prompt)")
        self.compare_button = QPushButton("Compare on held-out prompts")
        self.compare_button.setObjectName("primary")
        self.send_button = QPushButton("Send to Rank page (blind)")
        self.send_button.setToolTip("Each held-out prompt's answers become one batch on the Rank page, shown in "
                                    "blind order; rank them and the human win rate appears here")
        self.summary = QLabel("Choose a finished run and compare it with its reference.")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.human = QLabel("")
        self.human.setWordWrap(True)
        self.human.setTextFormat(Qt.TextFormat.RichText)
        self.table = read_only_table(["Prompt", "Baseline", "Policy", "Baseline score", "Policy score", "KL"])
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        for column in range(3):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)
        for column in range(3, 6):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setToolTip("Click a row to read both answers whole below; double-click to open them in a window")
        # Side by side below the table: the answers whole, as the cells cut them to one line.
        self.reference_view, self.policy_view = QTextBrowser(), QTextBrowser()
        self.reference_view.setPlaceholderText("Click a row to read the baseline's answer whole.")
        self.policy_view.setPlaceholderText("Click a row to read the policy's answer whole.")
        answers = QSplitter(Qt.Orientation.Horizontal)
        answers.addWidget(self.reference_view)
        answers.addWidget(self.policy_view)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(answers)
        split.setSizes([360, 200])

        row = QHBoxLayout()
        row.addWidget(QLabel("Run"))
        row.addWidget(self.run, 1)
        row.addWidget(QLabel("against"))
        row.addWidget(self.against, 1)
        row.addWidget(QLabel("Answers per prompt"))
        row.addWidget(self.answers)
        row.addWidget(self.compare_button)
        row.addWidget(self.send_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.summary)
        layout.addWidget(self.human)
        layout.addWidget(split, 1)

        self.run.currentIndexChanged.connect(self._fill_against)
        self.against.currentIndexChanged.connect(self._show_selected)
        self.compare_button.clicked.connect(self.compare)
        self.send_button.clicked.connect(self.send)
        self.table.cellDoubleClicked.connect(self.open_pair)
        self.table.currentCellChanged.connect(lambda row, *_: self._read(row))
        follow(session, self, {"rankings"}, self._show_human)  # the sent prompts being ranked
        session.model_changed.connect(self._update_buttons)

    def refresh(self) -> None:
        project = self.session.project
        self._policies = policy_runs(project) if project is not None else []
        self._kind_of = kind_of = {s["id"]: s["kind"] for s in project.runs()} if project is not None else {}
        chosen = self.run.currentData()
        self.run.blockSignals(True)
        self.run.clear()
        for run_id, _folder in self._policies:
            if kind_of.get(run_id) in self.kinds:
                self.run.addItem(f"run {run_id}", run_id)
        if chosen is not None and self.run.findData(chosen) >= 0:
            self.run.setCurrentIndex(self.run.findData(chosen))
        self.run.blockSignals(False)
        self._fill_against()

    @Slot()
    def _fill_against(self) -> None:
        """Its reference, then every other finished policy, PPO and DPO alike."""
        run_id, chosen = self.run.currentData(), self.against.currentData()
        self.against.blockSignals(True)
        self.against.clear()
        self.against.addItem("its reference", None)
        for other, _folder in self._policies:
            if other != run_id:
                self.against.addItem(f"run {other} ({LABELS[self._kind_of[other]]})", other)
        if chosen is not None and self.against.findData(chosen) >= 0:
            self.against.setCurrentIndex(self.against.findData(chosen))
        self.against.blockSignals(False)
        self._show_selected()

    @Slot()
    def _show_selected(self) -> None:
        run_id, against = self.run.currentData(), self.against.currentData()
        project = self.session.project
        comparison = Comparison.load(RunRecord(project, run_id).folder, against) if run_id is not None else None
        self.show_comparison(comparison)
        if run_id is None:
            self.summary.setText("No finished run yet: start one in the settings on the left.")
        elif comparison is None:
            self.summary.setText(f"Run {run_id} has not been compared with "
                                 f"{'its reference' if against is None else f'run {against}'} yet: press Compare.")

    def show_comparison(self, comparison: Comparison | None) -> None:
        self.comparison = comparison
        pairs = comparison.pairs if comparison else []
        self.table.setRowCount(len(pairs))
        for row, p in enumerate(pairs):
            for column, text in enumerate((one_line(p.prompt), one_line(p.reference), one_line(p.policy),
                                           score_text(p.reference_score), score_text(p.policy_score), f"{p.kl:.2f}")):
                item = QTableWidgetItem(text)
                if column == 4 and comparison.scored and p.policy_score != p.reference_score:  # a win green, a loss red
                    better = p.policy_score > p.reference_score
                    item.setForeground(Qt.GlobalColor.darkGreen if better else Qt.GlobalColor.darkRed)
                self.table.setItem(row, column, item)
        if comparison is not None:
            self.summary.setText(comparison.summary())
            # The answers per prompt this comparison was made with, not the box's last setting.
            first = pairs[0].prompt_id if pairs else None
            self.answers.setValue(max(1, sum(p.prompt_id == first for p in pairs)))
        if pairs and self.table.currentRow() < 0:
            self.table.setCurrentCell(0, 0)  # something to read below from the start
        self._read(self.table.currentRow() if pairs else -1)
        self._show_human()
        self._update_buttons()

    @Slot()
    def _show_human(self) -> None:
        c, project = self.comparison, self.session.project
        if c is None or project is None or not c.sent_batches:
            self.human.setText("")
            return
        result = human_win_rate(project, c)
        if result is None:
            self.human.setText(f"Sent {len(c.sent_batches)} prompts to the Rank page; rank them there and the "
                               "human win rate appears here.")
        else:
            rate, pairs, labels = result
            self.human.setText(f"<b>Human win rate of {c.policy} over {c.reference}: {rate:.0%}</b> over {pairs} "
                               f"pairs from {labels} rankings of {len(c.sent_batches)} sent prompts (ties count half).")

    @Slot()
    def _update_buttons(self) -> None:
        busy = self.task is not None
        self.compare_button.setEnabled(not busy and self.run.currentData() is not None
                                       and self.session.models.loaded)
        self.send_button.setEnabled(not busy and self.comparison is not None and bool(self.comparison.pairs)
                                    and not self.comparison.sent_batches)

    @Slot()
    def compare(self) -> None:
        run_id, project, models = self.run.currentData(), self.session.project, self.session.models
        against = self.against.currentData()
        if run_id is None or self.task is not None:
            return
        self.session.release_model()
        answers = self.answers.value()

        def got(item) -> None:
            if isinstance(item, Comparison):
                self.show_comparison(item)
            else:
                self.summary.setText(item)

        def failed(message: str) -> None:
            self.summary.setText(f"Could not compare: {message}")

        def done(_outcome: str) -> None:
            self.task = None
            self._update_buttons()

        self.task = self.session.run_task(
            lambda should_stop: compare_policy(project, models, run_id, answers, should_stop, against),
            on_item=got, on_error=failed, on_finished=done)
        self._update_buttons()

    @Slot()
    def send(self) -> None:
        if self.comparison is None or self.session.project is None:
            return
        made = send_to_ranking(self.session.project, self.comparison)  # the Rank page sees them as a change
        self._show_human()
        self._update_buttons()
        if made:
            self.review_prompt.emit(self.comparison.pairs[0].prompt_id)

    def _pair(self, row: int):
        pairs = self.comparison.pairs if self.comparison is not None else []
        return pairs[row] if 0 <= row < len(pairs) else None

    def _read(self, row: int) -> None:
        p = self._pair(row)
        if p is None:
            self.reference_view.clear()
            self.policy_view.clear()
            return
        c = self.comparison
        self.reference_view.setMarkdown(f"**{c.reference}** (score {score_text(p.reference_score)})"
                                        f"\n\n*{p.prompt}*\n\n{p.reference}")
        self.policy_view.setMarkdown(f"**{c.policy}** (score {score_text(p.policy_score)}, "
                                     f"KL {p.kl:.2f})\n\n*{p.prompt}*\n\n{p.policy}")

    @Slot(int, int)
    def open_pair(self, row: int, _column: int = 0) -> None:
        p = self._pair(row)
        if p is not None:
            c = self.comparison
            TextDialog(self, "Baseline and policy", f"**Prompt:** {p.prompt}\n\n---\n\n**{c.reference}** "
                       f"(score {score_text(p.reference_score)})\n\n{p.reference}\n\n---\n\n"
                       f"**{c.policy}** (score {score_text(p.policy_score)}, KL {p.kl:.2f})\n\n"
                       f"{p.policy}").open()
