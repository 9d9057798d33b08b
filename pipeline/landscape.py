"""Pictures of a sweep: the cost landscape with every run's path, the valley floor, the loss curves.

Pure functions: arrays and run summaries in, matplotlib figures out; no files, no MLflow.
matplotlib is imported only when a figure is drawn.

Runs are :class:`pipeline.outcome.RunSummary` records; failed runs are left out, and
the others carry ``lr``, ``status``, ``theta_init``, ``theta`` and the thinned
``path_steps`` (m,), ``path_theta`` (m, d+1) and ``path_loss`` (m,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from pipeline.costs import Cost
from pipeline.outcome import Minimum, RunSummary, status_counts
from pipeline.passes import row_blocks
from pipeline.summary import RowSummary, bin_cost

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FloatArray = NDArray[np.float64]
GRID_POINTS = 241
#: A robust cost is summed over every row at every grid point: a coarser grid.
ROBUST_GRID_POINTS = 161
#: Over a summary of many rows each point costs a pass over its bins: coarser still,
#: and fewer slopes along the valley floor (the certificate and pictures' one minute).
SUMMARY_GRID_POINTS = 121
FLOOR_POINTS = {"mse": 400, "robust": 200, "summary": 120}
PADDING = 0.15
#: Line style of a path by how its run ended.
STATUS_STYLES = {"converged": "-", "max_iter": "--", "oscillating": "-.", "diverged": ":"}
#: Paths drawn in one panel of the landscape (and curves in the loss curves): beyond,
#: an evenly spaced sample of the runs, and a dot where every run ended.
PANEL_PATHS = 50
LOSS_CURVES = 200
#: The colour of every path while a sweep found one minimum (the panels show the rates).
SINGLE_COLOUR = "#e6550d"
#: Colours of the learning rates, in order (Tableau's ten, which tell apart on a projector).
RATE_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
#: Colours of the minima, lowest cost first (then every further one grey).
MINIMUM_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b")


def sample_runs(runs: list[RunSummary], limit: int) -> list[RunSummary]:
    """``runs`` as they are, or ``limit`` of them evenly spaced in job order: every
    start and rate of a grid keeps its share, and the same sweep gives the same sample."""
    if len(runs) <= limit:
        return runs
    return [runs[index] for index in np.linspace(0, len(runs) - 1, limit).round().astype(int)]


def sampled_note(drawn: int, runs: int) -> str:
    """What a picture that draws a sample of the paths says, e.g. ``50 of 1,000 paths
    (an even sample); dots: every run's end``."""
    return f"{drawn:,} of {runs:,} paths (an even sample); dots: every run's end"


