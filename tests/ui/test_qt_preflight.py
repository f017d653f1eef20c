"""Missing X11 libraries are named, with the apt line, before Qt starts (issue 15)."""

from ui import qt_preflight

LDD = """\tlinux-vdso.so.1 (0x00007ffd)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxkbcommon-x11.so.0 => not found
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)
"""


def test_the_missing_libraries_and_their_packages_are_named():
    missing = qt_preflight.missing_libraries(LDD)
    assert missing == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxkbcommon-x11.so.0"]
    assert [qt_preflight.debian_package(name) for name in missing] == [
        "libxcb-icccm4", "libxcb-keysyms1", "libxkbcommon-x11-0"]


def test_the_gui_command_says_what_to_install_instead_of_starting_qt(monkeypatch, capsys):
    from ui.cli import main

    monkeypatch.setattr(qt_preflight, "check", lambda: "Qt's X11 plugin needs system libraries this machine "
                        "lacks (libxcb-icccm.so.4). On Debian or Ubuntu: sudo apt-get install libxcb-icccm4")
    assert main(["gui"]) == 1
    assert "sudo apt-get install libxcb-icccm4" in capsys.readouterr().err


def test_nothing_is_checked_off_screen(monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert qt_preflight.check() is None


def test_on_this_machine_the_real_plugin_is_read(monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setenv("DISPLAY", ":0")
    problem = qt_preflight.check()
    assert problem is None or problem.startswith("Qt's X11 plugin needs") and "apt-get install lib" in problem
