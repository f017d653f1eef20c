"""Before Qt starts on Linux/X11: are the system libraries its xcb plugin needs present?

Qt's own message when one is missing blames libxcb-cursor0 whichever library it is (seen on a
minimal Debian where libxcb-icccm4 and libxcb-keysyms1 were missing). `ldd` on the plugin names
the real ones; each maps to its Debian/Ubuntu package by that family's naming rule, so the
user gets the one apt line that fixes it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

NOT_FOUND = re.compile(r"^\s*(\S+\.so[.\d]*)\s*=>\s*not found", re.MULTILINE)


def needs_xcb() -> bool:
    """Qt will use its xcb (X11) plugin: Linux, a display, no other platform asked for."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    return sys.platform.startswith("linux") and platform in ("", "xcb") and bool(os.environ.get("DISPLAY")) \
        and not (platform == "" and os.environ.get("WAYLAND_DISPLAY"))


def xcb_plugin() -> Path | None:
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    plugin = Path(list(spec.submodule_search_locations)[0]) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return plugin if plugin.is_file() else None


def missing_libraries(ldd_output: str) -> list[str]:
    return sorted(set(NOT_FOUND.findall(ldd_output)))


def debian_package(library: str) -> str:
    """libxcb-icccm.so.4 -> libxcb-icccm4; libxkbcommon-x11.so.0 -> libxkbcommon-x11-0."""
    base, _, version = library.partition(".so")
    version = version.strip(".").split(".")[0]
    return base + ("-" if base[-1:].isdigit() else "") + version


def check() -> str | None:
    """None when Qt can start, else the message: what is missing and the apt line."""
    if not needs_xcb():
        return None
    plugin = xcb_plugin()
    if plugin is None or shutil.which("ldd") is None:
        return None  # nothing to check with: let Qt speak for itself
    try:
        output = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    missing = missing_libraries(output)
    if not missing:
        return None
    packages = " ".join(debian_package(library) for library in missing)
    return (f"Qt's X11 plugin needs system libraries this machine lacks ({', '.join(missing)}). On Debian or "
            f"Ubuntu: sudo apt-get install {packages}")
