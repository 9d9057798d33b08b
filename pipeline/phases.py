"""The phase diagram of heavy-ball momentum on the MSE: over (learning rate, β), how runs end.

Each cell is a real run of :func:`pipeline.optimize.fit_many` from the same start, with
the project's stopping rules: it converges, oscillates, diverges or runs out of its
budget, in a number of iterations. On a quadratic the textbook bound says where:
heavy ball is stable iff ``0 <= β < 1`` and ``lr · λ < 2 (1 + β)`` for every
eigenvalue λ of the Hessian, so the border is ``lr = 2 (1 + β) / L`` (standardized
units, in which :func:`fit` steps). The diagram draws that line over the cells.

Pure functions: arrays in, a record or a matplotlib figure out; no files, no MLflow.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pipeline.methods import momentum
from pipeline.objective import as_design, standardize
from pipeline.optimize import ConvergenceWarning, Start, fit_many

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FloatArray = NDArray[np.float64]
#: The outcomes of a cell other than converging, with their colours (converged cells are
#: coloured by how many iterations they took).
OUTCOMES = {"max_iter": "#bdbdbd", "oscillating": "#f4a259", "diverged": "#c0392b"}
#: Iterates each cell keeps (only its end and iteration count are drawn).
CELL_HISTORY = 2


@dataclass(frozen=True)
class PhaseMap:
    """How momentum runs from one start end, over a grid of learning rates and β.

    Attributes
    ----------
    lrs : ndarray, shape (a,)
        Learning rates, standardized units, ascending.
    betas : ndarray, shape (b,)
        Momentum β, ascending, in [0, 1).
    status : ndarray of str, shape (b, a)
        ``converged``, ``max_iter``, ``oscillating`` or ``diverged``, as :func:`fit` says.
    n_iter : ndarray of int, shape (b, a)
        Iterations each run made.
    mu, L : float
        Smallest and largest curvature of the standardized MSE (the Hessian's eigenvalues).
    max_iter : int
        The budget of every run.
    """

    lrs: FloatArray
    betas: FloatArray
    status: NDArray[np.str_]
    n_iter: NDArray[np.int64]
    mu: float
    L: float
    max_iter: int


def phase_map(
    X: ArrayLike,
    y: ArrayLike,
    theta_init: ArrayLike,
    lrs: ArrayLike,
    betas: ArrayLike,
    *,
    max_iter: int,
    tol: float,
    divergence_ratio: float,
    fit_intercept: bool = True,
) -> PhaseMap:
    """Run heavy-ball momentum from ``theta_init`` at every (lr, β) of the grid.

    Parameters
    ----------
    X : array_like, shape (n, d) or (n,)
        Feature values, original units.
    y : array_like, shape (n,)
        Target values, original units.
    theta_init : array_like, shape (d + 1,)
        The start of every run, original units, intercept first.
    lrs : array_like, shape (a,)
        Learning rates (standardized units, > 0).
    betas : array_like, shape (b,)
        Momentum values in [0, 1).
    max_iter, tol, divergence_ratio, fit_intercept
        As for :func:`pipeline.optimize.fit`, shared by every run.

    Returns
    -------
    PhaseMap
        Each run's status and iteration count, rows by β, columns by learning rate.
    """
    lr_grid = np.asarray(lrs, dtype=np.float64)
    beta_grid = np.asarray(betas, dtype=np.float64)
    starts = [Start(theta_init, momentum(float(lr), float(beta))) for beta in beta_grid for lr in lr_grid]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # every cell past the border would warn
        results = fit_many(
            X,
            y,
            starts,
            max_iter=max_iter,
            tol=tol,
            divergence_ratio=divergence_ratio,
            fit_intercept=fit_intercept,
            history_limit=CELL_HISTORY,
        )
    mu, L = curvatures(X, y, fit_intercept)
    shape = (beta_grid.size, lr_grid.size)
    return PhaseMap(
        lrs=lr_grid,
        betas=beta_grid,
        status=np.array([result.status for result in results]).reshape(shape),
        n_iter=np.array([result.n_iter for result in results], dtype=np.int64).reshape(shape),
        mu=mu,
        L=L,
        max_iter=max_iter,
    )


def curvatures(X: ArrayLike, y: ArrayLike, fit_intercept: bool = True) -> tuple[float, float]:
    """μ and L: the smallest and largest curvature of the standardized MSE, as :func:`fit` sees it."""
    _, quadratic = standardize(*as_design(X, y, check_finite=False), fit_intercept)
    mu, L = quadratic.curvatures()
    return float(mu), float(L)


def stable_lr(beta: ArrayLike, L: float) -> FloatArray:
    """The largest stable learning rate of heavy ball on a quadratic of top curvature ``L``:
    ``2 (1 + β) / L`` (shape of ``beta``)."""
    return 2.0 * (1.0 + np.asarray(beta, dtype=np.float64)) / L


def phase_figure(phase: PhaseMap, runs: Sequence[tuple[float, float, str]], title: str) -> Figure:
    """The diagram: each cell coloured by how its run ended (converged cells by how many
    iterations they took), the textbook border, and ``runs`` as dots.

    ``runs`` are the sweep's momentum runs as (lr, β, status), standardized units.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import ListedColormap, LogNorm
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    figure = Figure(figsize=(11, 7.5), dpi=110, layout="constrained")
    axes = figure.add_subplot()
    edges_lr = _edges(np.log10(phase.lrs))
    edges_beta = _edges(phase.betas)
    converged = np.where(phase.status == "converged", phase.n_iter, np.nan).astype(np.float64)
    upper = max(float(np.nanmax(converged)) if np.isfinite(converged).any() else 2.0, 2.0)
    mesh = axes.pcolormesh(
        10**edges_lr,
        edges_beta,
        np.ma.masked_invalid(converged),
        cmap="viridis_r",
        norm=LogNorm(vmin=1, vmax=upper),
        shading="flat",
    )
    colourbar = figure.colorbar(mesh, ax=axes)
    colourbar.set_label("iterations to converge", fontsize=14)
    present = [outcome for outcome in OUTCOMES if (phase.status == outcome).any()]
    for outcome in present:
        cells = np.where(phase.status == outcome, 1.0, np.nan)
        colours = ListedColormap([OUTCOMES[outcome]])
        axes.pcolormesh(10**edges_lr, edges_beta, np.ma.masked_invalid(cells), cmap=colours, shading="flat")
    border = np.linspace(phase.betas[0], phase.betas[-1], 200)
    axes.plot(stable_lr(border, phase.L), border, color="black", linewidth=2.5)
    axes.annotate(
        "lr = 2(1+β)/L: beyond it, no step size is stable",
        xy=(float(stable_lr(border[len(border) // 3], phase.L)), float(border[len(border) // 3])),
        xytext=(-20, 0),
        textcoords="offset points",
        ha="right",
        fontsize=13,
        backgroundcolor=(1, 1, 1, 0.7),
    )
    for lr, beta, status in runs:
        axes.plot(
            lr, beta, "o", markersize=11, markerfacecolor="white", markeredgecolor="black", markeredgewidth=2
        )
        axes.annotate(status, (lr, beta), xytext=(8, 6), textcoords="offset points", fontsize=11)
    axes.set_xscale("log")
    axes.set_xlim(10 ** edges_lr[0], 10 ** edges_lr[-1])
    axes.set_ylim(edges_beta[0], edges_beta[-1])
    axes.set_xlabel("learning rate (standardized units)", fontsize=15)
    axes.set_ylabel("momentum β", fontsize=15)
    axes.tick_params(labelsize=13)
    handles: list[Any] = [
        Patch(color=OUTCOMES[outcome], label=_label(outcome, phase.max_iter)) for outcome in present
    ]
    handles.append(
        Patch(color=matplotlib.colormaps["viridis_r"](0.3), label="converged (colour: iterations)")
    )
    if runs:
        handles.append(
            axes.plot(
                [],
                [],
                "o",
                markerfacecolor="white",
                markeredgecolor="black",
                label="the sweep's momentum runs",
            )[0]
        )
    axes.legend(handles=handles, loc="lower left", fontsize=12, framealpha=0.9)
    axes.set_title(title, fontsize=16)
    return figure


def _label(outcome: str, max_iter: int) -> str:
    return f"not there within {max_iter:,} iterations" if outcome == "max_iter" else outcome


def _edges(centres: FloatArray) -> FloatArray:
    """Cell edges around evenly spaced ``centres`` (shape (k,) → (k + 1,))."""
    step = (centres[-1] - centres[0]) / max(centres.size - 1, 1) if centres.size > 1 else 1.0
    return np.concatenate([[centres[0] - step / 2], centres + step / 2])


def grid(low: float, high: float, cells: int, *, log: bool) -> FloatArray:
    """``cells`` evenly spaced values from ``low`` to ``high`` (on a log scale if ``log``)."""
    if log:
        return np.logspace(math.log10(low), math.log10(high), cells)
    return np.linspace(low, high, cells)
