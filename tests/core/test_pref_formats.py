"""Preference export in TRL's shapes, and import of pairs, HH transcripts and K-way rows."""

import json

import pytest

from workbench.data.agreement import agreement_report
from workbench.data.pref_formats import (
    FORMATS, PreferenceImportError, flatten_prompt, import_preferences, preference_rows, read_preferences,
    write_preferences,
)
from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.errors import WorkbenchError
from workbench.project import Project

MULTI_TURN = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is my parcel?"},
              {"role": "assistant", "content": "In Lyon."}, {"role": "user", "content": "When will it arrive?"}]


def snapshot(project) -> dict:
    """Everything the labeling tables hold, to show an import changed nothing."""
    return {table: project.query(f"SELECT * FROM {table} ORDER BY 1")
            for table in ("prompts", "responses", "rankings", "sft_examples", "meta")}


def make_batch(project, prompt, k: int, texts=None):
    prompt_id = PromptStore(project).add(prompt, tags=["t"])
    texts = texts or [f"reply {i}" for i in range(k)]
    batch = RankingStore(project).add_batch(prompt_id, texts, [{"source": "base", "seed": i} for i in range(k)])
    return batch, [r.id for r in batch.responses]


def rank(project, batch, annotator, groups, ids, all_bad=False, shown=None, at=None):
    return RankingStore(project).save_ranking(batch.uid, annotator, [[ids[p] for p in g] for g in groups],
                                              all_bad=all_bad, shown_order=shown or list(reversed(ids)),
                                              seconds_spent=12.5, at=at)


def lines(path, *records) -> object:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path):
    return Project.create(tmp_path / "p.rlhf")


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_a_strict_ranking_of_k_gives_k_choose_2_pairs_and_one_kway_row(project, k):
    batch, ids = make_batch(project, "Hello?", k)
    rank(project, batch, "ann", [[i] for i in range(k)], ids)
    standard = preference_rows(project, "standard")
    assert len(standard) == len(preference_rows(project, "conversational")) == k * (k - 1) // 2
    assert standard[0] == {"prompt": "Hello?", "chosen": "reply 0", "rejected": "reply 1"}
    assert len(preference_rows(project, "kway")) == 1


def test_ties_give_no_pair_and_all_bad_gives_none(project):
    batch, ids = make_batch(project, "Hello?", 4)
    rank(project, batch, "ann", [[0], [1, 2], [3]], ids)
    rank(project, batch, "bo", [[0], [1], [2], [3]], ids, all_bad=True)
    pairs = {(r["chosen"], r["rejected"]) for r in preference_rows(project, "standard")}
    assert pairs == {("reply 0", "reply 1"), ("reply 0", "reply 2"), ("reply 0", "reply 3"),
                     ("reply 1", "reply 3"), ("reply 2", "reply 3")}
    assert preference_rows(project, "standard", annotator="bo") == []
    kway = preference_rows(project, "kway", annotator="bo")
    assert len(kway) == 1 and kway[0]["all_bad"] is True and kway[0]["ranking"] == [[0], [1], [2], [3]]


def test_each_annotator_gives_their_own_rows(project):
    batch, ids = make_batch(project, "Hello?", 2)
    rank(project, batch, "ann", [[0], [1]], ids)
    rank(project, batch, "bo", [[1], [0]], ids)
    assert [r["chosen"] for r in preference_rows(project, "standard")] == ["reply 0", "reply 1"]
    assert [r["chosen"] for r in preference_rows(project, "standard", annotator="bo")] == ["reply 1"]


def test_the_blind_display_order_does_not_leak_into_the_export(project):
    batch, ids = make_batch(project, "Hello?", 4)
    # Shown as positions 2, 0, 3, 1; the annotator puts the one shown first (position 2) best.
    ranking = rank(project, batch, "ann", [[2], [0], [3], [1]], ids, shown=[ids[2], ids[0], ids[3], ids[1]])
    assert ranking.shown_order != ids
    [row] = preference_rows(project, "kway")
    assert row["ranking"] == [[2], [0], [3], [1]]
    assert row["shown_order"] == [2, 0, 3, 1]
    assert [r["text"] for r in row["responses"]] == ["reply 0", "reply 1", "reply 2", "reply 3"]
    assert [r["generator"]["seed"] for r in row["responses"]] == [0, 1, 2, 3]
    assert preference_rows(project, "standard")[0] == {"prompt": "Hello?", "chosen": "reply 2", "rejected": "reply 0"}


