"""Rank page: K responses side by side in a blind order, ranked from the keyboard.

The page shows one prompt at a time. Its responses come from the GenerationQueue, which makes
the next prompts' responses while this one is being ranked. Keys (shown at the bottom):
1..K pick the next best, = ties the next pick with the previous one, Enter submits (panes not
picked share the last place), 0 marks all bad, Backspace undoes a pick, S skips, ←/→ move
between prompts, E edits the best response into an SFT example, R makes new responses. Every
label is committed at once, with the annotator, the time spent and the order shown.
"""

from __future__ import annotations

import statistics
import time

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QHideEvent, QKeyEvent, QShowEvent
from PySide6.QtWidgets import (
    QCheckBox, QDialog, QDialogButtonBox, QFrame, QHBoxLayout, QInputDialog, QLabel, QListWidget,
    QAbstractItemView, QPlainTextEdit, QPushButton, QSplitter, QTextBrowser, QVBoxLayout, QWidget,
)

from workbench import app_settings
from workbench.data.prompts import PromptStore
from workbench.data.ranking_draft import RankingDraft
from workbench.data.rankings import Batch, RankingStore, blind_order
from workbench.data.response_generation import GenerationEvent, available_sources
from workbench.data.sft_store import SftStore
from workbench.errors import WorkbenchError
from workbench.train.reward import reward_runs, score_batches, uncertainty
from ui.generation_queue import GenerationQueue
from ui.pages.generation_settings import GenerationSettings
from ui.pages.prompt_list import PromptList
from ui.pages.response_pane import ResponsePane
from ui.session import WorkbenchSession

KEYS_HELP = ("1–{k} pick next best · = tie with previous · Enter submit (rest tie last) · 0 all bad · "
             "Backspace undo pick · Esc clear · S skip · ←/→ previous/next prompt · E make the best one ideal "
             "(SFT) · R new responses")
