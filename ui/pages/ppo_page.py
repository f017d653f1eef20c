"""PPO page: settings with a memory estimate, the live run, and "Did it work?".

Left: PpoConfig's form (the SFT adapter to start from and the reward model are picked from the
project's finished runs) with the estimated memory of the run, and Start. Right, two tabs:
- Live run: the run monitor (progress, pause/resume/stop, plots of every PPO statistic, log)
  and the table of the latest step's samples; double-click one to read it whole.
- Did it work?: a finished run's policy against its reference (or another policy, a DPO one
  say) on held-out prompts, scored by the reward model (win rate, KL reached), and a button that
  sends the answers to the Rank page for a blind human judgement (ui/widgets/policy_comparison.py).
- Over-optimisation: the newest (or the live) run's reward-model score and agreement with the
  held-out human rankings against √KL from the reference, with the step to stop at.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import QHeaderView, QLabel, QSplitter, QTableWidgetItem, QTabWidget, QTextBrowser, QVBoxLayout, QWidget

from workbench.train.loop import named_adapters
from workbench.train.ppo import ADVANTAGES, METRIC_KEYS, PpoConfig, last_samples
from workbench.train.ppo_eval import policy_runs
from workbench.train.memory import estimate_for_session
from workbench.train.reward import adapter_name as rm_adapter, reward_runs
from workbench.train.runs import RunRecord, finished_adapters
from ui.run_view import RunMonitor, RunSettings, lay_out_run_page
from ui.run_manager import RunManager
from ui.text_views import TextDialog, one_line, read_only_table
from ui.widgets.overoptimisation import OveroptimisationView
from ui.widgets.policy_comparison import ComparisonView
from workbench.train.guidance import ppo_reward_advice
from workbench.train.reward_eval import evaluate_run
from ui.change_flow import follow
from ui.session import WorkbenchSession

PROGRESS_KEYS = ("objective/score", "objective/kl", "kl/coef")


class SamplesTable(QWidget):
    """The samples of the latest step: prompt, response, score and KL."""

    def __init__(self):
        super().__init__()
        self.samples: list[dict] = []
        self.title = QLabel("Samples of the latest step appear here.")
        self.table = read_only_table(["Prompt", "Response", "Score", "KL"])
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for column in (2, 3):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setToolTip("Click a sample to read it whole below; double-click to open it in a window")
        self.preview = QTextBrowser()
        self.preview.setPlaceholderText("Click a sample to read it whole.")
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(self.preview)
        split.setSizes([640, 320])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(split)
        self.table.cellDoubleClicked.connect(self.open_sample)
        self.table.currentCellChanged.connect(lambda row, *_: self.preview.setMarkdown(self.markdown(row)))

    def show_samples(self, step: int, samples: list[dict]) -> None:
        self.samples = list(samples)
        self.title.setText(f"Samples of step {step}:")
        self.table.setRowCount(len(samples))
        for row, sample in enumerate(samples):
            for column, text in enumerate((one_line(sample["prompt"]), one_line(sample["response"]),
                                           f"{sample['score']:+.3f}", f"{sample['kl']:.3f}")):
                item = QTableWidgetItem(text)
                if column >= 2:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
        self.preview.setMarkdown(self.markdown(self.table.currentRow()))  # the same row of the new step

    def show_from_run(self, record: RunRecord) -> None:
        """The last step's samples of a past run."""
        found = last_samples(record.folder)
        if found is None:
            self.table.setRowCount(0)
            self.title.setText("This run kept no samples.")
            return
        self.show_samples(*found)

    def markdown(self, row: int) -> str:
        if not 0 <= row < len(self.samples):
            return ""
        s = self.samples[row]
        return (f"**Prompt:** {s['prompt']}\n\n**Score** {s['score']:+.3f} · **KL** {s['kl']:.3f}\n\n---\n\n"
                f"{s['response']}")

    @Slot(int, int)
    def open_sample(self, row: int, _column: int = 0) -> None:
        if 0 <= row < len(self.samples):
            TextDialog(self, "PPO sample", self.markdown(row)).open()


