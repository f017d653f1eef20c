"""Undo commands for SFT edits, on Qt's own QUndoStack.

Each command calls one store write and its exact inverse (update/update, add_many/delete,
delete/restore), so every step, undo and redo included, is committed to the project file the
moment it happens. After each step the command calls `changed(ids, reset)`: the page repaints
those rows (reset=False) or requeries the table (reset=True: rows came or went) and shows `ids`.

A write that fails (the disk is full, the file went away) makes the command obsolete, so the
stack drops it instead of holding a step that never happened, and `failed(message)` tells the user.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtGui import QUndoCommand

from workbench.data.sft_store import SftStore, StoredExample
from workbench.errors import WorkbenchError
from ui.formatting import plural

Changed = Callable[[list[int], bool], None]
Failed = Callable[[str], None]
EDIT_ID = 1  # commands with the same id() may merge; only edits do


class StoreCommand(QUndoCommand):
    reset = True  # rows come or go, so the table requeries

    def __init__(self, text: str, store: SftStore, changed: Changed, failed: Failed):
        super().__init__(text)
        self.store, self.changed, self.failed = store, changed, failed

    def _attempt(self, write: Callable[[], list[int]]) -> None:
        try:
            ids = write()
        except WorkbenchError as error:
            self.setObsolete(True)
            self.failed(str(error))
            return
        self.changed(ids, self.reset)


class EditExample(StoreCommand):
    """Replace one example's messages. Consecutive saves with the same `key` (same field, same
    typing burst) merge into one step, so undo takes back a burst of typing, not a keystroke."""

    reset = False

    def __init__(self, store: SftStore, changed: Changed, failed: Failed, example_id: int,
                 old: list[dict], new: list[dict], key: tuple = ()):
        super().__init__(f"Edit example {example_id}", store, changed, failed)
        self.example_id, self.old, self.new, self.key = example_id, old, new, (example_id, *key)

    def redo(self) -> None:
        self._attempt(lambda: self._write(self.new))

    def undo(self) -> None:
        self._attempt(lambda: self._write(self.old))

    def _write(self, messages: list[dict]) -> list[int]:
        self.store.update(self.example_id, messages)
        return [self.example_id]

    def id(self) -> int:
        return EDIT_ID

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, EditExample) or other.key != self.key:
            return False
        self.new = other.new
        self.setObsolete(self.new == self.old)  # typed and deleted back: no step at all
        return True


class AddExamples(StoreCommand):
    """Add examples (new, duplicated or imported) as one step. Undo deletes them and keeps what
    it deleted; redo restores exactly that, so the examples come back under the same ids."""

    def __init__(self, store: SftStore, changed: Changed, failed: Failed, examples: list[list[dict]],
                 source: str = "", text: str | None = None):
        super().__init__(text or f"Add {plural(len(examples), 'example')}", store, changed, failed)
        self.examples, self.source = examples, source
        self.ids: list[int] = []
        self.removed: list[StoredExample] = []

    def redo(self) -> None:
        self._attempt(self._add)

    def undo(self) -> None:
        self._attempt(self._remove)

    def _add(self) -> list[int]:
        if self.removed:
            self.store.restore(self.removed)
        else:
            self.ids = self.store.add_many(self.examples, self.source)
            self.examples = []  # the store holds them now; an undo keeps the stored copies
        return self.ids

    def _remove(self) -> list[int]:
        self.removed = self.store.delete(self.ids)
        return []


class DeleteExamples(StoreCommand):
    def __init__(self, store: SftStore, changed: Changed, failed: Failed, ids: list[int]):
        super().__init__(f"Delete {plural(len(ids), 'example')}", store, changed, failed)
        self.ids = ids
        self.removed: list[StoredExample] = []

    def redo(self) -> None:
        self._attempt(self._remove)

    def undo(self) -> None:
        self._attempt(self._restore)

    def _remove(self) -> list[int]:
        self.removed = self.store.delete(self.ids)
        return []

    def _restore(self) -> list[int]:
        self.store.restore(self.removed)
        return self.ids
