"""Untrusted imports never crash: one regression test per crash class the fuzzer found, and a
CI-sized slice of bench/fuzz.py (hypothesis, fixed seed) over packs, SFT and preference files."""

import json

import pytest
from hypothesis import HealthCheck, given, settings

from bench import fuzz
from workbench.cli import main
from workbench.data.packs import export_pack, import_pack
from workbench.data.pref_formats import PreferenceImportError, import_preferences, preference_rows
from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.data.sft_formats import read_sft_file
from workbench.errors import WorkbenchError
from workbench.project import Project

DEEP = "[" * 100_000 + "]" * 100_000  # far deeper than Python's recursion limit
CHAT = [{"role": "user", "content": "Where is my order?"}, {"role": "assistant", "content": "In Lyon."}]


def snapshot(project) -> dict:
    return {table: project.query(f"SELECT * FROM {table} ORDER BY 1")
            for table in ("prompts", "responses", "rankings", "sft_examples", "meta")}


@pytest.fixture
def lead(tmp_path):
    """A project with one batch of three responses ranked by one annotator."""
    project = Project.create(tmp_path / "lead.rlhf", name="Lead")
    prompt_id = PromptStore(project).add("Where is my order?", tags=["shipping"])
    batch = RankingStore(project).add_batch(prompt_id, ["a", "b", "c"], [{"source": "base", "seed": i}
                                                                         for i in range(3)])
    ids = [r.id for r in batch.responses]
    RankingStore(project).save_ranking(batch.uid, "lead", [[ids[2]], [ids[0], ids[1]]], seconds_spent=4, at=50.0)
    return project


@pytest.fixture
def target(tmp_path):
    return Project.create(tmp_path / "target.rlhf")


def pack_of(lead, tmp_path) -> dict:
    export_pack(lead, tmp_path / "seed.rlhfpack", with_labels=True)
    return json.loads((tmp_path / "seed.rlhfpack").read_text(encoding="utf-8"))


def ranking_of(pack: dict) -> dict:
    return pack["prompts"][0]["batches"][0]["rankings"][0]


def refused_pack(project, path, text: str, match: str) -> None:
    """Importing `text` as a pack is refused with `match` in the message, and changes nothing."""
    path.write_text(text, encoding="utf-8")
    before = snapshot(project)
    with pytest.raises(WorkbenchError, match=match):
        import_pack(project, path)
    assert snapshot(project) == before


def refused_prefs(project, path, lines: list[str], match: str) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    before = snapshot(project)
    with pytest.raises(PreferenceImportError) as caught:
        import_preferences(project, path)
    assert any(str(e).startswith("line 1: ") and match in str(e) for e in caught.value.errors), caught.value.errors
    assert snapshot(project) == before


def kway_row(lead) -> dict:
    [row] = preference_rows(lead, "kway")
    return row


def sft_errors(path, text: str) -> list[str]:
    path.write_text(text, encoding="utf-8")
    return [str(e) for e in read_sft_file(path).errors]


def bad_utf8_strings(*values: bytes):
    """A pyarrow string array holding `values` unchecked: how a damaged or hostile Parquet file looks."""
    import pyarrow as pa

    offsets = [0]
    for value in values:
        offsets.append(offsets[-1] + len(value))
    return pa.Array.from_buffers(pa.string(), len(values), [None, pa.array(offsets, pa.int32()).buffers()[1],
                                                             pa.py_buffer(b"".join(values))])


# ---------------------------------------------------------------- one test per crash class


def test_deeply_nested_json_is_refused_not_a_recursion_error(lead, target, tmp_path):
    refused_pack(target, tmp_path / "deep.rlhfpack", '{"format": "rlhf-workbench-pack", "prompts": ' + DEEP + "}",
                 "too deeply")
    assert sft_errors(tmp_path / "deep.jsonl", '{"messages": ' + DEEP + "}\n" + json.dumps({"messages": CHAT})) \
        == ["line 1: it nests lists or objects too deeply to be read"]
    assert sft_errors(tmp_path / "cell.csv", 'messages\n"' + DEEP + '"\n') \
        == ['row 1: "messages" cannot be read: it nests lists or objects too deeply to be read']
    (tmp_path / "deep.json").write_text("[" + DEEP + "]", encoding="utf-8")
    with pytest.raises(WorkbenchError, match="deep.json: it nests lists or objects too deeply"):
        read_sft_file(tmp_path / "deep.json")
    refused_prefs(target, tmp_path / "deep.jsonl", ['{"prompt": "Q", "chosen": ' + DEEP + "}"], "too deeply")
    row = kway_row(lead)
    row["responses"][0]["generator"] = DEEP  # Parquet keeps generator records as JSON text
    refused_prefs(target, tmp_path / "gen.jsonl", [json.dumps(row)], '"generator" cannot be read')


