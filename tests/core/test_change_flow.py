"""The project says which kinds of record each commit changed, once per commit, on the thread
that committed; views compare revisions to tell their own writes from others' (issue 15)."""

import threading

import pytest

from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.data.sft_store import SftStore
from workbench.errors import ProjectError
from workbench.project import KINDS, Project, kinds_written
from workbench.train.runs import RunRecord

TURNS = [{"role": "user", "content": "Where is my parcel?"}, {"role": "assistant", "content": "On its way."}]


@pytest.fixture
def project(tmp_path):
    project = Project.create(tmp_path / "flow.rlhf")
    yield project
    project.close()


@pytest.fixture
def heard(project):
    commits: list[frozenset] = []
    project.on_change.append(commits.append)
    return commits


def test_every_store_reports_the_kinds_it_changed_once_per_commit(project, heard):
    sft = SftStore(project)
    first = sft.add(TURNS)
    assert heard == [{"sft"}]
    sft.add_many([TURNS] * 50)  # one transaction: one report, not fifty
    sft.update(first, [TURNS[0], {"role": "assistant", "content": "Today."}])
    sft.delete([first])
    assert heard[1:] == [{"sft"}] * 3

    heard.clear()
    prompts = PromptStore(project)
    prompt = prompts.add("I want a refund.")
    prompts.update(prompt, tags=["billing"])
    store = RankingStore(project)
    batch = store.add_batch(prompt, ["Sure.", "No."], [{}, {}])
    responses = batch.responses
    store.save_ranking(batch.uid, "ana", [[responses[0].id], [responses[1].id]])
    assert heard == [{"prompts"}, {"prompts"}, {"responses"}, {"rankings"}]

    heard.clear()
    prompts.delete([prompt])  # its responses and rankings go with it (ON DELETE CASCADE)
    assert heard == [{"prompts", "responses", "rankings"}]

    heard.clear()
    record = RunRecord.create(project, "sft", {})
    record.log("hello")
    record.add_metrics(1, {"loss/train": 1.0})
    record.set_status("finished")
    project.rename("Support bot")
    assert heard == [{"runs"}, {"logs"}, {"metrics"}, {"runs"}, {"settings"}]
    assert all(kinds <= KINDS for kinds in heard)


def test_a_write_that_changes_nothing_or_rolls_back_is_not_announced(project, heard):
    PromptStore(project).update(12345, tags=["none"])  # no such prompt: no row changed
    with pytest.raises(RuntimeError):
        with project.transaction():
            PromptStore(project).add("A prompt that never lands.")
            raise RuntimeError("cancelled half-way")
    assert heard == [] and project.revision("prompts") == 0 and PromptStore(project).rows("") == []


def test_revisions_let_a_view_tell_its_own_write_from_another(project):
    sft = SftStore(project)
    sft.add(TURNS)
    shown = project.revision("sft")  # what a page remembers after its own write
    assert project.revision("sft") == shown
    PromptStore(project).add("Unrelated.")
    assert project.revision("sft") == shown  # other kinds do not make it stale
    sft.add(TURNS)
    assert project.revision("sft") == shown + 1


def test_the_listener_runs_on_the_committing_thread(project, heard):
    threads = []
    project.on_change.append(lambda kinds: threads.append(threading.current_thread()))
    worker = threading.Thread(target=lambda: SftStore(project).add(TURNS))
    worker.start()
    worker.join()
    assert heard == [{"sft"}] and threads == [worker]


def test_every_table_write_in_the_core_has_a_kind():
    assert kinds_written("INSERT OR REPLACE INTO metrics(run_id) VALUES (1)") == {"metrics"}
    assert kinds_written("  update prompts SET tags = '[]'") == {"prompts"}
    assert kinds_written("SELECT * FROM prompts") == frozenset()
    assert kinds_written("PRAGMA user_version") == frozenset()
    with pytest.raises(ValueError, match="no kind"):
        kinds_written("DELETE FROM a_new_table")


def test_rename_and_describe(project, heard):
    project.rename("  Support   bot ")
    project.set_description("Refund answers.\n")
    assert project.name == "Support bot" and project.description == "Refund answers."
    with pytest.raises(ProjectError, match="needs a name"):
        project.rename("   ")
    assert heard == [{"settings"}, {"settings"}]
