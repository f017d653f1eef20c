"""SQLite's defensive mode on every supported Python.

Defensive mode stops SQL from corrupting the database on purpose: no `PRAGMA writable_schema`
edits of sqlite_master, no direct writes to shadow tables. Python 3.12 switches it on with
`Connection.setconfig`; Python 3.11 has no such method, so there we call SQLite's own
`sqlite3_db_config` through ctypes on the connection's handle, and read the setting back to be
sure it took. The handle is the first field after the object header of CPython's connection
object (Modules/_sqlite/connection.h); the call is checked against the database's file name
before anything is changed, so a layout we do not expect is detected, never written through.
"""

from __future__ import annotations

import ctypes
import platform
import sqlite3
import sys
from functools import cache

SQLITE_DBCONFIG_DEFENSIVE = 1010


def switch_on(conn: sqlite3.Connection) -> None:
    """Switch defensive mode on for `conn`; raises sqlite3.Error where SQLite refuses."""
    if hasattr(conn, "setconfig"):  # Python 3.12+
        conn.setconfig(sqlite3.SQLITE_DBCONFIG_DEFENSIVE, True)
        return
    if not _set_by_ctypes(conn, True):
        raise sqlite3.NotSupportedError("SQLite's defensive mode could not be switched on")


def is_on(conn: sqlite3.Connection) -> bool:
    if hasattr(conn, "getconfig"):
        return bool(conn.getconfig(sqlite3.SQLITE_DBCONFIG_DEFENSIVE))
    return _set_by_ctypes(conn, None)


@cache
def _library():
    """The SQLite library Python's sqlite3 module uses, with the three functions we call."""
    import _sqlite3

    # Calling the variadic sqlite3_db_config with fixed arguments is only sound where variadic
    # integers and pointers travel like fixed ones; Apple's arm64 ABI puts them on the stack.
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return None
    try:
        lib = ctypes.CDLL(_sqlite3.__file__)  # finds the symbols in the module or the library it links
        lib.sqlite3_libversion.restype = ctypes.c_char_p
        lib.sqlite3_db_filename.restype = ctypes.c_char_p
        lib.sqlite3_db_filename.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.sqlite3_db_config.restype = ctypes.c_int
        lib.sqlite3_db_config.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    except (OSError, AttributeError):
        return None
    if lib.sqlite3_libversion().decode() != sqlite3.sqlite_version:
        return None  # a second copy of SQLite, not the one holding our connection
    return lib


def _set_by_ctypes(conn: sqlite3.Connection, value: bool | None) -> bool:
    """Set (or with None only read) defensive mode on `conn`; True when it is on afterwards."""
    lib = _library()
    if lib is None or type(conn) is not sqlite3.Connection:
        return False
    handle = ctypes.c_void_p.from_address(id(conn) + object.__basicsize__).value
    if not handle:
        return False
    # Proof the pointer is this connection's database before it is used to change anything.
    expected = conn.execute("PRAGMA database_list").fetchone()[2]
    if (lib.sqlite3_db_filename(handle, b"main") or b"").decode(errors="replace") != expected:
        return False
    state = ctypes.c_int(-1)
    if lib.sqlite3_db_config(handle, SQLITE_DBCONFIG_DEFENSIVE, -1 if value is None else int(value),
                             ctypes.byref(state)) != 0:
        return False
    return state.value == 1
