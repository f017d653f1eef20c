"""How a page stays current: it names the kinds of record it shows and how to re-read them.

Stores write to the project; the project says which kinds each commit changed; the session
turns that into one queued `changed(kinds)` signal on the GUI thread (see ui/session.py). A
page never tells another page anything. `follow` connects a page to that signal: a page that
is visible re-reads at once, a hidden one once, when it is next shown, so a long import does not
make every page query the database while nobody looks at it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QWidget

from workbench.project import KINDS
from ui.session import WorkbenchSession


class Follower(QObject):
    """Calls `refresh` for commits changing any of `kinds` (and when the project changes)."""

    def __init__(self, session: WorkbenchSession, page: QWidget, kinds: Iterable[str],
                 refresh: Callable[[], None], on_project: bool = False):
        super().__init__(page)
        self.page, self.refresh = page, refresh
        self.kinds = frozenset(kinds)
        unknown = self.kinds - KINDS
        if unknown:
            raise ValueError(f"no such kinds of record: {sorted(unknown)}")
        self.stale = False
        session.changed.connect(self._changed)
        if on_project:
            session.project_changed.connect(self._now_or_when_shown)
        page.installEventFilter(self)

    def _changed(self, kinds: frozenset[str]) -> None:
        if kinds & self.kinds:
            self._now_or_when_shown()

    def _now_or_when_shown(self) -> None:
        if self.page.isVisible():
            self.stale = False
            self.refresh()
        else:
            self.stale = True

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.page and event.type() == QEvent.Type.Show and self.stale:
            self.stale = False
            self.refresh()
        return False


def follow(session: WorkbenchSession, page: QWidget, kinds: Iterable[str], refresh: Callable[[], None],
           on_project: bool = False) -> Follower:
    """Keep `page` current: `refresh` runs after any commit changing one of `kinds` (at once if
    the page is visible, else when it is shown) and, with `on_project`, after a project switch."""
    return Follower(session, page, kinds, refresh, on_project)
