"""The SFT store: queries the table view relies on, and edits with exact inverses (undo)."""

import time

import pytest

from workbench.data.sft_store import SftStore
from workbench.project import Project


def chat(prompt: str, reply: str, system: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]


@pytest.fixture
def store(tmp_path):
    project = Project.create(tmp_path / "p")
    yield SftStore(project)
    project.close()


def test_rows_show_first_prompt_last_reply_and_flags(store):
    first = store.add(chat("Where is my order?", "It ships today.", system="Be kind."))
    empty = store.add(chat("Hello", "   "))
    twin_a = store.add(chat("Same", "Same answer"))
    twin_b = store.add(chat("Same", "Same answer"))
    rows = store.rows([first, empty, twin_a])
    assert (rows[first].prompt, rows[first].response, rows[first].turns) == ("Where is my order?", "It ships today.", 3)
    assert rows[empty].has_empty and not rows[first].has_empty
    assert store.duplicate_digests() == {rows[twin_a].digest}
    assert store.ids(filter="duplicates") == [twin_a, twin_b]
    assert store.ids(filter="empty") == [empty]
    assert (store.count(), store.count(filter="empty"), store.count(filter="duplicates")) == (4, 1, 2)


def test_search_sort_and_special_characters(store):
    a = store.add(chat("banana question", "b"))
    b = store.add(chat("apple question", "a longer answer"))
    c = store.add(chat("100% sure_thing", "c"), source="import.jsonl")
    assert store.ids(search="question") == [a, b]
    assert store.ids(search="100%") == [c] and store.ids(search="e_t") == [c]
    assert store.ids(search="import.jsonl") == [c]  # the source is searched too
    assert store.ids(sort="prompt") == [c, b, a]
    assert store.ids(sort="length", descending=True)[0] == b


def test_every_edit_has_an_exact_inverse(store):
    ids = store.add_many([chat(f"q{i}", f"a{i}") for i in range(3)], source="batch")
    before = store.stored(ids)
    store.update(ids[0], chat("changed", "changed"))
    assert store.messages(ids[0])[0]["content"] == "changed"
    store.update(ids[0], before[0].messages)
    removed = store.delete(ids[1:])
    assert store.ids() == [ids[0]]
    store.restore(removed)
    after = store.stored(ids)
    assert [(e.id, e.messages, e.source, e.created_at) for e in after] == \
        [(e.id, e.messages, e.source, e.created_at) for e in before]


def test_add_many_is_all_or_nothing(store):
    store.add(chat("kept", "kept"))
    with pytest.raises(ValueError, match="message 2 needs a role"):
        store.add_many([chat("ok", "ok"), [{"role": "user", "content": "x"}, {"role": "bot", "content": "y"}]])
    assert store.count() == 1


def test_100k_examples_stay_fast(store):
    store.add_many(chat(f"question {i} about order {i % 97}", "answer " * (i % 13 + 1)) for i in range(100_000))
    started = time.perf_counter()
    ids = store.ids(sort="response", descending=True)
    sort_s = time.perf_counter() - started
    started = time.perf_counter()
    found = store.ids(search="order 42")
    search_s = time.perf_counter() - started
    started = time.perf_counter()
    store.rows(ids[50_000:50_060])
    page_s = time.perf_counter() - started
    assert len(ids) == 100_000 and len(found) > 1000
    # Generous bounds for a slow CI machine; typical figures are a tenth of these.
    assert sort_s < 3 and search_s < 3 and page_s < 0.2, (sort_s, search_s, page_s)
