"""The parts every training page (SFT, reward model, PPO) is made of: a run's settings form with
Start (RunSettings), the live view of the run (RunMonitor) and the page layout that holds them.

The live view (progress, pause/resume/stop, plots, log) follows the RunManager, so it shows
whichever run of its kind is active, whoever started it (its page, or Resume on the Runs page).
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QGroupBox, QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton, QScrollArea,
    QSizePolicy, QSplitter, QVBoxLayout, QWidget,
)

from workbench.train.guidance import run_time_advice
from workbench.train.loop import LABELS
from workbench.train.runs import RunRecord, StepLog
from workbench.train.lora_settings import SCHEDULES
from workbench.train.sft import METRIC_KEYS
from ui.config_form import ConfigForm
from ui.formatting import duration
from ui.plots import MetricsView
from ui.run_manager import RunManager
from ui.text_views import ElidedLabel

PROGRESS_KEYS = ("loss/train", "loss/validation", "train/lr")
STEP_FORMAT = "step %v / %m"


class RunMonitor(QWidget):
    """Progress, controls, live plots and the log of the active run of one kind."""

    def __init__(self, runs: RunManager, kind: str = "sft", keys: tuple[str, ...] = METRIC_KEYS,
                 progress_keys: tuple[str, ...] = PROGRESS_KEYS):
        super().__init__()
        self.runs, self.kind, self.progress_keys = runs, kind, progress_keys
        self.label = LABELS.get(kind, kind)
        self.title = QLabel("No run yet. Choose settings and press Start.")
        self.title.setObjectName("runTitle")
        self.progress = QProgressBar()
        self.progress.setFormat("")  # no steps to count before a run: "step 0 / 1" read as a 1-step run
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.timing = ElidedLabel("")  # cut rather than widen: the Reward page must fit 1280 px
        # Labels whose text changes every step keep their size, so the plots never relayout.
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.timing.setFixedWidth(165)
        self.timing.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.pause_button = QPushButton("Pause")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Save a checkpoint and stop; the run can be resumed from the Runs page.")
        self.plots = MetricsView(keys=keys)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)  # a long run must not grow the widget without bound
        self.log.setPlaceholderText("The run's log appears here.")

        controls = QHBoxLayout()
        controls.addWidget(self.progress, 1)
        controls.addWidget(self.timing)
        controls.addWidget(self.pause_button)
        controls.addWidget(self.stop_button)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.plots)
        splitter.addWidget(self.log)
        splitter.setSizes([520, 140])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addLayout(controls)
        layout.addWidget(splitter, 1)

        self.pause_button.clicked.connect(self._toggle_pause)
        self.stop_button.clicked.connect(runs.stop)
        # Only this kind's runs: the SFT training page follows SFT, the Reward page reward-model runs.
        runs.started.connect(lambda run_id: self._mine() and self._started(run_id))
        runs.step.connect(lambda log: self._mine() and self._step(log))
        runs.ended.connect(lambda run_id, status: self._mine() and self._ended(run_id, status))
        runs.failed.connect(lambda message: self._mine() and self._failed(message))
        runs.state_changed.connect(self._update_buttons)
        self._update_buttons()

    def _mine(self) -> bool:
        return self.runs.kind == self.kind

    def show_finished(self, run_id: int) -> None:
        """A past run's curves, from the project, while no run of this kind is going."""
        if self.runs.running and self._mine():
            return
        record = RunRecord(self.runs.session.project, run_id)
        metrics = record.metrics()
        last = max((steps[-1] for steps, _ in metrics.values() if steps), default=0)
        self.progress.setFormat(STEP_FORMAT)
        self.progress.setRange(0, max(last, 1))
        self.progress.setValue(last)
        self.plots.forget_runs()
        self.plots.set_step_range(None)
        self.plots.set_run_history(run_id, f"run {run_id}", metrics)
        self.plots.show_runs([run_id])
        self.title.setText(f"Run {run_id} · {self.label} · {record.status}")
        self.log.setPlainText("\n".join(f"{time.strftime('%H:%M:%S', time.localtime(at))}  {message}"
                                         for at, _level, message in record.logs()[-500:]))

    @Slot(int)
    def _started(self, run_id: int) -> None:
        # A resumed run's earlier steps come from the project, so its curves start at step 1.
        history = RunRecord(self.runs.session.project, run_id).metrics()
        self.plots.forget_runs()
        self.plots.set_run_history(run_id, f"run {run_id}", history)
        self.plots.show_runs([run_id])
        self.log.clear()
        self.title.setText(f"Run {run_id} · {self.label} · running")

    @Slot(object)
    def _step(self, log: StepLog) -> None:
        if log.total_steps and log.total_steps != self.progress.maximum():
            self.plots.set_step_range(log.total_steps)
        if log.total_steps:
            self.progress.setFormat(STEP_FORMAT)
            self.progress.setRange(0, log.total_steps)
            self.progress.setValue(log.step)
        if log.metrics:
            self.plots.add_points(log.run_id, [(key, log.step, value) for key, value in log.metrics.items()])
            shown = "  ".join(f"{key.split('/')[-1] if key != 'loss/validation' else 'val'} {log.metrics[key]:.4g}"
                              for key in self.progress_keys if key in log.metrics)
            self.log.appendPlainText(f"step {log.step}/{log.total_steps}  {shown}")
        if log.message:
            self.log.appendPlainText(f"{time.strftime('%H:%M:%S')}  {log.message}")
        eta = f" · about {duration(log.eta_s)} left" if log.eta_s else ""
        self.timing.setText(f"{duration(log.elapsed_s)} elapsed{eta}")
        self.title.setText(f"Run {log.run_id} · {self.label} · {log.status}")

    @Slot(int, str)
    def _ended(self, run_id: int, status: str) -> None:
        self.title.setText(f"Run {run_id} · {self.label} · {status}")
        self._update_buttons()

    @Slot(str)
    def _failed(self, message: str) -> None:
        self.log.appendPlainText(f"{time.strftime('%H:%M:%S')}  FAILED: {message}")
        self.title.setText(f"Run {self.runs.run_id} · {self.label} · failed: {message}")

    @Slot()
    def _toggle_pause(self) -> None:
        if self.runs.paused:
            self.runs.resume()
        else:
            self.runs.pause()

    @Slot()
    def _update_buttons(self) -> None:
        mine = self.runs.running and self._mine()
        self.pause_button.setEnabled(mine)
        self.stop_button.setEnabled(mine)
        self.pause_button.setText("Resume" if self.runs.paused else "Pause")


