"""The SFT table: a QAbstractTableModel over SftStore that stays smooth at 100,000 examples.

It holds only the ordered list of ids that match the search, filter and sort (a list of ints is
cheap at 100k). Row contents are fetched from the store a page at a time, only for rows the view
actually paints, and kept in a small LRU cache; token counts are computed lazily for painted rows
and cached by content digest, so an unchanged example is never tokenized twice.
"""

from __future__ import annotations

from collections import OrderedDict

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, Qt
from PySide6.QtGui import QColor

from workbench.data.sft_store import FILTERS, SftRow, SftStore
from workbench.train.sft_data import token_count

COLUMNS = ("ID", "Prompt", "Response", "Turns", "Length", "Tokens", "Flags", "Source")
ID, PROMPT, RESPONSE, TURNS, LENGTH, TOKENS, FLAGS, SOURCE = range(len(COLUMNS))
# Store sort keys per column; Tokens and Flags are computed on the fly, so SQL cannot sort them.
SORT_KEYS = {ID: "id", PROMPT: "prompt", RESPONSE: "response", TURNS: "turns", LENGTH: "length", SOURCE: "source"}
HEADER_TIPS = {
    PROMPT: "The first user message",
    RESPONSE: "The last assistant message",
    TURNS: "Number of messages",
    LENGTH: "Characters in the stored example",
    TOKENS: "Tokens after the loaded model's chat template",
    FLAGS: "Problems worth a look before training",
}
FLAG_TIPS = {
    "empty": "A message has no text, or there is no assistant reply: nothing to learn from.",
    "duplicate": "Another example has exactly the same messages: it would be trained on twice.",
    "too long": "More tokens than the max length ({max_length}): training would cut the reply off.",
}
FLAG_COLOR = QColor("#c62828")
PAGE_SIZE = 200
MAX_PAGES = 5  # at most 1,000 rows in memory, whatever the store holds
MAX_TOKEN_CACHE = 50_000
PREVIEW_CHARS = 300  # a cell shows one line; no need to hand the painter a whole essay
TOOLTIP_CHARS = 1000


def one_line(text: str, limit: int = PREVIEW_CHARS) -> str:
    return " ".join(text[:limit].split())


