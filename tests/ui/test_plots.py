import math

import numpy as np
import pytest

from ui.plots import MetricsView, debiased_ema


def tensorboard_smoothing(values, weight):
    """TensorBoard's loop, written out plainly, as the reference."""
    last, count, out = 0.0, 0, []
    for value in values:
        if not math.isfinite(value):
            out.append(value)
            continue
        last = last * weight + (1 - weight) * value
        count += 1
        out.append(last / (1 - weight ** count))
    return np.array(out)


@pytest.fixture
def view(qtbot):
    view = MetricsView()
    qtbot.addWidget(view)
    view.resize(900, 600)
    view.show()
    return view


def wait_drawn(qtbot, view, run_id, key, n):
    # Plots are drawn one per timer pass: wait for this curve and for every other pending one.
    qtbot.waitUntil(lambda: len(view.curve_data(run_id, key)[0]) == n and not view.pending, timeout=3000)


def test_points_appear_after_the_timer_fires(view, qtbot):
    view.set_smoothing(0)
    view.add_points(1, [("loss/train", 1, 2.0), ("lr", 1, 1e-4), ("loss/train", 2, 1.5)])
    assert len(view.curve_data(1, "loss/train")[0]) == 0  # nothing drawn by add_points itself
    wait_drawn(qtbot, view, 1, "loss/train", 2)
    x, y = view.curve_data(1, "loss/train")
    assert x.tolist() == [1, 2] and y.tolist() == [2.0, 1.5]
    assert view.keys() == ["loss/train", "lr"]
    assert view.plot_item("lr").titleLabel.text == "lr"


def test_a_burst_of_points_is_coalesced_into_a_few_redraws(view, qtbot):
    view.set_smoothing(0)
    for step in range(1000):
        view.add_points(1, [("loss/train", step, step * 0.5), ("time/step_s", step, 0.1)])
    wait_drawn(qtbot, view, 1, "loss/train", 1000)
    qtbot.wait(150)  # give any stray extra redraw the chance to happen
    assert 1 <= view.redraws <= 5
    x, y = view.curve_data(1, "loss/train")
    assert np.array_equal(x, np.arange(1000)) and np.array_equal(y, np.arange(1000) * 0.5)
    assert len(view.curve_data(1, "time/step_s")[0]) == 1000


def test_plot_and_curve_items_are_created_once_and_updated_in_place(view, qtbot):
    view.add_points(1, [("loss/train", 0, 1.0)])
    wait_drawn(qtbot, view, 1, "loss/train", 1)
    plot = view.plot_item("loss/train")
    curves = view.curve_items(1, "loss/train")
    items_before = list(plot.listDataItems())

    view.add_points(1, [("loss/train", step, 1.0 / step) for step in range(1, 500)])
    view.add_points(1, [("loss/validation", 100, 0.8)])  # a new key sorted before: plots move, not rebuilt
    wait_drawn(qtbot, view, 1, "loss/train", 500)
    wait_drawn(qtbot, view, 1, "loss/validation", 1)

    assert view.plot_item("loss/train") is plot
    assert view.curve_items(1, "loss/train")[0] is curves[0]
    assert view.curve_items(1, "loss/train")[1] is curves[1]
    assert list(plot.listDataItems()) == items_before


def test_plots_are_laid_out_in_key_order(view, qtbot):
    view.add_points(1, [("time/step_s", 1, 0.2), ("lr", 1, 1e-4), ("loss/train", 1, 2.0)])
    view.add_points(1, [("loss/validation", 1, 2.1)])
    wait_drawn(qtbot, view, 1, "loss/validation", 1)
    grid = view._grid
    placed = {}
    for key in view.keys():
        index = grid.indexOf(view.plot_item(key).getViewWidget())
        placed[grid.getItemPosition(index)[:2]] = key
    assert [placed[position] for position in sorted(placed)] == ["loss/train", "loss/validation", "lr", "time/step_s"]


def test_smoothing_changes_the_drawn_curve_but_not_the_raw_data(view, qtbot):
    rng = np.random.default_rng(0)
    values = 2.0 * np.exp(-np.arange(300) / 100) + rng.normal(0, 0.2, 300)
    values[150] = np.nan  # a diverged step must not poison what follows
    view.set_smoothing(0.9)
    view.add_points(1, [("loss/train", step, v) for step, v in enumerate(values[:200])])
    wait_drawn(qtbot, view, 1, "loss/train", 200)
    view.add_points(1, [("loss/train", step, v) for step, v in enumerate(values[200:], start=200)])
    wait_drawn(qtbot, view, 1, "loss/train", 300)  # smoothed incrementally across two redraws

    _, smoothed = view.curve_data(1, "loss/train")
    np.testing.assert_allclose(smoothed, tensorboard_smoothing(values, 0.9), rtol=1e-9)
    raw_curve, smooth_curve = view.curve_items(1, "loss/train")
    np.testing.assert_array_equal(raw_curve.getOriginalDataset()[1], values)  # the faint raw curve
    assert raw_curve.opts["pen"].color().alpha() < 100 < smooth_curve.opts["pen"].color().alpha()

    view.smoothing_slider.setValue(0)  # the toolbar control drives the same setting
    qtbot.waitUntil(lambda: np.array_equal(view.curve_data(1, "loss/train")[1], values, equal_nan=True), timeout=3000)
    np.testing.assert_array_equal(raw_curve.getOriginalDataset()[1], values)


