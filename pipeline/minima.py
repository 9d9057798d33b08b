"""Where runs end: the global minimum of a cost (certified where it can be), and where each run stands.

Pure numpy (the passes over the rows are compiled, :mod:`pipeline.kernels`); no files,
no MLflow. For the MSE the global minimum is the least-squares solution. For a
two-parameter line ``θ0 + θ1·x`` and any cost of :mod:`pipeline.costs`,
:func:`certify_global_minimum` searches a frame by branch and bound and proves that
nothing in it is lower than the point found by more than ``ε``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipeline.costs import KERNEL_CODE, NEGATIVE_CURVATURE, Cost
from pipeline.outcome import SAME_COST, EndPoint

FloatArray = NDArray[np.float64]
#: Target of the certificate: the global minimum's cost is known within this much.
CERTIFICATE_EPSILON = 1e-4
#: The search gives up (uncertified) past this many cells in one round, or this many seconds.
MAX_CELLS = 2_000_000
MAX_SECONDS = 60.0
#: Cells per side of the first round.
FIRST_GRID = 64
#: Largest Hessian eigenvalue, in standardized units (the MSE's is 2), below which a run
#: stands on a plateau: every residual far beyond the cost's scale, nothing pulls θ.
PLATEAU_CURVATURE = 1e-3


@dataclass(frozen=True)
class Certificate:
    """The global minimum of a cost over a frame.

    Attributes
    ----------
    theta : ndarray, shape (2,)
        The best point found, original units (intercept, slope).
    cost : float
        ``J`` there.
    lower_bound : float
        Proven: no θ in the frame has a lower cost. ``cost − lower_bound <= ε`` when certified.
    certified : bool
        False when the search stopped at its budget before reaching ``ε``.
    frame : ((float, float), (float, float))
        The θ0 and θ1 limits searched.
    cells : int
        Cells whose cost and gradient were evaluated.
    seconds : float
        Time taken.
    """

    theta: FloatArray
    cost: float
    lower_bound: float
    certified: bool
    frame: tuple[tuple[float, float], tuple[float, float]]
    cells: int
    seconds: float


@dataclass(frozen=True)
class GlobalMinimum:
    """The reference a run's optimality gap is measured against.

    Attributes
    ----------
    theta : ndarray, shape (p,) or None
        Where it is, original units, intercept first; None where it is unknown (a
        non-convex cost with more than two parameters).
    cost : float or None
        The cost there.
    how : str
        ``least squares`` (the MSE), ``branch and bound`` (certified over the frame, within
        ``CERTIFICATE_EPSILON``), ``best found`` (the search ran out of budget) or ``unknown``.
    """

    theta: FloatArray | None
    cost: float | None
    how: str


def line_cost(x: FloatArray, y: FloatArray, cost: Cost, theta: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``J`` and its gradient for lines ``θ0 + θ1·x``; ``theta`` shape (k, 2) → shapes (k,), (k, 2)."""
    from pipeline import kernels

    theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
    scale = cost.scale if math.isfinite(cost.scale) else 1.0
    sums = kernels.line_costs(x, y, theta[:, 0], theta[:, 1], scale, KERNEL_CODE[cost.name])
    factor = cost.unit / x.size
    return sums[:, 0] * factor, sums[:, 1:] * factor


def _polish(x: FloatArray, y: FloatArray, cost: Cost, theta: FloatArray, steps: int = 50) -> FloatArray:
    """A few damped Newton steps downhill from ``theta`` (2,): a better upper bound, never worse."""
    design = np.column_stack([np.ones_like(x), x])
    best = np.asarray(theta, dtype=np.float64)
    value, gradient = (v[0] for v in line_cost(x, y, cost, best))
    for _ in range(steps):
        curvature = cost.unit * cost.scaled_curvature(design @ best - y)
        hessian = (design * curvature[:, np.newaxis]).T @ design / x.size
        try:
            direction = -np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:
            break
        if not float(direction @ gradient) < 0:  # not a descent direction: not near a minimum
            break
        t = 1.0
        while t > 1e-12:
            trial = best + t * direction
            trial_value, trial_gradient = (v[0] for v in line_cost(x, y, cost, trial))
            if trial_value < value:
                break
            t *= 0.5
        else:
            break
        best, value, gradient = trial, trial_value, trial_gradient
    return best


