"""Reward-model figures on hand-computed cases."""

import pytest

from workbench.train.reward_eval import evaluate, pearson, prompt_bootstrap_interval, wilson_interval


def pair(annotator, chosen_score, rejected_score, chosen="good answer", rejected="bad", batch="b", prompt_id=1):
    return {"annotator": annotator, "batch": batch, "prompt_id": prompt_id, "prompt": "q", "chosen": chosen,
            "rejected": rejected, "chosen_score": chosen_score, "rejected_score": rejected_score, "distance": 1}


def test_wilson_interval_matches_the_textbook_values():
    # 8 of 10: p = 0.8, z = 1.96 -> (0.490, 0.943)
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(10, 10)[0] == pytest.approx(0.722, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_pearson_on_small_cases():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert pearson([1, 1, 1], [1, 2, 3]) is None and pearson([1, 2], [1, 2]) is None


def test_evaluation_accuracy_per_annotator_worst_first_and_length_warning():
    scored = [pair("ana", 2.0, 1.0, batch="1"), pair("ana", 0.5, 1.5, batch="2"),
              pair("bo", 3.0, -1.0, batch="3"), pair("bo", 1.0, 0.0, batch="4")]
    result = evaluate(scored)
    assert result.pairs == 4 and result.accuracy == 0.75
    assert result.per_annotator == {"ana": (2, 0.5), "bo": (2, 1.0)}
    assert result.mean_margin == pytest.approx((1 - 1 + 4 + 1) / 4)
    assert result.worst[0]["batch"] == "2"  # the pair it gets most wrong comes first
    assert result.length_correlation is not None and result.length_warning  # longer answers score higher here
    assert evaluate([]) is None


def test_pairs_of_one_prompt_count_together_in_the_interval():
    # Two prompts, one ranked all right and one all wrong: 50% of 20 pairs. Wilson, counting 20
    # independent pairs, gives 30%-70%; resampling the two prompts gives 0%, 50% or 100%, so the
    # interval spans all of it: two prompts say nothing about the next one.
    scored = [pair("ana", 1.0, 0.0, prompt_id=1) for _ in range(10)] + [pair("ana", 0.0, 1.0, prompt_id=2)
                                                                       for _ in range(10)]
    result = evaluate(scored)
    assert result.accuracy == 0.5 and result.prompts == 2
    assert (round(result.ci_low, 2), round(result.ci_high, 2)) == (0.0, 1.0)
    assert prompt_bootstrap_interval([(10, 10), (0, 10)]) == (0.0, 1.0)


def test_with_many_prompts_that_each_split_evenly_wilson_is_the_wider_interval():
    # 40 prompts, each with one right and one wrong pair: the prompts agree, so resampling them
    # always gives 50%, and Wilson's interval over 80 pairs is what remains.
    scored = [pair("ana", s, 1 - s, prompt_id=p) for p in range(40) for s in (1.0, 0.0)]
    assert prompt_bootstrap_interval([(1, 2)] * 40) == (0.5, 0.5)
    result = evaluate(scored)
    assert (result.ci_low, result.ci_high) == pytest.approx(wilson_interval(40, 80))
    assert result.prompts == 40


def test_an_evaluation_without_prompt_ids_groups_by_batch():
    # evaluation.json comes from a project's artifacts; one written without prompt ids still
    # evaluates, each batch (one prompt's answers) counting as a prompt.
    scored = [{k: v for k, v in pair("ana", 1.0, 0.0, batch=b).items() if k != "prompt_id"} for b in "abc"]
    result = evaluate(scored)
    assert result.accuracy == 1.0 and result.prompts == 3
