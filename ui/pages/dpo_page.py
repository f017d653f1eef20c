"""DPO page: a policy trained directly on the rankings, no reward model in between.

Left: DpoConfig's form (the SFT adapter to start from is picked from the project's finished
runs; the loss from DPO, IPO and SimPO) with the estimated memory of the run, and Start. Right,
two tabs:
- Live run: the run monitor (progress, pause/resume/stop, plots of TRL's statistics: implicit
  rewards of chosen and rejected replies, their margin and accuracy, on training and held-out
  pairs, log-probs, loss), with a line on how well the finished policy's implicit reward orders
  the held-out pairs (the same pairs a reward model is validated on);
- Did it work?: the policy against its reference or any other finished policy (a PPO one) on
  held-out prompts, scored by the reward model where there is one, sent blind to the Rank page
  for a human win rate (ui/widgets/policy_comparison.py, shared with the PPO page).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import QLabel, QTabWidget, QVBoxLayout, QWidget

from workbench.train.dpo import METRIC_KEYS, DpoConfig
from workbench.train.dpo_loss import LOSS_TYPES
from workbench.train.guidance import reward_data_advice
from workbench.train.loop import named_adapters
from workbench.train.memory import estimate_for_session
from workbench.train.policy_export import policy_runs
from workbench.train.reward_data import preference_pairs
from workbench.train.reward_eval import evaluate_run
from workbench.train.runs import finished_adapters
from ui.change_flow import follow
from ui.run_manager import RunManager
from ui.run_view import RunMonitor, RunSettings, lay_out_run_page
from ui.session import WorkbenchSession
from ui.widgets.policy_comparison import ComparisonView

PROGRESS_KEYS = ("loss/train", "eval/rewards/accuracies", "rewards/margins")


class DpoPage(QWidget):
    review_prompt = Signal(int)

    def __init__(self, session: WorkbenchSession, runs: RunManager):
        super().__init__()
        self.session, self.runs = session, runs
        self._listed: tuple = ((), ())  # finished SFT adapters and policy runs shown
        self.settings = RunSettings("DPO settings", DpoConfig, "Start DPO run", "dpo_settings",
                                    choices={"init_adapter": ("",), "loss_type": LOSS_TYPES},
                                    labels={"beta": "Beta", "batch_size": "Pairs per pass", "grad_accum": "Passes per step", "simpo_gamma": "SimPO margin (gamma)",
                                            "max_new_tokens": "Answer tokens (Did it work?)",
                                            "temperature": "Temperature (Did it work?)"},
                                    blank_texts={"init_adapter": "none (fresh)"})
        self.form, self.start_button, self.hint = self.settings.form, self.settings.start_button, self.settings.hint
        self.memory = QLabel("")
        self.memory.setWordWrap(True)
        self.memory.setToolTip("Estimated from the model's shape and these settings at max_length: base weights, the "
                               "adapter with its optimizer, and one pass's chosen and rejected conversations (pairs per "
                               "pass) with their reply logits. The reference is an adapter switched on the same base, its "
                               "log-probs computed once, so it adds no copy of the model.")
        self.settings.layout().insertWidget(1, self.memory)
        self.monitor = RunMonitor(runs, kind="dpo", keys=METRIC_KEYS, progress_keys=PROGRESS_KEYS)
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        self.verdict.setTextFormat(Qt.TextFormat.RichText)
        live = QWidget()
        live_layout = QVBoxLayout(live)
        live_layout.setContentsMargins(0, 0, 0, 0)
        live_layout.addWidget(self.monitor, 1)
        live_layout.addWidget(self.verdict)
        self.comparison = ComparisonView(session, kinds=("dpo",))
        self.tabs = QTabWidget()
        self.tabs.addTab(live, "Live run")
        self.tabs.addTab(self.comparison, "Did it work?")
        lay_out_run_page(self, "DPO", "Direct preference optimisation: a LoRA policy learns from your rankings "
                         "themselves, no reward model in between, raising the chosen replies' probability against "
                         "the rejected ones' relative to its reference (DPO, IPO or SimPO).", self.settings, self.tabs)

        self.start_button.clicked.connect(self.start)
        self.form.changed.connect(lambda: self.settings.show_time_estimate(self.session.project, "dpo"))
        self.form.changed.connect(self._estimate)
        self.comparison.review_prompt.connect(self.review_prompt)
        session.project_changed.connect(self._project_changed)
        session.model_changed.connect(self._update_enabled)
        follow(session, self, {"runs"}, self._runs_changed)
        runs.state_changed.connect(self._update_enabled)
        self._project_changed()

    @Slot()
    def _project_changed(self) -> None:
        self.refresh()
        self.settings.restore(self.session.project)

    def _finished_runs(self) -> tuple:
        project = self.session.project
        if project is None:
            return (), ()
        policies = tuple(run_id for run_id, _ in policy_runs(project))
        return tuple(named_adapters(project, "sft")), policies

    @Slot()
    def _runs_changed(self) -> None:
        if self._finished_runs() != self._listed:
            self.refresh()  # a run finished with an adapter (a status or a log line alone is not news)

    @Slot()
    def refresh(self) -> None:
        """Adapters to start from, finished runs to compare, the newest run's curves, the buttons."""
        project = self.session.project
        self._listed = self._finished_runs()
        self.form.set_choices("init_adapter", [""] + list(self._listed[0]))
        self.comparison.refresh()
        runs = finished_adapters(project, "dpo") if project is not None else []
        if runs and not self.runs.running:
            self.monitor.show_finished(runs[0][0])
        self._show_verdict(runs[0][0] if runs else None, runs[0][1].parent if runs else None)
        self._update_enabled()

    def _show_verdict(self, run_id: int | None, folder) -> None:
        """How well the newest finished policy's implicit reward orders the held-out pairs."""
        evaluation = evaluate_run(folder) if folder is not None else None
        if evaluation is None:
            self.verdict.setText("" if run_id is None else f"Run {run_id} held out no pairs to judge it by.")
            return
        e = evaluation
        self.verdict.setText(
            f"Run {run_id}: its implicit reward prefers the chosen reply in <b>{e.accuracy:.0%}</b> of {e.pairs} "
            f"held-out pairs from {e.prompts} prompts (95% CI {e.ci_low:.0%}–{e.ci_high:.0%}), the pairs a reward "
            "model is validated on. "
            "Whether its answers are better: <i>Did it work?</i>")

    @Slot()
    def start(self) -> None:
        config = self.settings.config(self.session.project)
        if config is not None:
            self.tabs.setCurrentIndex(0)
            self.runs.start("dpo", config)

    @Slot()
    def _estimate(self) -> None:
        try:
            config = self.form.value()
        except ValueError:
            self.memory.setText("")
            return
        estimate = estimate_for_session(self.session.models, config, "dpo")
        if estimate is None:
            self.memory.setText("Load a model to see how much memory this run needs.")
            return
        info = self.session.models.info
        where = "GPU memory" if info and info.device.startswith("cuda") else "memory"
        self.memory.setText(f"<b>Estimated {where}, at most:</b> {estimate.describe()}")

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._update_enabled()  # rankings and the model change on other pages meanwhile

    @Slot()
    def _update_enabled(self) -> None:
        if not self.isVisible() and self.session.project is not None:
            return  # counting pairs reads every ranking: done when the page is shown
        project, models = self.session.project, self.session.models
        pairs = len(preference_pairs(project)) if project is not None else 0
        reason = ("Open a project first." if project is None else
                  "Load a base model on the Model page first." if not models.loaded else
                  "Rank some responses first: there are no preference pairs." if pairs == 0 else
                  "A run is in progress." if self.runs.running else "")
        ready = f"{pairs:,} preference pairs, {models.info.name} on {models.info.device}." if models.info else ""
        advice = reward_data_advice(project, "DPO policy") if project is not None and pairs else ""
        self.settings.set_ready(reason, f"{ready} {advice}".strip(), self.session.loading)
        self.settings.show_time_estimate(project, "dpo")
        self._estimate()
