"""bench/efficacy.py's scripted teammate ranks by what its rule says, and nothing else."""

import json

from bench import efficacy

RULE = efficacy.RULES["apology-next-step"]
PROMPT = "My order hasn't arrived. What should I do?"


def test_each_part_means_what_it_says():
    assert RULE.parts(PROMPT, "I'm so sorry about the delay.")[:2] == (True, False)
    assert RULE.parts(PROMPT, "Apologies for the inconvenience.")[:2] == (True, False)
    # "understand" and "unfortunately" in another sense are no apology; "you can" is no next step.
    assert RULE.parts(PROMPT, "First, you have to understand how shipping works.")[:2] == (False, False)
    assert RULE.parts(PROMPT, "Unfortunately, you can find it online.")[:2] == (False, False)
    assert RULE.parts(PROMPT, "Please send us your order number and I will check it today.")[:2] == (False, True)
    # The looser rule of earlier runs took both of those as an apology and a next step.
    broad = efficacy.RULES["broad-with-topic"]
    assert broad.parts(PROMPT, "Unfortunately, you can find it online.")[:2] == (True, True)


def test_scores_and_the_part_that_decides_a_pair():
    sorry, step = "Sorry for the trouble.", "Please contact customer service."
    both = f"{sorry} {step}"
    assert (RULE.score(PROMPT, both), RULE.score(PROMPT, sorry), RULE.score(PROMPT, step)) == (3.0, 2.0, 1.0)
    assert RULE.deciding_part(PROMPT, sorry, step) == "apology"
    assert RULE.deciding_part(PROMPT, both, sorry) == "next step"
    # The on-topic part weighs nothing in this rule, so it never decides a pair.
    assert RULE.deciding_part(PROMPT, "My order is late.", "Hello.") == "none"


def test_a_pack_is_ranked_best_first_with_equal_scores_tied(tmp_path):
    replies = ["Sorry for the trouble.", "Hello there.", "Sorry! Please reply with your order number.", "Hi."]
    pack = {"prompts": [{"messages": [{"role": "user", "content": PROMPT}],
                         "batches": [{"responses": [{"uid": f"r{i}", "text": t} for i, t in enumerate(replies)]}]}]}
    path = tmp_path / "pack.json"
    path.write_text(json.dumps(pack))
    assert efficacy.rank_pack(path, RULE) == (1, 1)
    ranked = json.loads(path.read_text())
    [ranking] = ranked["prompts"][0]["batches"][0]["rankings"]
    assert ranking["groups"] == [["r2"], ["r0"], ["r1", "r3"]] and ranking["annotator"] == efficacy.TEAMMATE
    assert ranked["labels"] is True
