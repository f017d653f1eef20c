"""SFT import/export: every container x format round-trips, and bad rows are named by line or row."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workbench.data.sft_formats import (
    CONTAINERS,
    FORMATS,
    ImportResult,
    RowError,
    container_for,
    example_to_row,
    normalise_row,
    read_sft_file,
    write_sft_file,
)
from workbench.errors import WorkbenchError

SINGLE_TURN = [
    {"role": "user", "content": "My order hasn't arrived. What should I do?"},
    {"role": "assistant", "content": 'Sorry about that! Send me the order number, e.g. "A-1234", and I\'ll check.'},
]
WITH_SYSTEM = [
    {"role": "system", "content": "You are a polite support agent, brief, and honest."},
    {"role": "user", "content": "Can I return shoes, socks, and a hat?"},
    {"role": "assistant", "content": "Yes:\n- shoes within 30 days\n- socks, unopened\n- hats, any time"},
]
MULTI_TURN = [
    {"role": "user", "content": "Bonjour, où est mon colis ? 📦"},
    {"role": "assistant", "content": "Il est à Lyon. Voulez-vous le suivi ?"},
    {"role": "user", "content": "Oui, merci.\r\nEt le délai ?"},
    {"role": "assistant", "content": "Deux jours. 日本語もOK。 Line\u2028separator, tab\tand a trailing comma,"},
]
TEXT_ONLY = [{"role": "assistant", "content": "Plain text, with \"quotes\", commas,\nand newlines — for LM."}]
CHATS = [SINGLE_TURN, WITH_SYSTEM, MULTI_TURN]
SUFFIX = {"jsonl": "data.jsonl", "csv": "data.csv", "parquet": "data.parquet", "datasets": "data"}


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def row(**record) -> str:
    return json.dumps(record, ensure_ascii=False)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_container_and_format_round_trips(tmp_path, container, fmt):
    examples = [TEXT_ONLY, TEXT_ONLY] if fmt == "text" else [*CHATS, TEXT_ONLY]
    path = tmp_path / SUFFIX[container]
    assert write_sft_file(examples, path, fmt) == len(examples)
    result = read_sft_file(path)
    assert result == ImportResult(examples=examples, errors=[], container=container, total_rows=len(examples))


@pytest.mark.parametrize("container", CONTAINERS)
def test_single_turn_prompt_completion_uses_plain_strings(tmp_path, container):
    path = tmp_path / SUFFIX[container]
    write_sft_file([SINGLE_TURN, SINGLE_TURN], path, "prompt-completion")
    assert read_sft_file(path).examples == [SINGLE_TURN, SINGLE_TURN]
    if container == "jsonl":
        first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        assert first == {"prompt": SINGLE_TURN[0]["content"], "completion": SINGLE_TURN[1]["content"]}
    if container == "parquet":
        assert pq.read_schema(path).field("prompt").type == pa.string()


@pytest.mark.parametrize("container", CONTAINERS)
def test_empty_export_reads_back_empty(tmp_path, container):
    path = tmp_path / SUFFIX[container]
    assert write_sft_file([], path, "messages") == 0
    assert read_sft_file(path) == ImportResult([], [], container, 0)


def test_parquet_messages_are_native_structs(tmp_path):
    write_sft_file([WITH_SYSTEM], tmp_path / "d.parquet")
    column_type = pq.read_schema(tmp_path / "d.parquet").field("messages").type
    assert column_type == pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def test_jsonl_is_utf8_one_object_per_line(tmp_path):
    write_sft_file([MULTI_TURN, TEXT_ONLY], tmp_path / "d.jsonl")
    lines = (tmp_path / "d.jsonl").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == 3
    assert "où est mon colis ? 📦" in lines[0]  # ensure_ascii=False
    assert json.loads(lines[1]) == {"messages": TEXT_ONLY}


def test_csv_conversational_cells_are_json_text(tmp_path):
    write_sft_file([WITH_SYSTEM], tmp_path / "d.csv", "prompt-completion")
    text = (tmp_path / "d.csv").read_bytes().decode("utf-8")
    assert text.startswith('prompt,completion\r\n"[{""role"": ""system"", ""content"": ""You are')
    assert read_sft_file(tmp_path / "d.csv").examples == [WITH_SYSTEM]


def test_prompt_completion_rows():
    assert example_to_row(SINGLE_TURN, "prompt-completion") == {
        "prompt": SINGLE_TURN[0]["content"], "completion": SINGLE_TURN[1]["content"]}
    assert example_to_row(WITH_SYSTEM, "prompt-completion") == {"prompt": WITH_SYSTEM[:2], "completion": WITH_SYSTEM[2:]}
    assert example_to_row(TEXT_ONLY, "prompt-completion") == {"prompt": [], "completion": TEXT_ONLY}
    trailing_user = [*SINGLE_TURN, {"role": "user", "content": "Thanks"}]
    assert example_to_row(trailing_user, "prompt-completion") == {"prompt": SINGLE_TURN[:1], "completion": trailing_user[1:]}
    assert example_to_row(TEXT_ONLY, "text") == {"text": TEXT_ONLY[0]["content"]}
    assert example_to_row(MULTI_TURN, "messages") == {"messages": MULTI_TURN}


def test_one_prompt_completion_form_per_file(tmp_path):
    write_sft_file([SINGLE_TURN, WITH_SYSTEM], tmp_path / "d.jsonl", "prompt-completion")
    first = json.loads((tmp_path / "d.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first == {"prompt": SINGLE_TURN[:1], "completion": SINGLE_TURN[1:]}


# ---------------------------------------------------------------- export refusals


def test_chats_are_refused_in_text_format(tmp_path):
    with pytest.raises(WorkbenchError) as caught:
        write_sft_file([TEXT_ONLY, SINGLE_TURN, WITH_SYSTEM], tmp_path / "d.jsonl", "text")
    assert str(caught.value) == (
        "2 of 3 examples are chats, which the text format cannot hold; "
        "export them in the messages or prompt-completion format.")
    assert not (tmp_path / "d.jsonl").exists()
    with pytest.raises(ValueError, match="a chat cannot be written as text"):
        example_to_row(SINGLE_TURN, "text")


def test_invalid_examples_and_formats_are_refused(tmp_path):
    with pytest.raises(WorkbenchError, match=r'^Example 2 cannot be exported: "messages" item 1 has role "bot"'):
        write_sft_file([SINGLE_TURN, [{"role": "bot", "content": "x"}]], tmp_path / "d.jsonl")
    with pytest.raises(WorkbenchError, match="Unknown SFT format 'alpaca'"):
        write_sft_file([SINGLE_TURN], tmp_path / "d.jsonl", "alpaca")


def test_datasets_export_refuses_a_folder_with_files(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(WorkbenchError, match="already exists and is not empty"):
        write_sft_file([SINGLE_TURN], tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    write_sft_file([SINGLE_TURN], tmp_path / "empty")
    assert read_sft_file(tmp_path / "empty").examples == [SINGLE_TURN]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left


# ---------------------------------------------------------------- per-row errors


def test_jsonl_row_errors_name_their_lines(tmp_path):
    path = write_lines(
        tmp_path / "d.jsonl",
        row(messages=SINGLE_TURN),
        '{"messages": [',
        row(messages=[{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]),
        row(messages=[{"role": "user", "content": "hi"}]),
        row(messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": 42}]),
        row(prompt="hi", completion=[{"role": "assistant", "content": "hello"}]),
        row(prompt="hi", completion=""),
        row(text=""),
        row(text=["a"]),
        row(question="hi", answer="hello"),
        "[1, 2]",
        row(prompt="hi"),
        row(messages="not json"),
        row(messages=[{"role": "user", "content": "hi"}, "hello"]),
        row(messages=[{"content": "hi"}, {"role": "assistant", "content": "yo"}]),
        row(messages=[{"role": "assistant"}]),
        row(prompt=1, completion="x"),
        row(messages=[{"role": "assistant", "content": "   "}]),
    )
    result = read_sft_file(path)
    assert result.examples == [SINGLE_TURN]
    assert result.total_rows == 18 and result.container == "jsonl"
    assert [str(e) for e in result.errors] == [
        "line 2: this is not valid JSON (Expecting value at column 15)",
        'line 3: "messages" item 2 has role "bot"; roles are system, user, assistant',
        "line 4: there is no assistant message with content",
        'line 5: "messages" item 2 has content that is a number, not a string',
        'line 6: "prompt" is a string and "completion" is a list; both must be strings or both lists of messages',
        'line 7: "completion" is empty',
        'line 8: "text" is empty',
        'line 9: "text" is a list, not a string',
        'line 10: the record has no "messages", "prompt" and "completion", or "text" key (it has "question", "answer")',
        "line 11: the record is a list, not an object",
        'line 12: the record has "prompt" but no "completion"',
        'line 13: "messages" is text but not valid JSON (Expecting value at column 1)',
        'line 14: "messages" item 2 is a string, not an object',
        'line 15: "messages" item 1 has no role; roles are system, user, assistant',
        'line 16: "messages" item 1 has no content',
        'line 17: "prompt" is a number and "completion" is a string; both must be strings or both lists of messages',
        "line 18: there is no assistant message with content",
    ]
    assert result.errors[0] == RowError(2, "line 2: this is not valid JSON (Expecting value at column 15)")


def test_blank_lines_are_skipped_but_counted(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n" + row(text="one") + "\n\n   \n" + row(text="") + "\r\n" + row(text="two") + "\n\n",
                    encoding="utf-8")
    result = read_sft_file(path)
    assert result.examples == [[{"role": "assistant", "content": "one"}], [{"role": "assistant", "content": "two"}]]
    assert result.errors == [RowError(5, 'line 5: "text" is empty')]
    assert result.total_rows == 3


def test_extra_keys_are_ignored(tmp_path):
    path = write_lines(
        tmp_path / "d.ndjson",
        row(id=7, source="hub", messages=[{"role": "user", "content": "hi", "name": "ann"},
                                          {"role": "assistant", "content": "hello", "weight": 1}]),
        row(prompt="hi", completion="hello", score=0.5),
    )
    pair = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert read_sft_file(path) == ImportResult([pair, pair], [], "jsonl", 2)


def test_null_keys_count_as_absent():
    assert normalise_row({"messages": None, "text": "hi"}) == [{"role": "assistant", "content": "hi"}]


def test_json_array_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"messages": SINGLE_TURN}, {"text": ""}, {"prompt": "a", "completion": "b"}], indent=2),
                    encoding="utf-8")
    result = read_sft_file(path)
    assert result.examples == [SINGLE_TURN, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]]
    assert result.errors == [RowError(2, 'row 2: "text" is empty')]
    broken = tmp_path / "broken.json"
    broken.write_text('[{"text": "a"},', encoding="utf-8")
    with pytest.raises(WorkbenchError, match=r"broken\.json: it starts like a JSON array but is not valid JSON"):
        read_sft_file(broken)


def test_json_file_holding_jsonl(tmp_path):
    path = write_lines(tmp_path / "d.json", row(text="a"), row(text="b"))
    assert read_sft_file(path).examples == [[{"role": "assistant", "content": "a"}], [{"role": "assistant", "content": "b"}]]


def test_csv_rows_and_errors(tmp_path):
    path = tmp_path / "d.csv"
    # A BOM, as spreadsheet programs write it; a column we ignore; JSON list cells and plain strings.
    path.write_bytes(
        "\ufeffnote,prompt,completion\r\n"
        'x,"Hello, ""world""",Hi!\r\n'
        'y,"[1, 2]",fine\r\n'
        'z,"[{""role"": ""user"", ""content"": ""hi""}]",plain\r\n'
        "w,hi,\r\n"
        "v,only\r\n".encode("utf-8")
    )
    result = read_sft_file(path)
    assert result.examples == [
        [{"role": "user", "content": 'Hello, "world"'}, {"role": "assistant", "content": "Hi!"}],
        [{"role": "user", "content": "[1, 2]"}, {"role": "assistant", "content": "fine"}],
    ]
    assert [str(e) for e in result.errors] == [
        'row 3: "prompt" is a list and "completion" is a string; both must be strings or both lists of messages',
        'row 4: "completion" is empty',
        'row 5: the record has "prompt" but no "completion"',
    ]


