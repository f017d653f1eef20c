"""A ranking being made from the keyboard or the mouse, before it is committed.

Panes are numbered 0..K-1 as shown on screen. Picking panes one after another orders them best
first; a tie joins the next pick to the previous one; once K-1 panes are placed the last one's
place is known, so the ranking is complete. Submitting early (best-of-K) ties every pane not
picked at the bottom. Plain logic, so the page's keys and buttons can be tested without Qt.
"""

from __future__ import annotations

from collections.abc import Sequence


class RankingDraft:
    def __init__(self, panes: int):
        self.panes = panes
        self.groups: list[list[int]] = []
        self.tie_next = False

    # ---- changes -------------------------------------------------------------------

    def pick(self, pane: int) -> bool:
        """Place `pane` next (or tie it with the previous pick); True once the ranking is complete."""
        if not 0 <= pane < self.panes or pane in self.placed():
            return self.complete
        if self.tie_next and self.groups:
            self.groups[-1].append(pane)
        else:
            self.groups.append([pane])
        self.tie_next = False
        if len(self.placed()) == self.panes - 1:  # the last pane's place is implied
            last = next(p for p in range(self.panes) if p not in self.placed())
            self.groups.append([last])
        return self.complete

    def tie(self) -> None:
        """The next pick shares the previous pick's place."""
        if self.groups:
            self.tie_next = True

    def undo(self) -> None:
        if self.tie_next:
            self.tie_next = False
        elif self.groups:
            self.groups[-1].pop()
            if not self.groups[-1]:
                self.groups.pop()

    def clear(self) -> None:
        self.groups, self.tie_next = [], False

    def set_order(self, order: Sequence[int]) -> None:
        """A strict order of some panes (dragged into place with the mouse)."""
        self.groups, self.tie_next = [[p] for p in order], False

    def load(self, groups: Sequence[Sequence[int]]) -> None:
        self.groups, self.tie_next = [list(g) for g in groups], False

    # ---- reading -------------------------------------------------------------------

    def placed(self) -> list[int]:
        return [p for group in self.groups for p in group]

    @property
    def complete(self) -> bool:
        return len(self.placed()) == self.panes

    def final_groups(self) -> list[list[int]]:
        """What submitting now commits: unpicked panes share the last place."""
        rest = [p for p in range(self.panes) if p not in self.placed()]
        return [list(g) for g in self.groups] + ([rest] if rest else [])

    def place_of(self, pane: int) -> int | None:
        """1-based place of a picked pane (tied panes share one)."""
        for index, group in enumerate(self.groups, 1):
            if pane in group:
                return index
        return None

    def describe(self) -> str:
        """e.g. "2 > 1 = 4 > …" with panes numbered from 1 as on screen."""
        text = " > ".join(" = ".join(str(p + 1) for p in group) for group in self.groups)
        if self.tie_next:
            text += " = …"
        elif not self.complete:
            text += (" > …" if text else "")
        return text