@dataclass(frozen=True)
class Plane:
    """MSE as a function of (θ0, θ1), every other coefficient held at its optimum.

    ``mse(θ0, θ1) = mean((a - θ0 - θ1 x)²)`` with ``x`` the first feature and ``a`` the
    target less the other features' contribution, expanded into moments so that a grid
    of any size costs O(1) per point.
    """

    mean_a: float
    mean_x: float
    mean_aa: float
    mean_ax: float
    mean_xx: float

    @classmethod
    def from_data(cls, X: FloatArray, y: FloatArray, optimum: FloatArray) -> Plane:
        """``X`` (n, d), ``y`` (n,), ``optimum`` (d+1,): the least-squares θ."""
        sums = np.zeros(5)  # Σa, Σx, Σa², Σax, Σx², a block of rows at a time
        for rows in row_blocks(len(y)):
            x = X[rows, 0]
            a = y[rows] - X[rows, 1:] @ optimum[2:]
            sums += [a.sum(), x.sum(), a @ a, a @ x, x @ x]
        return cls(*(float(value) / len(y) for value in sums))

    def mse(self, theta0: FloatArray, theta1: FloatArray) -> FloatArray:
        """MSE at each (θ0, θ1) pair; arrays of any matching shape."""
        return np.asarray(
            self.mean_aa
            - 2 * theta0 * self.mean_a
            - 2 * theta1 * self.mean_ax
            + theta0**2
            + 2 * theta0 * theta1 * self.mean_x
            + theta1**2 * self.mean_xx,
            dtype=np.float64,
        )

    def valley_floor(
        self, theta1: FloatArray, theta0_range: tuple[float, float] | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """For each θ1, the best θ0 and the MSE there: the bottom of the valley (in closed
        form: ``theta0_range``, which :meth:`RobustPlane.valley_floor` searches, is not needed)."""
        theta0 = self.mean_a - theta1 * self.mean_x
        return theta0, self.mse(theta0, theta1)

    def cost(self, theta0: FloatArray, theta1: FloatArray) -> FloatArray:
        return self.mse(theta0, theta1)

    @property
    def summarized(self) -> bool:
        return False

    @property
    def note(self) -> str:
        """Nothing to say: the moments are exact."""
        return ""


@dataclass(frozen=True)
class RobustPlane:
    """A robust cost as a function of (θ0, θ1), every other coefficient held fixed.

    No moments summarize it: each point is a compiled pass over the rows, or over the
    bins of a :class:`~pipeline.summary.RowSummary` where the rows are too many;
    ``note`` then says so, with the error bound, for the titles.
    """

    x: FloatArray
    a: FloatArray
    loss: Cost
    summary: RowSummary | None = None
    note: str = ""

    @classmethod
    def from_data(cls, X: FloatArray, y: FloatArray, held: FloatArray, loss: Cost) -> RobustPlane:
        """``X`` (n, d), ``y`` (n,), ``held`` (d+1,): the θ whose further coefficients stay fixed."""
        if X.shape[1] == 1:  # the rows as they are: a memory-mapped split stays on disk
            return cls(np.ascontiguousarray(X[:, 0]), np.ascontiguousarray(y), loss)
        return cls(np.ascontiguousarray(X[:, 0]), np.ascontiguousarray(y - X[:, 1:] @ held[2:]), loss)

    @classmethod
    def from_summary(cls, summary: RowSummary, loss: Cost, slopes: tuple[float, float]) -> RobustPlane:
        """The cost over a line's bins (one feature), to second order; its error bound
        taken over ``slopes``."""
        return cls(summary.x, summary.y, loss, summary, summary.describe(loss, slopes))

    @property
    def summarized(self) -> bool:
        """Whether the cost comes from a summary of the rows (then each point costs more)."""
        return self.summary is not None

    def cost(self, theta0: FloatArray, theta1: FloatArray) -> FloatArray:
        """The cost at each (θ0, θ1) pair; arrays of any matching shape."""
        from pipeline.minima import line_cost

        theta0, theta1 = np.broadcast_arrays(np.asarray(theta0, float), np.asarray(theta1, float))
        points = np.column_stack([theta0.ravel(), theta1.ravel()])
        if self.summary is None:
            return line_cost(self.x, self.a, self.loss, points)[0].reshape(theta0.shape)
        return bin_cost(self.summary, self.loss, points).reshape(theta0.shape)

    def valley_floor(
        self, theta1: FloatArray, theta0_range: tuple[float, float]
    ) -> tuple[FloatArray, FloatArray]:
        """For each θ1, the best θ0 within ``theta0_range`` and the cost there.

        A grid over θ0 finds each θ1's lowest cell; a golden-section search within one
        cell either side of it refines it.
        """
        theta1 = np.asarray(theta1, dtype=np.float64)
        # Over a summary each point is a pass over its bins: a coarser grid, a wider last step.
        cells, steps = (81, 20) if self.summarized else (121, 30)
        grid = np.linspace(*theta0_range, cells)
        spacing = grid[1] - grid[0]
        values = self.cost(grid[np.newaxis, :], theta1[:, np.newaxis])
        centre = grid[np.argmin(values, axis=1)]
        low, high = centre - spacing, centre + spacing
        ratio = (math.sqrt(5) - 1) / 2
        for _ in range(steps):  # the bracket shrinks to 1e-6 (7e-5) of a grid cell
            left, right = high - ratio * (high - low), low + ratio * (high - low)
            lower = self.cost(left, theta1) <= self.cost(right, theta1)
            high = np.where(lower, right, high)
            low = np.where(lower, low, left)
        best = (low + high) / 2
        return best, self.cost(best, theta1)


def run_lr(run: RunSummary) -> float:
    """The learning rate a drawn run used (every run that is drawn has one)."""
    return float(run.lr if run.lr is not None else "nan")


def _frame(
    runs: list[RunSummary], anchors: list[FloatArray]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(θ0, θ1) limits holding every start, the anchors (minima) and every path that did not diverge."""
    points = [np.asarray(run.theta_init)[:2] for run in runs] + [np.asarray(a)[:2] for a in anchors]
    for run in runs:
        if run.status != "diverged":
            points.extend(np.asarray(run.path_theta)[:, :2])
    box = np.array(points)
    low, high = box.min(axis=0), box.max(axis=0)
    span = np.where(high > low, high - low, np.maximum(np.abs(high), 1.0))
    low, high = low - PADDING * span, high + PADDING * span
    return (float(low[0]), float(high[0])), (float(low[1]), float(high[1]))


def _rate_colours(runs: list[RunSummary]) -> dict[float, Any]:
    """A colour per learning rate, each clearly its own on a projector: up to ten from a
    qualitative palette (a sequential one made 0.001 and 0.01 two near-identical
    purples), more along a sequential map."""
    from matplotlib import colormaps

    rates = sorted({run_lr(run) for run in runs})
    if len(rates) <= len(RATE_COLOURS):
        return dict(zip(rates, RATE_COLOURS, strict=False))
    palette = colormaps["viridis"]
    return {rate: palette(0.9 * i / (len(rates) - 1)) for i, rate in enumerate(rates)}


@dataclass(frozen=True)
class Colouring:
    """How paths are coloured: by method where a sweep races several from its starts,
    else by the minimum they reached when a sweep found more than one, else by learning
    rate."""

    by_rate: dict[float, Any]
    by_job: dict[str, Any]
    minima: list[Minimum]

    single: bool = False
    by_method: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, runs: list[RunSummary], minima: list[Minimum], single: bool = False) -> Colouring:
        """``single``: one colour while there is one minimum (the panels already tell the
        learning rates apart), else one per learning rate."""
        by_job: dict[str, Any] = {}
        if len(minima) > 1:
            for index, minimum in enumerate(minima):
                colour = MINIMUM_COLOURS[index] if index < len(MINIMUM_COLOURS) else "grey"
                by_job |= {key: colour for key in minimum.job_keys}
            by_job |= {run.job_key: "black" for run in runs if run.end_point == "plateau"}
        methods = list(dict.fromkeys(str(run.method) for run in runs))  # in the sweep's order
        by_method = dict(zip(methods, RATE_COLOURS, strict=False)) if len(methods) > 1 else {}
        return cls(_rate_colours(runs), by_job, minima, single, by_method)

    def __call__(self, run: RunSummary) -> Any:
        if self.by_method:
            return self.by_method.get(str(run.method), "0.55")
        if self.by_job:
            return self.by_job.get(run.job_key, "0.55")
        return SINGLE_COLOUR if self.single else self.by_rate[run_lr(run)]

    def legend(self) -> list[Any]:
        from matplotlib.lines import Line2D

        if self.by_method:
            return [Line2D([], [], color=c, lw=2, label=method) for method, c in self.by_method.items()]
        if not self.by_job and self.single:
            return [
                Line2D([], [], color=SINGLE_COLOUR, ls=style, lw=2, label=status)
                for status, style in STATUS_STYLES.items()
            ]
        if not self.by_job:
            return [Line2D([], [], color=c, lw=2, label=f"lr = {rate:g}") for rate, c in self.by_rate.items()]
        handles = [
            Line2D([], [], color=self.by_job[minimum.job_keys[0]], lw=2, label=f"to the {minimum.kind}")
            for minimum in self.minima
        ]
        if "black" in self.by_job.values():
            handles.append(Line2D([], [], color="black", lw=2, label="onto the plateau"))
        handles.append(Line2D([], [], color="0.55", lw=2, label="to no minimum"))
        return handles


def _inside(path: FloatArray, limits: tuple[tuple[float, float], tuple[float, float]]) -> FloatArray:
    """The leading part of a path within the frame, ending where it first crosses the frame.

    A diverged path leaves the frame: it is cut at the crossing point on the frame's edge,
    where the ✕ goes, so that a run whose first step already leaves is still drawn.
    """
    (x0, x1), (y0, y1) = limits
    within = (path[:, 0] >= x0) & (path[:, 0] <= x1) & (path[:, 1] >= y0) & (path[:, 1] <= y1)
    leaves = np.flatnonzero(~within)
    if leaves.size == 0:
        return path
    first = int(leaves[0])
    if first == 0:  # a start outside the frame cannot happen (the frame holds every start)
        return path[:1]
    p, q = path[first - 1], path[first]
    crossings = [1.0]
    for axis, (low, high) in enumerate(((x0, x1), (y0, y1))):
        delta = q[axis] - p[axis]
        if q[axis] > high:
            crossings.append((high - p[axis]) / delta)
        elif q[axis] < low:
            crossings.append((low - p[axis]) / delta)
    t = min(crossings)
    return np.vstack([path[:first], p + t * (q - p)])


def _legend_handles(colouring: Colouring) -> list[Any]:
    from matplotlib.lines import Line2D

    handles = colouring.legend()
    handles += [
        Line2D([], [], ls="", marker="o", mfc="white", mec="black", label="start"),
        Line2D([], [], ls="", marker="s", color="black", ms=5, label="end"),
        Line2D([], [], ls="", marker="X", color="red", ms=9, label="diverged (leaves the frame)"),
        Line2D([], [], ls="", marker="*", color="gold", mec="black", ms=16, label="global minimum"),
    ]
    if any(minimum.kind == "local minimum" for minimum in colouring.minima):
        handles.append(
            Line2D([], [], ls="", marker="P", color="white", mec="black", ms=11, label="local minimum")
        )
    return handles


@dataclass(frozen=True)
class Mark:
    """A minimum to draw: where, how low, what it is, how many runs reached it."""

    theta0: float
    theta1: float
    cost: float
    kind: str
    runs: int | None


def _marks(minima: list[Minimum], optimum: FloatArray | None, cost_at: Any) -> list[Mark]:
    """The minima the runs reached; the global minimum itself when none reached it."""
    marks = [Mark(m.theta[0], m.theta[1], m.cost, m.kind, m.runs) for m in minima]
    if optimum is not None and not any(mark.kind == "global minimum" for mark in marks):
        marks.append(
            Mark(
                float(optimum[0]),
                float(optimum[1]),
                float(cost_at(optimum[0], optimum[1])),
                "global minimum",
                0,
            )
        )
    return marks


def _mark_label(mark: Mark, loss: Cost) -> str:
    value = f"J = {mark.cost:.6g}" if not loss.is_mse else f"MSE = {mark.cost:.4g}"
    reached = f", {mark.runs} run{'s' if mark.runs != 1 else ''}" if mark.runs else ""
    return f"{mark.kind}\n{value}{reached}"


def _draw_marks(
    axes: Any,
    marks: list[Mark],
    loss: Cost,
    on_floor: bool = False,
    labels: bool = True,
    leftward: bool = False,
) -> None:
    """Star the global minimum, cross the local ones; label them (``leftward``: the
    labels to the left of the marks, away from an inset on the right)."""
    for index, mark in enumerate(marks):
        x, y = (mark.theta1, mark.cost) if on_floor else (mark.theta0, mark.theta1)
        if mark.kind == "global minimum":
            axes.plot(x, y, "*", color="gold", mec="black", ms=20, zorder=7)
        else:
            axes.plot(x, y, "P", color="white", mec="black", ms=13, zorder=7)
        if not labels:
            continue
        # On the floor the labels go above, one to each side; on the map, below and above.
        offset = ((-150 if index % 2 == 0 else 20), 40) if on_floor else (14, -30 if index % 2 == 0 else 16)
        if leftward and not on_floor:
            offset = (-170, offset[1])
        axes.annotate(
            _mark_label(mark, loss),
            (x, y),
            xytext=offset,
            arrowprops={"arrowstyle": "-", "color": "0.3"} if on_floor else None,
            textcoords="offset points",
            fontsize=10,
            fontweight="bold",
            bbox={"boxstyle": "round", "fc": "white", "alpha": 0.85},
            zorder=8,
        )


def _surface_and_frame(
    runs: list[RunSummary],
    X: FloatArray,
    y: FloatArray,
    optimum: FloatArray | None,
    loss: Cost,
    minima: list[Minimum],
    summary: RowSummary | None = None,
) -> tuple[Plane | RobustPlane, tuple[tuple[float, float], tuple[float, float]]]:
    """The cost over (θ0, θ1), further coefficients held (see :func:`_held`), and the frame
    that holds every start, path and minimum: what the landscape and the valley share.
    A robust cost is summed over ``summary``'s bins where one is given (one feature)."""
    held = _held(runs, optimum)
    frame = _frame(runs, [held] + [np.asarray(minimum.theta) for minimum in minima])
    if loss.is_mse:
        return Plane.from_data(X, y, held), frame
    if summary is not None and X.shape[1] == 1:
        return RobustPlane.from_summary(summary, loss, frame[1]), frame
    return RobustPlane.from_data(X, y, held, loss), frame


def _held(runs: list[RunSummary], optimum: FloatArray | None) -> FloatArray:
    """The θ whose further coefficients stay fixed in the pictures: the global minimum,
    or (where it is unknown) the best run's."""
    if optimum is not None:
        return np.asarray(optimum, dtype=np.float64)
    usable = [run for run in runs if run.usable] or runs
    return np.asarray(min(usable, key=lambda run: run.cost).theta, dtype=np.float64)


@dataclass(frozen=True)
class LandscapeGrid:
    """The cost over a grid of (θ0, θ1), and what is drawn on it: one computation for
    the PNG (:func:`landscape_figure`) and the HTML page (:mod:`pipeline.landscape_page`).

    Attributes
    ----------
    theta0, theta1, costs : ndarray, shape (m, m)
        The grid and the cost at each point.
    limits : ((float, float), (float, float))
        The frame: every start, every path that did not diverge, every minimum.
    marks : list of Mark
        The minima to mark (the global one starred).
    lowest : float
        The lowest cost known (grid or minima).
    surface : Plane or RobustPlane
        The cost as a function of (θ0, θ1).
    """

    theta0: FloatArray
    theta1: FloatArray
    costs: FloatArray
    limits: tuple[tuple[float, float], tuple[float, float]]
    marks: list[Mark]
    lowest: float
    surface: Plane | RobustPlane

    @property
    def excess(self) -> FloatArray:
        """The cost above the lowest, never 0 (for a log scale)."""
        return np.maximum(self.costs - self.lowest, 1e-12 * max(abs(self.lowest), 1.0))


def landscape_grid(
    runs: list[RunSummary],
    X: FloatArray,
    y: FloatArray,
    optimum: FloatArray | None,
    loss: Cost,
    minima: list[Minimum],
    points: int | None = None,
    summary: RowSummary | None = None,
) -> LandscapeGrid:
    """The cost over the frame of ``runs`` (failed runs left out), ``points`` per side;
    a robust cost over ``summary``'s bins where one is given."""
    runs = [run for run in runs if run.status != "failed"]
    surface, limits = _surface_and_frame(runs, X, y, optimum, loss, minima, summary)
    if not points:
        points = (
            GRID_POINTS if loss.is_mse else SUMMARY_GRID_POINTS if surface.summarized else ROBUST_GRID_POINTS
        )
    theta0, theta1 = np.meshgrid(np.linspace(*limits[0], points), np.linspace(*limits[1], points))
    costs = surface.cost(theta0, theta1)
    marks = _marks(minima, optimum, surface.cost)
    lowest = min([float(costs.min()), *(mark.cost for mark in marks)])
    return LandscapeGrid(theta0, theta1, costs, limits, marks, lowest, surface)


def landscape_figure(
    runs: list[RunSummary],
    X: FloatArray,
    y: FloatArray,
    optimum: FloatArray | None,
    labels: tuple[str, str],
    loss: Cost | None = None,
    minima: list[Minimum] | None = None,
    summary: RowSummary | None = None,
) -> Figure:
    """Contour maps of the training cost over (θ0, θ1), one small panel per learning rate,
    with each run's path downhill.

    Within a panel, a path's colour is the minimum it reached (one colour while there
    is one), its line style how the run ended; a diverged path stops with a ✕ where it
    crosses the frame. Every panel shares the frame and marks the minima, and holds a
    zoom on them.

    Parameters
    ----------
    runs : list of RunSummary
        Failed runs are left out.
    X : ndarray, shape (n, d)
    y : ndarray, shape (n,)
    optimum : ndarray, shape (d + 1,), or None
        The global minimum of the cost (least squares for the MSE), starred; None where
        it is unknown.
    labels : (str, str)
        Axis labels for θ0 and θ1, with units.
    loss : Cost
        The cost minimized (the MSE by default).
    minima : list of Minimum
        The minima the runs reached, each marked (and labelled with its cost and runs).
    summary : RowSummary, optional
        A robust cost is summed over its bins instead of the rows (one feature); the
        title says so, with the error bound.
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    loss = loss or Cost()
    minima = minima or []
    runs = [run for run in runs if run.status != "failed"]
    land = landscape_grid(runs, X, y, optimum, loss, minima, summary=summary)
    surface, limits, marks, lowest = land.surface, land.limits, land.marks, land.lowest
    theta0, theta1, excess = land.theta0, land.theta1, land.excess
    levels = np.geomspace(excess.max() * 1e-5, excess.max(), 26)
    window = _zoom_window(marks, limits)
    zoom = None
    if window is not None:
        zoom0, zoom1 = np.meshgrid(np.linspace(*window[0], 60), np.linspace(*window[1], 60))
        zoom = (zoom0, zoom1, np.maximum(surface.cost(zoom0, zoom1) - lowest, 1e-12 * max(abs(lowest), 1.0)))

    rates = sorted({run_lr(run) for run in runs}) or [float("nan")]
    columns = 1 if len(rates) == 1 else 2 if len(rates) <= 4 else 3
    rows = -(-len(rates) // columns)
    single = len(rates) == 1
    size = (14.0, 8.0) if single else (5.6 * columns + 1.0, 4.7 * rows + 1.6)
    figure = Figure(figsize=size, layout="constrained")
    if single:  # one panel: the zoom beside it, where it hides nothing
        main, beside = figure.subplots(1, 2, width_ratios=(2.2, 1.0))
        grid = np.array([[main]], dtype=object)
    else:
        grid = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
        beside = None
    panels = list(grid.ravel())
    colouring = Colouring.of(runs, minima, single=True)
    filled = None
    panel_runs: list[list[RunSummary]] = []
    for index, (axes, rate) in enumerate(zip(panels, rates, strict=False)):
        filled = axes.contourf(
            theta0, theta1, excess, levels=levels, norm=LogNorm(), cmap="Blues_r", extend="min"
        )
        axes.contour(theta0, theta1, excess, levels=levels[::3], colors="white", linewidths=0.5, alpha=0.6)
        shown = [run for run in runs if run_lr(run) == rate or len(rates) == 1]
        panel_runs.append(shown)
        drawn = _draw_runs(axes, shown, limits, colouring)
        axes.set_xlim(*limits[0])
        axes.set_ylim(*limits[1])
        place = _emptiest_corner(axes, shown)
        inset_right = beside is None and zoom is not None and place[0] > 0.5
        _draw_marks(axes, marks, loss, labels=index == 0, leftward=inset_right)
        if zoom is not None and window is not None:
            inset = beside if beside is not None else axes.inset_axes(place, zorder=8)
            _draw_zoom(inset, zoom, levels, window, drawn, colouring, marks, loss)
            axes.indicate_inset_zoom(inset, edgecolor="0.3")
        elif beside is not None:
            beside.set_visible(False)
        axes.set_label(f"panel lr={rate:g}")
        if len(rates) > 1 or shown:
            sampled = f"\n{sampled_note(len(drawn), len(shown))}" if len(drawn) < len(shown) else ""
            axes.set_title(f"lr = {rate:g}: {status_counts(shown)}{sampled}", fontsize=10)
        axes.ticklabel_format(style="plain", useOffset=False)
    for axes in panels[len(rates) :]:
        axes.set_visible(False)
    for axes in grid[-1]:
        axes.set_xlabel(labels[0])
    for axes in grid[:, 0]:
        axes.set_ylabel(labels[1])
    assert filled is not None  # there is always a first panel
    beside_shown = [beside] if beside is not None and beside.get_visible() else []
    bar = figure.colorbar(filled, ax=[*panels, *beside_shown], format="%.0e", shrink=0.9)
    bar.set_label(f"{loss.label} above the minimum (log scale)")
    others = ""
    if X.shape[1] > 1:
        others = (
            " (other coefficients at their optimum)" if optimum is not None else " (others at the best run's)"
        )
    summarized = f"\n(the cost {land.surface.note})" if land.surface.note else ""
    paths = (
        "each run's path"
        if all(len(shown) <= PANEL_PATHS for shown in panel_runs)
        else "a sample of the paths"
    )
    figure.suptitle(f"Cost landscape: {loss.label} over θ0 and θ1{others}, with {paths}{summarized}")
    figure.legend(handles=_legend_handles(colouring), loc="outside lower center", ncols=5, fontsize=9)
    return figure


def _draw_path(
    axes: Any, run: RunSummary, limits: tuple[tuple[float, float], tuple[float, float]], colour: Any
) -> None:
    """A run's path from its start (○) to its end (■), or to the ✕ where it leaves the frame."""
    path = _inside(np.asarray(run.path_theta)[:, :2], limits)
    style = STATUS_STYLES.get(run.status, "-")
    if run.status == "diverged":
        axes.plot(path[:, 0], path[:, 1], style, color=colour, lw=1.2, alpha=0.8)
        axes.plot(*path[-1], "X", color="red", mec="black", ms=9, clip_on=False, zorder=6)
    else:
        axes.plot(path[:, 0], path[:, 1], style, color=colour, lw=1.5, marker=".", ms=3)
        axes.plot(*path[-1], "s", color=colour, mec="black", ms=5, zorder=6)
    axes.plot(*path[0], "o", mfc="white", mec=colour, mew=2, ms=8, zorder=6)


def _zoom_window(
    marks: list[Mark], limits: tuple[tuple[float, float], tuple[float, float]]
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Around the minima: their span and a margin, at least 4 % of the frame each way."""
    if not marks:
        return None
    window = []
    for axis, (low, high) in enumerate(limits):
        values = [mark.theta0 if axis == 0 else mark.theta1 for mark in marks]
        half = max(1.0 * (max(values) - min(values)), 0.04 * (high - low))
        centre = (max(values) + min(values)) / 2
        window.append((centre - half, centre + half))
    return window[0], window[1]


#: Where an inset may go, in the panel's fraction: the corners and the middles of the edges.
INSET_PLACES = tuple(
    (left, bottom, 0.32, 0.32)
    for left in (0.02, 0.34, 0.66)
    for bottom in (0.02, 0.34, 0.6)  # the top row low enough for the zoom's title under the panel's
    if (left, bottom) != (0.34, 0.34)
)


def _emptiest_corner(axes: Any, runs: list[RunSummary]) -> tuple[float, float, float, float]:
    """The place in the panel that hides the fewest iterates (starts count ten times)."""
    (x0, x1), (y0, y1) = axes.get_xlim(), axes.get_ylim()
    points = [np.asarray(run.path_theta)[:, :2] for run in runs]
    starts = np.array([path[0] for path in points]) if points else np.zeros((0, 2))
    everything = np.vstack(points) if points else np.zeros((0, 2))

    def hidden(corner: tuple[float, float, float, float], where: FloatArray) -> int:
        left, bottom, width, height = corner
        fx, fy = (where[:, 0] - x0) / (x1 - x0), (where[:, 1] - y0) / (y1 - y0)
        return int(np.sum((fx >= left) & (fx <= left + width) & (fy >= bottom) & (fy <= bottom + height)))

    return min(INSET_PLACES, key=lambda place: hidden(place, everything) + 10 * hidden(place, starts))


def _draw_zoom(
    inset: Any,
    zoom: tuple[FloatArray, FloatArray, FloatArray],
    levels: FloatArray,
    window: tuple[tuple[float, float], tuple[float, float]],
    runs: list[RunSummary],
    colouring: Colouring,
    marks: list[Mark],
    loss: Cost,
) -> None:
    """The minima up close, with the paths' last steps."""
    from matplotlib.colors import LogNorm

    inset.contourf(*zoom, levels=levels, norm=LogNorm(), cmap="Blues_r", extend="min")
    for run in runs:
        if run.status != "diverged":
            path = np.asarray(run.path_theta)[:, :2]
            colour = colouring(run)
            inset.plot(path[:, 0], path[:, 1], STATUS_STYLES.get(run.status, "-"), color=colour, lw=1.2)
            inset.plot(*path[-1], "s", color=colour, mec="black", ms=5)
    _draw_marks(inset, marks, loss, labels=False)
    inset.set_xlim(*window[0])
    inset.set_ylim(*window[1])
    inset.set_xticks([])
    inset.set_yticks([])
    inset.set_title("zoom on the minima" if len(marks) > 1 else "zoom on the minimum", fontsize=9)


def _zoom(
    axes: Any,
    surface: Plane | RobustPlane,
    marks: list[Mark],
    theta0_range: tuple[float, float],
    runs: list[RunSummary],
    colouring: Colouring,
    loss: Cost,
) -> None:
    """An inset on the minima: two valleys a few thousandths apart are one line at full scale."""
    lows = [mark.theta1 for mark in marks]
    span = max(lows) - min(lows) or abs(lows[0]) or 1.0
    left, right = min(lows) - 0.6 * span, max(lows) + 0.6 * span
    theta1 = np.linspace(left, right, 60 if surface.summarized else 120)
    _, floor = surface.valley_floor(theta1, theta0_range)
    bottom = min(mark.cost for mark in marks)
    top = float(floor.max())
    inset = axes.inset_axes((0.38, 0.45, 0.3, 0.42))
    inset.plot(theta1, floor, color="black", lw=2)
    for run in runs:
        path, cost = np.asarray(run.path_theta), np.asarray(run.path_loss)
        inside = (path[:, 1] >= left) & (path[:, 1] <= right) & (cost <= top)
        inset.plot(path[inside, 1], cost[inside], ".", color=colouring(run), ms=3, alpha=0.6)
    _draw_marks(inset, marks, loss, on_floor=True, labels=False)
    inset.set_xlim(left, right)
    inset.set_ylim(bottom - 0.1 * (top - bottom), top + 0.05 * (top - bottom))
    inset.set_title("zoom on the minima", fontsize=9)
    inset.tick_params(labelsize=8)
    axes.indicate_inset_zoom(inset, edgecolor="0.4")


def _draw_runs(
    axes: Any,
    runs: list[RunSummary],
    limits: tuple[tuple[float, float], tuple[float, float]],
    colouring: Colouring,
) -> list[RunSummary]:
    """Each run's path on a panel, or where lines would be a blot (over :data:`PANEL_PATHS`),
    a dot where every run ended and an even sample of the paths; the runs drawn."""
    drawn = sample_runs(runs, PANEL_PATHS)
    if len(drawn) < len(runs):
        ends = np.array([run.theta[:2] for run in runs if run.status != "diverged" and run.theta])
        if ends.size:
            axes.plot(ends[:, 0], ends[:, 1], ".", color="black", ms=2, alpha=0.35, zorder=3)
    for run in sorted(drawn, key=lambda run: run.status != "diverged"):  # diverged underneath
        _draw_path(axes, run, limits, colouring(run))
    return drawn


def valley_figure(
    runs: list[RunSummary],
    X: FloatArray,
    y: FloatArray,
    optimum: FloatArray | None,
    labels: tuple[str, str],
    loss: Cost | None = None,
    minima: list[Minimum] | None = None,
    summary: RowSummary | None = None,
) -> Figure:
    """The cost along θ1 with θ0 at its best for each θ1, and every run's iterates on it.

    Parameters are those of :func:`landscape_figure`. With a cost of several valleys
    (welsch, cauchy) the floor shows each, labelled as the minimum it holds.
    """
    from matplotlib.figure import Figure

    loss = loss or Cost()
    minima = minima or []
    runs = [run for run in runs if run.status != "failed"]
    surface, limits = _surface_and_frame(runs, X, y, optimum, loss, minima, summary)
    kind = "mse" if loss.is_mse else "summary" if surface.summarized else "robust"
    theta1 = np.linspace(*limits[1], FLOOR_POINTS[kind])
    _, floor = surface.valley_floor(theta1, limits[0])
    figure = Figure(figsize=(10, 7), layout="constrained")
    axes = figure.add_subplot()
    axes.plot(theta1, floor, color="black", lw=2, label="valley floor: best θ0 for each θ1")
    top = float(floor.max())
    colouring = Colouring.of(runs, minima)
    drawn = sample_runs(runs, LOSS_CURVES)
    for run in drawn:
        colour = colouring(run)
        path = np.asarray(run.path_theta)
        cost = np.asarray(run.path_loss)
        shown = (path[:, 1] >= limits[1][0]) & (path[:, 1] <= limits[1][1]) & (cost <= 1.5 * top)
        axes.plot(path[shown, 1], cost[shown], ".", color=colour, ms=4, alpha=0.7)
        if shown.size and shown[0]:  # a start marker only where the run really started
            axes.plot(path[0, 1], cost[0], "o", mfc="white", mec=colour, mew=2, ms=8)
        last = int(np.flatnonzero(shown)[-1]) if shown.any() else 0
        if run.status == "diverged":
            axes.plot(path[last, 1], min(cost[last], 1.5 * top), "X", color="red", mec="black", ms=10)
        else:
            axes.plot(path[last, 1], cost[last], "s", color=colour, mec="black", ms=5)
    marks = _marks(minima, optimum, surface.cost)
    _draw_marks(axes, marks, loss, on_floor=True)
    if len(marks) > 1:
        _zoom(axes, surface, marks, limits[0], drawn, colouring, loss)
    minimum = min([float(floor.min()), *(mark.cost for mark in marks)])
    axes.set_ylim(
        minimum - 0.05 * (top - minimum), 1.5 * top - 0.5 * minimum if not loss.is_mse else 1.5 * top
    )
    axes.set_xlim(*limits[1])
    axes.set_xlabel(labels[1])
    axes.set_ylabel(loss.label)
    summarized = f"\n(the floor {surface.note})" if surface.note else ""
    if len(drawn) < len(runs):
        summarized += f"\n{len(drawn):,} of {len(runs):,} runs drawn (an even sample)"
    axes.set_title(f"Walking downhill: each run's iterates (dots) above the valley floor{summarized}")
    handles = [*_legend_handles(colouring), axes.get_lines()[0]]
    figure.legend(handles=handles, loc="outside lower center", ncols=5, fontsize=9)
    return figure


def loss_curves_figure(runs: list[RunSummary], minima: list[Minimum] | None = None) -> Figure:
    """Every run's training cost above the global minimum, per iteration, log scale.

    A run that ends in a local minimum flattens at its own height above the global one.
    """
    from matplotlib.figure import Figure

    runs = [run for run in runs if run.status != "failed"]
    figure = Figure(figsize=(10, 6), layout="constrained")
    axes = figure.add_subplot()
    colouring = Colouring.of(runs, minima or [])
    styles = STATUS_STYLES
    # Where the global minimum is unknown, the lowest cost any run reached stands in.
    lowest = min((float(np.min(run.path_loss)) for run in runs if run.path_loss), default=0.0)
    drawn = sample_runs(runs, LOSS_CURVES)
    for run in drawn:
        loss = np.asarray(run.path_loss)
        optimum = float(run.optimum_cost if run.optimum_cost is not None else lowest)
        floor = 1e-16 * max(optimum, 1.0)  # rounding can put a loss a hair below
        axes.plot(
            run.path_steps,
            np.maximum(loss - optimum, floor),
            styles[run.status],
            color=colouring(run),
            lw=1.4,
        )
    axes.set_yscale("log")
    axes.set_xscale("symlog", linthresh=10)
    axes.set_xlim(left=0)
    axes.set_xlabel("iteration")
    what = (
        "train MSE − least-squares minimum"
        if runs and runs[0].loss == "mse"
        else "train cost − global minimum"
    )
    axes.set_ylabel(what)
    sampled = (
        f"\n{len(drawn):,} of {len(runs):,} runs drawn (an even sample)" if len(drawn) < len(runs) else ""
    )
    axes.set_title(
        f"Loss curves: solid converged, dashed max_iter, dash-dot oscillating, dotted diverged{sampled}"
    )
    # Below one unit in the last place of the minimum's cost, a difference is rounding.
    reference = next((run.optimum_cost for run in runs if run.optimum_cost is not None), lowest)
    round_off = float(np.finfo(np.float64).eps) * abs(float(reference))
    handles = colouring.legend()
    if round_off > 0:
        handles.append(
            axes.axhline(
                round_off,
                color="0.35",
                lw=1.0,
                ls=(0, (1, 2)),
                label=f"float64's round-off at the minimum: 2.2e-16 × {abs(float(reference)):.3g}",
            )
        )
    axes.legend(handles=handles, fontsize=9)
    return figure