def test_huge_integers_are_refused_not_an_overflow_error(lead, target, tmp_path):
    pack = pack_of(lead, tmp_path)
    ranking_of(pack)["seconds_spent"] = 10 ** 400
    refused_pack(target, tmp_path / "big.rlhfpack", json.dumps(pack), "seconds_spent must be a number of seconds")
    row = kway_row(lead)
    refused_prefs(target, tmp_path / "big.jsonl", [json.dumps(dict(row, seconds_spent=10 ** 400))],
                  '"seconds_spent" must be a finite number')
    (tmp_path / "digits.json").write_text('[{"text": "a", "n": ' + "7" * 5000 + "}]", encoding="utf-8")
    with pytest.raises(WorkbenchError, match="digits.json: it holds a number of more than 4,300 digits"):
        read_sft_file(tmp_path / "digits.json")
    pack = pack_of(lead, tmp_path)
    pack["prompts"][0]["batches"][0]["responses"][0]["generator"]["seed"] = 2 ** 64  # stored whole: must fit int64
    refused_pack(target, tmp_path / "gen.rlhfpack", json.dumps(pack), "too large to store")


@pytest.mark.parametrize("extra", [7, None, ["x"], {"u": 1}])
def test_shown_order_must_be_exactly_the_batch(lead, target, tmp_path, extra):
    pack = pack_of(lead, tmp_path)
    ranking_of(pack)["shown_order"].append(extra)
    refused_pack(target, tmp_path / "shown.rlhfpack", json.dumps(pack), "shown_order must list each response")
    ranking_of(pack)["shown_order"][-1] = "not-a-response"
    refused_pack(target, tmp_path / "shown.rlhfpack", json.dumps(pack), "shown_order must list each response")
    row = kway_row(lead)
    refused_prefs(target, tmp_path / "shown.jsonl", [json.dumps(dict(row, shown_order=row["shown_order"] + [extra]))],
                  '"shown_order" must list each response index')


