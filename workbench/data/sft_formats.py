"""Read and write SFT examples in the dataset shapes that TRL and the Hugging Face hub use.

Inside the workbench an SFT example is a list of chat messages, `{"role", "content"}`. Files from
elsewhere come as one of TRL's three SFT row formats ("messages", "prompt"/"completion", "text")
in one of four containers (JSONL, CSV, Parquet, a folder written by `Dataset.save_to_disk`), so
that is what we read and write: data goes to and from TRL, `datasets` and other tools unchanged.

Import never stops at a bad row: every valid row becomes an example and every bad one a RowError
naming its line or row, so the user can fix the file and try again. Only a file that cannot be read
at all raises WorkbenchError, and one over the size cap ImportTooLarge (see untrusted.py: files are
untrusted, and every value is checked before it is stored). Every export is atomic: a failed write
never leaves half a file.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.data.untrusted import check_size, check_text, parse_json, quote, row_limit
from workbench.errors import WorkbenchError
from workbench.paths import write_atomically

FORMATS = ("messages", "prompt-completion", "text")
CONTAINERS = ("jsonl", "csv", "parquet", "datasets")
ROLES = ("system", "user", "assistant")

_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
# The columns each format writes; a CSV is read with the first set it has, in this order.
_COLUMNS = {"messages": ("messages",), "prompt-completion": ("prompt", "completion"), "text": ("text",)}


@dataclass(frozen=True)
class RowError:
    """A row that could not be imported. `message` is the whole sentence, "line 3: ..." for JSONL
    and "row 3: ..." for the other containers, so it can be shown as it is."""

    row: int
    message: str

    def __str__(self) -> str:
        return self.message


class UnreadableRow(ValueError):
    """Stands for a row a columnar file holds but Python cannot (text that is not UTF-8, a date out
    of range): readers put it in the row's place, so that row alone becomes a RowError."""


def readable(raw: Any) -> Any:
    """A raw row as read; an UnreadableRow raises its ValueError, for the row loop to record."""
    if isinstance(raw, UnreadableRow):
        raise raw
    return raw


@dataclass
class ImportResult:
    examples: list[list[dict]]
    """The valid rows as message lists, in file order."""
    errors: list[RowError]
    """One per row that was skipped, in file order."""
    container: str
    """Which of CONTAINERS was read."""
    total_rows: int
    """Rows read (blank JSONL lines not counted): len(examples) + len(errors)."""


def container_for(path) -> str:
    """The container a path holds (or will hold), told by its suffix; a folder is a datasets folder."""
    path = Path(path)
    if path.is_dir():
        return "datasets"
    container = _SUFFIXES.get(path.suffix.lower())
    if container:
        return container
    if not path.suffix and not path.exists():
        return "datasets"  # an export to a folder that does not exist yet
    raise WorkbenchError(
        f"Cannot tell the format of {path}: use a .jsonl, .json, .ndjson, .csv or .parquet file, "
        "or a folder saved by the datasets library."
    )


# ---------------------------------------------------------------- rows <-> messages


def normalise_row(row: dict) -> list[dict]:
    """One record in any of FORMATS as a message list; ValueError(sentence) when it is not valid.

    Keys that are absent or null are the same thing (a columnar file has every column in every row),
    other keys are ignored, and each message keeps only its role and content.
    """
    if not isinstance(row, dict):
        raise ValueError(f"the record is {_kind(row)}, not an object")
    if row.get("messages") is not None:
        return _with_assistant(_messages(_json_list(row["messages"], "messages"), "messages"))
    if row.get("prompt") is not None or row.get("completion") is not None:
        return _from_prompt_completion(row.get("prompt"), row.get("completion"))
    if row.get("text") is not None:
        return _from_text(row["text"])
    raise ValueError(f'the record has no "messages", "prompt" and "completion", or "text" key (it has {_keys(row)})')


def _keys(record: dict) -> str:
    """The keys a record has, for a message: the first ten, each cut short (the file may be hostile)."""
    shown = [quote(key) if isinstance(key, str) else str(key) for key in list(record)[:10]]
    return ", ".join(shown + (["..."] if len(record) > 10 else [])) or "none"