def test_kway_rows_are_lossless(project):
    batch, ids = make_batch(project, MULTI_TURN, 2)
    ranking = rank(project, batch, "ann", [[1], [0]], ids, at=1000.0)
    [row] = preference_rows(project, "kway")
    prompt_uid = project.query("SELECT uid FROM prompts")[0][0]
    assert row == {
        "prompt": MULTI_TURN, "prompt_uid": prompt_uid, "tags": ["t"], "batch": batch.uid,
        "responses": [{"uid": r.uid, "text": r.text, "generator": r.generator} for r in batch.responses],
        "ranking": [[1], [0]], "all_bad": False, "annotator": "ann", "shown_order": [1, 0],
        "seconds_spent": 12.5, "created_at": ranking.created_at, "updated_at": 1000.0}


def test_a_multi_turn_prompt_is_flattened_for_the_standard_format(project):
    batch, ids = make_batch(project, MULTI_TURN, 2)
    rank(project, batch, "ann", [[0], [1]], ids)
    [row] = preference_rows(project, "standard")
    assert row["prompt"] == ("System: Be brief.\n\nUser: Where is my parcel?\n\nAssistant: In Lyon.\n\n"
                             "User: When will it arrive?")
    assert flatten_prompt([{"role": "user", "content": "Hi"}]) == "Hi"
    [conversational] = preference_rows(project, "conversational")
    assert conversational["prompt"] == MULTI_TURN
    assert conversational["chosen"] == [{"role": "assistant", "content": "reply 0"}]


def test_pairs_of_identical_replies_are_left_out(project):
    batch, ids = make_batch(project, "Hello?", 3, texts=["same", "same", "other"])
    rank(project, batch, "ann", [[0], [1], [2]], ids)
    assert [(r["chosen"], r["rejected"]) for r in preference_rows(project, "standard")] == [
        ("same", "other"), ("same", "other")]


def test_unknown_format_or_suffix_is_refused(project, tmp_path):
    with pytest.raises(WorkbenchError, match="Unknown preference format"):
        preference_rows(project, "messages")
    with pytest.raises(WorkbenchError, match="Cannot tell the format"):
        write_preferences(project, tmp_path / "x.csv", "standard")


# ---------------------------------------------------------------- round trips


def labeled_project(tmp_path) -> Project:
    project = Project.create(tmp_path / "source.rlhf")
    one, ids1 = make_batch(project, "Where is my order?", 4)
    two, ids2 = make_batch(project, MULTI_TURN, 3)
    rank(project, one, "ann", [[1], [0, 2], [3]], ids1, at=100.0)
    rank(project, one, "bo", [[0], [1], [2], [3]], ids1, at=200.0)
    rank(project, two, "ann", [[2], [0], [1]], ids2, shown=[ids2[1], ids2[2], ids2[0]], at=300.0)
    rank(project, two, "bo", [[0], [1], [2]], ids2, all_bad=True, at=400.0)
    return project


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips(tmp_path, fmt, suffix):
    source = labeled_project(tmp_path)
    path = tmp_path / f"prefs{suffix}"
    expected = preference_rows(source, fmt)
    assert write_preferences(source, path, fmt) == len(expected) == (14 if fmt != "kway" else 4)
    if suffix == ".json":
        assert json.loads(path.read_text(encoding="utf-8")) == expected
    result = read_preferences(path)
    assert result.errors == [] and result.format == fmt and result.total_rows == len(expected)

    target = Project.create(tmp_path / "target.rlhf")
    summary = import_preferences(target, path)
    assert summary["rankings_added"] == len(expected) and summary["skipped"] == 0
    assert preference_rows(target, fmt) == expected
    if fmt == "kway":  # the annotators and their uids come along; the file is the source
        assert RankingStore(target).annotators() == ["ann", "bo"]
        assert {r.source for r in RankingStore(target).rankings()} == {path.name}
        assert import_preferences(source, path)["rankings_unchanged"] == 4  # back home: nothing new
    else:
        assert RankingStore(target).annotators() == [f"imported:{path.name}"]
        generator = json.loads(target.query("SELECT generator FROM responses LIMIT 1")[0][0])
        assert generator == {"source": "imported", "file": path.name}

    before = snapshot(target)
    again = import_preferences(target, path)
    assert (again["prompts_added"], again["batches_added"], again["rankings_added"]) == (0, 0, 0)
    assert again["rankings_unchanged"] == len(expected)
    assert snapshot(target) == before


