"""Live training metrics: a grid of small plots, one per metric key, one curve per shown run.

Used by every training run page (SFT, reward model, PPO). Plots stay cheap (DESIGN.md,
principle 5), in the manner of pyqtgraph's PanningPlot example:

- A plot is created the first time its key appears, and a run's two curves on it (faint raw,
  solid smoothed) the first time that run logs the key. After that they are only updated with
  `setData`, never cleared and re-added.
- `add_points` only appends to numpy buffers and marks the curve dirty. A single-shot timer
  redraws the dirty curves at most `max_redraws_per_s` times a second, however fast points come.
- Every change that repaints a plot (new points, a new x range, removing a finished run's curves
  when a live run starts) is done one plot per timer pass: done to 16 plots at once, each of
  these took 60-150 ms in one go, a visible freeze at the start of every run.
- Buffers grow by doubling, and smoothing continues from where it stopped, so a redraw costs
  the new points plus one copy of the arrays handed to pyqtgraph, which clips and downsamples
  long curves to the pixels on screen.

Steps are expected in increasing order per run and key. A value for the run's last step
replaces it (a resumed run re-logs the step it stopped at); an earlier step is simply appended.
"""

from __future__ import annotations

from functools import partial
from typing import Iterable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QGridLayout, QHBoxLayout, QLabel, QScrollArea, QSizePolicy, QSlider, QStackedWidget,
    QVBoxLayout, QWidget,
)

COLUMNS = 3
MIN_PLOT_WIDTH = 260  # narrower, a title such as reward/accuracy_train is cut off
PLOT_MIN_HEIGHT = 190
DEFAULT_SMOOTHING = 0.6
RAW_ALPHA = 60
EMPTY_TEXT = "No metrics yet. Start a run, or pick past runs to compare."
# Readable on white and distinct from each other; the first matches the stylesheet's accent.
PALETTE = ("#2f6fd6", "#d9480f", "#2b8a3e", "#9c36b5", "#c92a2a", "#0b7285", "#e67700", "#495057")
AXIS_PEN = "#9aa0a8"
STAGGER_MS = 15  # pause between drawing one plot and the next, so input and timers get in between
TEXT_COLOUR = "#3c4047"
MIN_RELATIVE_Y_RANGE = 0.05  # of the largest |value|: a 0.2% drift of kl/coef is not drawn as a swing
LEFT_AXIS_WIDTH = 52  # fits "-1.5e-05"; the same in every plot, so the grid's plots line up


class CompactAxis(pg.AxisItem):
    """Tick labels with as many significant digits as the tick spacing needs, in Python's
    shortest form: 5e-05, 0.0001, 0.0495, 1.2e+04. pyqtgraph's fixed decimal places gave
    "0.00010", too wide for the axis, which then dropped every label but "0"."""

    def tickStrings(self, values, scale, spacing):
        if not values or spacing <= 0:
            return super().tickStrings(values, scale, spacing)
        largest = max(abs(v * scale) for v in values)
        if largest < 1e7 and all(float(v * scale).is_integer() for v in values):  # 12000, not 1.2e+04
            return [f"{v * scale:.0f}" for v in values]
        digits = 1 + max(0, int(np.ceil(np.log10(largest / (spacing * scale))))) if largest else 1
        return [f"{v * scale:.{digits}g}" for v in values]


def debiased_ema(values: np.ndarray, weight: float, acc: float = 0.0, count: float = 0.0):
    """TensorBoard's smoothing, continued from an earlier state.

    The running average `acc` starts at 0, so early points are divided by `1 - weight**count`
    (count = finite points so far) to undo the pull towards 0. A non-finite value (a diverged
    loss) is drawn as itself and leaves the state alone, so it cannot poison later points.
    Returns per point: (smoothed, acc, count), the latter two being the state to continue from.
    """
    finite = np.isfinite(values)
    counts = count + np.cumsum(finite)
    # The state after each point is that of the last finite point at or before it.
    accs = np.concatenate(([acc], _ema_accumulator(values[finite], weight, acc)))[np.cumsum(finite)]
    with np.errstate(divide="ignore", invalid="ignore"):
        smoothed = np.where(finite, accs / (1.0 - weight ** counts), values)
    return smoothed, accs, counts


