"""Checks for data read from files other people made, before any of it is stored.

Packs, SFT files and preference files come from teammates and the internet, so every value is
checked for what the readers' own validation does not catch and SQLite or a later export would
choke on: JSON nested deeper than Python can parse, integers of thousands of digits, NaN and
infinite numbers, and lone surrogates (JSON's "\\ud800" escape makes a str that UTF-8, and so
SQLite, cannot hold). The size cap stops a small compressed file from expanding into gigabytes.
Each check raises ValueError(phrase), which the readers turn into a row error or a refusal.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from workbench.errors import WorkbenchError

# One import may add at most this much; a real dataset this big is rare and a bomb is caught.
MAX_IMPORT_ROWS = 200_000
MAX_IMPORT_TEXT_BYTES = 256 * 2**20
# Nesting allowed in a record stored whole (a generator record); real ones are 2 or 3 deep.
MAX_DEPTH = 32
INT64 = (-2**63, 2**63 - 1)  # what an SQLite INTEGER holds


class ImportTooLarge(WorkbenchError):
    """An import over the size cap; the readers' allow_large=True (--allow-large) lifts it.
    `question` asks the same without the command line's wording, for a dialog."""

    def __init__(self, message: str, question: str = ""):
        super().__init__(message)
        self.question = question or message


def row_limit(allow_large: bool) -> int | None:
    """How many rows a reader that counts as it reads may take before it stops (None: all)."""
    return None if allow_large else MAX_IMPORT_ROWS


def check_size(name: str, rows: int | None = None, text_bytes: int | None = None,
               allow_large: bool = False) -> None:
    """Refuse an import of more than MAX_IMPORT_ROWS rows or MAX_IMPORT_TEXT_BYTES of text.
    A reader that stopped at row_limit() + 1 rows passes that: the message then says "more than"."""
    if allow_large:
        return
    if rows is not None and rows == MAX_IMPORT_ROWS + 1:
        found = f"more than the {MAX_IMPORT_ROWS:,} rows"
    elif rows is not None and rows > MAX_IMPORT_ROWS:
        found = f"{rows:,} rows, more than the {MAX_IMPORT_ROWS:,}"
    elif text_bytes is not None and text_bytes > MAX_IMPORT_TEXT_BYTES:
        found = f"{_mib(text_bytes)} of text, more than the {_mib(MAX_IMPORT_TEXT_BYTES)}"
    else:
        return
    raise ImportTooLarge(f"{name} holds {found} one import takes (a file this large is often a mistake, "
                         "or a small compressed file that expands); split it, or add --allow-large "
                         "to import it anyway.",
                         f"{name} holds {found} one import normally takes. A file this large is often a "
                         "mistake, or a small compressed file that expands to gigabytes. Import it anyway?")


def _mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB" if size >= 2**20 else f"{size:,} bytes"


def parse_json(text: str | bytes) -> Any:
    """json.loads for untrusted text. Bad syntax still raises json.JSONDecodeError (callers say
    where it is); the other two ways text breaks json.loads raise ValueError(phrase) instead of
    RecursionError or an obscure message."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise ValueError("it nests lists or objects too deeply to be read") from None
    except ValueError:  # int() refuses numbers this long (sys.set_int_max_str_digits)
        raise ValueError(f"it holds a number of more than {sys.get_int_max_str_digits():,} digits") from None


def quote(text: str, limit: int = 40) -> str:
    """A string from a file, for a message: quoted, cut short, and on one line whatever it holds."""
    return json.dumps(text[:limit] + ("..." if len(text) > limit else ""), ensure_ascii=False)


def check_text(value: str, where: str) -> str:
    """`value` (a str) when it is storable text, else ValueError naming `where`."""
    if value.isascii():  # the common case, and cheap
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{where} holds U+{ord(value[error.start]):04X} at character {error.start + 1}, "
                         "half of a surrogate pair, which is not text") from None
    return value


def finite_float(value: Any) -> float | None:
    """`value` as a float when it is a number (not true/false) that is finite as a float, else
    None: NaN, Infinity, 1e309 and 10**400 all fail."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def check_record(value: Any, where: str) -> None:
    """A JSON value stored whole (a generator record): only JSON types, text without lone
    surrogates, integers SQLite can hold, finite floats, at most MAX_DEPTH deep.
    Walked with a stack, not recursion, so no depth can overflow Python's."""
    pending = [(value, "", 0)]
    while pending:
        item, path, depth = pending.pop()
        at = f"{where}{' at ' + path if path else ''}"
        if depth > MAX_DEPTH:
            raise ValueError(f"{where} nests lists or objects more than {MAX_DEPTH} deep")
        if isinstance(item, str):
            check_text(item, at)
        elif isinstance(item, bool) or item is None:
            pass
        elif isinstance(item, int):
            if not INT64[0] <= item <= INT64[1]:
                raise ValueError(f"{at} holds a whole number too large to store")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{at} holds {item}, which is not a finite number")
        elif isinstance(item, list):
            pending.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise ValueError(f"{at} has a key that is not text")
                check_text(key, f"{at}, a key,")
                pending.append((child, f"{path}[{quote(key)}]", depth + 1))
        else:
            raise ValueError(f"{at} holds a {type(item).__name__}, which JSON cannot")
