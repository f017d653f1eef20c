"""Advice beside Start: too little data for a reward model, a weak or length-biased one before PPO."""

from workbench.data.prompts import PromptStore
from workbench.data.rankings import RankingStore
from workbench.project import Project
from workbench.train.guidance import FEW_RANKED_PROMPTS, ppo_reward_advice, reward_data_advice
from workbench.train.reward_eval import RewardEvaluation


def test_few_ranked_prompts_are_named_with_what_to_do(tmp_path):
    project = Project.create(tmp_path / "few.rlhf")
    store = RankingStore(project)
    for n in range(4):
        batch = store.add_batch(PromptStore(project).add(f"Question {n}"), ["a", "b"], [{}, {}])
        store.save_ranking(batch.uid, "ana", [[batch.responses[0].id], [batch.responses[1].id]])
    advice = reward_data_advice(project)
    assert advice.startswith("Only 4 prompts are ranked") and "Least sure first" in advice
    for n in range(4, FEW_RANKED_PROMPTS):
        batch = store.add_batch(PromptStore(project).add(f"Question {n}"), ["a", "b"], [{}, {}])
        store.save_ranking(batch.uid, "ana", [[batch.responses[0].id], [batch.responses[1].id]])
    assert reward_data_advice(project) == ""
    project.close()


def test_a_weak_or_length_biased_reward_model_is_warned_about():
    weak = RewardEvaluation(pairs=30, accuracy=0.67, ci_low=0.49, ci_high=0.81, mean_margin=0.1,
                            length_correlation=0.8)
    advice = ppo_reward_advice(weak)
    assert "67% of held-out pairs" in advice and "r = +0.80" in advice and advice.startswith("Weak reward model")
    sound = RewardEvaluation(pairs=300, accuracy=0.84, ci_low=0.79, ci_high=0.88, mean_margin=0.9,
                             length_correlation=0.1)
    assert ppo_reward_advice(sound) == ""
    assert "unknown" in ppo_reward_advice(None)


def test_the_last_samples_of_a_run_survive_a_damaged_file(tmp_path):
    from workbench.train.ppo import SAMPLES_FILE, last_samples

    assert last_samples(tmp_path) is None
    (tmp_path / SAMPLES_FILE).write_text('{"step": 1, "prompt": "a"}\nnot json\n[1]\n{"step": "x"}\n'
                                         '{"step": 2, "prompt": "b"}\n{"step": 2, "prompt": "c"}\n', encoding="utf-8")
    assert last_samples(tmp_path) == (2, [{"step": 2, "prompt": "b"}, {"step": 2, "prompt": "c"}])


def test_a_run_time_is_estimated_from_the_steps_measured_here(tmp_path):
    from workbench.train.guidance import run_time_advice
    from workbench.train.runs import RunRecord

    project = Project.create(tmp_path / "time.rlhf")
    assert run_time_advice(project, "rm", 100) == ""  # nothing measured yet
    record = RunRecord.create(project, "rm", {})
    for step, seconds in enumerate((9.0, 10.0, 30.0), 1):  # the median, not a slow first step
        record.add_metrics(step, {"time/step_s": seconds})
    assert run_time_advice(project, "rm", 60) == "About 10 min (60 steps at 10.0 s a step, as measured in earlier runs here)."
    assert run_time_advice(project, "sft", 60) == ""
    project.close()


def test_the_reward_verdict_says_chance_weak_or_good_from_the_interval():
    from workbench.train.guidance import reward_verdict
    from workbench.train.reward_eval import RewardEvaluation, wilson_interval

    def evaluation(right, pairs):
        low, high = wilson_interval(right, pairs)
        return RewardEvaluation(pairs, right / pairs, low, high, 0.1)

    assert "Not yet better than chance" in reward_verdict(evaluation(7, 10))   # 70% of 10: interval reaches 40%
    assert "weak" in reward_verdict(evaluation(65, 100))                        # 65% of 100: 55%-74%
    assert "Good enough" in reward_verdict(evaluation(80, 100))