def _json_list(value: Any, key: str) -> Any:
    """Decode a messages cell stored as JSON text, as CSV files and many Parquet writers do."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        raise ValueError(f'"{key}" is empty')
    try:
        return parse_json(value)
    except json.JSONDecodeError as error:
        raise ValueError(f'"{key}" is text but not valid JSON ({error.msg} at column {error.colno})') from None
    except ValueError as error:
        raise ValueError(f'"{key}" cannot be read: {error}') from None


def _messages(value: Any, key: str) -> list[dict]:
    if not isinstance(value, list):
        raise ValueError(f'"{key}" is {_kind(value)}, not a list of messages')
    return [_message(item, f'"{key}" item {number}') for number, item in enumerate(value, 1)]


def _message(item: Any, where: str) -> dict:
    if not isinstance(item, dict):
        raise ValueError(f"{where} is {_kind(item)}, not an object")
    role, content = item.get("role"), item.get("content")
    if role not in ROLES:
        raise ValueError(f"{where} has {_shown_role(role)}; roles are {', '.join(ROLES)}")
    if not isinstance(content, str):
        shown = "no content" if content is None else f"content that is {_kind(content)}, not a string"
        raise ValueError(f"{where} has {shown}")
    return {"role": role, "content": check_text(content, f"{where} content")}


def _shown_role(role: Any) -> str:
    # Quote a short text; name anything else by its kind (a list could nest too deeply to print).
    if role is None:
        return "no role"
    if isinstance(role, str) and len(role) <= 40:
        return f"role {quote(role)}"
    return f"a role that is {_kind(role)}"


def _with_assistant(messages: list[dict]) -> list[dict]:
    # Without an assistant reply there is nothing for SFT to learn from.
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise ValueError("there is no assistant message with content")
    return messages


def _from_prompt_completion(prompt: Any, completion: Any) -> list[dict]:
    if prompt is None or completion is None:
        present, missing = ("prompt", "completion") if completion is None else ("completion", "prompt")
        raise ValueError(f'the record has "{present}" but no "{missing}"')
    if isinstance(prompt, str) and isinstance(completion, str):
        if not completion.strip():
            raise ValueError('"completion" is empty')
        return [{"role": "user", "content": check_text(prompt, '"prompt"')},
                {"role": "assistant", "content": check_text(completion, '"completion"')}]
    if isinstance(prompt, list) and isinstance(completion, list):
        if not completion:
            raise ValueError('"completion" is empty')
        return _with_assistant(_messages(prompt, "prompt") + _messages(completion, "completion"))
    raise ValueError(
        f'"prompt" is {_kind(prompt)} and "completion" is {_kind(completion)}; '
        "both must be strings or both lists of messages"
    )


def _from_text(text: Any) -> list[dict]:
    if not isinstance(text, str):
        raise ValueError(f'"text" is {_kind(text)}, not a string')
    if not text.strip():
        raise ValueError('"text" is empty')
    return [{"role": "assistant", "content": check_text(text, '"text"')}]


def _kind(value: Any) -> str:
    """A value's type as a JSON user would name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def example_to_row(messages: list[dict], fmt: str) -> dict:
    """One example as a row of `fmt`; ValueError(sentence) if it is invalid or `fmt` cannot hold it.

    prompt-completion uses the string form for exactly [user, assistant], the conversational form
    otherwise (write_sft_file instead picks one form for the whole file).
    """
    messages = _valid_example(messages)
    return _to_row(messages, fmt, conversational=not _is_single_turn(messages))


def _valid_example(messages: Any) -> list[dict]:
    return _with_assistant(_messages(messages, "messages"))


def _to_row(messages: list[dict], fmt: str, conversational: bool) -> dict:
    if fmt == "messages":
        return {"messages": messages}
    if fmt == "prompt-completion":
        return _prompt_completion_row(messages, conversational)
    if fmt == "text":
        if not _is_text(messages):
            raise ValueError("a chat cannot be written as text; use the messages or prompt-completion format")
        return {"text": messages[0]["content"]}
    raise ValueError(f"unknown format {fmt!r}; the formats are {', '.join(FORMATS)}")


def _prompt_completion_row(messages: list[dict], conversational: bool) -> dict:
    if not conversational:
        return {"prompt": messages[0]["content"], "completion": messages[1]["content"]}
    # The completion is the last assistant reply; anything after it goes along so nothing is lost.
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return {"prompt": messages[:last], "completion": messages[last:]}