def test_a_prompt_already_in_the_project_is_reused(project, tmp_path):
    PromptStore(project).add("Hello?")
    path = lines(tmp_path / "p.jsonl", {"prompt": "Hello?", "chosen": "Hi!", "rejected": "Go away."})
    summary = import_preferences(project, path)
    assert (summary["prompts_added"], summary["batches_added"], summary["rankings_added"]) == (0, 1, 1)
    assert project.counts()["prompts"] == 1


def test_pairs_from_several_annotators_share_a_batch_and_repeats_are_kept(project, tmp_path):
    path = lines(tmp_path / "pairs.jsonl",
                 {"prompt": "Q", "chosen": "A", "rejected": "B", "annotator": "ann"},
                 {"prompt": "Q", "chosen": "B", "rejected": "A", "annotator": "bo"},
                 {"prompt": "Q", "chosen": "A", "rejected": "B"},
                 {"prompt": "Q", "chosen": "A", "rejected": "B"})
    summary = import_preferences(project, path)
    # ann, bo and the file's unnamed labeler share one batch; the unnamed repeat gets its own
    assert (summary["batches_added"], summary["rankings_added"]) == (2, 4)
    report = agreement_report(project)
    assert report.items == 1 and report.annotators == {"ann": 1, "bo": 1, "imported:pairs.jsonl": 2}
    assert report.pairwise == pytest.approx(1 / 3)  # only ann and the first unnamed row agree
    assert len(preference_rows(project, "standard")) == 4


# ---------------------------------------------------------------- other sources


def test_anthropic_hh_transcripts_single_and_multi_turn(project, tmp_path):
    path = lines(tmp_path / "hh.jsonl",
                 {"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?",
                  "rejected": "\n\nHuman: Hi there\n\nAssistant: What."},
                 {"chosen": "\n\nHuman: Name a fruit.\n\nAssistant: Apple.\n\nHuman: Another?\n\nAssistant: Pear.",
                  "rejected": "\n\nHuman: Name a fruit.\n\nAssistant: Apple.\n\nHuman: Another?\n\nAssistant: No."})
    result = read_preferences(path)
    assert result.errors == [] and result.format == "hh"
    assert result.items[0].messages == [{"role": "user", "content": "Hi there"}]
    assert result.items[1].messages == [{"role": "user", "content": "Name a fruit."},
                                        {"role": "assistant", "content": "Apple."},
                                        {"role": "user", "content": "Another?"}]
    import_preferences(project, path)
    assert preference_rows(project, "conversational")[1] == {
        "prompt": result.items[1].messages, "chosen": [{"role": "assistant", "content": "Pear."}],
        "rejected": [{"role": "assistant", "content": "No."}]}
    assert preference_rows(project, "standard")[0]["chosen"] == "Hello! How can I help?"


def test_conversational_pairs_with_the_whole_conversation_in_chosen_and_rejected(tmp_path):
    user = {"role": "user", "content": "Hi"}
    path = lines(tmp_path / "c.jsonl",
                 {"prompt": [user], "chosen": [user, {"role": "assistant", "content": "Hello"}],
                  "rejected": [user, {"role": "assistant", "content": "Bye"}]},
                 {"chosen": [user, {"role": "assistant", "content": "Hello"}],  # TRL's implicit prompt
                  "rejected": [user, {"role": "assistant", "content": "Bye"}]})
    result = read_preferences(path)
    assert result.errors == [] and result.format == "conversational"
    for item in result.items:
        assert item.messages == [user]
        texts = [r["text"] for r in item.responses]
        assert [[texts[i] for i in g] for g in item.ranking] == [["Hello"], ["Bye"]]


