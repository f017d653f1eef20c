"""The Help menu: every keyboard shortcut in one list, and About (versions and device)."""

from __future__ import annotations

import platform
from html import escape
from importlib import metadata

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMenu, QMessageBox

from ui.pages.ranking_page import KEYS_HELP

LIBRARIES = ("rlhf-workbench", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets",
             "PySide6-Essentials")
PAGE_KEYS = {"Rank": KEYS_HELP.format(k="K").split(" · "), "Model (Try it)": ["Ctrl+Enter send the prompt"]}


def add_help_menu(window: QMainWindow, models) -> QMenu:
    menu = window.menuBar().addMenu("&Help")
    shortcuts = QAction("&Keyboard shortcuts", window)
    shortcuts.setShortcut(QKeySequence.StandardKey.HelpContents)
    shortcuts.triggered.connect(lambda: QMessageBox.information(window, "Keyboard shortcuts", shortcuts_text(window)))
    about = QAction("&About RLHF Workbench", window)
    about.triggered.connect(lambda: QMessageBox.about(window, "About RLHF Workbench", about_text(models)))
    menu.addAction(shortcuts)
    menu.addAction(about)
    return menu


def menu_shortcuts(window: QMainWindow) -> list[tuple[str, str]]:
    """(keys, what) of every menu action that has a shortcut, in menu order."""
    found = []

    def walk(actions, path):
        for action in actions:
            if action.menu() is not None:
                walk(action.menu().actions(), path + [action.text().replace("&", "")])
            elif not action.shortcut().isEmpty():
                keys = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
                found.append((keys, " › ".join(path + [action.text().replace("&", "").rstrip("…")])))

    walk(window.menuBar().actions(), [])
    return found


def shortcuts_text(window: QMainWindow) -> str:
    rows = [f"<tr><td><b>{escape(keys)}</b></td><td>{escape(what)}</td></tr>" for keys, what in menu_shortcuts(window)]
    for page, keys in PAGE_KEYS.items():
        rows.append(f"<tr><td colspan=2><br><b>{escape(page)} page</b></td></tr>")
        rows += [f"<tr><td colspan=2>{escape(line)}</td></tr>" for line in keys]
    return "<table cellspacing=4>" + "".join(rows) + "</table>"


def about_text(models) -> str:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    info = getattr(models, "info", None)
    device = (f"{info.device} · {info.quantization} · {info.name}" if info is not None
              else "no model loaded yet")
    rows = [("Python", platform.python_version()), *((name, version(name)) for name in LIBRARIES),
            ("Model", device)]
    return ("<b>RLHF Workbench</b>: label, train and inspect models on one local GPU.<br><table cellspacing=3>"
            + "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows) + "</table>")