def _is_single_turn(messages: list[dict]) -> bool:
    return [m["role"] for m in messages] == ["user", "assistant"]


def _is_text(messages: list[dict]) -> bool:
    """The shape a "text" row imports as: one assistant message."""
    return len(messages) == 1 and messages[0]["role"] == "assistant"


# ---------------------------------------------------------------- reading


def read_sft_file(path, allow_large: bool = False) -> ImportResult:
    """Every row of a JSONL, JSON, CSV, Parquet file or datasets folder, as examples and RowErrors.
    ImportTooLarge for more than untrusted.py's cap of rows or text, unless `allow_large`."""
    path = Path(path)
    container = container_for(path)
    if not path.exists():
        raise WorkbenchError(f"{path} does not exist.")
    if path.is_file() and path.stat().st_size == 0:
        return ImportResult(examples=[], errors=[], container=container, total_rows=0)
    unit, rows, to_messages = _READERS[container](path, allow_large)
    examples, errors = [], []
    for number, raw in rows:
        try:
            examples.append(to_messages(readable(raw)))
        except ValueError as error:
            errors.append(RowError(number, f"{unit} {number}: {error}"))
    return ImportResult(examples=examples, errors=errors, container=container, total_rows=len(rows))


# Each reader (of a path, and allow_large) returns how rows are named in errors, the numbered raw
# rows, and how to turn one into messages. Each refuses more rows or text than the cap before it
# reads them, as early as its container allows.
_Rows = tuple[str, list[tuple[int, Any]], Callable[[Any], list[dict]]]


def _read_jsonl(path: Path, allow_large: bool = False) -> _Rows:
    text = _read_text(path, allow_large)
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        records = _json_array(text, path)
        check_size(path.name, rows=len(records), allow_large=allow_large)
        return "row", list(enumerate(records, 1)), normalise_row
    # Lines are counted as they are split: a file of many short lines takes far more memory as
    # Python strings than as text, so a reader stops one past the cap.
    lines = list(itertools.islice(_numbered_lines(text), _one_past(row_limit(allow_large))))
    check_size(path.name, rows=len(lines), allow_large=allow_large)
    return "line", lines, _from_json_line


def _one_past(limit: int | None) -> int | None:
    return None if limit is None else limit + 1