def test_the_vectorised_smoothing_matches_tensorboard_over_many_chunks():
    values = np.random.default_rng(1).normal(size=5000)
    for weight in (0.0, 0.3, 0.6, 0.99):
        smoothed, _, _ = debiased_ema(values, weight)
        np.testing.assert_allclose(smoothed, tensorboard_smoothing(values, weight), rtol=1e-9, atol=1e-12)


def test_two_runs_overlay_in_their_own_colours_and_can_be_hidden(view, qtbot):
    view.set_run_history(1, "sft lr 2e-4", {"loss/train": ([1, 2, 3], [3.0, 2.0, 1.0])})
    view.set_run_history(2, "sft lr 1e-4", {"loss/train": ([1, 2, 3], [3.0, 2.5, 2.0])})
    wait_drawn(qtbot, view, 2, "loss/train", 3)
    first, second = view.curve_items(1, "loss/train")[1], view.curve_items(2, "loss/train")[1]
    assert first.opts["pen"].color() != second.opts["pen"].color()
    assert first.isVisible() and second.isVisible()
    assert "sft lr 2e-4" in view.legend.text() and "sft lr 1e-4" in view.legend.text()

    view.show_runs([1])
    assert first.isVisible() and not second.isVisible()
    assert not view.curve_items(2, "loss/train")[0].isVisible()
    assert "sft lr 1e-4" not in view.legend.text()
    assert "sft lr 1e-4" not in view.readout_at("loss/train", 2)

    view.add_points(2, [("loss/train", 4, 1.5)])  # data for a hidden run is kept
    view.show_runs([1, 2])
    wait_drawn(qtbot, view, 2, "loss/train", 4)
    assert second.isVisible() and view.curve_items(2, "loss/train")[1] is second


def test_set_run_history_replaces_a_runs_data(view, qtbot):
    view.set_smoothing(0)
    view.add_points(1, [("loss/train", s, 9.0) for s in range(10)] + [("lr", 0, 1e-4)])
    wait_drawn(qtbot, view, 1, "loss/train", 10)
    view.set_run_history(1, "from the project", {"loss/train": ([0, 5], [1.0, 0.5])})
    wait_drawn(qtbot, view, 1, "loss/train", 2)
    assert view.curve_data(1, "loss/train")[1].tolist() == [1.0, 0.5]
    assert len(view.curve_data(1, "lr")[0]) == 0  # a key the history lacks is emptied
    assert "from the project" in view.legend.text()


def test_a_resumed_run_relogging_its_last_step_replaces_it(view, qtbot):
    view.set_smoothing(0)
    view.add_points(1, [("loss/train", 1, 2.0), ("loss/train", 2, 1.8)])
    view.add_points(1, [("loss/train", 2, 1.7), ("loss/train", 3, 1.6)])
    wait_drawn(qtbot, view, 1, "loss/train", 3)
    assert view.curve_data(1, "loss/train")[1].tolist() == [2.0, 1.7, 1.6]


def test_readout_gives_the_nearest_point_of_each_shown_run(view, qtbot):
    view.set_smoothing(0)
    view.set_run_history(1, "A", {"loss/train": ([0, 10, 20], [1.0, 0.5, 0.25])})
    view.set_run_history(2, "B", {"loss/train": ([0, 15], [2.0, 1.0])})
    assert view.readout_at("loss/train", 11.2) == "loss/train   A @ 10: 0.5   B @ 15: 1"
    assert view.readout_at("loss/train", 19) == "loss/train   A @ 20: 0.25   B @ 15: 1"
    assert view.readout_at("lr", 3) == ""
    view.set_smoothing(0.5)
    assert view.readout_at("loss/train", 10) .startswith("loss/train   A @ 10: 0.6667 (raw 0.5)")


def test_empty_state_before_data_and_after_clear(view, qtbot):
    assert view.empty_label.isVisible()
    view.add_points(1, [("objective/reward", 1, 0.3)])
    qtbot.waitUntil(lambda: not view.empty_label.isVisible(), timeout=3000)
    assert view.plot_item("objective/reward").getViewWidget().isVisible()
    view.clear()
    assert view.empty_label.isVisible() and view.keys() == [] and view.legend.text() == ""
    view.add_points(3, [("objective/kl", 1, 0.01)])  # usable again after clearing
    wait_drawn(qtbot, view, 3, "objective/kl", 1)


