import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from workbench import app_settings
from workbench.config import ModelSpec
from workbench.demo_project import ensure_demo_project
from workbench.errors import ProjectError
from workbench.paths import DEMO_PROJECT_SEED
from workbench.data.prompts import PromptStore
from workbench.data.sft_store import SftStore, derived_columns
from workbench.project import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, Project, artifacts_dir_for


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_keeps_everything(tmp_path):
    spec = ModelSpec(kind="gguf", location="/models/x.gguf", quantization="int8", dtype="float16")
    project = Project.create(tmp_path / "p", name="Support bot")
    assert project.path.name == "p.rlhf" and project.artifacts_dir.is_dir()
    project.set_base_model(spec)
    SftStore(project).add([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    PromptStore(project).add("Where is my parcel?", ["shipping"])
    project.close()

    reopened = Project.open(tmp_path / "p.rlhf")
    assert reopened.name == "Support bot"
    assert reopened.base_model == spec
    assert reopened.schema_version == SCHEMA_VERSION
    summary = reopened.summary()
    assert summary["counts"] == {"sft_examples": 1, "prompts": 1, "responses": 0, "rankings": 0, "runs": 0}
    assert summary["base_model"]["location"] == "/models/x.gguf"
    json.dumps(summary)  # plain data only
    reopened.close()


def test_create_refuses_existing_file_and_missing_folder(tmp_path):
    Project.create(tmp_path / "p.rlhf").close()
    with pytest.raises(ProjectError, match="already exists"):
        Project.create(tmp_path / "p.rlhf")
    with pytest.raises(ProjectError, match="does not exist"):
        Project.create(tmp_path / "missing" / "p.rlhf")


def make_format1_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("INSERT INTO prompts(text, created_at) VALUES ('old prompt', 0)")
    chat = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Where is it?"},
            {"role": "assistant", "content": "Let me check."}, {"role": "user", "content": "  "},
            {"role": "assistant", "content": "It ships today."}]
    conn.execute("INSERT INTO sft_examples(messages, created_at, updated_at) VALUES (?, 0, 0)", (json.dumps(chat),))
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_migration_from_format_1_keeps_data_and_a_backup(tmp_path):
    path = tmp_path / "old.rlhf"
    make_format1_file(path)
    project = Project.open(path)
    assert project.schema_version == SCHEMA_VERSION == 4
    rows = project.query("SELECT text, tags FROM prompts")
    assert rows == [("old prompt", "[]")]
    # Format 3 fills the SFT table's derived columns exactly as the store computes them.
    [row] = SftStore(project).rows([1]).values()
    assert (row.prompt, row.response, row.turns, row.has_empty) == ("Where is it?", "It ships today.", 5, True)
    assert row.digest == derived_columns(SftStore(project).messages(1))["digest"]
    PromptStore(project).add("new", ["tagged"])  # the new column works
    project.close()
    backup = tmp_path / "old.rlhf.format1.bak"
    assert backup.is_file()
    conn = sqlite3.connect(backup)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()


def test_a_text_file_is_refused_and_left_unchanged(tmp_path):
    path = tmp_path / "notes.rlhf"
    path.write_text("just some notes\n" * 20)
    before = digest(path)
    with pytest.raises(ProjectError, match="not an SQLite file"):
        Project.open(path)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.rlhf"]


def test_another_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(ProjectError, match="not a workbench project"):
        Project.open(path)
    assert digest(path) == before


def test_a_file_from_a_newer_version_is_refused_unchanged(tmp_path):
    project = Project.create(tmp_path / "new.rlhf")
    project._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    project.close()
    before = digest(project.path)
    with pytest.raises(ProjectError, match="newer version"):
        Project.open(project.path)
    assert digest(project.path) == before


def test_a_damaged_file_is_refused_unchanged(tmp_path):
    project = Project.create(tmp_path / "broken.rlhf")
    for i in range(400):
        PromptStore(project).add(f"prompt number {i} " * 10)
    project.close()
    data = bytearray(project.path.read_bytes())
    page = 4096
    data[page * 2: page * 2 + 2000] = b"\xff" * 2000  # scribble over a b-tree page
    project.path.write_bytes(bytes(data))
    before = digest(project.path)
    with pytest.raises(ProjectError, match="damaged"):
        Project.open(project.path)
    assert digest(project.path) == before


def test_a_file_with_triggers_is_refused(tmp_path):
    project = Project.create(tmp_path / "trap.rlhf")
    project._conn.execute("CREATE TRIGGER t AFTER INSERT ON prompts BEGIN DELETE FROM prompts; END")
    project.close()
    with pytest.raises(ProjectError, match="triggers or views"):
        Project.open(project.path)


def test_missing_file_gives_a_clear_message(tmp_path):
    with pytest.raises(ProjectError, match="does not exist"):
        Project.open(tmp_path / "nope.rlhf")


def test_killing_the_process_mid_write_loses_nothing_committed(tmp_path):
    path = tmp_path / "kill.rlhf"
    Project.create(path).close()
    writer = textwrap.dedent(f"""
        import sys
        from workbench.data.prompts import PromptStore
        from workbench.project import Project
        project = Project.open({str(path)!r})
        i = 0
        while True:
            PromptStore(project).add("prompt %d " % i + "x" * 500)
            i += 1
            print(i, flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    confirmed = 0
    for line in child.stdout:
        confirmed = int(line)
        if confirmed >= 300:
            break
    child.kill()  # SIGKILL: no cleanup, no checkpoint, possibly mid-transaction
    child.wait()
    project = Project.open(path)
    assert project.query("PRAGMA integrity_check") == [("ok",)]
    saved = project.counts()["prompts"]
    assert saved >= confirmed  # every write reported as done is there
    texts = [row[0] for row in project.query("SELECT text FROM prompts ORDER BY id")]
    assert all(t.startswith(f"prompt {i} ") for i, t in enumerate(texts))
    project.close()


def test_save_as_copies_data_and_artifacts(tmp_path):
    project = Project.create(tmp_path / "a.rlhf")
    PromptStore(project).add("kept")
    (project.artifacts_dir / "adapter.txt").write_text("weights")
    copy = project.save_as(tmp_path / "b")
    assert copy.path == (tmp_path / "b.rlhf").resolve()
    assert copy.counts()["prompts"] == 1 and copy.name == "a"  # a copy keeps its name (issue 15)
    assert (artifacts_dir_for(copy.path) / "adapter.txt").read_text() == "weights"
    PromptStore(copy).add("only in the copy")
    assert project.counts()["prompts"] == 1
    project.close()
    copy.close()


def test_recent_projects_newest_first_and_missing_ones_dropped(tmp_path):
    paths = []
    for name in ("one", "two", "three"):
        project = Project.create(tmp_path / f"{name}.rlhf")
        project.close()
        app_settings.remember_project(project.path)
        paths.append(project.path)
    app_settings.remember_project(paths[0])
    paths[1].unlink()
    assert app_settings.recent_projects() == [paths[0], paths[2]]
    assert app_settings.last_project() == paths[0]


def test_unreadable_settings_file_is_treated_as_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CONFIG", str(tmp_path / "cfg"))
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "settings.json").write_text("{not json")
    assert app_settings.recent_projects() == [] and app_settings.last_project() is None
    project = Project.create(tmp_path / "x.rlhf")
    project.close()
    app_settings.remember_project(project.path)
    assert app_settings.last_project() == project.path


def test_demo_project_is_built_from_the_seed(tmp_path):
    seed = tmp_path / "customer-support.json"
    seed.write_text(DEMO_PROJECT_SEED.read_text())
    path = ensure_demo_project(seed)
    assert ensure_demo_project(seed) == path  # second call reuses it
    project = Project.open(path)
    seed_data = json.loads(seed.read_text())
    assert project.base_model == ModelSpec(kind="demo")
    assert project.counts()["prompts"] == len(seed_data["prompts"]) >= 20
    assert project.counts()["sft_examples"] == len(seed_data["sft_examples"])
    project.close()
