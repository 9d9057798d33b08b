"""Pictures of a sweep: the cost landscape with every run's path, the valley floor, the loss curves.

Pure functions: arrays and run summaries in, matplotlib figures out; no files, no MLflow.
matplotlib is imported only when a figure is drawn.

Runs are :class:`pipeline.outcome.RunSummary` records; failed runs are left out, and
the others carry ``lr``, ``status``, ``theta_init``, ``theta`` and the thinned
``path_steps`` (m,), ``path_theta`` (m, d+1) and ``path_loss`` (m,).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from pipeline.outcome import RunSummary

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FloatArray = NDArray[np.float64]
GRID_POINTS = 241
PADDING = 0.15


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
        x = X[:, 0]
        a = y - X[:, 1:] @ optimum[2:]
        return cls(
            float(a.mean()),
            float(x.mean()),
            float(a @ a / a.size),
            float(a @ x / a.size),
            float(x @ x / x.size),
        )

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

    def valley_floor(self, theta1: FloatArray) -> tuple[FloatArray, FloatArray]:
        """For each θ1, the best θ0 and the MSE there: the bottom of the valley."""
        theta0 = self.mean_a - theta1 * self.mean_x
        return theta0, self.mse(theta0, theta1)


def run_lr(run: RunSummary) -> float:
    """The learning rate a drawn run used (every run that is drawn has one)."""
    return float(run.lr if run.lr is not None else "nan")


def _frame(runs: list[RunSummary], optimum: FloatArray) -> tuple[tuple[float, float], tuple[float, float]]:
    """(θ0, θ1) limits holding every start, the optimum and every path that did not diverge."""
    points = [np.asarray(run.theta_init)[:2] for run in runs] + [optimum[:2]]
    for run in runs:
        if run.status != "diverged":
            points.extend(np.asarray(run.path_theta)[:, :2])
    box = np.array(points)
    low, high = box.min(axis=0), box.max(axis=0)
    span = np.where(high > low, high - low, np.maximum(np.abs(high), 1.0))
    low, high = low - PADDING * span, high + PADDING * span
    return (float(low[0]), float(high[0])), (float(low[1]), float(high[1]))


def _rate_colours(runs: list[RunSummary]) -> dict[float, Any]:
    from matplotlib import colormaps

    rates = sorted({run_lr(run) for run in runs})
    palette = colormaps["plasma"]
    return {rate: palette(0.85 * i / max(len(rates) - 1, 1)) for i, rate in enumerate(rates)}


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


def _legend_handles(colours: dict[float, Any]) -> list[Any]:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colour, lw=2, label=f"lr = {rate:g}") for rate, colour in colours.items()]
    handles += [
        Line2D([], [], ls="", marker="o", mfc="white", mec="black", label="start"),
        Line2D([], [], ls="", marker="s", color="black", ms=5, label="end"),
        Line2D([], [], ls="", marker="X", color="red", ms=9, label="diverged (leaves the frame)"),
        Line2D([], [], ls="", marker="*", color="gold", mec="black", ms=16, label="global minimum"),
    ]
    return handles


def landscape_figure(
    runs: list[RunSummary], X: FloatArray, y: FloatArray, optimum: FloatArray, labels: tuple[str, str]
) -> Figure:
    """Contour map of the training MSE over (θ0, θ1) with each run's path downhill.

    Parameters
    ----------
    runs : list of dict
        Run summaries (see the module docstring); failed runs are left out.
    X : ndarray, shape (n, d)
    y : ndarray, shape (n,)
    optimum : ndarray, shape (d + 1,)
        The least-squares θ, starred as the global minimum.
    labels : (str, str)
        Axis labels for θ0 and θ1, with units.
    """
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    runs = [run for run in runs if run.status != "failed"]
    plane = Plane.from_data(X, y, optimum)
    limits = _frame(runs, optimum)
    theta0, theta1 = np.meshgrid(np.linspace(*limits[0], GRID_POINTS), np.linspace(*limits[1], GRID_POINTS))
    minimum = float(plane.mse(np.array(optimum[0]), np.array(optimum[1])))
    excess = np.maximum(plane.mse(theta0, theta1) - minimum, 1e-12 * max(minimum, 1.0))
    levels = np.geomspace(excess.max() * 1e-5, excess.max(), 26)

    figure = Figure(figsize=(10, 8.5), layout="constrained")
    axes = figure.add_subplot()
    filled = axes.contourf(
        theta0, theta1, excess, levels=levels, norm=LogNorm(), cmap="Blues_r", extend="min"
    )
    axes.contour(theta0, theta1, excess, levels=levels[::3], colors="white", linewidths=0.5, alpha=0.6)
    bar = figure.colorbar(filled, ax=axes, format="%.0e")
    bar.set_label("train MSE above the minimum (log scale)")

    colours = _rate_colours(runs)
    # Diverged paths first and dashed: they zig-zag across the valley and would hide the rest.
    for run in sorted(runs, key=lambda run: run.status != "diverged"):
        colour = colours[run_lr(run)]
        path = _inside(np.asarray(run.path_theta)[:, :2], limits)
        if run.status == "diverged":
            axes.plot(path[:, 0], path[:, 1], "--", color=colour, lw=1, alpha=0.7)
            axes.plot(*path[-1], "X", color="red", mec="black", ms=10, clip_on=False, zorder=6)
        else:
            axes.plot(path[:, 0], path[:, 1], ".-", color=colour, lw=1.6, ms=4)
            axes.plot(*path[-1], "s", color=colour, mec="black", ms=5)
        axes.plot(*path[0], "o", mfc="white", mec=colour, mew=2, ms=9)
    axes.plot(optimum[0], optimum[1], "*", color="gold", mec="black", ms=20, zorder=5)
    axes.annotate(
        "global minimum",
        (optimum[0], optimum[1]),
        xytext=(12, -18),
        textcoords="offset points",
        fontsize=11,
        fontweight="bold",
        bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8},
    )
    axes.set_xlim(*limits[0])
    axes.set_ylim(*limits[1])
    axes.set_xlabel(labels[0])
    axes.set_ylabel(labels[1])
    others = " (other coefficients at their optimum)" if X.shape[1] > 1 else ""
    axes.set_title(f"Cost landscape: training MSE over θ0 and θ1{others}, with each run's path")
    axes.ticklabel_format(style="plain", useOffset=False)
    figure.legend(handles=_legend_handles(colours), loc="outside lower center", ncols=4, fontsize=9)
    return figure


def valley_figure(
    runs: list[RunSummary], X: FloatArray, y: FloatArray, optimum: FloatArray, labels: tuple[str, str]
) -> Figure:
    """The cost along θ1 with θ0 at its best for each θ1, and every run's iterates on it.

    Parameters are those of :func:`landscape_figure`.
    """
    from matplotlib.figure import Figure

    runs = [run for run in runs if run.status != "failed"]
    plane = Plane.from_data(X, y, optimum)
    limits = _frame(runs, optimum)
    theta1 = np.linspace(*limits[1], 400)
    _, floor = plane.valley_floor(theta1)
    figure = Figure(figsize=(10, 7), layout="constrained")
    axes = figure.add_subplot()
    axes.plot(theta1, floor, color="black", lw=2, label="valley floor: best θ0 for each θ1")
    top = float(floor.max())
    colours = _rate_colours(runs)
    for run in runs:
        colour = colours[run_lr(run)]
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
    minimum = float(plane.mse(np.array(optimum[0]), np.array(optimum[1])))
    axes.plot(optimum[1], minimum, "*", color="gold", mec="black", ms=20, zorder=5)
    axes.annotate(
        "global minimum", (optimum[1], minimum), xytext=(12, 12), textcoords="offset points", fontsize=11
    )
    axes.set_ylim(minimum - 0.05 * (top - minimum), 1.5 * top)
    axes.set_xlim(*limits[1])
    axes.set_xlabel(labels[1])
    axes.set_ylabel("training MSE")
    axes.set_title("Walking downhill: each run's iterates (dots) above the valley floor")
    handles = [*_legend_handles(colours), axes.get_lines()[0]]
    figure.legend(handles=handles, loc="outside lower center", ncols=5, fontsize=9)
    return figure


def loss_curves_figure(runs: list[RunSummary]) -> Figure:
    """Every run's training MSE above the least-squares minimum, per iteration, log scale."""
    from matplotlib.figure import Figure

    runs = [run for run in runs if run.status != "failed"]
    figure = Figure(figsize=(10, 6), layout="constrained")
    axes = figure.add_subplot()
    colours = _rate_colours(runs)
    styles = {"converged": "-", "max_iter": "--", "oscillating": "-.", "diverged": ":"}
    for run in runs:
        loss = np.asarray(run.path_loss)
        floor = 1e-16 * max(float(run.optimum_mse or 0.0), 1.0)  # rounding can put a loss a hair below
        axes.plot(
            run.path_steps,
            np.maximum(loss - (run.optimum_mse or 0.0), floor),
            styles[run.status],
            color=colours[run_lr(run)],
            lw=1.4,
        )
    axes.set_yscale("log")
    axes.set_xscale("symlog", linthresh=10)
    axes.set_xlim(left=0)
    axes.set_xlabel("iteration")
    axes.set_ylabel("train MSE − least-squares minimum")
    axes.set_title("Loss curves: solid converged, dashed max_iter, dash-dot oscillating, dotted diverged")
    from matplotlib.lines import Line2D

    axes.legend(
        handles=[
            Line2D([], [], color=colour, lw=2, label=f"lr = {rate:g}") for rate, colour in colours.items()
        ],
        fontsize=9,
    )
    return figure