def test_lone_surrogates_are_refused_not_a_unicode_error(lead, target, tmp_path, capsys):
    pack = pack_of(lead, tmp_path)
    pack["prompts"][0]["messages"][0]["content"] = "Where\ud800?"
    refused_pack(target, tmp_path / "half.rlhfpack", json.dumps(pack), "U\\+D800 at character 6, half of a surrogate")
    pack = pack_of(lead, tmp_path)
    ranking_of(pack)["annotator"] = "ann\udfff"
    refused_pack(target, tmp_path / "half.rlhfpack", json.dumps(pack), "annotator")
    assert sft_errors(tmp_path / "half.jsonl", json.dumps({"messages": [CHAT[0], {"role": "assistant",
                                                                                 "content": "\ud83d"}]})) \
        == ['line 1: "messages" item 2 content holds U+D83D at character 1, half of a surrogate pair, which is not text']
    refused_prefs(target, tmp_path / "half.jsonl", [json.dumps({"prompt": "Q", "chosen": "A", "rejected": "B",
                                                                "annotator": "\udc00"})], '"annotator" holds U+DC00')
    # Through the command line: one error line, no traceback, the project untouched.
    path = tmp_path / "cli.rlhf"
    Project.create(path).close()
    before = path.read_bytes()
    assert main(["import", str(path), str(tmp_path / "half.jsonl")]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("workbench: error: 1 of 1 rows")
    assert path.read_bytes() == before


def test_invalid_utf8_in_parquet_is_a_row_error(target, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": bad_utf8_strings(b"fine", b"\xff\xfe", b"also fine")}), tmp_path / "sft.parquet")
    result = read_sft_file(tmp_path / "sft.parquet")
    assert [m[0]["content"] for m in result.examples] == ["fine", "also fine"]
    assert [str(e) for e in result.errors] == ["row 2: a value cannot be read (text that is not UTF-8)"]
    pq.write_table(pa.table({"prompt": pa.array(["Q"]), "chosen": bad_utf8_strings(b"\xc3"),
                             "rejected": pa.array(["B"])}), tmp_path / "prefs.parquet")
    before = snapshot(target)
    with pytest.raises(PreferenceImportError, match=r"row 1: a value cannot be read \(text that is not UTF-8\)"):
        import_preferences(target, tmp_path / "prefs.parquet")
    assert snapshot(target) == before


@pytest.mark.parametrize("key, value", [("created_at", "NaN"), ("updated_at", "1e309"), ("seconds_spent", "Infinity"),
                                        ("updated_at", "-Infinity")])
def test_nan_and_infinite_times_are_refused(lead, target, tmp_path, key, value):
    pack = pack_of(lead, tmp_path)
    ranking_of(pack)[key] = "@@"
    refused_pack(target, tmp_path / "nan.rlhfpack", json.dumps(pack).replace('"@@"', value),
                 f"{key} must be a number of seconds")
    row = json.dumps(dict(kway_row(lead), **{key: "@@"})).replace('"@@"', value)
    refused_prefs(target, tmp_path / "nan.jsonl", [row], f'"{key}" must be a finite number')


def test_the_size_cap_refuses_a_bomb_before_reading_it_and_allow_large_lifts_it(lead, tmp_path, monkeypatch,
                                                                               capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workbench.data import untrusted

    # 300,000 copies of one short text: a few KB of Parquet. Refused from its metadata.
    bomb = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"text": pa.array(["Hello there."] * 300_000)}), bomb)
    assert bomb.stat().st_size < 50_000
    with pytest.raises(untrusted.ImportTooLarge, match=r"bomb.parquet holds 300,000 rows, more than the 200,000 .*"
                                                       r"--allow-large"):
        read_sft_file(bomb)
    project = tmp_path / "cli.rlhf"
    Project.create(project).close()
    before = project.read_bytes()
    assert main(["import", str(project), str(bomb)]) == 1
    assert "300,000 rows" in capsys.readouterr().err and project.read_bytes() == before

    # Text: the cap made small, so the test stays small; each import path and container.
    monkeypatch.setattr(untrusted, "MAX_IMPORT_TEXT_BYTES", 2000)
    monkeypatch.setattr(untrusted, "MAX_IMPORT_ROWS", 50)
    sft = tmp_path / "big.jsonl"
    sft.write_text(json.dumps({"messages": CHAT, "pad": "x" * 3000}) + "\n", encoding="utf-8")
    many, lines = tmp_path / "many.csv", tmp_path / "many.jsonl"  # many short rows: counted as they are read
    many.write_text("text\n" + "hi\n" * 60, encoding="utf-8")
    lines.write_text('{"text": "hi"}\n' * 60, encoding="utf-8")
    pack, prefs = tmp_path / "big.rlhfpack", tmp_path / "big.jsonl.json"
    export_pack(lead, pack, with_labels=True)
    pack.write_text(pack.read_text(encoding="utf-8")[:-1] + ', "pad": "' + "x" * 3000 + '"}', encoding="utf-8")
    prefs.write_text(json.dumps([{"prompt": "Q", "chosen": "A", "rejected": "B", "pad": "x" * 3000}]),
                     encoding="utf-8")
    with pytest.raises(untrusted.ImportTooLarge, match="many.jsonl holds more than the 50 rows one import takes"):
        read_sft_file(lines)
    for path, kind in ((sft, "sft"), (many, "sft"), (lines, "sft"), (pack, "pack"), (prefs, "prefs")):
        before = project.read_bytes()
        assert main(["import", str(project), str(path), "--kind", kind]) == 1, path
        assert "--allow-large" in capsys.readouterr().err and project.read_bytes() == before
        assert main(["import", str(project), str(path), "--kind", kind, "--allow-large"]) == 0, path
    with pytest.raises(untrusted.ImportTooLarge, match="3,1.. bytes of text, more than the 2,000 bytes"):
        read_sft_file(sft)
    assert len(read_sft_file(sft, allow_large=True).examples) == 1
    with pytest.raises(untrusted.ImportTooLarge):
        import_pack(Project.create(tmp_path / "other.rlhf"), pack)
    assert import_pack(Project.create(tmp_path / "third.rlhf"), pack, allow_large=True)["prompts_added"] == 1


# ---------------------------------------------------------------- the CI slice of bench/fuzz.py


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """bench/fuzz.py's template projects and valid seed files of every container."""
    return fuzz.build_seeds(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("path", ["packs", "sft", "prefs"])
def test_fuzzed_imports_are_accepted_or_refused_clearly_and_a_refusal_changes_nothing(seeds, path):
    """Mutated seeds (hypothesis' nasty JSON values, stacked edits, byte damage) through
    `workbench import` in every container: exit 0 with a project that still opens, or one
    "workbench: error:" line with the project byte-identical; never a traceback or a hang."""

    @settings(derandomize=True, max_examples=80, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(fuzz.drawn_file_case(seeds, path))
    def check(case):
        outcome = fuzz.run_case(case, seeds, timeout=30)
        assert outcome.kind in ("accepted", "clear"), (case.label, outcome)
        assert not outcome.changed, (case.label, outcome)
        assert not outcome.broken, (case.label, outcome)

    check()


def test_fuzzed_project_files_are_opened_or_refused_clearly_and_left_as_they_were(seeds):
    """Every hand edit bench/fuzz.py knows and a fixed draw of byte damage and typed cell edits,
    through info, import and export: one clear line and an unchanged file, or a sound project."""
    import random

    cases = list(fuzz.deterministic_project_cases(120, random.Random("ci:projects")))

    @settings(derandomize=True, max_examples=80, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(fuzz.drawn_project_case())
    def check_drawn(case):
        check(case)

    def check(case):
        outcome = fuzz.run_case(case, seeds, timeout=30)
        assert outcome.kind in ("accepted", "clear"), (case.label, outcome)
        assert not outcome.changed, (case.label, outcome)

    for case in cases:
        check(case)
    check_drawn()