STYLE = "QLabel#rankStatus, QLabel#rankProgress { color: #555; } QLabel#keysHelp { color: #777; }"
MIN_LABELS_FOR_RATE = 5  # a labeling speed from fewer labels is noise


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
        self.prompt_id: int | None = None
        self.batch: Batch | None = None
        self.batch_uid: str | None = None  # known while streaming, before the batch is saved
        self.order: list[int] = []  # generation positions, left to right on screen
        self.draft = RankingDraft(0)
        self.all_bad = False
        self.shown_at = time.monotonic()
        self.waiting_since: float | None = None  # moved on to a prompt whose responses were not ready
        self.waits: list[float] = []  # seconds between a submit and the next responses being ready
        self.ask_name = self._ask_name  # replaced in tests

        self.title = QLabel("Rank responses")
        self.title.setObjectName("pageTitle")
        self.annotator_label = QLabel()
        self.change_annotator = QPushButton("Change…")
        self.progress = QLabel()
        self.progress.setObjectName("rankProgress")
        self.settings = GenerationSettings()
        self.prompts = PromptList()
        self.prompt_view = QTextBrowser()
        self.prompt_view.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.prompt_view.setMaximumHeight(80)
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
        self.auto_submit = QCheckBox("Submit when all are placed")
        self.auto_submit.setChecked(True)
        self.show_scores = QCheckBox("Reward scores")
        self.show_scores.setToolTip("Show the newest reward model's score under each response. Off by default: "
                                    "seeing it before you decide would sway your ranking.")
        self.least_sure_first = QCheckBox("Least sure first")
        self.least_sure_first.setToolTip("Go through the prompts the reward model is least sure about first "
                                         "(the smallest gap between its two best scores)")
        self.scores: dict[str, list[float]] = {}  # batch uid -> reward score per response (generation order)
        self.priority: list[int] = []  # prompt ids, least sure first, while "Least sure first" is on
        self.score_task = None
        self.reveal = QCheckBox("Show models")
        self.reveal.setToolTip("Show which model wrote each response (only once you have labeled the prompt)")
        self.status = QLabel()
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
        self.reveal.toggled.connect(lambda _: self._show_batch())
        self.show_scores.toggled.connect(self._score_current)
        self.least_sure_first.toggled.connect(self._order_by_uncertainty)
        self.queue.streaming.connect(self._on_streaming)
        self.queue.ready.connect(self._on_ready)
        self.queue.failed.connect(self._on_generation_failed)
        self.queue.state_changed.connect(self._update_progress)
        session.project_changed.connect(self._project_changed)
        session.project_closing.connect(self.queue.stop_now)
        session.project_data_changed.connect(self._prompts_changed)
        session.model_changed.connect(self._queue_ahead)
        session.adapters_changed.connect(self._sources_changed)
        self._project_changed()

    def _layout(self) -> None:
        top = QHBoxLayout()
        top.addWidget(self.title)
        top.addStretch(1)
        top.addWidget(self.progress)
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
        navigation.addWidget(self.status)
        board = QVBoxLayout(self.board)
        board.setContentsMargins(0, 0, 0, 0)
        board.addWidget(self.prompt_view)
        board.addLayout(self.panes_row, 1)
        board.addLayout(actions)
        board.addLayout(navigation)
        board.addWidget(self.keys_help)
        splitter = QSplitter()
        splitter.addWidget(self.prompts)
        splitter.addWidget(self.board)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([260, 1000])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.settings)
        layout.addWidget(splitter, 1)

    # ---- project, annotator, settings ----------------------------------------------------

    @Slot()
    def _project_changed(self) -> None:
        project = self.session.project
        self.queue.wanted = []
        self.prompt_id = self.batch = self.batch_uid = None
        self.prompts.set_store(PromptStore(project) if project else None, self.annotator)
        self._sources_changed()
        self._update_annotator()
        self._clear_panes("Choose a prompt on the left.")
        if project is not None and self.isVisible():
            self.go_to_next_unlabeled()

    @Slot()
    def _sources_changed(self) -> None:
        project = self.session.project
        self.settings.set_available(list(available_sources(project)) if project else [])
        has_reward = bool(project and reward_runs(project))
        self.scores = {}  # a new reward model scores differently
        for box in (self.show_scores, self.least_sure_first):
            box.setEnabled(has_reward)
            if not has_reward:
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
        self.annotator = name
        if remember:
            app_settings.set_annotator(name)
        self.prompts.annotator = name
        self.prompts.refresh()
        self._update_annotator()
        if self.prompt_id is not None:
            self.show_prompt(self.prompt_id)

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
        if not self.annotator:
            self.set_annotator(self.ask_name(""))
        if self.prompt_id is None and self.session.project is not None:
            self.go_to_next_unlabeled()
        else:
            self._queue_ahead()
        self.board.setFocus()

    def hideEvent(self, event: QHideEvent) -> None:
        # Leave the model free for the page the user went to. Batches already made are saved;
        # the prompt in progress is dropped and made again when the page is shown.
        self.queue.wanted = []
        if self.queue.task is not None:
            self.queue.task.stop()
        super().hideEvent(event)

    # ---- which prompt is shown -----------------------------------------------------------

    def all_prompts(self) -> list:
        return PromptStore(self.session.project).rows(self.annotator) if self.session.project else []

    def go_to_next_unlabeled(self, after: int | None = None) -> None:
        rows = self.all_prompts()
        if not rows:
            self._clear_panes("No prompts yet: add some, import a file, or take the SFT examples' prompts.")
            return
        ids = [r.id for r in rows]
        start = ids.index(after) + 1 if after in ids else 0
        by_id = {r.id: r for r in rows}
        first = [by_id[p] for p in self.priority if p in by_id]  # least sure first, when asked
        for row in first + rows[start:] + rows[:start]:
            if not row.labeled_by_me and row.id != after:
                self.show_prompt(row.id)
                return
        if after in ids and not rows[ids.index(after)].labeled_by_me:
            self.status.setText("This is the last prompt you have not labeled.")
        else:
            self.status.setText("Every prompt is labeled. Add prompts, or go back to change a label.")
        self.show_prompt(after if after in ids else ids[0])

    def step(self, delta: int) -> None:
        ids = [r.id for r in self.all_prompts()]
        if ids:
            index = ids.index(self.prompt_id) + delta if self.prompt_id in ids else 0
            self.show_prompt(ids[index % len(ids)])

    @Slot(int)
    def show_prompt(self, prompt_id: int) -> None:
        project = self.session.project
        if project is None:
            return
        try:
            messages = PromptStore(project).messages(prompt_id)
        except WorkbenchError as error:
            self.status.setText(str(error))
            return
        self.prompt_id = prompt_id
        self.prompts.select(prompt_id, announce=False)
        self.prompt_view.setMarkdown("\n\n".join(
            f"**{m['role'].capitalize()}:** {m['content']}" for m in messages))
        self.batch = RankingStore(project).latest_batch(prompt_id)
        self.batch_uid = self.batch.uid if self.batch else None
        self.shown_at = time.monotonic()
        self._load_draft()
        self._show_batch()
        self._queue_ahead()
        self._score_current()
        self.board.setFocus()

    def _load_draft(self) -> None:
        """Start from the annotator's saved ranking of this batch, if there is one."""
        k = len(self.batch.responses) if self.batch else self.settings.k.value()
        self.draft, self.all_bad = RankingDraft(k), False
        self.order = blind_order(self.batch_uid, self.annotator, range(k)) if self.batch_uid else list(range(k))
        if self.batch is None:
            return
        saved = RankingStore(self.session.project).ranking(self.batch.uid, self.annotator)
        if saved is not None:  # shown as it was labeled, whatever order the label came with
            pane_of = {response: pane for pane, response in enumerate(saved.shown_order)}
            position = {r.id: r.position for r in self.batch.responses}
            self.order = [position[r] for r in saved.shown_order]
            self.draft.load([[pane_of[r] for r in group] for group in saved.groups])
            self.all_bad = saved.all_bad

    def _show_batch(self) -> None:
        """Fill the panes from the saved batch (or show that responses are on their way)."""
        if self.batch is None:
            self._build_panes(self.settings.k.value())
            waiting = ("Writing responses…" if self.session.models.loaded
                       else "Load a model on the Model page to generate responses.")
            for pane in self.panes:
                pane.clear(waiting)
            self._update_draft_view()
            return
        self._build_panes(len(self.batch.responses))
        labeled = RankingStore(self.session.project).ranking(self.batch.uid, self.annotator) is not None
        self.reveal.setEnabled(labeled)
        for pane, position in zip(self.panes, self.order):
            response = self.batch.responses[position]
            source = response.generator.get("source", "") if labeled and self.reveal.isChecked() else ""
            scores = self.scores.get(self.batch.uid) if self.show_scores.isChecked() else None
            pane.show_response(response.text, tokens=response.generator.get("tokens"), source=source,
                               cut_off=not response.generator.get("finished", True),
                               score=scores[position] if scores else None)
        self._update_draft_view()

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

    def _clear_panes(self, message: str) -> None:
        self._build_panes(self.settings.k.value())
        for pane in self.panes:
            pane.clear(message)
        self.prompt_view.clear()
        self.strip.clear()

    # ---- responses arriving --------------------------------------------------------------

    @Slot(object)
    def _on_streaming(self, event: GenerationEvent) -> None:
        if event.prompt_id != self.prompt_id or self.batch is not None:
            return
        if self.batch_uid != event.batch_uid:
            self.batch_uid = event.batch_uid
            self.order = blind_order(event.batch_uid, self.annotator, range(len(event.texts)))
            self._build_panes(len(event.texts))
            self.draft = RankingDraft(len(event.texts))
        for pane, position in zip(self.panes, self.order):
            pane.show_response(event.texts[position], streaming=not event.finished[position])

    @Slot(int, str)
    def _on_ready(self, prompt_id: int, batch_uid: str) -> None:
        self.prompts.refresh()
        if prompt_id == self.prompt_id and (self.batch is None or self.batch.uid != batch_uid):
            if self.waiting_since is not None:
                self.waits.append(time.monotonic() - self.waiting_since)
                self.waiting_since = None
            self.batch = RankingStore(self.session.project).batch(batch_uid)
            self.batch_uid = batch_uid
            self._load_draft()
            self._show_batch()
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
        rows = self.all_prompts()
        ids = [r.id for r in rows]
        start = ids.index(self.prompt_id) if self.prompt_id in ids else 0
        upcoming = [r.id for r in rows[start + 1:] + rows[:start] if not r.labeled_by_me and not r.responses]
        wanted = ([self.prompt_id] if self.prompt_id is not None else []) + upcoming[:self.settings.ahead.value()]
        self.queue.config = self.settings.value()
        self.queue.want(wanted)

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
            self.draft.clear()
            self.all_bad = False
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
        if self.batch is None or pane >= len(self.panes):
            return
        complete = self.draft.pick(pane)
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
        self.all_bad = False
        self._update_draft_view()

    @Slot()
    def mark_all_bad(self) -> None:
        """None is acceptable: committed at once (any order picked so far is kept with it)."""
        if self.batch is not None:
            self.all_bad = True
            self.submit()

    @Slot()
    def submit(self) -> None:
        if self.batch is None:
            return
        if not self.draft.groups and not self.all_bad:
            self.status.setText("Pick at least the best response (1–%d) before submitting." % len(self.panes))
            return
        if not self.annotator:
            self.set_annotator(self.ask_name(""))
            if not self.annotator:
                return
        shown = [self.batch.responses[p].id for p in self.order]
        groups = [[shown[pane] for pane in group] for group in self.draft.final_groups()]
        try:
            RankingStore(self.session.project).save_ranking(
                self.batch.uid, self.annotator, groups, self.all_bad, time.monotonic() - self.shown_at, shown)
        except WorkbenchError as error:
            self.status.setText(str(error))
            return
        self.status.setText(f"Saved: {'all bad · ' if self.all_bad else ''}{self.draft.describe()}")
        self.prompts.refresh()
        self._move_on()

    @Slot()
    def skip(self) -> None:
        self.status.setText("Skipped; it stays unlabeled.")
        self._move_on()  # may say that there is nothing else to go to

    def _move_on(self) -> None:
        self.go_to_next_unlabeled(after=self.prompt_id)
        self.waiting_since = time.monotonic() if self.batch is None else None
        if self.batch is not None:
            self.waits.append(0.0)
        self._update_progress()

    @Slot()
    def regenerate(self) -> None:
        if self.prompt_id is None or not self.session.models.loaded:
            return
        self.batch = self.batch_uid = None
        self._show_batch()
        self.queue.config = self.settings.value()
        self.queue.regenerate(self.prompt_id)

    @Slot()
    def _strip_reordered(self) -> None:
        order = [self.strip.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.strip.count())]
        self.draft.set_order(order)
        self._update_draft_view()

    def _update_draft_view(self) -> None:
        for pane in self.panes:
            place = self.draft.place_of(pane.index)
            tied = place is not None and len(self.draft.groups[place - 1]) > 1
            pane.set_place(place, tied, self.all_bad)
        self.strip.blockSignals(True)
        self.strip.clear()
        for pane in self.draft.placed():
            self.strip.addItem(f"  {pane + 1}  ")
            self.strip.item(self.strip.count() - 1).setData(Qt.ItemDataRole.UserRole, pane)
        self.strip.blockSignals(False)
        ready = self.batch is not None
        for button in (self.submit_button, self.all_bad_button, self.tie_button, self.undo_button):
            button.setEnabled(ready)

    # ---- reward scores ---------------------------------------------------------------------

    @Slot()
    def _score_current(self) -> None:
        """Score the shown batch with the reward model (in the background) if scores are on."""
        if (self.show_scores.isChecked() and self.batch is not None and self.batch.uid not in self.scores
                and not self._scoring()):
            self._score([self.batch.uid], lambda uid, scores: self._show_batch() if self.batch
                        and uid == self.batch.uid else None)

    @Slot(bool)
    def _order_by_uncertainty(self, on: bool) -> None:
        self.priority = []
        if not on or self.session.project is None:
            return
        store = RankingStore(self.session.project)
        batches = {}
        for row in self.all_prompts():
            if not row.labeled_by_me and row.responses:
                batches[store.latest_batch(row.id).uid] = row.id
        self.status.setText(f"Scoring {len(batches)} prompts to find the least certain…")

        def done(_outcome: str) -> None:
            scored = [(uncertainty(self.scores[uid]), prompt) for uid, prompt in batches.items() if uid in self.scores]
            self.priority = [prompt for _, prompt in sorted(scored)]
            self.status.setText(f"Least sure first: {len(self.priority)} prompts ordered by the reward model.")
            if self.priority:
                self.show_prompt(self.priority[0])

        self._score([uid for uid in batches if uid not in self.scores], None, done)

    def _scoring(self) -> bool:
        return self.score_task is not None and self.score_task.running

    def _score(self, uids: list[str], each=None, done=None) -> None:
        if self._scoring():
            self.score_task.stop()
        project, models = self.session.project, self.session.models

        def got(item) -> None:
            uid, scores = item
            self.scores[uid] = scores
            if each is not None:
                each(uid, scores)

        self.score_task = self.session.run_task(
            lambda should_stop: score_batches(project, models, uids, should_stop=should_stop),
            on_item=got, on_error=lambda message: self.status.setText(f"Could not score: {message}"),
            on_finished=done)

    # ---- ideal answers, progress ---------------------------------------------------------

    @Slot(int)
    def make_ideal(self, pane: int) -> None:
        if self.batch is None or pane >= len(self.order):
            return
        project = self.session.project
        messages = PromptStore(project).messages(self.prompt_id)
        response = self.batch.responses[self.order[pane]]
        text = self.edit_ideal(messages[-1]["content"], response.text)
        if text is None or not text.strip():
            return
        example = SftStore(project).add([*messages, {"role": "assistant", "content": text.strip()}],
                                        source=f"ranking: prompt {self.prompt_id}")
        self.status.setText(f"Saved as SFT example #{example}.")

    def edit_ideal(self, prompt: str, text: str) -> str | None:
        """Ask for the edited answer (None: cancelled); replaced in tests."""
        dialog = IdealAnswerDialog(self, prompt, text)
        return dialog.editor.toPlainText() if dialog.exec() == QDialog.DialogCode.Accepted else None

    @Slot()
    def _prompts_changed(self) -> None:
        self.prompts.set_store(self.prompts.store, self.annotator)  # new tags and prompts too
        if self.session.project is None:
            return
        if self.prompt_id is not None and PromptStore(self.session.project).row(self.prompt_id) is None:
            self.prompt_id = None
            self.go_to_next_unlabeled()
        elif self.prompt_id is not None:
            self.show_prompt(self.prompt_id)
        self._update_progress()

    @Slot()
    def _update_progress(self) -> None:
        project = self.session.project
        if project is None:
            self.progress.setText("")
            return
        progress = RankingStore(project).progress(self.annotator)
        parts = [f"{progress['labeled']:,} / {progress['total']:,} labeled by {self.annotator or 'you'}"]
        if progress["labels_per_hour"] and progress["labeled"] >= MIN_LABELS_FOR_RATE:  # one label makes no rate
            parts.append(f"{progress['labels_per_hour']:,.0f} labels/hour")
        if self.waits:
            waits = sorted(self.waits)
            p95 = waits[min(len(waits) - 1, int(0.95 * len(waits)))]
            parts.append(f"waiting for responses: median {statistics.median(waits):.1f} s, 95% within {p95:.1f} s")
        ahead = len(self.queue.pending())
        if ahead:
            parts.append(f"generating {ahead} ahead")
        elif self.queue.error:
            parts.append("generation stopped")
        self.progress.setText(" · ".join(parts))
