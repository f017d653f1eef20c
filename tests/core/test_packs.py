"""Labeling packs: out to a teammate and back, merged in any order, malformed ones refused."""

import json

import pytest

from workbench.data.packs import PACK_FORMAT, PACK_VERSION, export_pack, import_pack
from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.errors import WorkbenchError
from workbench.project import Project

MULTI_TURN = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Where is my parcel?"}]


def snapshot(project) -> dict:
    return {table: project.query(f"SELECT * FROM {table} ORDER BY 1")
            for table in ("prompts", "responses", "rankings", "sft_examples", "meta")}


def rankings_by_uid(project) -> list[tuple]:
    """The rankings table with response ids turned into uids: comparable between projects."""
    uid = dict(project.query("SELECT id, uid FROM responses"))
    rows = project.query("SELECT batch, annotator, ranking, shown_order, all_bad, seconds_spent, source, "
                         "created_at, updated_at FROM rankings ORDER BY batch, annotator")
    return [(b, a, [[uid[i] for i in g] for g in json.loads(r)], [uid[i] for i in json.loads(s)], *rest)
            for b, a, r, s, *rest in rows]


@pytest.fixture
def lead(tmp_path):
    project = Project.create(tmp_path / "lead.rlhf", name="Lead")
    prompts, rankings = PromptStore(project), RankingStore(project)
    first = prompts.add("Where is my order?", tags=["shipping"])
    second = prompts.add(MULTI_TURN, tags=["chat", "fr"])
    prompts.add("No responses yet")
    batch = rankings.add_batch(first, ["a", "b", "c"], [{"source": "base", "seed": i} for i in range(3)])
    rankings.add_batch(second, ["x", "y"], [{"source": "sft-run-1", "seed": 7}] * 2)
    ids = [r.id for r in batch.responses]
    rankings.save_ranking(batch.uid, "lead", [[ids[2]], [ids[0], ids[1]]], seconds_spent=4, at=50.0)
    return project


def batches(project):
    store = RankingStore(project)
    return [store.batch(uid) for uid in store.batches()]


def rank(project, batch, annotator, order, at, all_bad=False):
    """Rank by generation positions, shown in a shuffled (reversed) order."""
    ids = [r.id for r in batch.responses]
    return RankingStore(project).save_ranking(batch.uid, annotator, [[ids[p]] for p in order], all_bad=all_bad,
                                              shown_order=list(reversed(ids)), seconds_spent=3, at=at)


def test_a_pack_round_trips_into_another_project(lead, tmp_path):
    path = tmp_path / "team.rlhfpack"
    assert export_pack(lead, path) == 3
    pack = json.loads(path.read_text(encoding="utf-8"))
    assert (pack["format"], pack["version"], pack["project"], pack["labels"]) == (PACK_FORMAT, PACK_VERSION,
                                                                                 "Lead", False)
    assert all(not b["rankings"] for p in pack["prompts"] for b in p["batches"])
    assert not list(tmp_path.glob(".*tmp"))  # written atomically: no temporary file left

    mate = Project.create(tmp_path / "mate.rlhf")
    assert import_pack(mate, path) == dict(prompts_added=3, batches_added=2, rankings_added=0, rankings_updated=0,
                                           rankings_unchanged=0, rankings_kept=0)
    for sql in ("SELECT uid, text, messages, tags FROM prompts ORDER BY id",
                "SELECT uid, batch, position, text, generator FROM responses ORDER BY id"):
        assert mate.query(sql) == lead.query(sql)
    assert {row[0] for row in mate.query("SELECT source FROM prompts")} == {"team.rlhfpack"}


