"""Damaged or hand-edited project files are refused with one line, exit non-zero, and stay
byte-identical with no -wal/-shm beside them (issue 19). Each case failed before the checks in
workbench/project_checks.py: accepted, a traceback, or a changed file."""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3

import pytest

from workbench.cli import main
from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.errors import ProjectError
from workbench.project import Project
from workbench import sqlite_defensive


def labeled_project(path):
    project = Project.create(path)
    prompt_id = PromptStore(project).add("Where is my order?", [])
    store = RankingStore(project)
    batch = store.add_batch(prompt_id, ["It ships today.", "No idea."], [{"source": "base"}] * 2)
    ids = [response.id for response in batch.responses]
    store.save_ranking(batch.uid, "ana", [[ids[0]], [ids[1]]])
    project.close()
    return path


def edit(path, *statements, foreign_keys=False):
    db = sqlite3.connect(path, isolation_level=None)
    for statement in statements:
        db.execute(statement)
    db.close()


def snapshot(path):
    return hashlib.sha256(path.read_bytes()).hexdigest(), sorted(p.name for p in path.parent.iterdir())


HAND_EDITS = {
    "malformed meta JSON": ["UPDATE meta SET value = '{not json' WHERE key = 'name'"],
    "base model not an object": ["INSERT INTO meta(key, value) VALUES ('base_model', '[1, 2]')"],
    "renamed column": ["ALTER TABLE prompts RENAME COLUMN text TO body"],
    "response BLOB": ["UPDATE responses SET text = x'00ff00' WHERE id = 1"],
    "ranking naming a missing response": ["UPDATE rankings SET ranking = '[[1], [99]]'"],
    "ranking groups not lists": ["UPDATE rankings SET ranking = '[1, 2]'"],
    "shown order naming another batch": ["UPDATE rankings SET shown_order = '[1, 7]'"],
    "an escaped lone surrogate in meta": ["UPDATE meta SET value = '\"\\ud800\"' WHERE key = 'name'"],
    "a number of 5,000 digits in meta": ["UPDATE meta SET value = '" + "9" * 5000 + "' WHERE key = 'name'"],
    "an escaped lone surrogate in a turn": ["UPDATE prompts SET messages = "
                                            "'[{\"role\": \"user\", \"content\": \"\\udfff\"}]'"],
    "ranking with an empty group": ["UPDATE rankings SET ranking = '[[1, 2], []]'"],
    "empty ranking": ["UPDATE rankings SET ranking = '[]'"],
    "ranking naming a response twice": ["UPDATE rankings SET ranking = '[[1], [1]]'"],
    "a schema SQLite cannot parse": ["PRAGMA writable_schema = ON",
                                     "UPDATE sqlite_master SET sql = replace(sql, 'seconds_spent REAL,', "
                                     "'seconds_spent REAL,\n `') WHERE name = 'rankings'"],
    "a turn that is not an object": ["UPDATE prompts SET messages = '[\"hi\"]'"],
    "a turn without its role": ["UPDATE prompts SET messages = '[{\"rolx\": \"user\", \"content\": \"hi\"}]'"],
    "a tag that is not text": ["UPDATE prompts SET tags = '[1]'"],
    "a multi-line damage report": ["PRAGMA writable_schema = ON",
                                   "UPDATE sqlite_master SET rootpage = 0 WHERE name = 'prompts_by_uid'"],
    "infinite timestamp": ["UPDATE prompts SET created_at = 1e309"],
    "text where a time belongs": ["UPDATE rankings SET updated_at = 'yesterday'"],
    "messages not a list": ["UPDATE prompts SET messages = '{\"role\": \"user\"}'"],
    "run with an unknown status": ["INSERT INTO runs(kind, status, config, created_at, updated_at) "
                                   "VALUES ('sft', 'exploded', '{}', 0, 0)"],
    "run config not an object": ["INSERT INTO runs(kind, status, config, created_at, updated_at) "
                                 "VALUES ('sft', 'stopped', '3', 0, 0)"],
    "extra table": ["CREATE TABLE notes (x)"],
    "orphan metric": ["INSERT INTO metrics(run_id, key, step, value) VALUES (5, 'loss', 1, 0.5)"],
    "format -1": ["PRAGMA user_version = -1"],
    **{f"format {v} on a current schema": [f"PRAGMA user_version = {v}"] for v in (0, 1, 2, 3)},
}