def _ema_accumulator(values: np.ndarray, weight: float, acc: float) -> np.ndarray:
    """acc[j] = weight * acc[j-1] + (1 - weight) * values[j], vectorised.

    Unrolled, acc[j] = w**(j+1) * acc + (1-w) * w**j * cumsum(values[i] * w**-i): one cumsum,
    done in chunks short enough that w**-i stays far from overflow. Rounding stays at about
    eps / (1 - w) relative, since each term is scaled back by w**j.
    """
    if weight == 0.0:
        return values.astype(float, copy=True)
    out = np.empty(len(values))
    chunk = max(1, int(300.0 / -np.log(weight)))  # weight**-chunk <= e**300
    for start in range(0, len(values), chunk):
        part = values[start:start + chunk]
        decay = weight ** np.arange(len(part))
        out[start:start + len(part)] = decay * (weight * acc + (1.0 - weight) * np.cumsum(part / decay))
        acc = out[start + len(part) - 1]
    return out


class Series:
    """One (run, key) history in growable numpy buffers, smoothed incrementally.

    Rows of one 2-D buffer: step, raw value, smoothed value, and the smoother's state after
    each point (so new points continue from it, and a replaced last point restarts from the
    one before). Capacity doubles when full: appends are amortised O(1).
    """

    STEP, RAW, SMOOTH, ACC, COUNT = range(5)

    def __init__(self):
        self._data = np.empty((5, 64))
        self.n = 0
        self.smoothed_to = 0  # points [0, smoothed_to) have a valid SMOOTH/ACC/COUNT

    @property
    def steps(self) -> np.ndarray:
        return self._data[self.STEP, :self.n]

    @property
    def raw(self) -> np.ndarray:
        return self._data[self.RAW, :self.n]

    @property
    def smoothed(self) -> np.ndarray:
        return self._data[self.SMOOTH, :self.n]

    def append(self, step: float, value: float) -> None:
        if self.n and self._data[self.STEP, self.n - 1] == step:
            self.n -= 1  # the last step again (resume): overwrite it
        elif self.n == self._data.shape[1]:
            self._data = np.concatenate([self._data, np.empty_like(self._data)], axis=1)
        self._data[self.STEP, self.n] = step
        self._data[self.RAW, self.n] = value
        self.n += 1
        self.smoothed_to = min(self.smoothed_to, self.n - 1)

    def replace(self, steps, values) -> None:
        steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
        self._data = np.empty((5, max(64, 2 * len(steps))))
        self.n = len(steps)
        self._data[self.STEP, :self.n] = steps
        self._data[self.RAW, :self.n] = values
        self.smoothed_to = 0

    def smooth(self, weight: float) -> None:
        """Bring the smoothed row up to date, computing only the points not yet smoothed."""
        start = self.smoothed_to
        if start >= self.n:
            return
        acc, count = (self._data[self.ACC, start - 1], self._data[self.COUNT, start - 1]) if start else (0.0, 0.0)
        tail = self._data[:, start:self.n]
        tail[self.SMOOTH], tail[self.ACC], tail[self.COUNT] = debiased_ema(tail[self.RAW], weight, acc, count)
        self.smoothed_to = self.n


