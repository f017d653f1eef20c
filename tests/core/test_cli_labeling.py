"""`workbench import/export --kind prefs|pack`: the labeling data on the command line."""

import json

import pytest

from workbench.cli import main
from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.project import Project


@pytest.fixture
def labeled(tmp_path):
    """A project with one batch of three responses ranked by two annotators."""
    path = tmp_path / "lead.rlhf"
    project = Project.create(path)
    prompt_id = PromptStore(project).add("Where is my order?")
    store = RankingStore(project)
    batch = store.add_batch(prompt_id, ["a", "b", "c"], [{"source": "base"}] * 3)
    ids = [r.id for r in batch.responses]
    store.save_ranking(batch.uid, "ann", [[ids[0]], [ids[1]], [ids[2]]])
    store.save_ranking(batch.uid, "bo", [[ids[2]], [ids[0], ids[1]]])
    project.close()
    return path


def new_project(tmp_path, name: str):
    path = tmp_path / f"{name}.rlhf"
    Project.create(path).close()
    return path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("workbench: error:")
    return err[-1]


def test_export_and_import_preferences(labeled, tmp_path, capsys):
    out = tmp_path / "prefs.jsonl"
    assert main(["export", str(labeled), str(out), "--kind", "prefs"]) == 0
    assert "exported 5 preference rows (standard)" in capsys.readouterr().out  # 3 from ann, 2 from bo
    assert set(json.loads(out.read_text().splitlines()[0])) == {"prompt", "chosen", "rejected"}

    assert main(["export", str(labeled), str(tmp_path / "bo.parquet"), "--kind", "prefs", "--format", "kway",
                 "--annotator", "bo"]) == 0
    assert "exported 1 preference rows (kway)" in capsys.readouterr().out

    target = new_project(tmp_path, "target")
    assert main(["import", str(target), str(out), "--kind", "prefs"]) == 0
    assert "imported 5 preference rows (standard) from prefs.jsonl: 1 prompts" in capsys.readouterr().out
    assert main(["import", str(target), str(out), "--kind", "prefs"]) == 0
    assert "0 prompts, 0 batches and 0 rankings added, 0 rankings updated, 5 unchanged" in capsys.readouterr().out
    assert main(["import", str(target), str(tmp_path / "bo.parquet"), "--kind", "prefs"]) == 0
    assert "(kway)" in capsys.readouterr().out


def test_invalid_preference_rows_are_listed_and_nothing_is_imported(tmp_path, capsys):
    target = new_project(tmp_path, "target")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Q", "chosen": "A", "rejected": "B"}) + "\n{oops\n")
    assert main(["import", str(target), str(bad), "--kind", "prefs"]) == 1
    err = capsys.readouterr().err
    assert "line 2: this is not valid JSON" in err and "nothing was imported" in err
    assert Project.open(target).counts()["prompts"] == 0
    assert main(["import", str(target), str(bad), "--kind", "prefs", "--valid-only"]) == 0
    assert "skipped 1 invalid rows" in capsys.readouterr().out


def test_packs_out_and_back(labeled, tmp_path, capsys):
    pack = tmp_path / "team.rlhfpack"
    assert main(["export", str(labeled), str(pack), "--kind", "pack"]) == 0
    assert capsys.readouterr().out.strip() == f"exported 1 prompts to {pack}"
    mate = new_project(tmp_path, "mate")
    assert main(["import", str(mate), str(pack), "--kind", "pack"]) == 0
    assert "merged team.rlhfpack: 1 prompts, 1 batches and 0 rankings added" in capsys.readouterr().out

    back = tmp_path / "back.rlhfpack"
    assert main(["export", str(labeled), str(back), "--kind", "pack", "--labels", "--annotator", "ann"]) == 0
    assert "with labels" in capsys.readouterr().out
    assert main(["import", str(mate), str(back), "--kind", "pack"]) == 0
    assert "0 prompts, 0 batches and 1 rankings added" in capsys.readouterr().out
    project = Project.open(mate)
    assert RankingStore(project).annotators() == ["ann"]
    project.close()

    pack.write_text("{\"format\": \"rlhf-workbench-pack\", \"vers")
    assert main(["import", str(mate), str(pack), "--kind", "pack"]) == 1
    assert "team.rlhfpack cannot be imported" in one_error_line(capsys)


@pytest.mark.parametrize("args, message", [
    (["--kind", "prefs", "--format", "messages"], "--format messages does not fit --kind prefs"),
    (["--kind", "sft", "--format", "kway"], "--format kway does not fit --kind sft"),
    (["--kind", "pack", "--format", "standard"], "packs have one format"),
    (["--kind", "prefs", "--labels"], "--labels applies to --kind pack only"),
    (["--kind", "pack", "--annotator", "ann"], "add --labels"),
    (["--annotator", "ann"], "--annotator applies to --kind prefs and --kind pack only"),
])
def test_options_that_do_not_fit_the_kind_are_one_clear_line(labeled, tmp_path, capsys, args, message):
    assert main(["export", str(labeled), str(tmp_path / "out.jsonl"), *args]) == 1
    assert message in one_error_line(capsys)
    assert not (tmp_path / "out.jsonl").exists()


def test_valid_only_does_not_apply_to_packs(labeled, tmp_path, capsys):
    main(["export", str(labeled), str(tmp_path / "p.rlhfpack"), "--kind", "pack"])
    capsys.readouterr()
    assert main(["import", str(labeled), str(tmp_path / "p.rlhfpack"), "--kind", "pack", "--valid-only"]) == 1
    assert "whole or not at all" in one_error_line(capsys)


def test_sft_export_keeps_its_default_format(tmp_path, capsys):
    path = new_project(tmp_path, "sft")
    assert main(["export", str(path), str(tmp_path / "sft.jsonl")]) == 0
    assert "exported 0 SFT examples" in capsys.readouterr().out