def test_csv_messages_cells(tmp_path):
    path = tmp_path / "d.csv"
    cell = json.dumps(SINGLE_TURN).replace('"', '""')
    path.write_text(f'messages\n"{cell}"\n""\n"[{{""role"": ""bot""}}]"\n', encoding="utf-8")
    result = read_sft_file(path)
    assert result.examples == [SINGLE_TURN]
    assert [str(e) for e in result.errors] == [
        'row 2: "messages" is empty',
        'row 3: "messages" item 1 has role "bot"; roles are system, user, assistant',
    ]


def test_csv_without_known_columns_is_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("question,answer\nhi,hello\n", encoding="utf-8")
    with pytest.raises(WorkbenchError) as caught:
        read_sft_file(path)
    assert str(caught.value) == (
        f'{path} has the columns "question", "answer"; an SFT CSV needs a "messages" column, '
        '"prompt" and "completion" columns, or a "text" column.')


def test_parquet_with_json_text_and_nulls(tmp_path):
    path = tmp_path / "peer.parquet"
    pq.write_table(pa.table({
        "messages": [json.dumps(SINGLE_TURN), None, json.dumps([{"role": "user", "content": "hi"}])],
        "text": [None, "just text", None],
    }), path)
    result = read_sft_file(path)
    assert result.examples == [SINGLE_TURN, [{"role": "assistant", "content": "just text"}]]
    assert result.errors == [RowError(3, "row 3: there is no assistant message with content")]


