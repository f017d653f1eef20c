"""Team page: how much annotators agree, the items they disagree on, and the files that carry
labeling work between workbenches (labeling packs) and preference data to other tools."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QFileDialog, QGroupBox, QHBoxLayout, QHeaderView, QLabel,
    QMessageBox, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from workbench import app_settings
from workbench.data.agreement import AgreementReport, agreement_report
from workbench.data.packs import export_pack, import_pack
from workbench.data.pref_formats import FORMATS, import_preferences, write_preferences
from workbench.data.untrusted import ImportTooLarge
from workbench.errors import WorkbenchError
from ui.formatting import plural
from ui.change_flow import follow
from ui.session import WorkbenchSession

PACK_FILTER = "Labeling packs (*.rlhfpack);;All files (*)"
PREFS_FILTER = "JSON Lines (*.jsonl);;Parquet (*.parquet);;JSON (*.json)"
PREFS_IMPORT_FILTER = "Preference data (*.jsonl *.json *.ndjson *.parquet);;All files (*)"
FORMAT_LABELS = {"standard": "TRL standard pairs", "conversational": "TRL conversational pairs",
                 "kway": "Full K-way rankings"}


def number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def cell(text: str, data=None) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    if data is not None:
        item.setData(Qt.ItemDataRole.UserRole, data)
    return item


def table(headers: list[str]) -> QTableWidget:
    widget = QTableWidget(0, len(headers))
    widget.setHorizontalHeaderLabels(headers)
    widget.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    widget.verticalHeader().setVisible(False)
    widget.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    widget.horizontalHeader().setStretchLastSection(True)
    return widget


class TeamPage(QWidget):
    open_prompt = Signal(int)  # a disagreement to review on the Rank page

    def __init__(self, session: WorkbenchSession):
        super().__init__()
        self.session = session
        self.report: AgreementReport | None = None
        self.title = QLabel("Team: agreement and exchange")
        self.title.setObjectName("pageTitle")
        self.export_pack_button = QPushButton("Export labeling pack…")
        self.export_pack_button.setToolTip("Prompts and their responses in one file for a teammate to label")
        self.pack_with_labels = QCheckBox("with my labels")
        self.pack_with_labels.setToolTip("Include your labels (to send your work back), not only the responses")
        self.import_pack_button = QPushButton("Import pack…")
        self.import_pack_button.setToolTip("Merge a teammate's pack: new prompts and responses, and their "
                                           "labels under their name. Importing it again changes nothing.")
        self.prefs_format = QComboBox()
        for name in FORMATS:
            self.prefs_format.addItem(FORMAT_LABELS[name], name)
        self.export_prefs_button = QPushButton("Export preferences…")
        self.import_prefs_button = QPushButton("Import preferences…")
        self.import_prefs_button.setToolTip("TRL prompt/chosen/rejected (standard or conversational), "
                                            "K-way rankings, or Anthropic HH transcripts")
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.annotators = table(["Annotator", "Prompts ranked"])
        self.pairs = table(["Annotator", "Annotator", "Response pairs", "Agreement", "Cohen's κ"])
        self.disagreements = table(["Prompt", "Disagree", "Rankings (generation order, best first)"])
        self.disagreements.setToolTip("Double-click to review the prompt on the Rank page")
        self.disagreements.setWordWrap(True)

        exchange = QGroupBox("Exchange")
        row = QHBoxLayout(exchange)
        for widget in (self.export_pack_button, self.pack_with_labels, self.import_pack_button):
            row.addWidget(widget)
        row.addSpacing(24)
        for widget in (self.prefs_format, self.export_prefs_button, self.import_prefs_button):
            row.addWidget(widget)
        row.addStretch(1)
        tables = QHBoxLayout()
        tables.addWidget(self.annotators, 1)
        tables.addWidget(self.pairs, 2)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(exchange)
        layout.addWidget(self.summary)
        layout.addLayout(tables, 1)
        layout.addWidget(QLabel("Items the annotators disagree on, most first:"))
        layout.addWidget(self.disagreements, 2)

        self.export_pack_button.clicked.connect(self.choose_pack_export)
        self.import_pack_button.clicked.connect(self.choose_pack_import)
        self.export_prefs_button.clicked.connect(self.choose_prefs_export)
        self.import_prefs_button.clicked.connect(self.choose_prefs_import)
        self.disagreements.cellDoubleClicked.connect(self._open_disagreement)
        session.project_changed.connect(self.refresh)
        follow(session, self, {"prompts", "responses", "rankings"}, self.refresh)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.refresh()

    # ---- agreement -------------------------------------------------------------------

    @Slot()
    def refresh(self) -> None:
        project = self.session.project
        for widget in (self.export_pack_button, self.import_pack_button, self.export_prefs_button,
                       self.import_prefs_button):
            widget.setEnabled(project is not None)
        if project is None or not self.isVisible():
            return
        report = self.report = agreement_report(project)
        if report.items:
            kappa = (f"Cohen's κ {number(report.cohen)}" if report.cohen is not None
                     else f"Fleiss' κ {number(report.fleiss)}" if report.fleiss is not None else "")
            self.summary.setText(
                f"<b>{plural(report.items, 'prompt')}</b> ranked by two or more annotators "
                f"({plural(report.units, 'response pair')} judged): pairwise agreement "
                f"<b>{number(report.pairwise)}</b> · Krippendorff's α <b>{number(report.alpha)}</b>"
                + (f" · {kappa}" if kappa else "")
                + ". κ and α are 1 for full agreement and 0 for what chance alone gives."
                + (f" <b>From {plural(report.items, 'shared prompt')} these figures are rough</b>: "
                   f"{FEW_SHARED_PROMPTS} or more make them worth trusting." if report.items < FEW_SHARED_PROMPTS else ""))
        else:
            self.summary.setText("No prompt has been ranked by two annotators yet. Send a labeling pack to a "
                                 "teammate and import it back to measure agreement.")
        self._fill(self.annotators, [[name, f"{count:,}"] for name, count in report.annotators.items()])
        self._fill(self.pairs, [[p.first, p.second, f"{p.units:,}", number(p.agreement), number(p.kappa)]
                                for p in report.pairs])
        self._fill(self.disagreements,
                   [[d.prompt[:120], f"{d.share:.0%}",
                     "   ".join(f"{name}: {'all bad · ' if d.all_bad.get(name) else ''}{order}"
                                for name, order in d.rankings.items())] for d in report.disagreements],
                   data=[d.prompt_id for d in report.disagreements])

    @staticmethod
    def _fill(widget: QTableWidget, rows: list[list[str]], data: list | None = None) -> None:
        widget.setRowCount(len(rows))
        for r, values in enumerate(rows):
            for c, text in enumerate(values):
                widget.setItem(r, c, cell(text, data[r] if data is not None and c == 0 else None))

    @Slot(int, int)
    def _open_disagreement(self, row: int, _column: int) -> None:
        self.open_prompt.emit(self.disagreements.item(row, 0).data(Qt.ItemDataRole.UserRole))

    # ---- files -----------------------------------------------------------------------

    @Slot()
    def choose_pack_export(self) -> None:
        project = self.session.project
        suggested = str(project.path.with_name(f"{project.path.stem}.rlhfpack"))
        path, _ = QFileDialog.getSaveFileName(self, "Export labeling pack", suggested, PACK_FILTER)
        if path:
            self.export_pack_to(path)

    def export_pack_to(self, path: str) -> None:
        with_labels = self.pack_with_labels.isChecked()
        annotator = app_settings.annotator() or None if with_labels else None
        self._report("Export labeling pack", lambda: "Wrote " + plural(
            export_pack(self.session.project, path, with_labels=with_labels, annotator=annotator), "prompt")
            + f" to {Path(path).name}" + (f", with {annotator}'s labels." if annotator else "."))

    @Slot()
    def choose_pack_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import labeling pack", "", PACK_FILTER)
        if path:
            self.import_pack_from(path)

    def import_pack_from(self, path: str) -> None:
        self._import("Import labeling pack",
                     lambda allow_large: counts(import_pack(self.session.project, path, allow_large=allow_large)))

    @Slot()
    def choose_prefs_export(self) -> None:
        project = self.session.project
        fmt = self.prefs_format.currentData()
        suggested = str(project.path.with_name(f"{project.path.stem}-preferences-{fmt}.jsonl"))
        path, _ = QFileDialog.getSaveFileName(self, "Export preferences", suggested, PREFS_FILTER)
        if path:
            self.export_prefs_to(path)

    def export_prefs_to(self, path: str) -> None:
        fmt = self.prefs_format.currentData()
        self._report("Export preferences", lambda: f"Wrote {plural(write_preferences(self.session.project, path, fmt), 'row')} "
                     f"({FORMAT_LABELS[fmt]}) to {Path(path).name}.")

    @Slot()
    def choose_prefs_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import preferences", "", PREFS_IMPORT_FILTER)
        if path:
            self.import_prefs_from(path)

    def import_prefs_from(self, path: str) -> None:
        self._import("Import preferences", lambda allow_large: counts(
            import_preferences(self.session.project, path, allow_large=allow_large)))

    def _import(self, title: str, work) -> None:
        """`_report` for an import, `work(allow_large)`: over the size cap of one import the user
        is asked, and a Yes runs it again without the cap."""
        def first_try():
            try:
                return work(False)
            except ImportTooLarge as refusal:
                answer = QMessageBox.question(self, title, refusal.question,
                                              QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                              QMessageBox.StandardButton.No)
                if answer != QMessageBox.StandardButton.Yes:
                    return None
                return work(True)

        self._report(title, first_try)

    def _report(self, title: str, work) -> None:
        """Run `work`; its message is shown, or its error. None: the user cancelled."""
        try:
            message = work()
        except WorkbenchError as error:
            QMessageBox.warning(self, title, str(error))
            return
        if message is None:
            return
        self.refresh()  # the other pages see the import as a change to their records
        QMessageBox.information(self, title, message)


# Below this many prompts ranked by two annotators, κ and α swing by tenths from one label
# to the next: say so next to them.
FEW_SHARED_PROMPTS = 20


def counts(summary: dict) -> str:
    """One sentence from an import's counts (keys vary a little between packs and files)."""
    names = {"prompts_added": "prompts", "batches_added": "response batches", "rankings_added": "labels added",
             "rankings_updated": "labels updated"}
    parts = [f"{summary[key]:,} {label}" for key, label in names.items() if summary.get(key)]
    unchanged = sum(summary.get(key, 0) for key in ("rankings_unchanged", "rankings_kept"))
    if unchanged:
        parts.append(f"{unchanged:,} labels already here")
    return "Imported: " + (", ".join(parts) if parts else "nothing new (it was all here already)") + "."
