"""Rank page: K responses side by side in a blind order, ranked from the keyboard.

The page shows one prompt at a time. Its responses come from the GenerationQueue, which makes
the next prompts' responses while this one is being ranked. Keys (shown at the bottom):
1..K pick the next best, = ties the next pick with the previous one, Enter submits (panes not
picked share the last place), 0 marks all bad, Backspace undoes a pick, S skips, ←/→ move
between prompts, E edits the best response into an SFT example, R makes new responses. Every
label is committed at once, with the annotator, the time spent and the order shown.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QHideEvent, QKeyEvent, QShowEvent
from PySide6.QtWidgets import (
    QCheckBox, QDialog, QDialogButtonBox, QFrame, QHBoxLayout, QInputDialog, QLabel, QListWidget,
    QAbstractItemView, QPlainTextEdit, QPushButton, QScrollArea, QSplitter, QTextBrowser, QVBoxLayout, QWidget,
)

from workbench import app_settings
from workbench.data.labeling_session import MIN_LABELS_FOR_RATE, LabelingSession
from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.data.response_generation import GenerationEvent, available_sources
from workbench.data.sft_store import SftStore
from workbench.errors import WorkbenchError
from workbench.train.reward import reward_runs, score_batches
from ui.change_flow import follow
from ui.formatting import plural
from ui.generation_queue import GenerationQueue
from ui.widgets.generation_settings import GenerationSettings
from ui.widgets.prompt_list import PromptList
from ui.widgets.response_pane import ResponsePane
from ui.session import WorkbenchSession
from ui.text_views import ElidedLabel

KEYS_HELP = ("1–{k} pick next best · = tie with previous · Enter submit (rest tie last) · 0 all bad · "
             "Backspace undo pick · Esc clear · S skip · ←/→ previous/next prompt · E make the best one ideal "
             "(SFT) · R new responses")
STYLE = ("QLabel#rankStatus, QLabel#rankProgress { color: #555; } QLabel#keysHelp { color: #777; } "
         "QLabel#rankWaiting { color: #8a5a00; }")


class KeyBoard(QFrame):
    """The focusable area that receives the ranking keys (its children never take focus)."""

    key_pressed = Signal(QKeyEvent)

    def __init__(self):
        super().__init__()
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        self.key_pressed.emit(event)


class IdealAnswerDialog(QDialog):
    def __init__(self, parent: QWidget, prompt: str, text: str):
        super().__init__(parent)
        self.setWindowTitle("Make it the ideal answer")
        self.editor = QPlainTextEdit(text)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        shown = QLabel(f"<b>Prompt:</b> {prompt[:400]}")
        shown.setWordWrap(True)
        layout.addWidget(shown)
        layout.addWidget(QLabel("Edit the response into the answer you want the model to give. It is saved as "
                                "an SFT example; the response being ranked is not changed."))
        layout.addWidget(self.editor, 1)
        layout.addWidget(buttons)
        self.resize(720, 480)


class RankingPage(QWidget):
    def __init__(self, session: WorkbenchSession):
        super().__init__()
        self.session = session
        self.setStyleSheet(STYLE)
        self.queue = GenerationQueue(session)
        self.annotator = app_settings.annotator()
        # What is shown, the draft, the clock and the waits: all in the core.
        self.labeling = LabelingSession(session.project, self.annotator)
        self._reward_runs: list[int] = []
        self.uncertainty_job = None
        self.ask_name = self._ask_name  # replaced in tests

        self.title = QLabel("Rank responses")
        self.title.setObjectName("pageTitle")
        self.annotator_label = QLabel()
        self.change_annotator = QPushButton("Change…")
        self.progress = ElidedLabel()
        self.progress.setObjectName("rankProgress")
        self.settings = GenerationSettings()
        self.prompts = PromptList()
        self.prompt_view = QTextBrowser()
        self.prompt_view.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.prompt_view.setMaximumHeight(80)
        self.waiting = ElidedLabel()  # what the annotator is waiting for, and how fast it comes
        self.waiting.setObjectName("rankWaiting")
        self.board = KeyBoard()
        self.panes_row = QHBoxLayout()
        self.panes: list[ResponsePane] = []
        self.strip = QListWidget()  # the ranking so far, best first; drag to reorder
        self.strip.setFlow(QListWidget.Flow.LeftToRight)
        self.strip.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.strip.setMaximumHeight(40)
        self.strip.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.strip.setToolTip("Your ranking, best first. Drag to reorder.")
        self.submit_button = QPushButton("Submit (⏎)")
        self.tie_button = QPushButton("Tie (=)")
        self.undo_button = QPushButton("Undo (⌫)")
        self.all_bad_button = QPushButton("All bad (0)")
        self.skip_button = QPushButton("Skip (S)")
        self.previous_button = QPushButton("← Previous")
        self.next_button = QPushButton("Next →")
        self.regenerate_button = QPushButton("New responses (R)")
        self.auto_submit = QCheckBox("Auto-submit")
        self.auto_submit.setToolTip("Submit as soon as every response has its place (the last one is implied)")
        self.auto_submit.setChecked(True)
        self.show_scores = QCheckBox("Reward scores")
        self.show_scores.setToolTip("Show the newest reward model's score under each response. Off by default: "
                                    "seeing it before you decide would sway your ranking.")
        self.least_sure_first = QCheckBox("Least sure first")
        self.least_sure_first.setToolTip("Go through the prompts the reward model is least sure about first "
                                         "(the smallest gap between its two best scores)")
        self.reveal = QCheckBox("Show models")
        self.reveal.setToolTip("Show which model wrote each response (only once you have labeled the prompt)")
        self.status = ElidedLabel()
        self.status.setObjectName("rankStatus")
        self.keys_help = QLabel()
        self.keys_help.setObjectName("keysHelp")
        self.keys_help.setWordWrap(True)
        for widget in (self.submit_button, self.tie_button, self.undo_button, self.all_bad_button,
                       self.skip_button, self.previous_button, self.next_button, self.regenerate_button,
                       self.auto_submit, self.reveal, self.change_annotator, self.show_scores,
                       self.least_sure_first):
            widget.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self._layout()

        self.change_annotator.clicked.connect(lambda: self.set_annotator(self.ask_name(self.annotator)))
        self.settings.changed.connect(self._settings_changed)
        self.settings.ahead.valueChanged.connect(self._queue_ahead)
        self.prompts.prompt_selected.connect(self.show_prompt)
        self.prompts.prompts_changed.connect(self._prompts_changed)
        self.board.key_pressed.connect(self.handle_key)
        self.strip.model().rowsMoved.connect(self._strip_reordered)
        self.submit_button.clicked.connect(self.submit)
        self.tie_button.clicked.connect(self.tie)
        self.undo_button.clicked.connect(self.undo_pick)
        self.all_bad_button.clicked.connect(self.mark_all_bad)
        self.skip_button.clicked.connect(self.skip)
        self.previous_button.clicked.connect(lambda: self.step(-1))
        self.next_button.clicked.connect(lambda: self.step(1))
        self.regenerate_button.clicked.connect(self.regenerate)
        self.reveal.toggled.connect(lambda _: self._render())
        self.show_scores.toggled.connect(self._score_current)
        self.least_sure_first.toggled.connect(self._order_by_uncertainty)
        self.queue.streaming.connect(self._on_streaming)
        self.queue.ready.connect(self._on_ready)
        self.queue.failed.connect(self._on_generation_failed)
        self.queue.state_changed.connect(self._update_progress)
        session.project_changed.connect(self._project_changed)
        session.project_closing.connect(self.queue.stop_now)
        session.project_closing.connect(self._project_closing)
        session.model_changed.connect(self._queue_ahead)
        follow(session, self, {"prompts", "responses", "rankings"}, self._prompts_changed)
        follow(session, self, {"runs"}, self._sources_changed)  # a new adapter or reward model
        self._project_changed()

    def _layout(self) -> None:
        top = QHBoxLayout()
        top.addWidget(self.title)
        top.addSpacing(24)
        top.addWidget(self.progress, 1, Qt.AlignmentFlag.AlignRight)
        top.addSpacing(16)
        top.addWidget(self.annotator_label)
        top.addWidget(self.change_annotator)
        actions = QHBoxLayout()
        actions.addWidget(QLabel("Ranking:"))
        actions.addWidget(self.strip, 1)
        for button in (self.tie_button, self.undo_button, self.submit_button, self.all_bad_button,
                       self.skip_button):
            actions.addWidget(button)
        navigation = QHBoxLayout()
        for widget in (self.previous_button, self.next_button, self.regenerate_button):
            navigation.addWidget(widget)
        navigation.addWidget(self.auto_submit)
        navigation.addWidget(self.reveal)
        navigation.addWidget(self.show_scores)
        navigation.addWidget(self.least_sure_first)
        navigation.addStretch(1)
        board = QVBoxLayout(self.board)
        board.setContentsMargins(0, 0, 0, 0)
        board.addWidget(self.prompt_view)
        board.addWidget(self.waiting)
        board.addLayout(self.panes_row, 1)
        board.addLayout(actions)
        board.addLayout(navigation)
        board.addWidget(self.status)  # its own line: what was saved, skipped or went wrong
        board.addWidget(self.keys_help)
        splitter = QSplitter()
        splitter.addWidget(self.prompts)
        splitter.addWidget(self.board)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([260, 1000])
        # The settings row scrolls sideways rather than making the window wider than 1280 px.
        settings = QScrollArea()
        settings.setWidget(self.settings)
        settings.setWidgetResizable(True)
        settings.setFrameShape(QFrame.Shape.NoFrame)
        settings.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        settings.setFixedHeight(self.settings.sizeHint().height() + settings.horizontalScrollBar().sizeHint().height())
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(settings)
        layout.addWidget(splitter, 1)

    # ---- project, annotator, settings ----------------------------------------------------

    @Slot()
    def _project_changed(self) -> None:
        project = self.session.project
        self.queue.wanted = []
        visible = self.labeling.visible
        self.labeling = LabelingSession(project, self.annotator)
        self.labeling.set_visible(visible)
        self.status.setText("")  # "Saved: …" spoke of the old project
        self.prompts.set_store(PromptStore(project) if project else None, self.annotator)
        self._sources_changed()
        self._update_annotator()
        if project is not None and self.isVisible():
            self.go_to_next_unlabeled()
        else:
            self._render("Choose a prompt on the left." if project else "Open or create a project first.")

    @Slot()
    def _project_closing(self) -> None:
        visible = self.labeling.visible
        self.labeling = LabelingSession(None, self.annotator)  # nothing may read the closed file
        self.labeling.set_visible(visible)

    @Slot()
    def _sources_changed(self) -> None:
        project = self.session.project
        self.settings.set_available(list(available_sources(project)) if project else [])
        rewards = [run_id for run_id, _ in reward_runs(project)] if project else []
        if rewards != self._reward_runs:
            self._reward_runs = rewards
            self.labeling.new_reward_model()  # a new reward model scores differently
        for box in (self.show_scores, self.least_sure_first):
            box.setEnabled(bool(rewards))
            if not rewards:
                box.setChecked(False)

    def _ask_name(self, current: str) -> str:
        name, ok = QInputDialog.getText(self, "Annotator", "Your name (saved with every label you make):",
                                        text=current)
        return name.strip() if ok else current

    def set_annotator(self, name: str, remember: bool = True) -> None:
        """Label as `name` from now on (remembered on this machine unless told otherwise)."""
        name = name.strip()
        if not name or name == self.annotator:
            return
        self.annotator = self.labeling.annotator = name
        if remember:
            app_settings.set_annotator(name)
        self.prompts.annotator = name
        self.prompts.refresh()
        self._update_annotator()
        if self.labeling.prompt_id is not None:
            self.show_prompt(self.labeling.prompt_id)

    def _update_annotator(self) -> None:
        self.annotator_label.setText(f"Labeling as <b>{self.annotator}</b>" if self.annotator
                                     else "No annotator name set")
        self._update_progress()

    @Slot()
    def _settings_changed(self) -> None:
        self.queue.config = self.settings.value()
        self.keys_help.setText(KEYS_HELP.format(k=self.settings.k.value()))

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.labeling.set_visible(True)
        if not self.annotator:
            self.set_annotator(self.ask_name(""))
        if self.labeling.prompt_id is None and self.session.project is not None:
            self.go_to_next_unlabeled()
        else:
            self._queue_ahead()
        self.board.setFocus()

    def hideEvent(self, event: QHideEvent) -> None:
        # Leave the model free for the page the user went to. Batches already made are saved;
        # the prompt in progress is dropped and made again when the page is shown.
        self.labeling.set_visible(False)  # the label's clock stops
        self.queue.wanted = []
        if self.queue.task is not None:
            self.queue.task.stop()
        super().hideEvent(event)

    # ---- which prompt is shown -----------------------------------------------------------

    @property
    def prompt_id(self) -> int | None:
        return self.labeling.prompt_id

    @property
    def batch(self):
        return self.labeling.batch

    @property
    def draft(self):
        return self.labeling.draft

    def go_to_next_unlabeled(self, after: int | None = None) -> None:
        said = self.labeling.next_unlabeled(after)
        if said:
            self.status.setText(said)
        self._after_showing()

    def step(self, delta: int) -> None:
        self.labeling.step(delta)
        self._after_showing()

    @Slot(int)
    def show_prompt(self, prompt_id: int) -> None:
        if self.session.project is None:
            return
        try:
            self.labeling.show(prompt_id)
        except WorkbenchError as error:
            self.status.setText(str(error))
            return
        self._after_showing()

    def _after_showing(self) -> None:
        if self.labeling.prompt_id is not None:
            self.prompts.select(self.labeling.prompt_id, announce=False)
        self._render()
        self._queue_ahead()
        self._score_current()
        self.board.setFocus()

    def _render(self, empty_message: str | None = None) -> None:
        """Show the prompt and its panes as the labeling session has them."""
        labeling = self.labeling
        if labeling.prompt_id is None:
            self._build_panes(self.settings.k.value())
            for pane in self.panes:
                pane.clear(empty_message or "")
            self.prompt_view.clear()
            self.waiting.setText("")
            self._update_draft_view()
            return
        self.prompt_view.setMarkdown("\n\n".join(
            f"**{m['role'].capitalize()}:** {m['content']}" for m in labeling.messages))
        if labeling.k == 0:  # nothing written yet
            self._build_panes(self.settings.k.value())
            waiting = ("Writing responses…" if self.session.models.loaded
                       else "Load a model on the Model page to generate responses.")
            for pane in self.panes:
                pane.clear(waiting)
        else:
            self._build_panes(labeling.k)
            self._fill_panes()
        self._update_waiting()
        self._update_draft_view()

    def _fill_panes(self) -> None:
        labeling, batch = self.labeling, self.labeling.batch
        labeled = labeling.labeled
        self.reveal.setEnabled(labeled)
        scores = labeling.scores.get(batch.uid) if batch is not None and self.show_scores.isChecked() else None
        for pane, position in zip(self.panes, labeling.order):
            if batch is None:
                streaming = labeling.streaming
                pane.show_response(streaming.texts[position], streaming=not streaming.finished[position],
                                   tokens=streaming.tokens[position] or None)
                continue
            response = batch.responses[position]
            source = response.generator.get("source", "") if labeled and self.reveal.isChecked() else ""
            pane.show_response(response.text, tokens=response.generator.get("tokens"), source=source,
                               cut_off=not response.generator.get("finished", True),
                               score=scores[position] if scores else None)

    def _update_waiting(self) -> None:
        text = self.labeling.waiting_for()
        if text and not self.session.models.loaded:
            text = "Load a model on the Model page to generate responses."
        self.waiting.setText(text)

    def _build_panes(self, k: int) -> None:
        if len(self.panes) == k:
            return
        for pane in self.panes:
            self.panes_row.removeWidget(pane)
            pane.hide()  # gone now; deleteLater only runs once the event loop is idle
            pane.deleteLater()
        self.panes = [ResponsePane(i) for i in range(k)]
        for pane in self.panes:
            pane.picked.connect(self.pick)
            pane.edit_requested.connect(self.make_ideal)
            self.panes_row.addWidget(pane, 1)
        self.keys_help.setText(KEYS_HELP.format(k=k))

    # ---- responses arriving --------------------------------------------------------------

    @Slot(object)
    def _on_streaming(self, event: GenerationEvent) -> None:
        if self.labeling.on_streaming(event.prompt_id, event.batch_uid, event.texts, event.finished, event.tokens):
            self._build_panes(self.labeling.k)
            self._fill_panes()
            self._update_waiting()
            self._update_draft_view()

    @Slot(int, str)
    def _on_ready(self, prompt_id: int, batch_uid: str) -> None:
        self.prompts.refresh()
        if self.labeling.on_saved(prompt_id, batch_uid):
            if self.labeling.submit_when_saved:
                self.submit()
            else:
                self._render()
                self._score_current()
        self._update_progress()

    @Slot(str)
    def _on_generation_failed(self, message: str) -> None:
        self.status.setText(f"Could not generate: {message}")

    @Slot()
    def _queue_ahead(self) -> None:
        """Want this prompt's responses (if missing) and the next few unlabeled prompts'."""
        if self.session.project is None or not self.isVisible():
            return
        self.queue.config = self.settings.value()
        self.queue.want(self.labeling.wanted(self.settings.ahead.value()))

    # ---- ranking -------------------------------------------------------------------------

    @Slot(QKeyEvent)
    def handle_key(self, event: QKeyEvent) -> None:
        key, text = event.key(), event.text()
        if text.isdigit() and text != "0":
            self.pick(int(text) - 1)
        elif text == "0" or key == Qt.Key.Key_B:
            self.mark_all_bad()
        elif text == "=" or key == Qt.Key.Key_T:
            self.tie()
        elif key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.submit()
        elif key == Qt.Key.Key_Backspace:
            self.undo_pick()
        elif key == Qt.Key.Key_Escape:
            self.labeling.draft.clear()
            self.labeling.all_bad = False
            self._update_draft_view()
        elif key == Qt.Key.Key_S:
            self.skip()
        elif key in (Qt.Key.Key_Left, Qt.Key.Key_BracketLeft):
            self.step(-1)
        elif key in (Qt.Key.Key_Right, Qt.Key.Key_BracketRight):
            self.step(1)
        elif key == Qt.Key.Key_E:
            self.make_ideal(self.draft.groups[0][0] if self.draft.groups else 0)
        elif key == Qt.Key.Key_R:
            self.regenerate()
        else:
            event.ignore()

    @Slot(int)
    def pick(self, pane: int) -> None:
        if pane >= self.labeling.k:
            return
        if not self.labeling.readable(pane):
            self.status.setText(f"Response {pane + 1} is still being written; pick a complete one.")
            return
        complete = self.labeling.pick(pane)
        self._update_draft_view()
        if complete and self.auto_submit.isChecked():
            self.submit()

    @Slot()
    def tie(self) -> None:
        self.draft.tie()
        self._update_draft_view()

    @Slot()
    def undo_pick(self) -> None:
        self.draft.undo()
        self.labeling.all_bad = False
        self._update_draft_view()

    @Slot()
    def mark_all_bad(self) -> None:
        """None is acceptable: committed at once (any order picked so far is kept with it)."""
        if self.labeling.k:
            self.submit(all_bad=True)

    @Slot()
    def submit(self, all_bad: bool = False) -> None:
        if self.labeling.k == 0:
            return
        if not self.annotator:
            self.set_annotator(self.ask_name(""))
            if not self.annotator:
                return
        try:
            said = self.labeling.submit(all_bad)
        except WorkbenchError as error:
            self.status.setText(str(error))
            return
        if said:
            self.status.setText(said)
        if self.labeling.prompt_id is None or not said.startswith("Saved prompt"):
            self._update_draft_view()
            return
        self.prompts.refresh()
        self._after_showing()
        self._update_progress()

    @Slot()
    def skip(self) -> None:
        if self.labeling.prompt_id is None:
            return
        self.status.setText(self.labeling.skip())
        self._after_showing()
        self._update_progress()

    @Slot()
    def regenerate(self) -> None:
        if self.labeling.prompt_id is None or not self.session.models.loaded:
            return
        self.labeling.forget_batch()
        self._render()
        self.queue.config = self.settings.value()
        self.queue.regenerate(self.labeling.prompt_id)

    @Slot()
    def _strip_reordered(self) -> None:
        order = [self.strip.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.strip.count())]
        self.draft.set_order(order)
        self._update_draft_view()

    def _update_draft_view(self) -> None:
        labeling = self.labeling
        for pane in self.panes:
            place = labeling.draft.place_of(pane.index)
            tied = place is not None and len(labeling.draft.groups[place - 1]) > 1
            pane.set_place(place, tied, labeling.all_bad)
        self.strip.blockSignals(True)
        self.strip.clear()
        for pane in labeling.draft.placed():
            self.strip.addItem(f"  {pane + 1}  ")
            self.strip.item(self.strip.count() - 1).setData(Qt.ItemDataRole.UserRole, pane)
        self.strip.blockSignals(False)
        pickable = labeling.k > 0
        for button in (self.submit_button, self.all_bad_button):
            button.setEnabled(pickable)
        self.tie_button.setEnabled(bool(labeling.draft.groups))
        self.undo_button.setEnabled(bool(labeling.draft.groups) or labeling.draft.tie_next)
        has_prompt = labeling.prompt_id is not None
        for button in (self.skip_button, self.previous_button, self.next_button):
            button.setEnabled(has_prompt)
        self.regenerate_button.setEnabled(has_prompt and self.session.models.loaded)

    # ---- reward scores ---------------------------------------------------------------------

    @Slot()
    def _score_current(self) -> None:
        """Score the shown batch with the reward model (after the prompt being written) if scores are on."""
        batch = self.labeling.batch
        if self.show_scores.isChecked() and batch is not None and batch.uid not in self.labeling.scores:
            self._score([batch.uid])

    @Slot(bool)
    def _order_by_uncertainty(self, on: bool) -> None:
        self.labeling.set_least_sure_first(on)
        if not on:
            if self.uncertainty_job is not None:
                self.uncertainty_job.stop()  # its late report changes nothing (see order_by_uncertainty)
            self.status.setText("Prompts in their own order again.")
            self._queue_ahead()
            return
        batches = self.labeling.unscored_batches()
        after = " after the responses being written" if self.queue.running else ""
        self.status.setText(f"Scoring {plural(len(batches), 'prompt')}{after} to find the least certain…")

        def done(_outcome: str) -> None:
            self.uncertainty_job = None
            ordered = self.labeling.order_by_uncertainty()
            if not self.labeling.least_sure_first:
                return  # turned off while scoring
            self.status.setText(f"Least sure first: {plural(ordered, 'prompt')} ordered by the reward model.")
            if self.labeling.priority:
                self.show_prompt(self.labeling.priority[0])

        self.uncertainty_job = self._score(list(batches), done)

    def _score(self, uids: list[str], done=None):
        """Score these batches once the model is free of the prompt being written (the queue
        waits for the scores before it starts the next prompt)."""
        project, models = self.session.project, self.session.models

        def got(item) -> None:
            uid, scores = item
            self.labeling.scores[uid] = scores
            batch = self.labeling.batch
            if batch is not None and uid == batch.uid and self.show_scores.isChecked():
                self._fill_panes()

        return self.queue.run_when_free(
            lambda should_stop: score_batches(project, models, uids, should_stop=should_stop),
            on_item=got, on_error=lambda message: self.status.setText(f"Could not score: {message}"),
            on_finished=done)

    # ---- ideal answers, progress ---------------------------------------------------------

    @Slot(int)
    def make_ideal(self, pane: int) -> None:
        if not self.labeling.readable(pane):
            return
        project = self.session.project
        messages = self.labeling.messages
        text = self.edit_ideal(messages[-1]["content"], self.labeling.pane_text(pane))
        if text is None or not text.strip():
            return
        example = SftStore(project).add([*messages, {"role": "assistant", "content": text.strip()}],
                                        source=f"ranking: prompt {self.labeling.prompt_id}")
        self.status.setText(f"Saved as SFT example #{example}.")

    def edit_ideal(self, prompt: str, text: str) -> str | None:
        """Ask for the edited answer (None: cancelled); replaced in tests."""
        dialog = IdealAnswerDialog(self, prompt, text)
        return dialog.editor.toPlainText() if dialog.exec() == QDialog.DialogCode.Accepted else None

    @Slot()
    def _prompts_changed(self) -> None:
        """Prompts, responses or rankings changed (here or on another page): list them again;
        the prompt being ranked keeps its picks and its clock."""
        self.prompts.set_store(self.prompts.store, self.annotator)  # new tags and prompts too
        project, labeling = self.session.project, self.labeling
        if project is None:
            return
        if labeling.prompt_id is not None and PromptStore(project).row(labeling.prompt_id) is None:
            self.go_to_next_unlabeled()  # deleted
        elif labeling.prompt_id is not None:
            labeling.messages = PromptStore(project).messages(labeling.prompt_id)  # edited
            latest = RankingStore(project).latest_batch(labeling.prompt_id)
            waiting = labeling.batch is None and labeling.prompt_id not in self.queue.pending()
            if waiting and latest is not None:  # responses came from elsewhere (a pack)
                labeling.on_saved(labeling.prompt_id, latest.uid)
            self._render()
        self._update_progress()

    @Slot()
    def _update_progress(self) -> None:
        progress = self.labeling.progress()
        if not progress:
            self.progress.setText("")
            return
        parts = [f"{progress['labeled']:,} / {progress['total']:,} labeled by {self.annotator or 'you'}"]
        rate = progress["labels_per_hour"]
        if rate and progress["labeled"] >= MIN_LABELS_FOR_RATE:  # one label makes no rate
            parts.append(f"{rate:,.0f} labels/hour")
        if progress["waits_first"]:
            median, p95 = progress["waits_first"]
            parts.append(f"wait for responses: median {median:.1f} s, 95% ≤ {p95:.1f} s")
        ahead = len(self.queue.pending())
        if ahead:
            parts.append(f"generating {ahead} ahead")
        elif self.queue.error:
            parts.append("generation stopped")
        self.progress.setText(" · ".join(parts))