def test_a_teammates_labels_come_back_attributed_to_them(lead, tmp_path):
    export_pack(lead, tmp_path / "out.rlhfpack")
    mate = Project.create(tmp_path / "mate.rlhfpack.rlhf")
    import_pack(mate, tmp_path / "out.rlhfpack")
    first, second = batches(mate)
    rank(mate, first, "tina", [1, 0, 2], at=100.0)
    rank(mate, second, "tina", [1, 0], at=110.0, all_bad=True)
    rank(mate, second, "someone", [0, 1], at=120.0)
    assert export_pack(mate, tmp_path / "back.rlhfpack", with_labels=True, annotator="tina") == 3

    summary = import_pack(lead, tmp_path / "back.rlhfpack")
    assert (summary["prompts_added"], summary["batches_added"], summary["rankings_added"]) == (0, 0, 2)
    store = RankingStore(lead)
    assert store.annotators() == ["lead", "tina"]
    lead_first, lead_second = batches(lead)
    text = {r.id: r.text for b in (lead_first, lead_second) for r in b.responses}
    tina = store.ranking(lead_first.uid, "tina")
    assert [[text[i] for i in g] for g in tina.groups] == [["b"], ["a"], ["c"]]
    assert [text[i] for i in tina.shown_order] == ["c", "b", "a"]
    assert (tina.source, tina.seconds_spent, tina.updated_at) == ("back.rlhfpack", 3, 100.0)
    assert store.ranking(lead_second.uid, "tina").all_bad
    assert store.ranking(lead_first.uid, "lead").source == ""  # the lead's own label is untouched

    before = snapshot(lead)
    for _ in range(2):
        again = import_pack(lead, tmp_path / "back.rlhfpack")
        assert (again["rankings_added"], again["rankings_updated"], again["rankings_unchanged"]) == (0, 0, 2)
    assert snapshot(lead) == before


def test_two_packs_in_either_order_give_the_same_rankings(lead, tmp_path):
    export_pack(lead, tmp_path / "base.rlhfpack")
    mates = []
    for name in ("one", "two"):
        mate = Project.create(tmp_path / f"{name}.rlhf")
        import_pack(mate, tmp_path / "base.rlhfpack")
        mates.append(mate)
    (one_first, one_second), (two_first, two_second) = batches(mates[0]), batches(mates[1])
    rank(mates[0], one_first, "dana", [0, 1, 2], at=100.0)   # older: loses to two's
    rank(mates[1], two_first, "dana", [2, 1, 0], at=200.0)
    rank(mates[0], one_second, "finn", [0, 1], at=300.0)     # same time: the larger content wins
    rank(mates[1], two_second, "finn", [1, 0], at=300.0)
    rank(mates[1], two_second, "eve", [1, 0], at=250.0)
    export_pack(mates[0], tmp_path / "one.rlhfpack", with_labels=True)
    export_pack(mates[1], tmp_path / "two.rlhfpack", with_labels=True)

    merged = []
    for order in (("one", "two"), ("two", "one")):
        target = lead.save_as(tmp_path / f"merge-{order[0]}.rlhf")
        for name in order:
            import_pack(target, tmp_path / f"{name}.rlhfpack")
        merged.append(rankings_by_uid(target))
    assert merged[0] == merged[1]
    dana = next(r for r in merged[0] if r[1] == "dana")
    assert dana[-1] == 200.0 and dana[6] == "two.rlhfpack"
    assert sorted(r[1] for r in merged[0]) == ["dana", "eve", "finn", "lead"]


def test_export_a_subset_and_refuse_unknown_prompts(lead, tmp_path):
    first_id = lead.query("SELECT MIN(id) FROM prompts")[0][0]
    assert export_pack(lead, tmp_path / "one.rlhfpack", prompt_ids=[first_id], with_labels=True) == 1
    pack = json.loads((tmp_path / "one.rlhfpack").read_text(encoding="utf-8"))
    [prompt] = pack["prompts"]
    assert prompt["tags"] == ["shipping"] and prompt["batches"][0]["rankings"][0]["annotator"] == "lead"
    with pytest.raises(WorkbenchError, match="Prompt 999 does not exist"):
        export_pack(lead, tmp_path / "x.rlhfpack", prompt_ids=[999])
    with pytest.raises(WorkbenchError, match="include labels"):
        export_pack(lead, tmp_path / "x.rlhfpack", annotator="lead")


# ---------------------------------------------------------------- refusing bad packs


def _first_batch(pack):
    return pack["prompts"][0]["batches"][0]


def _set(path, value):
    def change(pack):
        target = pack
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