def _numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of each line that is not blank. Split on "\n" only: str.splitlines
    would also split on U+2028, which JSON strings may hold raw."""
    start = 0
    for number in itertools.count(1):
        end = text.find("\n", start)
        line = text[start:] if end < 0 else text[start:end]
        if line.strip():
            yield number, line
        if end < 0:
            return
        start = end + 1


def _json_array(text: str, path: Path) -> list:
    try:
        records = parse_json(text)
    except json.JSONDecodeError as error:
        raise WorkbenchError(
            f"Cannot read {path}: it starts like a JSON array but is not valid JSON "
            f"({error.msg} at line {error.lineno}, column {error.colno})."
        ) from None
    except ValueError as error:
        raise WorkbenchError(f"Cannot read {path}: {error}.") from None
    return records


def _from_json_line(line: str) -> list[dict]:
    try:
        record = parse_json(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"this is not valid JSON ({error.msg} at column {error.colno})") from None
    return normalise_row(record)


def _read_csv(path: Path, allow_large: bool = False) -> _Rows:
    text = _read_text(path, allow_large)
    # Whole conversations as JSON can exceed the csv module's default 128 KiB cell limit.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        records = list(itertools.islice(reader, _one_past(row_limit(allow_large))))  # as for JSONL lines
    except csv.Error as error:
        raise WorkbenchError(f"Cannot read {path} as CSV: {error}.") from None
    check_size(path.name, rows=len(records), allow_large=allow_large)
    if reader.fieldnames is None:
        return "row", [], normalise_row
    columns = _csv_columns(path, reader.fieldnames)
    rows = [(number, {key: record.get(name) for key, name in columns.items()})
            for number, record in enumerate(records, 1)]
    return "row", rows, _from_csv_cells


def _csv_columns(path: Path, fieldnames: list[str]) -> dict[str, str]:
    """The columns to read, by the name we use -> the header as written (which may carry spaces)."""
    headers = {name.strip(): name for name in fieldnames}
    for columns in _COLUMNS.values():
        if all(column in headers for column in columns):
            return {column: headers[column] for column in columns}
    found = _keys(headers)
    raise WorkbenchError(
        f'{path} has the columns {found}; an SFT CSV needs a "messages" column, '
        '"prompt" and "completion" columns, or a "text" column.'
    )


def _from_csv_cells(cells: dict[str, Any]) -> list[dict]:
    if "prompt" in cells:  # conversational prompt/completion cells hold their message lists as JSON text
        cells = {key: _messages_or_text(value) for key, value in cells.items()}
    return normalise_row(cells)


def _messages_or_text(cell: Any) -> Any:
    if not isinstance(cell, str) or not cell.lstrip().startswith("["):
        return cell
    try:
        value = parse_json(cell)
    except ValueError:  # not JSON (or too deep to read): then it is plain text
        return cell
    return value if isinstance(value, list) and all(isinstance(item, dict) for item in value) else cell


def _read_text(path: Path, allow_large: bool) -> str:
    # A text file decodes to at most its size in UTF-8, so its size is checked before reading it.
    # Decode the bytes ourselves: text mode would turn "\r\n" inside quoted CSV cells into "\n".
    try:
        check_size(path.name, text_bytes=path.stat().st_size, allow_large=allow_large)
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise WorkbenchError(f"Cannot read {path}: it is not UTF-8 text.") from None
    except OSError as error:
        raise WorkbenchError(f"Cannot read {path}: {error.strerror or error}.") from None


def _read_parquet(path: Path, allow_large: bool = False) -> _Rows:
    import pyarrow as pa  # imported here: the CLI and GUI start faster without it
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as parquet:
            # Compressed pages can expand a thousandfold: the footer says how far, before any is read.
            meta = parquet.metadata
            check_size(path.name, rows=meta.num_rows, allow_large=allow_large)
            check_size(path.name, text_bytes=sum(meta.row_group(i).total_byte_size
                                                 for i in range(meta.num_row_groups)), allow_large=allow_large)
            records = _arrow_rows(parquet.iter_batches(batch_size=_BATCH_ROWS), path.name, allow_large)
    except (pa.ArrowException, OSError, UnicodeDecodeError):
        raise WorkbenchError(f"Cannot read {path}: it is not a Parquet file, or it is damaged.") from None
    return "row", list(enumerate(records, 1)), normalise_row


_BATCH_ROWS = 256  # rows decoded at a time: the most decoded past the cap before it is noticed


def _arrow_rows(batches, name: str, allow_large: bool) -> list[Any]:
    """Arrow batches (or tables) as row dicts, the text counted as it is decoded: dictionary
    encoding can repeat one long value in every row without the footer's sizes showing it."""
    rows, size = [], 0
    for batch in batches:
        size += batch.nbytes
        check_size(name, text_bytes=size, allow_large=allow_large)
        try:
            rows += batch.to_pylist()
        except Exception:  # noqa: BLE001 - some value Python cannot hold: find its rows, one by one
            rows += [_arrow_row(batch.slice(i, 1)) for i in range(batch.num_rows)]
    return rows


def _arrow_row(batch) -> Any:
    try:
        return batch.to_pylist()[0]
    except UnicodeDecodeError:
        return UnreadableRow("a value cannot be read (text that is not UTF-8)")
    # pyarrow raises whatever Python's constructors do: ValueError for a date out of range, and so on.
    except Exception as error:  # noqa: BLE001
        said = " ".join(str(error).split())[:200]  # on one line: it goes into a one-line message
        return UnreadableRow(f"a value cannot be read ({type(error).__name__}: {said})")


def _read_datasets(path: Path, allow_large: bool = False) -> _Rows:
    import datasets  # imported here: it takes most of a second
    import pyarrow as pa

    try:
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if not loaded:
                return "row", [], normalise_row
            loaded = loaded["train"] if "train" in loaded else next(iter(loaded.values()))
        check_size(path.name, rows=loaded.num_rows, text_bytes=loaded.data.nbytes, allow_large=allow_large)
        records = _arrow_rows(loaded.with_format("arrow").iter(batch_size=_BATCH_ROWS), path.name, allow_large)
    # A folder that is not a saved dataset, or a damaged one, surfaces as any of these.
    except (OSError, ValueError, KeyError, IndexError, pa.ArrowException):
        raise WorkbenchError(
            f"Cannot read {path}: it is not a folder saved by the datasets library, or it is damaged."
        ) from None
    return "row", list(enumerate(records, 1)), normalise_row


