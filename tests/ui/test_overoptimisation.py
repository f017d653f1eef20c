"""The over-optimisation view: what its sentence says for the shapes a run's curve can take,
and the curves and stop line it draws."""

from ui.widgets.overoptimisation import OveroptimisationView, explain
from workbench.train.ppo import PpoConfig
from workbench.train.ppo_heldout import Curve, CurvePoint
from workbench.train.runs import RunRecord
from workbench.project import Project


def points(*rows):
    return [CurvePoint(step, kl, score, accuracy) for step, kl, score, accuracy in rows]


def test_a_policy_that_games_the_reward_model_is_told_where_to_stop():
    shape = Curve(points((0, 0.0, 0.1, 0.5), (10, 1.0, 0.6, 0.72), (20, 2.5, 1.4, 0.58)), stop_step=10)
    text = explain(shape, [10, 20])
    assert "best at step 10 (72% at √KL 1.00)" in text
    assert "score kept rising but agreement fell to 58%" in text and "Stop there" in text
    assert "Nearest kept checkpoint: step 10" in text


def test_still_improving_at_the_end_and_no_human_pairs_say_so():
    rising = Curve(points((0, 0.0, 0.1, 0.5), (10, 1.0, 0.6, 0.7)), stop_step=10)
    assert "more steps may help" in explain(rising, [])
    worse = Curve(points((0, 0.0, 3.5, 0.5), (10, 1.2, 3.6, 0.47), (16, 2.3, 3.0, 0.44)), stop_step=0)
    assert "made the policy worse" in explain(worse, [])  # bench/efficacy.py's first PPO run
    unrated = Curve(points((0, 0.0, 0.1, None), (10, 1.0, 0.6, None)), stop_step=None)
    assert "no held-out human pairs" in explain(unrated, [])
    assert "no held-out evaluations" in explain(None, [])


def test_the_view_draws_both_curves_and_the_stop_line(qtbot, tmp_path):
    project = Project.create(tmp_path / "p")
    record = RunRecord.create(project, "ppo", PpoConfig().to_dict())
    for step, (score, kl, accuracy) in enumerate([(0.0, 0.0, 0.5), (0.5, 1.0, 0.7), (1.2, 4.0, 0.6)]):
        record.add_metrics(step * 10, {"heldout/score": score, "heldout/kl": kl, "heldout/sqrt_kl": kl ** 0.5,
                                       "heldout/pair_accuracy": accuracy})
    view = OveroptimisationView()
    qtbot.addWidget(view)
    view.show_run(record)
    assert view.shape.stop_step == 10
    drawn = {(plot, type(item).__name__) for plot, item in view._items}
    assert (view.score_plot, "PlotDataItem") in drawn and (view.agreement_plot, "PlotDataItem") in drawn
    stops = [item for _, item in view._items if type(item).__name__ == "InfiniteLine" and item.angle == 90]
    assert len(stops) == 2 and all(line.value() == 1.0 for line in stops)
    view.show_run(None)
    assert view._items == [] and "No PPO run yet" in view.summary.text()
    project.close()