# What each setting is called on screen; a field missing here shows its name, capitalised.
FORM_LABELS = {"lora_rank": "LoRA rank", "lora_alpha": "LoRA alpha", "lora_dropout": "LoRA dropout",
               "target_modules": "LoRA target layers", "grad_accum": "Gradient accumulation",
               "max_length": "Max length (tokens)", "max_steps": "Max steps (0: epochs)",
               "max_grad_norm": "Gradient clipping (norm)", "validation_fraction": "Validation share",
               "eval_every": "Evaluate every (steps)", "checkpoint_every": "Checkpoint every (steps)",
               "keep_checkpoints": "Checkpoints kept", "rank_margin": "Margin from rank distance",
               "head_lr_scale": "Head learning-rate multiple",
               "init_adapter": "Start from SFT adapter", "reward_model": "Reward model",
               "length_penalty": "Length penalty", "max_new_tokens": "Max new tokens",
               "kl_coef": "KL coefficient", "kl_target": "KL target", "kl_horizon": "KL horizon (steps)",
               "kl_estimator": "KL estimator", "missing_eos_penalty": "Penalty for no end token",
               "gamma": "Discount (γ)", "lam": "GAE λ", "ppo_epochs": "PPO epochs per batch",
               "num_minibatches": "Minibatches", "micro_batch_size": "Micro-batch size",
               "clip_range": "Policy clip range", "clip_range_value": "Value clip range",
               "vf_coef": "Value loss weight", "whiten_rewards": "Whiten rewards",
               "samples_per_step": "Samples shown per step", "heldout_fraction": "Held-out prompt share",
               "advantage": "Advantage estimator", "group_size": "Answers per prompt (RLOO, GRPO)",
               "kl_in_loss": "KL as a loss term (RLOO, GRPO)", "loss_type": "Loss (DPO, IPO, SimPO)",
               "label_smoothing": "Label smoothing", "annotators": "Only these annotators"}