def test_datasets_dict_prefers_train_split(tmp_path):
    import datasets

    def split(text):
        return datasets.Dataset.from_list([{"text": text}])

    datasets.DatasetDict({"test": split("from test"), "train": split("from train")}).save_to_disk(str(tmp_path / "dd"))
    assert read_sft_file(tmp_path / "dd").examples == [[{"role": "assistant", "content": "from train"}]]
    datasets.DatasetDict({"validation": split("only split")}).save_to_disk(str(tmp_path / "dv"))
    assert read_sft_file(tmp_path / "dv").examples == [[{"role": "assistant", "content": "only split"}]]


# ---------------------------------------------------------------- unreadable files


def test_unreadable_files_raise_workbench_error(tmp_path):
    (tmp_path / "not.parquet").write_text("hello, I am CSV")
    write_sft_file([SINGLE_TURN] * 50, tmp_path / "good.parquet")
    data = (tmp_path / "good.parquet").read_bytes()
    (tmp_path / "truncated.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "latin1.jsonl").write_bytes(row(text="café").encode("latin-1"))
    (tmp_path / "latin1.csv").write_bytes("text\ncafé\n".encode("latin-1"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "readme.txt").write_text("not a dataset")
    cases = {
        "not.parquet": "it is not a Parquet file, or it is damaged.",
        "truncated.parquet": "it is not a Parquet file, or it is damaged.",
        "latin1.jsonl": "it is not UTF-8 text.",
        "latin1.csv": "it is not UTF-8 text.",
        "folder": "it is not a folder saved by the datasets library, or it is damaged.",
    }
    for name, reason in cases.items():
        with pytest.raises(WorkbenchError) as caught:
            read_sft_file(tmp_path / name)
        assert str(caught.value) == f"Cannot read {tmp_path / name}: {reason}"
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
    for missing in ("missing.jsonl", "missing"):
        with pytest.raises(WorkbenchError, match=f"^{tmp_path / missing} does not exist.$"):
            read_sft_file(tmp_path / missing)


def test_empty_files_read_as_empty(tmp_path):
    for name, container in (("e.jsonl", "jsonl"), ("e.csv", "csv"), ("e.parquet", "parquet"), ("e.json", "jsonl")):
        (tmp_path / name).write_bytes(b"")
        assert read_sft_file(tmp_path / name) == ImportResult([], [], container, 0)
    (tmp_path / "header.csv").write_text("text\n", encoding="utf-8")
    assert read_sft_file(tmp_path / "header.csv") == ImportResult([], [], "csv", 0)


def test_container_for(tmp_path):
    assert [container_for(tmp_path / n) for n in ("a.jsonl", "a.JSON", "a.ndjson", "a.csv", "a.parquet", "new")] == [
        "jsonl", "jsonl", "jsonl", "csv", "parquet", "datasets"]
    assert container_for(tmp_path) == "datasets"
    with pytest.raises(WorkbenchError, match=r"Cannot tell the format of .*a\.xlsx: use a \.jsonl"):
        container_for(tmp_path / "a.xlsx")