@pytest.mark.parametrize("record, message", [
    ({"prompt": "Q", "chosen": "A"}, 'neither "chosen" and "rejected"'),
    ({"prompt": "Q", "chosen": "A", "rejected": "A"}, "are the same"),
    ({"prompt": "Q", "chosen": "A", "rejected": ["B"]}, "both must be strings or both lists"),
    ({"prompt": "", "chosen": "A", "rejected": "B"}, "the prompt is not valid"),
    ({"chosen": "just text", "rejected": "more text"}, "not a \"Human: ... Assistant: ...\" transcript"),
    ({"chosen": "\n\nHuman: A\n\nAssistant: B", "rejected": "\n\nHuman: C\n\nAssistant: D"}, "differ before"),
    ({"prompt": [{"role": "user", "content": "Q"}], "chosen": [{"role": "user", "content": "A"}],
      "rejected": [{"role": "assistant", "content": "B"}]}, "one assistant message"),
    ({"prompt": "Q", "responses": [{"text": "a"}, {"text": "b"}], "ranking": [[0], [0]]}, '"ranking" is not valid'),
    ({"prompt": "Q", "responses": [{"text": "a"}, {"text": "b"}], "ranking": [[0]]}, '"ranking" is not valid'),
    ({"prompt": "Q", "responses": [], "ranking": []}, '"responses" must be a non-empty list'),
    ({"prompt": "Q", "chosen": "A", "rejected": "B", "annotator": ""}, '"annotator"'),
    ([1, 2], "not an object"),
])
def test_bad_rows_are_named_by_line(tmp_path, record, message):
    path = lines(tmp_path / "bad.jsonl", {"prompt": "Q", "chosen": "A", "rejected": "B"}, record)
    result = read_preferences(path)
    assert len(result.items) == 1 and len(result.errors) == 1
    assert str(result.errors[0]).startswith("line 2: ") and message in str(result.errors[0])


def test_a_malformed_file_changes_nothing_unless_valid_only(project, tmp_path):
    batch, ids = make_batch(project, "Existing", 2)
    rank(project, batch, "ann", [[0], [1]], ids)
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps({"prompt": "Q", "chosen": "A", "rejected": "B"}) + "\n{not json\n"
                    + json.dumps({"prompt": "Q2", "chosen": "C", "rejected": "C"}) + "\n", encoding="utf-8")
    before = snapshot(project)
    with pytest.raises(PreferenceImportError, match="2 of 3 rows in mixed.jsonl") as caught:
        import_preferences(project, path)
    assert [str(e).split(":")[0] for e in caught.value.errors] == ["line 2", "line 3"]
    assert snapshot(project) == before
    summary = import_preferences(project, path, valid_only=True)
    assert (summary["rankings_added"], summary["skipped"]) == (1, 2)


def test_rows_in_conflict_with_the_project_are_refused(project, tmp_path):
    batch, ids = make_batch(project, "Existing", 2)
    rank(project, batch, "ann", [[0], [1]], ids)
    [row] = preference_rows(project, "kway")
    row.update(prompt=[{"role": "user", "content": "Another prompt"}], prompt_uid="elsewhere")
    path = lines(tmp_path / "clash.jsonl", row)
    before = snapshot(project)
    with pytest.raises(WorkbenchError, match="line 1: batch .* already belongs to another prompt"):
        import_preferences(project, path)
    assert snapshot(project) == before


def test_an_older_ranking_does_not_replace_a_newer_one(project, tmp_path):
    batch, ids = make_batch(project, "Q", 2)
    rank(project, batch, "ann", [[0], [1]], ids, at=500.0)
    [row] = preference_rows(project, "kway")
    older = dict(row, ranking=[[1], [0]], updated_at=100.0)
    newer = dict(row, ranking=[[1], [0]], updated_at=900.0)
    assert import_preferences(project, lines(tmp_path / "old.jsonl", older))["rankings_kept"] == 1
    assert RankingStore(project).ranking(batch.uid, "ann").groups == [[ids[0]], [ids[1]]]
    assert import_preferences(project, lines(tmp_path / "new.jsonl", newer))["rankings_updated"] == 1
    assert RankingStore(project).ranking(batch.uid, "ann").groups == [[ids[1]], [ids[0]]]


def test_unreadable_files_are_refused(project, tmp_path):
    damaged = tmp_path / "x.parquet"
    damaged.write_bytes(b"not parquet at all")
    with pytest.raises(WorkbenchError, match="not a Parquet file"):
        import_preferences(project, damaged)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(WorkbenchError, match="holds no preference rows"):
        import_preferences(project, empty)
    with pytest.raises(WorkbenchError, match="does not exist"):
        import_preferences(project, tmp_path / "missing.jsonl")
    assert project.counts()["prompts"] == 0