def test_a_hidden_view_keeps_points_and_draws_them_when_shown(view, qtbot):
    view.hide()
    view.add_points(1, [("loss/train", 1, 2.0), ("lr", 1, 0.1)])
    qtbot.wait(250)  # timer passes while hidden draw nothing
    assert view.pending and len(view.curve_data(1, "loss/train")[0]) == 0
    view.show()
    wait_drawn(qtbot, view, 1, "loss/train", 1)
    assert len(view.curve_data(1, "lr")[0]) == 1


def test_long_curves_are_clipped_and_downsampled_to_the_pixels_on_screen(view, qtbot):
    # PlotItem.addItem overrides a curve's own settings, so this checks what actually applies.
    view.add_points(1, [("loss/train", step, float(step % 7)) for step in range(100_000)])
    wait_drawn(qtbot, view, 1, "loss/train", 100_000)
    view.grab()  # paint, which computes what is displayed
    for curve in view.curve_items(1, "loss/train"):
        assert curve.opts["clipToView"] and curve.opts["autoDownsample"]
        assert len(curve.getData()[0]) < 10_000  # what is drawn, not what is stored


def test_a_new_live_run_changes_the_plots_one_per_timer_pass(view, qtbot):
    """Starting a live run (forget the shown run, fix the x axis) repainted every plot at once:
    60-150 ms of frozen window. Now nothing changes until the timer, then one plot per pass."""
    keys = [f"metric/{i}" for i in range(6)]
    view.set_run_history(1, "run 1", {key: ([1, 2, 3], [1.0, 2.0, 3.0]) for key in keys})
    view.show_runs([1])
    qtbot.waitUntil(lambda: not view.pending, timeout=3000)
    old = {key: view.curve_items(1, key) for key in keys}

    view.forget_runs()
    view.set_step_range(50)
    assert all(old[key][0] in view.plot_item(key).items for key in keys)  # untouched until the timer
    assert view.pending
    view._redraw()  # one pass: the first plot only
    changed = [key for key in keys if old[key][0] not in view.plot_item(key).items]
    assert changed == [keys[0]]
    assert view.plot_item(keys[0]).getViewBox().viewRange()[0][1] == pytest.approx(51, abs=0.1)

    qtbot.waitUntil(lambda: not view.pending, timeout=3000)
    for key in keys:
        assert not set(old[key]) & set(view.plot_item(key).items)
        low, high = view.plot_item(key).getViewBox().viewRange()[0]
        assert low == pytest.approx(-1, abs=0.1) and high == pytest.approx(51, abs=0.1)
    view.add_points(2, [(key, 1, 5.0) for key in keys])
    wait_drawn(qtbot, view, 2, keys[-1], 1)


def test_a_tiny_drift_is_not_drawn_as_a_swing_and_small_ticks_are_labelled(view, qtbot):
    """kl/coef moving 0.2% around 0.05 spans at least 5% of its value vertically, and a learning
    rate of 1e-4 gets readable tick labels ("0.0001", not "0.00010" dropped for want of room)."""
    view.set_smoothing(0)
    view.add_points(1, [("kl/coef", step, 0.05 + 1e-4 * math.sin(step / 3)) for step in range(1, 41)])
    view.add_points(1, [("train/lr", step, 1e-4 * step / 40) for step in range(1, 41)])
    view.add_points(1, [("kl/coef", 41, math.inf), ("kl/coef", 42, math.nan)])  # a diverged step changes nothing
    wait_drawn(qtbot, view, 1, "kl/coef", 42)
    low, high = view.plot_item("kl/coef").getViewBox().viewRange()[1]
    assert high - low >= 0.05 * 0.05 and low < 0.0499 and high > 0.0501
    axis = view.plot_item("train/lr").getAxis("left")
    assert axis.tickStrings([0.0, 5e-5, 1e-4], 1.0, 5e-5) == ["0", "5e-05", "0.0001"]
    assert axis.tickStrings([0.0495, 0.05, 0.0505], 1.0, 5e-4) == ["0.0495", "0.05", "0.0505"]
    assert axis.tickStrings([10000.0, 12000.0], 1.0, 2000.0) == ["10000", "12000"]
    assert axis.tickStrings([0.0, 2.5, 5.0], 1.0, 2.5) == ["0", "2.5", "5"]


def test_a_metric_with_one_point_is_drawn_as_a_dot(view, qtbot):
    view.add_points(1, [("loss/validation", 5, 0.7)])
    qtbot.waitUntil(lambda: not view.pending)
    assert view.curve_items(1, "loss/validation")[1].opts["symbol"] == "o"  # before: nothing drawn
    view.add_points(1, [("loss/validation", 10, 0.6)])
    qtbot.waitUntil(lambda: not view.pending)
    assert view.curve_items(1, "loss/validation")[1].opts["symbol"] is None  # a line again