_READERS: dict[str, Callable[[Path, bool], _Rows]] = {
    "jsonl": _read_jsonl,
    "csv": _read_csv,
    "parquet": _read_parquet,
    "datasets": _read_datasets,
}


# ---------------------------------------------------------------- writing


def write_sft_file(examples: list[list[dict]], path, fmt: str = "messages") -> int:
    """Write `examples` as rows of `fmt` into the container `path` names; returns the rows written."""
    path = Path(path)
    if fmt not in FORMATS:
        raise WorkbenchError(f"Unknown SFT format {fmt!r}; the formats are {', '.join(FORMATS)}.")
    container = container_for(path)
    rows = _rows(examples, fmt)
    _WRITERS[container](rows, fmt, path)
    return len(rows)


def _rows(examples: list[list[dict]], fmt: str) -> list[dict]:
    checked = []
    for number, example in enumerate(examples, 1):
        try:
            checked.append(_valid_example(example))
        except ValueError as error:
            raise WorkbenchError(f"Example {number} cannot be exported: {error}.") from None
    chats = sum(not _is_text(m) for m in checked)
    if fmt == "text" and chats:
        raise WorkbenchError(
            f"{chats} of {len(checked)} examples are chats, which the text format cannot hold; "
            "export them in the messages or prompt-completion format."
        )
    # One prompt-completion form for the whole file: a Parquet or datasets column has one type,
    # and TRL expects every row of a dataset to have the same shape.
    conversational = not all(_is_single_turn(m) for m in checked)
    return [_to_row(m, fmt, conversational) for m in checked]


def _write_jsonl(rows: list[dict], fmt: str, path: Path) -> None:
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    _write_bytes(path, text.encode("utf-8"))


def _write_csv(rows: list[dict], fmt: str, path: Path) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=_COLUMNS[fmt])
    writer.writeheader()
    for row in rows:
        writer.writerow({key: json.dumps(value, ensure_ascii=False) if isinstance(value, list) else value
                         for key, value in row.items()})
    _write_bytes(path, buffer.getvalue().encode("utf-8"))


def _write_parquet(rows: list[dict], fmt: str, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=_arrow_schema(rows, fmt)), sink)
    _write_bytes(path, sink.getvalue().to_pybytes())


def _write_datasets(rows: list[dict], fmt: str, path: Path) -> None:
    import datasets

    if path.exists() and any(path.iterdir()):
        raise WorkbenchError(f"{path} already exists and is not empty; choose a new folder for the dataset.")
    features = datasets.Features.from_arrow_schema(_arrow_schema(rows, fmt))
    columns = {column: [row[column] for row in rows] for column in _COLUMNS[fmt]}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an export that crashed
    try:
        # from_dict, not from_list: from_list cannot make a dataset with no rows. One shard: SFT
        # sets are small, and with zero rows datasets would write zero shards it cannot load back.
        datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(tmp), num_shards=1)
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise WorkbenchError(f"Cannot write {path}: {error.strerror or error}.") from None


def _arrow_schema(rows: list[dict], fmt: str):
    """Typed columns, so that message lists are list<struct<role, content>> that peers read natively."""
    import pyarrow as pa

    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    if fmt == "messages":
        return pa.schema([("messages", messages)])
    if fmt == "text":
        return pa.schema([("text", pa.string())])
    cell = messages if rows and isinstance(rows[0]["prompt"], list) else pa.string()
    return pa.schema([("prompt", cell), ("completion", cell)])


def _write_bytes(path: Path, data: bytes) -> None:
    try:
        write_atomically(path, data)
    except OSError as error:
        raise WorkbenchError(f"Cannot write {path}: {error.strerror or error}.") from None


_WRITERS: dict[str, Callable[[list[dict], str, Path], None]] = {
    "jsonl": _write_jsonl,
    "csv": _write_csv,
    "parquet": _write_parquet,
    "datasets": _write_datasets,
}