def lay_out_run_page(page: QWidget, title: str, subtitle: str, settings: QWidget, body: QWidget) -> None:
    """The layout of every training page (SFT, reward model, PPO): title, subtitle, then the
    run's settings on the left and `body` (the live run and whatever else) filling the rest."""
    heading = QLabel(title)
    heading.setObjectName("pageTitle")
    explanation = QLabel(subtitle)
    explanation.setWordWrap(True)
    row = QHBoxLayout()
    row.addWidget(settings)
    row.addWidget(body, 1)
    layout = QVBoxLayout(page)
    layout.addWidget(heading)
    layout.addWidget(explanation)
    layout.addLayout(row, 1)


class RunSettings(QGroupBox):
    """A run's settings form (from its config dataclass), a hint and Start. The project
    remembers the last settings started under `meta_key`, and the form shows them again."""

    def __init__(self, title: str, config_class, start_text: str, meta_key: str,
                 choices: dict[str, tuple[str, ...]] | None = None, hidden: tuple[str, ...] = (),
                 labels: dict[str, str] | None = None, blank_texts: dict[str, str] | None = None):
        super().__init__(title)
        self.config_class, self.meta_key = config_class, meta_key
        self.form = ConfigForm(config_class, choices={"schedule": SCHEDULES, **(choices or {})},
                               labels={**FORM_LABELS, **(labels or {})}, hidden=hidden, blank_texts=blank_texts)
        scroll = QScrollArea()
        scroll.setWidget(self.form)
        scroll.setWidgetResizable(True)
        self.start_button = QPushButton(start_text)
        self.start_button.setObjectName("primary")
        self.hint = QLabel("")
        self.hint.setWordWrap(True)
        self.time_estimate = QLabel("")  # from the step times measured in this project's runs
        self.time_estimate.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.time_estimate)
        layout.addWidget(self.hint)
        layout.addWidget(self.start_button)
        self.setFixedWidth(360)

    def config(self, project):
        """The form's config, remembered in `project`; None (with the reason shown) if invalid."""
        try:
            config = self.form.value()
        except ValueError as error:
            self.hint.setText(f"Check the settings: {error}.")
            return None
        self.hint.setText("")
        project.set_meta(self.meta_key, config.to_dict())  # the next start begins here
        return config

    def restore(self, project) -> None:
        stored = project.get_meta(self.meta_key) if project is not None else None
        try:
            self.form.set_value(self.config_class.from_dict(stored) if stored else self.config_class())
        except (TypeError, ValueError):
            self.form.set_value(self.config_class())  # settings from another version that no longer hold

    def show_time_estimate(self, project, kind: str) -> None:
        """How long Start would take, when the steps are set and a run of `kind` was measured here."""
        editor = self.form.editors.get("max_steps")
        steps = editor.value() if editor is not None else 0
        self.time_estimate.setText(run_time_advice(project, kind, steps) if project is not None else "")

    def set_ready(self, reason: str, ready_text: str, loading: bool) -> None:
        """Start is enabled when there is no `reason` not to; the hint says why, or what is ready."""
        self.start_button.setEnabled(not reason and not loading)
        if reason or not self.hint.text().startswith("Check"):
            self.hint.setText(reason or ready_text)