class PpoPage(QWidget):
    review_prompt = Signal(int)

    def __init__(self, session: WorkbenchSession, runs: RunManager):
        super().__init__()
        self.session, self.runs = session, runs
        self._listed: tuple = ((), (), ())  # finished SFT adapters, reward models, PPO runs shown
        # The adapter and reward-model combos are filled from the project's finished runs.
        self.settings = RunSettings("PPO settings", PpoConfig, "Start PPO run", "ppo_settings",
                                    choices={"init_adapter": ("",), "reward_model": ("",), "kl_estimator": ("k1", "k3"),
                                             "advantage": ADVANTAGES},
                                    hidden=("grad_accum", "epochs", "validation_fraction", "lora_dropout"),
                                    labels={"max_steps": "Max steps",  # PPO has no epochs to fall back on
                                            "eval_every": "Held-out check every (steps)"},
                                    blank_texts={"init_adapter": "none (fresh)",
                                                 "reward_model": "newest finished"})
        self.form, self.start_button, self.hint = self.settings.form, self.settings.start_button, self.settings.hint
        self.memory = QLabel("")
        self.memory.setWordWrap(True)
        self.memory.setToolTip("Estimated from the model's shape and these settings: base weights, adapters with "
                               "the optimizer, the generation cache and one micro-batch's activations. A planning "
                               "figure: on a CPU in float32 the measured growth over a step was about 2.5x the "
                               "non-base part (bench/ppo_memory.py); measure on your GPU before trusting it.")
        self.settings.layout().insertWidget(1, self.memory)
        self.monitor = RunMonitor(runs, kind="ppo", keys=METRIC_KEYS, progress_keys=PROGRESS_KEYS)
        self.samples = SamplesTable()
        live = QSplitter(Qt.Orientation.Vertical)
        live.addWidget(self.monitor)
        live.addWidget(self.samples)
        live.setSizes([560, 200])
        self.comparison = ComparisonView(session, kinds=("ppo",))
        self.tabs = QTabWidget()
        self.tabs.addTab(live, "Live run")
        self.tabs.addTab(self.comparison, "Did it work?")
        self.overoptimisation = OveroptimisationView()
        self.tabs.addTab(self.overoptimisation, "Over-optimisation")
        lay_out_run_page(self, "PPO", "Reinforcement learning from the reward model: a LoRA policy samples answers to "
                         "your prompts, the reward model scores them, and PPO moves the policy towards higher scores "
                         "while a KL penalty keeps it close to its reference.", self.settings, self.tabs)

        self.start_button.clicked.connect(self.start)
        self.form.changed.connect(lambda: self.settings.show_time_estimate(self.session.project, "ppo"))
        self.form.changed.connect(self._estimate)
        self.comparison.review_prompt.connect(self.review_prompt)
        runs.step.connect(lambda log: runs.kind == "ppo" and log.samples and
                          self.samples.show_samples(log.step, list(log.samples)))
        runs.step.connect(self._heldout_evaluated)
        session.project_changed.connect(self._project_changed)
        session.model_changed.connect(self._update_enabled)
        follow(session, self, {"runs"}, self._runs_changed)
        runs.state_changed.connect(self._update_enabled)
        self._project_changed()

    @Slot()
    def _project_changed(self) -> None:
        self.refresh()
        self.settings.restore(self.session.project)  # the form's `changed` re-estimates memory

    def _finished_runs(self) -> tuple:
        project = self.session.project
        if project is None:
            return (), (), ()
        return (tuple(named_adapters(project, "sft")), tuple(run_id for run_id, _ in reward_runs(project)),
                tuple(run_id for run_id, _ in policy_runs(project)))

    def _heldout_evaluated(self, log) -> None:
        """The live run measured its policy on held-out data: its curve gains a point."""
        if self.runs.kind == "ppo" and "heldout/score" in log.metrics and self.session.project is not None:
            self.overoptimisation.show_run(RunRecord(self.session.project, log.run_id))

    @Slot()
    def _runs_changed(self) -> None:
        if self._finished_runs() != self._listed:
            self.refresh()  # a run finished with an adapter (a status or a log line alone is not news)

    @Slot()
    def refresh(self) -> None:
        """Adapters and reward models to choose from, finished runs to compare, then the buttons."""
        project = self.session.project
        self._listed = self._finished_runs()
        sft = list(self._listed[0])
        rms = [rm_adapter(run_id) for run_id in self._listed[1]]
        self.form.set_choices("init_adapter", [""] + sft)
        self.form.set_choices("reward_model", [""] + rms)
        self.comparison.refresh()
        if project is not None and not self.runs.running:
            runs = finished_adapters(project, "ppo")
            if runs:
                self.monitor.show_finished(runs[0][0])
                self.samples.show_from_run(RunRecord(project, runs[0][0]))
            self.overoptimisation.show_run(RunRecord(project, runs[0][0]) if runs else None)
        self._update_enabled()

    @Slot()
    def start(self) -> None:
        config = self.settings.config(self.session.project)
        if config is not None:
            self.tabs.setCurrentIndex(0)
            self.runs.start("ppo", config)

    @Slot()
    def _estimate(self) -> None:
        try:
            config = self.form.value()
        except ValueError:
            self.memory.setText("")
            return
        estimate = estimate_for_session(self.session.models, config)
        if estimate is None:
            self.memory.setText("Load a model to see how much memory this run needs.")
            return
        info = self.session.models.info
        where = "GPU memory" if info and info.device.startswith("cuda") else "memory"
        self.memory.setText(f"<b>Estimated {where}:</b> {estimate.describe()}")

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._update_enabled()  # prompts and reward models may have changed on other pages meanwhile

    @Slot()
    def _update_enabled(self) -> None:
        if not self.isVisible() and self.session.project is not None:
            return  # reads the database and re-estimates memory: done when the page is shown
        project, models = self.session.project, self.session.models
        prompts = project.counts()["prompts"] if project is not None else 0
        has_rm = bool(reward_runs(project)) if project is not None else False
        reason = ("Open a project first." if project is None else
                  "Load a base model on the Model page first." if not models.loaded else
                  "Add prompts on the Rank page first." if prompts == 0 else
                  "Train a reward model on the Reward page first." if not has_rm else
                  "A run is in progress." if self.runs.running else "")
        ready = f"{prompts:,} prompts, {models.info.name} on {models.info.device}." if models.info else ""
        if has_rm and not reason:  # the reward model PPO would chase, newest first as the form's default
            ready = f"{ready} {ppo_reward_advice(evaluate_run(reward_runs(project)[0][1].parent))}".strip()
        self.settings.set_ready(reason, ready, self.session.loading)
        self.settings.show_time_estimate(project, "ppo")
        self._estimate()