class SftTableModel(QAbstractTableModel):
    def __init__(self, store: SftStore | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.store = store
        self.search, self.filter = "", "all"
        self.sort_column, self.sort_order = ID, Qt.SortOrder.AscendingOrder
        self.tokenizer = None
        self.max_length = 1024
        self._ids: list[int] = []
        self._positions: dict[int, int] | None = None  # id -> row, built only when asked for
        self._pages: OrderedDict[int, dict[int, SftRow]] = OrderedDict()
        self._duplicates: set[str] = set()
        self._tokens: dict[str, int | None] = {}
        self.requery()

    # ---- what to show ----------------------------------------------------------------------

    def set_store(self, store: SftStore | None) -> None:
        self.store = store
        self._tokens.clear()
        self.requery()

    def set_search(self, text: str) -> None:
        self.search = text
        self.requery()

    def set_filter(self, name: str) -> None:
        if name not in FILTERS:
            raise ValueError(f"filter must be one of {', '.join(FILTERS)}")
        self.filter = name
        self.requery()

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        if column not in SORT_KEYS:
            return
        self.sort_column, self.sort_order = column, order
        self.requery()

    def set_tokenizer(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._tokens.clear()
        self._columns_changed(TOKENS, FLAGS)

    def set_max_length(self, max_length: int) -> None:
        self.max_length = max_length
        self._columns_changed(FLAGS, FLAGS)

    # ---- after edits -------------------------------------------------------------------------

    def requery(self) -> None:
        """Fetch the matching ids again (after an add, delete, import, search or sort)."""
        self.beginResetModel()
        if self.store is None:
            self._ids, self._duplicates = [], set()
        else:
            descending = self.sort_order == Qt.SortOrder.DescendingOrder
            self._ids = self.store.ids(self.search, self.filter, SORT_KEYS[self.sort_column], descending)
            self._duplicates = self.store.duplicate_digests()
        self._positions = None
        self._pages.clear()
        self.endResetModel()

    def refresh_rows(self, ids) -> None:
        """Repaint edited rows in place; they keep their position until the next requery, so a
        row being typed into never jumps away under the sort."""
        if self.store is None:
            return
        self._pages.clear()  # a few hundred rows; refetching what is on screen is one query
        self._duplicates = self.store.duplicate_digests()  # an edit can make or break a duplicate
        for example_id in ids:
            row = self.row_of(example_id)
            if row is not None:
                self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    # ---- lookups -------------------------------------------------------------------------------

    def example_id(self, row: int) -> int:
        return self._ids[row]

    def row_of(self, example_id: int) -> int | None:
        if self._positions is None:
            self._positions = {value: row for row, value in enumerate(self._ids)}
        return self._positions.get(example_id)

    def row_data(self, row: int) -> SftRow | None:
        """The store's row for a table row, fetched with its whole page on first use."""
        page = row // PAGE_SIZE
        rows = self._pages.get(page)
        if rows is None:
            rows = self.store.rows(self._ids[page * PAGE_SIZE:(page + 1) * PAGE_SIZE])
            self._pages[page] = rows
            if len(self._pages) > MAX_PAGES:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(page)
        return rows.get(self._ids[row])

    def cached_row_count(self) -> int:
        return sum(len(rows) for rows in self._pages.values())

    def tokens(self, row: SftRow) -> int | None:
        """Token count after the chat template; None without a tokenizer (or if it fails)."""
        if self.tokenizer is None:
            return None
        if row.digest not in self._tokens:
            if len(self._tokens) > MAX_TOKEN_CACHE:
                self._tokens.clear()
            try:
                self._tokens[row.digest] = token_count(self.tokenizer, self.store.messages(row.id))
            except Exception:  # noqa: BLE001 - a model's template is its own code and may refuse a chat
                self._tokens[row.digest] = None
        return self._tokens[row.digest]

    def flags(self, index: QModelIndex) -> Qt.ItemFlag:
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable if index.isValid() else Qt.ItemFlag.NoItemFlags

    def row_flags(self, row: SftRow) -> list[str]:
        flags = []
        if row.has_empty:
            flags.append("empty")
        if row.digest in self._duplicates:
            flags.append("duplicate")
        tokens = self.tokens(row)
        if tokens is not None and tokens > self.max_length:
            flags.append("too long")
        return flags

    # ---- QAbstractTableModel ----------------------------------------------------------------

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._ids)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            tip = HEADER_TIPS.get(section)
            return tip if section in SORT_KEYS or tip is None else f"{tip} (not sortable)"
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self.store is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.TextAlignmentRole:
            side = Qt.AlignmentFlag.AlignRight if column in (ID, TURNS, LENGTH, TOKENS) else Qt.AlignmentFlag.AlignLeft
            return int(Qt.AlignmentFlag.AlignVCenter | side)
        if role == Qt.ItemDataRole.ForegroundRole:
            return FLAG_COLOR if column == FLAGS else None
        if role not in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return None
        row = self.row_data(index.row())
        if row is None:  # deleted since the last requery
            return None
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(row, column)
        return self._display(row, column)

    def _display(self, row: SftRow, column: int) -> str | int:
        if column == TOKENS:
            tokens = self.tokens(row)
            return "" if tokens is None else f"{tokens:,}"
        return {
            ID: row.id, PROMPT: one_line(row.prompt), RESPONSE: one_line(row.response), TURNS: row.turns,
            LENGTH: f"{row.chars:,}", FLAGS: ", ".join(self.row_flags(row)), SOURCE: row.source,
        }[column]

    def _tooltip(self, row: SftRow, column: int) -> str | None:
        if column in (PROMPT, RESPONSE):
            text = row.prompt if column == PROMPT else row.response
            return text if len(text) <= TOOLTIP_CHARS else text[:TOOLTIP_CHARS] + "…"
        if column == SOURCE:
            return row.source or None
        if column == FLAGS:
            tips = [f"{flag}: {FLAG_TIPS[flag].format(max_length=self.max_length)}" for flag in self.row_flags(row)]
            return "\n".join(tips) or None
        return None

    def _columns_changed(self, first: int, last: int) -> None:
        if self._ids:
            self.dataChanged.emit(self.index(0, first), self.index(len(self._ids) - 1, last))
