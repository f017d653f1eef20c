"""Prompts, response batches and rankings in the project file (format 4)."""

import json
import sqlite3

import pytest

from workbench.data.prompts import PromptStore, read_prompt_file
from workbench.data.rankings import RankingStore, blind_order, positions
from workbench.data.sft_store import SftStore
from workbench.errors import WorkbenchError
from workbench.project import Project


@pytest.fixture
def project(tmp_path):
    project = Project.create(tmp_path / "p.rlhf")
    yield project
    project.close()


def batch_of(project, prompt_id, k=4):
    generators = [{"source": "base", "row": i} for i in range(k)]
    return RankingStore(project).add_batch(prompt_id, [f"answer {i}" for i in range(k)], generators)


def test_prompts_add_edit_tag_and_filter(project):
    store = PromptStore(project)
    first = store.add("Where is my parcel?", ["shipping", " shipping ", ""])
    second = store.add([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Refund?"}])
    assert [r.text for r in store.rows()] == ["Where is my parcel?", "Refund?"]
    assert store.rows()[0].tags == ["shipping"]
    assert store.messages(second)[0] == {"role": "system", "content": "Be brief."}
    store.update(second, text="Can I get a refund?", tags=["billing"])
    assert store.messages(second)[-1]["content"] == "Can I get a refund?"
    assert [r.id for r in store.rows(search="refund")] == [second]
    assert [r.id for r in store.rows(tag="shipping")] == [first]
    assert store.tags() == ["billing", "shipping"]
    batch = batch_of(project, first)
    RankingStore(project).save_ranking(batch.uid, "ana", [[r.id] for r in batch.responses])
    assert [r.id for r in store.rows("ana", "labeled")] == [first]
    assert [r.id for r in store.rows("ana", "unlabeled")] == [second]
    assert [r.id for r in store.rows("bo", "unlabeled")] == [first, second]
    assert [r.id for r in store.rows(filter="no responses")] == [second]
    with pytest.raises(ValueError):
        store.add([{"role": "assistant", "content": "no user turn"}])
    store.delete([first])  # its responses and rankings go with it
    assert project.counts()["responses"] == project.counts()["rankings"] == 0


def test_prompts_from_sft_examples_skip_duplicates(project):
    SftStore(project).add_many([
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        [{"role": "user", "content": "A"}, {"role": "assistant", "content": "B"},
         {"role": "user", "content": "C"}, {"role": "assistant", "content": "D"}],
    ])
    store = PromptStore(project)
    assert store.add_from_sft() == (2, 0)
    assert store.add_from_sft() == (0, 2)
    multi = store.rows()[1]
    assert multi.text == "C" and len(store.messages(multi.id)) == 3


def test_prompt_files_jsonl_csv_and_their_errors(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "one", "tags": ["a"]}\n\n{"question": "two"}\nnot json\n{"answer": 1}\n'
                     '{"messages": [{"role": "user", "content": "three"}, {"role": "assistant", "content": "x"}]}\n')
    result = read_prompt_file(jsonl)
    assert [p["messages"][-1]["content"] for p in result.prompts] == ["one", "two", "three"]
    assert result.errors[0] == "line 4: not valid JSON" and result.errors[1].startswith("line 5: no prompt")
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("text,tags\nWhere is it?,shipping;late\n,\n")
    result = read_prompt_file(csv_file)
    assert result.prompts == [{"messages": [{"role": "user", "content": "Where is it?"}], "tags": ["shipping", "late"]}]
    assert result.errors == ["row 3: no prompt found (expected one of: messages, prompt, text, question, "
                             "instruction, input, query)"]
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(WorkbenchError, match="not UTF-8"):
        read_prompt_file(tmp_path / "bin.jsonl")


def test_a_ranking_is_one_per_annotator_and_batch_and_can_be_changed(project):
    prompt = PromptStore(project).add("Where is my parcel?")
    batch = batch_of(project, prompt)
    ids = [r.id for r in batch.responses]
    store = RankingStore(project)
    shown = blind_order(batch.uid, "ana", ids)
    assert shown == blind_order(batch.uid, "ana", ids) and sorted(shown) == ids  # stable on every visit
    first = store.save_ranking(batch.uid, "ana", [[ids[2]], [ids[0], ids[1]], [ids[3]]], seconds_spent=12,
                               shown_order=shown)
    assert first.shown_order == shown and first.seconds_spent == 12
    changed = store.save_ranking(batch.uid, "ana", [[ids[1]], [ids[0]], [ids[2]], [ids[3]]], seconds_spent=3)
    assert changed.groups == [[ids[1]], [ids[0]], [ids[2]], [ids[3]]]
    assert changed.seconds_spent == 15 and changed.created_at == first.created_at
    assert project.counts()["rankings"] == 1
    store.save_ranking(batch.uid, "bo", [ids], all_bad=True)
    assert store.annotators() == ["ana", "bo"] and store.ranking(batch.uid, "bo").all_bad
    assert positions(changed, batch) == [[1], [0], [2], [3]]


def test_invalid_rankings_are_refused_and_change_nothing(project):
    prompt = PromptStore(project).add("Where is my parcel?")
    batch = batch_of(project, prompt, k=3)
    ids = [r.id for r in batch.responses]
    store = RankingStore(project)
    for groups in ([[ids[0]], [ids[1]]], [[ids[0]], [ids[0]], [ids[1], ids[2]]], [[ids[0], 999], [ids[1], ids[2]]]):
        with pytest.raises(WorkbenchError, match="Not a valid ranking"):
            store.save_ranking(batch.uid, "ana", groups)
    with pytest.raises(WorkbenchError, match="annotator"):
        store.save_ranking(batch.uid, "  ", [ids])
    with pytest.raises(WorkbenchError, match="no longer exist"):
        store.save_ranking("gone", "ana", [ids])
    assert project.counts()["rankings"] == 0


def test_progress_counts_labels_per_hour_of_time_spent(project):
    prompts = PromptStore(project)
    store = RankingStore(project)
    for i in range(3):
        batch = batch_of(project, prompts.add(f"prompt {i}"), k=2)
        if i < 2:
            store.save_ranking(batch.uid, "ana", [[r.id] for r in batch.responses], seconds_spent=30)
    assert store.progress("ana") == {"labeled": 2, "total": 3, "labels_per_hour": 120.0}
    assert store.progress("bo") == {"labeled": 0, "total": 3, "labels_per_hour": None}


def test_format_3_files_gain_uids_batches_and_keep_their_rankings(tmp_path):
    path = tmp_path / "old.rlhf"
    project = Project.create(path)
    project.close()
    conn = sqlite3.connect(path)  # rebuild it as format 3 with a prompt, responses and two rankings
    conn.executescript("""
        DROP INDEX prompts_by_uid; DROP INDEX responses_by_uid; DROP INDEX responses_by_batch;
        DROP INDEX rankings_by_batch_annotator;
        ALTER TABLE prompts DROP COLUMN uid; ALTER TABLE prompts DROP COLUMN messages;
        ALTER TABLE prompts DROP COLUMN source;
        ALTER TABLE responses DROP COLUMN uid; ALTER TABLE responses DROP COLUMN batch;
        ALTER TABLE responses DROP COLUMN position;
        ALTER TABLE rankings DROP COLUMN batch; ALTER TABLE rankings DROP COLUMN shown_order;
        ALTER TABLE rankings DROP COLUMN source; ALTER TABLE rankings DROP COLUMN updated_at;
        INSERT INTO prompts(text, created_at) VALUES ('old', 0);
        INSERT INTO responses(prompt_id, text, generator, created_at) VALUES (1, 'a', '{}', 0), (1, 'b', '{}', 0);
        INSERT INTO rankings(prompt_id, annotator, ranking, created_at) VALUES (1, 'ana', '[[1],[2]]', 1);
        INSERT INTO rankings(prompt_id, annotator, ranking, created_at) VALUES (1, 'ana', '[[2],[1]]', 2);
        PRAGMA user_version = 3;
    """)
    conn.close()
    project = Project.open(path)
    [row] = PromptStore(project).rows("ana")
    assert len(row.uid) == 32 and row.labeled_by_me and row.responses == 2
    assert PromptStore(project).messages(row.id) == [{"role": "user", "content": "old"}]
    [ranking] = RankingStore(project).rankings()
    assert ranking.groups == [[2], [1]]  # the later of the two duplicates is kept
    project.close()