BAD_PACKS = {
    "wrong marker": (_set(["format"], "something-else"), "not a workbench labeling pack"),
    "newer version": (_set(["version"], PACK_VERSION + 1), "newer version of RLHF Workbench"),
    "no version": (_set(["version"], "1"), "version is missing"),
    "no prompts": (_set(["prompts"], {}), "no list of prompts"),
    "prompt without uid": (_set(["prompts", 0, "uid"], ""), "prompt 1 has no uid"),
    "prompt ends with assistant": (_set(["prompts", 0, "messages"], [{"role": "assistant", "content": "x"}]),
                                   "prompt 1: a prompt must end"),
    "repeated uid": (_set(["prompts", 1, "uid"], None), "prompt 2 has no uid"),
    "response without generator": (_set(["prompts", 0, "batches", 0, "responses", 0, "generator"], "base"),
                                   "needs a text and a generator"),
    "bad positions": (_set(["prompts", 0, "batches", 0, "responses", 0, "position"], 5), "positions must be 0 to 2"),
    "ranking misses a response": (lambda p: _first_batch(p)["rankings"][0]["groups"].pop(),
                                  "does not rank exactly the responses of its batch"),
    "ranking names a stranger": (lambda p: _first_batch(p)["rankings"][0]["groups"][0].append("stranger"),
                                 "does not rank exactly"),
    "ranking without time": (lambda p: _first_batch(p)["rankings"][0].pop("updated_at"), "updated_at must be"),
    "two rankings by one annotator": (lambda p: _first_batch(p)["rankings"].append(_first_batch(p)["rankings"][0]),
                                      "needs an annotator name of its own"),
}


@pytest.mark.parametrize("case", BAD_PACKS)
def test_malformed_packs_are_refused_and_change_nothing(lead, tmp_path, case):
    change, message = BAD_PACKS[case]
    path = tmp_path / "bad.rlhfpack"
    export_pack(lead, path, with_labels=True)
    pack = json.loads(path.read_text(encoding="utf-8"))
    if case == "repeated uid":
        change = _set(["prompts", 1, "uid"], pack["prompts"][0]["uid"])
        message = "prompt 2 repeats the uid"
    change(pack)
    path.write_text(json.dumps(pack), encoding="utf-8")
    target = Project.create(tmp_path / "target.rlhf")
    before = snapshot(target)
    with pytest.raises(WorkbenchError, match=message) as caught:
        import_pack(target, path)
    assert str(caught.value).startswith("bad.rlhfpack cannot be imported: ")
    assert str(caught.value).endswith("; nothing was changed.")
    assert snapshot(target) == before


def test_truncated_and_non_json_packs_are_refused(lead, tmp_path):
    path = tmp_path / "cut.rlhfpack"
    export_pack(lead, path, with_labels=True)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = snapshot(lead)
    with pytest.raises(WorkbenchError, match="not complete JSON .* truncated"):
        import_pack(lead, path)
    path.write_bytes(b"\xff\xfe binary")
    with pytest.raises(WorkbenchError, match="not UTF-8"):
        import_pack(lead, path)
    with pytest.raises(WorkbenchError, match="Cannot read"):
        import_pack(lead, tmp_path / "missing.rlhfpack")
    assert snapshot(lead) == before


def test_packs_inconsistent_with_the_project_are_refused(lead, tmp_path):
    path = tmp_path / "clash.rlhfpack"
    export_pack(lead, path, with_labels=True)
    good = json.loads(path.read_text(encoding="utf-8"))
    before = snapshot(lead)

    moved = json.loads(json.dumps(good))  # a known response under a new batch
    _first_batch(moved)["uid"] = "new-batch"
    path.write_text(json.dumps(moved), encoding="utf-8")
    with pytest.raises(WorkbenchError, match="already in the project under a different prompt or batch"):
        import_pack(lead, path)

    grown = json.loads(json.dumps(good))  # a known batch with a response the project lacks
    batch = _first_batch(grown)
    batch["responses"].append({"uid": "extra", "position": 3, "text": "d", "generator": {}})
    for ranking in batch["rankings"]:
        ranking["groups"].append(["extra"])
        ranking["shown_order"].append("extra")
    path.write_text(json.dumps(grown), encoding="utf-8")
    with pytest.raises(WorkbenchError, match="holds different responses in the project"):
        import_pack(lead, path)

    rehomed = json.loads(json.dumps(good))  # a known batch under another prompt
    rehomed["prompts"][0]["uid"] = "another-prompt"
    path.write_text(json.dumps(rehomed), encoding="utf-8")
    with pytest.raises(WorkbenchError, match="under a different prompt or batch"):
        import_pack(lead, path)
    assert snapshot(lead) == before