@pytest.mark.parametrize("statements", HAND_EDITS.values(), ids=HAND_EDITS.keys())
def test_a_hand_edited_file_is_refused_and_left_as_it_was(tmp_path, capsys, statements):
    path = labeled_project(tmp_path / "p.rlhf")
    edit(path, *statements)
    before = snapshot(path)
    for argv in (["info", str(path)], ["export", str(path), str(tmp_path / "out.jsonl")]):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("workbench: error: p.rlhf is damaged") and "\n" not in err, err
    assert snapshot(path) == before  # byte-identical, and no -wal, -shm or backup beside it


def test_text_that_is_not_utf8_is_a_one_line_error_where_it_is_read(tmp_path, capsys):
    """Opening does not decode every cell (that would double the time to open a large project);
    the command that reads the bad text says the file is damaged, on one line."""
    path = labeled_project(tmp_path / "p.rlhf")
    edit(path, "UPDATE responses SET text = CAST(x'c328' AS TEXT) WHERE id = 1")
    before = snapshot(path)
    assert main(["export", str(path), str(tmp_path / "prefs.jsonl"), "--kind", "prefs"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("workbench: error: p.rlhf is damaged") and "\n" not in err, err
    assert snapshot(path) == before


def test_an_index_out_of_step_with_its_table_is_found(tmp_path):
    """quick_check misses this; integrity_check does not."""
    path = labeled_project(tmp_path / "p.rlhf")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA writable_schema = ON")
    db.execute("UPDATE sqlite_master SET sql = replace(sql, '(prompt_id)', '(position)') "
               "WHERE name = 'responses_by_prompt'")
    db.close()
    assert sqlite3.connect(path).execute("PRAGMA quick_check").fetchone()[0] == "ok"
    before = snapshot(path)
    with pytest.raises(ProjectError, match="damaged"):
        Project.open(path)
    assert snapshot(path) == before


def test_a_pipe_named_like_a_project_is_refused_at_once(tmp_path, capsys):
    fifo = tmp_path / "trap.rlhf"
    os.mkfifo(fifo)
    assert main(["info", str(fifo)]) == 1  # before: blocked forever reading the header
    assert "not a regular file" in capsys.readouterr().err


def test_a_refused_newer_file_leaves_no_sidecars(tmp_path):
    path = labeled_project(tmp_path / "p.rlhf")
    edit(path, "PRAGMA user_version = 99")
    before = snapshot(path)
    with pytest.raises(ProjectError, match="newer version"):
        Project.open(path)
    assert snapshot(path) == before


def test_a_log_left_by_a_killed_app_is_still_read(tmp_path):
    """The immutable read is only used without a -wal: committed rows in a log are never missed."""
    path = labeled_project(tmp_path / "p.rlhf")
    project = Project.open(path)
    project.execute("PRAGMA wal_autocheckpoint = 0")
    PromptStore(project).add("Only in the log", [])
    assert os.path.getsize(f"{path}-wal") > 0
    copy = tmp_path / "copy.rlhf"  # what a kill leaves: the file plus its log, no clean close
    copy.write_bytes(path.read_bytes())
    (tmp_path / "copy.rlhf-wal").write_bytes(open(f"{path}-wal", "rb").read())
    project.close()
    reopened = Project.open(copy)
    assert reopened.counts()["prompts"] == 2
    reopened.close()


def test_nan_cannot_be_written_and_infinity_is_refused(tmp_path):
    project = Project.create(tmp_path / "p")
    with pytest.raises(ProjectError):  # SQLite stores NaN as NULL: NOT NULL refuses it
        project.execute("INSERT INTO prompts(text, created_at) VALUES ('x', ?)", (math.nan,))
    project.close()


def test_defensive_mode_is_on_for_every_connection(tmp_path):
    project = Project.create(tmp_path / "p")
    assert sqlite_defensive.is_on(project._conn)
    project.execute("PRAGMA writable_schema = ON")
    with pytest.raises(ProjectError, match="may not be modified"):
        project.execute("UPDATE sqlite_master SET sql = sql")
    project.close()