class MetricsView(QWidget):
    """A grid of small plots, one per metric key, each with one curve per shown run.

    A run appears (and is shown) the first time it gets data; `show_runs` then picks which
    runs are drawn. To give a live run a label before its first point, call
    `set_run_history(run_id, label, {})`.
    """

    def __init__(self, parent=None, max_redraws_per_s: float = 10.0, keys: Iterable[str] = ()):
        """`keys`: plots to create now, for the metrics a live run is known to log. Creating a
        plot mid-run costs a relayout and a repaint of every plot (100+ ms while a training
        step competes for the CPU); created up front, the first points only fill them in."""
        super().__init__(parent)
        self.redraws = 0
        self._weight = DEFAULT_SMOOTHING
        self._series: dict[tuple[int, str], Series] = {}
        self._labels: dict[int, str] = {}    # insertion order = order of first appearance
        self._colours: dict[int, QColor] = {}
        self._shown: set[int] = set()
        self._plots: dict[str, pg.PlotWidget] = {}
        self._lines: dict[str, pg.InfiniteLine] = {}
        self._hover: dict[str, tuple[pg.SignalProxy, partial]] = {}  # the slot too: the proxy holds it weakly
        self._curves: dict[tuple[int, str], tuple[pg.PlotDataItem, pg.PlotDataItem]] = {}
        self._dirty: set[tuple[int, str]] = set()
        self._stale: set[str] = set()  # plots waiting for their x range and the removal of old curves
        self._retired: dict[str, list[pg.PlotDataItem]] = {}  # curves of forgotten runs, still on their plot

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)  # started by new data, so an idle view costs nothing
        self._interval_ms = max(1, round(1000 / max_redraws_per_s))
        self._step_range: int | None = None
        self._drew_in_sweep = False
        self._timer.timeout.connect(self._redraw)
        self._build_widgets()
        self._order = list(keys)  # plots made up front keep this order; later ones follow, sorted
        for key in keys:
            self._plots[key] = self._new_plot(key)
        if self._plots:
            self._layout_plots()
            self._stack.setCurrentIndex(1)  # titled empty plots are the empty state here

    # ---- widgets -------------------------------------------------------------------------

    def _build_widgets(self) -> None:
        self.smoothing_slider = QSlider(Qt.Orientation.Horizontal)
        self.smoothing_slider.setRange(0, 99)
        self.smoothing_slider.setValue(round(self._weight * 100))
        self.smoothing_slider.setFixedWidth(140)
        self.smoothing_slider.setToolTip("Exponential moving average weight, as in TensorBoard. "
                                         "The raw values stay visible, faint, behind the smoothed curve.")
        self.smoothing_slider.valueChanged.connect(lambda value: self.set_smoothing(value / 100))
        self.smoothing_value = QLabel(f"{self._weight:.2f}")
        self.smoothing_value.setMinimumWidth(32)
        self.legend = QLabel()
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        # New legend text must not relayout the plots below: that repaints every one of them.
        self.legend.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.readout = QLabel()
        # Its own row of fixed height, left-aligned: changing text never relayouts the plots,
        # and a long readout is clipped at its end (key and first run stay readable) rather
        # than widening the whole page.
        self.readout.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.readout.setFixedHeight(self.readout.fontMetrics().height() + 6)
        self.readout.setContentsMargins(10, 0, 8, 2)
        self.readout.setStyleSheet(f"color: {TEXT_COLOUR};")

        toolbar = QHBoxLayout()
        toolbar.setContentsMargins(8, 6, 8, 4)
        toolbar.addWidget(QLabel("Smoothing"))
        toolbar.addWidget(self.smoothing_slider)
        toolbar.addWidget(self.smoothing_value)
        toolbar.addSpacing(18)
        toolbar.addWidget(self.legend, 1)

        self.empty_label = QLabel(EMPTY_TEXT)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.empty_label.setStyleSheet("color: #6b7078; font-size: 14px;")
        self._grid_host = QWidget()
        self._grid_host.setStyleSheet("background: white;")
        self._grid = QGridLayout(self._grid_host)
        self._grid.setContentsMargins(4, 4, 4, 4)
        self._grid.setSpacing(6)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)  # plots share the width; many keys scroll vertically
        scroll.setWidget(self._grid_host)
        self._stack = QStackedWidget()
        self._stack.addWidget(self.empty_label)
        self._stack.addWidget(scroll)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(toolbar)
        layout.addWidget(self.readout)
        layout.addWidget(self._stack, 1)

    def _new_plot(self, key: str) -> pg.PlotWidget:
        widget = pg.PlotWidget(background="w", axisItems={"left": CompactAxis("left")})
        widget.setMinimumHeight(PLOT_MIN_HEIGHT)
        plot = widget.getPlotItem()
        plot.setTitle(key, color=TEXT_COLOUR, size="10pt")
        plot.showGrid(x=True, y=True, alpha=0.15)
        # Set on the plot, not the curves: PlotItem.addItem overwrites a curve's own settings
        # with these. Drawing only the visible span, about 5 points per pixel, keeps a 100k-point
        # curve's paint at milliseconds instead of seconds.
        plot.setClipToView(True)
        plot.setDownsampling(auto=True, mode="peak")
        self._apply_step_range(plot)
        for name in ("left", "bottom"):
            axis = plot.getAxis(name)
            axis.setPen(pg.mkPen(AXIS_PEN))
            axis.setTextPen(pg.mkPen(TEXT_COLOUR))
        plot.getAxis("left").setWidth(LEFT_AXIS_WIDTH)
        self._set_tick_labels(plot, False)  # an empty plot's 0-1 ticks would read as data
        line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#868e96", style=Qt.PenStyle.DashLine))
        line.hide()
        plot.addItem(line, ignoreBounds=True)
        self._lines[key] = line
        slot = partial(self._on_mouse_moved, key)
        proxy = pg.SignalProxy(widget.scene().sigMouseMoved, rateLimit=30, slot=slot, threadSafe=False)
        self._hover[key] = (proxy, slot)
        return widget

    def _largest_finite(self, key: str) -> float:
        """The largest |value| the shown runs have under `key`, leaving out a diverged NaN or inf."""
        largest = 0.0
        for (run_id, name), series in self._series.items():
            if name == key and run_id in self._shown:
                values = np.abs(series.raw)
                values = values[np.isfinite(values)]
                largest = max(largest, float(values.max())) if len(values) else largest
        return largest

    @staticmethod
    def _set_tick_labels(plot: pg.PlotItem, shown: bool) -> None:
        for name in ("left", "bottom"):
            axis = plot.getAxis(name)
            if axis.style["showValues"] != shown:  # a change relayouts this one plot, so only once
                axis.setStyle(showValues=shown)

    def _new_curves(self, run_id: int, key: str) -> tuple[pg.PlotDataItem, pg.PlotDataItem]:
        colour = self._colours[run_id]
        faint = QColor(colour)
        faint.setAlpha(RAW_ALPHA)
        # Clipping and downsampling come from the plot (see _new_plot).
        raw = pg.PlotDataItem(pen=pg.mkPen(faint, width=1), antialias=True)
        pen = pg.mkPen(colour, width=2)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)  # joins the separate segments (below) smoothly
        smooth = pg.PlotDataItem(pen=pen, antialias=True)
        # Qt strokes a wide antialiased polyline slowly (600 ms for a noisy 100k-point curve);
        # drawn as separate segments it takes tens of milliseconds and looks the same.
        smooth.curve.setSegmentedLineMode("on")
        smooth.setZValue(1)  # every smoothed curve above every faint one
        plot = self._plots[key].getPlotItem()
        for item in (raw, smooth):
            item.setVisible(run_id in self._shown)
            plot.addItem(item)
        return raw, smooth

    def _layout_plots(self) -> None:
        """Place plots in the order of the keys given up front (the most telling first), then the
        others in key order, so that loss/* sit together. Moves widgets, rebuilds nothing."""
        for widget in self._plots.values():
            self._grid.removeWidget(widget)
        columns = self._columns = self._columns_for(self.width())
        rank = {key: index for index, key in enumerate(self._order)}
        for index, key in enumerate(sorted(self._plots, key=lambda k: (rank.get(k, len(rank)), k))):
            self._grid.addWidget(self._plots[key], index // columns, index % columns)
        for column in range(COLUMNS):
            self._grid.setColumnStretch(column, 1 if column < columns else 0)  # equal widths

    @staticmethod
    def _columns_for(width: int) -> int:
        """Up to COLUMNS plots a row, each at least MIN_PLOT_WIDTH wide, so titles and ticks fit."""
        return max(1, min(COLUMNS, width // MIN_PLOT_WIDTH))

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        if self._plots and self._columns_for(self.width()) != getattr(self, "_columns", COLUMNS):
            self._layout_plots()

    def _update_legend(self) -> None:
        entries = [f'<span style="color:{self._colours[run].name()}; font-weight:600;">&#9644;</span>&nbsp;{label}'
                   for run, label in self._labels.items() if run in self._shown]
        self.legend.setText("&nbsp;&nbsp;&nbsp;".join(entries))

    # ---- data in -------------------------------------------------------------------------

    def add_points(self, run_id: int, points: Iterable[tuple[str, int, float]]) -> None:
        """Record (key, step, value) points. Only appends and marks dirty: drawing is the timer's job."""
        self._register_run(run_id)
        for key, step, value in points:
            series = self._series.get((run_id, key))
            if series is None:
                series = self._series[(run_id, key)] = Series()
            series.append(step, value)
            self._dirty.add((run_id, key))
        self._schedule()

    def set_run_history(self, run_id: int, label: str,
                        metrics: dict[str, tuple[list[int], list[float]]]) -> None:
        """Replace everything known about a run (a past run loaded from the project file)."""
        self._register_run(run_id)
        self._labels[run_id] = label
        for (run, key), series in self._series.items():
            if run == run_id and key not in metrics:
                series.replace([], [])
                self._dirty.add((run, key))
        for key, (steps, values) in metrics.items():
            self._series.setdefault((run_id, key), Series()).replace(steps, values)
            self._dirty.add((run_id, key))
        self._update_legend()
        self._schedule()

    def _register_run(self, run_id: int) -> None:
        if run_id in self._labels:
            return
        self._labels[run_id] = f"Run {run_id}"
        self._colours[run_id] = QColor(PALETTE[len(self._colours) % len(PALETTE)])
        self._shown.add(run_id)  # a new run is shown until show_runs says otherwise
        self._update_legend()

    def show_runs(self, run_ids: list[int]) -> None:
        """Draw only these runs (each in its own colour); the others are hidden, their data kept."""
        newly_shown = set(run_ids) - self._shown
        self._shown = set(run_ids)
        for (run, _), items in self._curves.items():
            for item in items:
                item.setVisible(run in self._shown)
        # Hidden runs are not redrawn while hidden, so bring the newly shown ones up to date.
        self._dirty.update(name for name in self._series if name[0] in newly_shown)
        if self._curves:  # without curves there is nothing to refit, and a refit repaints every plot
            for widget in self._plots.values():
                widget.getPlotItem().getViewBox().updateAutoRange()  # fit what is visible now
        self._update_legend()
        self._schedule()

    def set_smoothing(self, weight: float) -> None:
        weight = min(max(float(weight), 0.0), 0.99)
        if weight == self._weight:
            return
        self._weight = weight
        self.smoothing_slider.blockSignals(True)  # we may have been called by the slider itself
        self.smoothing_slider.setValue(round(weight * 100))
        self.smoothing_slider.blockSignals(False)
        self.smoothing_value.setText(f"{weight:.2f}")
        for series in self._series.values():
            series.smoothed_to = 0
        self._dirty.update(self._series)
        self._schedule()

    def set_step_range(self, last_step: int | None) -> None:
        """Fix the x axis to 0..last_step for a live run (None: fit the data again).

        The curve then grows across a steady axis, which shows how far the run has come, and the
        bottom axis keeps its cached drawing instead of being redrawn at every step."""
        self._step_range = last_step
        self._stale.update(self._plots)  # applied plot by plot (see _redraw)
        self._schedule()

    def _apply_step_range(self, plot) -> None:
        if self._step_range:
            plot.enableAutoRange(x=False)
            plot.setXRange(0, self._step_range, padding=0.02)
        else:
            plot.enableAutoRange(x=True)

    def forget_runs(self) -> None:
        """Drop every run's data and curves but keep the plots (a new live run starts)."""
        for (_, key), items in self._curves.items():
            self._retired.setdefault(key, []).extend(items)  # removed plot by plot (see _redraw)
            self._stale.add(key)
        for table in (self._series, self._labels, self._colours, self._curves):
            table.clear()
        self._shown.clear()
        self._dirty.clear()
        self.readout.clear()
        self._update_legend()
        self._schedule()

    def clear(self) -> None:
        """Forget every run and plot (another project was opened) and show the empty state."""
        self._timer.stop()
        for proxy, _ in self._hover.values():
            proxy.disconnect()
        for widget in self._plots.values():
            self._grid.removeWidget(widget)
            widget.deleteLater()
        for table in (self._series, self._labels, self._colours, self._plots, self._lines,
                      self._hover, self._curves, self._retired):
            table.clear()
        self._shown.clear()
        self._dirty.clear()
        self._stale.clear()
        self.readout.clear()
        self._update_legend()
        self._stack.setCurrentWidget(self.empty_label)

    # ---- drawing -------------------------------------------------------------------------

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._schedule()  # points that arrived while hidden

    def _schedule(self, delay_ms: int | None = None) -> None:
        if (self._dirty or self._stale) and not self._timer.isActive():
            self._timer.start(self._interval_ms if delay_ms is None else delay_ms)

    def _redraw(self) -> None:
        """One timer pass: bring ONE plot up to date, then come back soon for the next.

        Each plot is its own view, so only the plot drawn here repaints. Painting all of them in
        one go took 45-60 ms (axes text dominates), a visible hitch while a training step runs;
        one at a time keeps each pass near a tenth of that. A full sweep of dirty plots still
        happens at most `max_redraws_per_s` times a second.

        A plot waiting for a new x range or for a forgotten run's curves to go gets those in the
        same pass, before its new points: one repaint per plot.

        A hidden view (a page not on screen) keeps its points and draws them when shown."""
        if not self.isVisible():
            return
        if self._stale:
            key = min(self._stale)
            self._stale.discard(key)
            plot = self._plots[key].getPlotItem()
            for item in self._retired.pop(key, []):
                plot.removeItem(item)
            self._apply_step_range(plot)
            if not any(name[1] == key for name in self._dirty):
                self._schedule(STAGGER_MS)  # nothing new to draw here: on to the next plot
                return
        else:
            key = min(key for _, key in self._dirty)
        if key not in self._plots:
            self._plots[key] = self._new_plot(key)
            self._layout_plots()
            self._stack.setCurrentIndex(1)
        drew = False
        for name in [name for name in self._dirty if name[1] == key]:
            if name not in self._curves:
                self._curves[name] = self._new_curves(*name)
            if name[0] in self._shown:
                self._draw(name)
                drew = True
            self._dirty.discard(name)
        if drew:
            self._set_tick_labels(self._plots[key].getPlotItem(), True)
            view = self._plots[key].getPlotItem().getViewBox()
            view.setLimits(minYRange=MIN_RELATIVE_Y_RANGE * self._largest_finite(key) or None)
            # Fit now rather than in pyqtgraph's prepareForPaint: a fit made during the paint
            # changes the axes and so paints the plot a second time, in the next pass.
            view.updateAutoRange()
        self._drew_in_sweep = self._drew_in_sweep or drew
        if self._dirty or self._stale:
            self._schedule(STAGGER_MS)
        elif self._drew_in_sweep:
            self.redraws += 1
            self._drew_in_sweep = False

    def _draw(self, name: tuple[int, str]) -> None:
        series = self._series[name]
        series.smooth(self._weight)
        raw, smooth = self._curves[name]
        # Copies: the buffers change in place later (a replaced last step, new smoothing).
        steps = series.steps.copy()
        raw.setData(steps, series.raw.copy())
        smooth.setData(steps, series.smoothed.copy())
        # A line needs two points: a metric recorded once (a validation score at the end of a
        # short run) is drawn as a dot instead of not at all.
        lone = len(steps) == 1
        if lone != (smooth.opts["symbol"] is not None):
            colour = self._colours[name[0]]
            smooth.setSymbol("o" if lone else None)
            smooth.setSymbolSize(8)
            smooth.setSymbolPen(pg.mkPen(colour))
            smooth.setSymbolBrush(pg.mkBrush(colour))

    # ---- reading values --------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Points recorded but not drawn yet, or plots not yet given their new range (tests wait
        for this to clear)."""
        return bool(self._dirty or self._stale)

    def keys(self) -> list[str]:
        return sorted({key for _, key in self._series})

    def plot_item(self, key: str) -> pg.PlotItem:
        return self._plots[key].getPlotItem()

    def curve_items(self, run_id: int, key: str) -> tuple[pg.PlotDataItem, pg.PlotDataItem]:
        """(faint raw curve, smoothed curve) of a run on one plot."""
        return self._curves[(run_id, key)]

    def curve_data(self, run_id: int, key: str) -> tuple[np.ndarray, np.ndarray]:
        """The (steps, smoothed values) the smoothed curve currently draws; empty before a redraw."""
        curves = self._curves.get((run_id, key))
        x, y = curves[1].getOriginalDataset() if curves else (None, None)
        if x is None:
            return np.empty(0), np.empty(0)
        return x.copy(), y.copy()

    def _nearest(self, key: str, step: float) -> list[tuple[int, float, float, float]]:
        """(run, step, smoothed, raw) of the point nearest `step`, for each shown run that has the key."""
        found = []
        for run in self._labels:
            series = self._series.get((run, key))
            if run not in self._shown or series is None or series.n == 0:
                continue
            series.smooth(self._weight)
            i = int(np.argmin(np.abs(series.steps - step)))  # steps need not be sorted (see module doc)
            found.append((run, series.steps[i], series.smoothed[i], series.raw[i]))
        return found

    def readout_at(self, key: str, step: float) -> str:
        """The hover text: for each shown run, its nearest step and the value drawn there."""
        parts = []
        for run, at, smoothed, raw in self._nearest(key, step):
            text = f"{self._labels[run]} @ {at:g}: {smoothed:.4g}"
            if self._weight > 0:
                text += f" (raw {raw:.4g})"
            parts.append(text)
        return f"{key}   " + "   ".join(parts) if parts else ""

    def _on_mouse_moved(self, key: str, event) -> None:
        plot = self.plot_item(key)
        position = event[0]
        if not plot.getViewBox().sceneBoundingRect().contains(position):
            return
        step = plot.getViewBox().mapSceneToView(position).x()
        nearest = self._nearest(key, step)
        for other, line in self._lines.items():
            line.setVisible(other == key and bool(nearest))
        if nearest:
            self._lines[key].setPos(nearest[0][1])
        self.readout.setText(self.readout_at(key, step))

    def leaveEvent(self, event) -> None:
        for line in self._lines.values():
            line.hide()
        self.readout.clear()
        super().leaveEvent(event)