def certify_global_minimum(
    x: FloatArray,
    y: FloatArray,
    cost: Cost,
    frame: tuple[tuple[float, float], tuple[float, float]],
    epsilon: float = CERTIFICATE_EPSILON,
    max_seconds: float = MAX_SECONDS,
) -> Certificate:
    """The lowest cost of the line ``θ0 + θ1·x`` over ``frame``, proven within ``epsilon``.

    Branch and bound on a grid of cells. On a cell with centre ``m`` and half-widths
    ``h``, Taylor's theorem with the cost's most negative curvature ``−M`` (per unit
    residual, :data:`pipeline.costs.NEGATIVE_CURVATURE`) gives, for every ``δ`` with
    ``|δ| <= h``::

        J(m + δ) >= J(m) − |∂0 J|·h0 − |∂1 J|·h1 − ½·M·max(mean((δ0 + δ1·x)²))

    whose last term is ``h0² + 2·h0·h1·|mean x| + h1²·mean(x²)``: an error that
    shrinks with the cell's size squared. A cell whose bound is above the best cost
    found less ``epsilon`` cannot hold the global minimum and is dropped; the others are
    split in four, until none is left.

    Parameters
    ----------
    x, y : ndarray, shape (n,)
        The feature and the target.
    cost : Cost
    frame : ((θ0 low, θ0 high), (θ1 low, θ1 high))
    epsilon : float
        The certificate's tolerance on ``J``.
    max_seconds : float
        Budget; past it (or past :data:`MAX_CELLS` in a round) the answer is uncertified.
    """
    began = time.perf_counter()
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    bend = 0.5 * NEGATIVE_CURVATURE[cost.name] * cost.unit
    mean_x, mean_xx = abs(float(x.mean())), float(x @ x / x.size)
    (a0, a1), (b0, b1) = frame
    half = np.array([(a1 - a0) / (2 * FIRST_GRID), (b1 - b0) / (2 * FIRST_GRID)])
    steps = np.arange(FIRST_GRID) * 2 + 1
    grid0, grid1 = np.meshgrid(a0 + steps * half[0], b0 + steps * half[1], indexing="ij")
    centres = np.column_stack([grid0.ravel(), grid1.ravel()])
    best_theta, best = centres[0], math.inf
    evaluated = 0
    lowest_open = proven = math.inf
    while centres.size:
        values, gradients = line_cost(x, y, cost, centres)
        evaluated += len(centres)
        lowest = int(np.argmin(values))
        if values[lowest] < best:
            best_theta, best = centres[lowest], float(values[lowest])
            polished = _polish(x, y, cost, best_theta)
            if a0 <= polished[0] <= a1 and b0 <= polished[1] <= b1:
                polished_value = float(line_cost(x, y, cost, polished)[0][0])
                if polished_value < best:
                    best_theta, best = polished, polished_value
        reach = half[0] ** 2 + 2 * half[0] * half[1] * mean_x + half[1] ** 2 * mean_xx
        bounds = values - np.abs(gradients) @ half - bend * reach
        open_cells = bounds < best - epsilon
        if (~open_cells).any():  # what the dropped cells prove
            proven = min(proven, float(bounds[~open_cells].min()))
        lowest_open = float(bounds[open_cells].min()) if open_cells.any() else math.inf
        kept = centres[open_cells]
        too_slow = time.perf_counter() - began > max_seconds or 4 * len(kept) > MAX_CELLS
        if not len(kept) or too_slow:
            break
        half = half / 2
        offsets = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]]) * half
        centres = (kept[:, np.newaxis, :] + offsets[np.newaxis, :, :]).reshape(-1, 2)
    lower = min(best, proven, lowest_open)
    return Certificate(
        theta=np.asarray(best_theta, dtype=np.float64),
        cost=best,
        lower_bound=lower,
        certified=best - lower <= epsilon,
        frame=frame,
        cells=evaluated,
        seconds=time.perf_counter() - began,
    )


def end_point(
    status: str, eigenvalues: FloatArray, train_cost: float, global_cost: float | None, convex: bool
) -> EndPoint:
    """Where a run ended, from its status, its Hessian's eigenvalues (standardized) and its cost.

    A plateau: every curvature near 0 (whatever the status). A minimum: converged with a
    positive-definite Hessian; the global one when the cost is the global minimum's (to
    :data:`SAME_COST`, or a convex cost), a local one otherwise, also where the global
    minimum is unknown (``global_cost`` None). Anything else: none.
    """
    if status in ("failed", "diverged", "oscillating"):
        return "none"
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    finite = eigenvalues.size and np.isfinite(eigenvalues).all()
    if finite and float(np.abs(eigenvalues).max()) < PLATEAU_CURVATURE:
        return "plateau"
    if status != "converged" or not (finite and float(eigenvalues.min()) > 0):
        return "none"
    if convex:
        return "global minimum"
    if global_cost is None:  # no certificate (more than two parameters): a minimum, not known global
        return "local minimum"
    at_global = train_cost <= global_cost + SAME_COST * max(abs(global_cost), 1e-300)
    return "global minimum" if at_global else "local minimum"
