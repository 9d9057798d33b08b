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
from pipeline.passes import row_blocks
from pipeline.summary import RowSummary

FloatArray = NDArray[np.float64]
#: Target of the certificate: the global minimum's cost is known within this much.
CERTIFICATE_EPSILON = 1e-4
#: The search gives up (uncertified) past this many cells in one round, or this many seconds.
MAX_CELLS = 2_000_000
MAX_SECONDS = 60.0
#: Relative spacing of float64 values near 1: J's own rounding.
ROUND_OFF = float(np.finfo(np.float64).eps)
#: Cells per side of the first round.
FIRST_GRID = 32
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
    summary_shortfall : float
        What the rows' summary may hide, part of ``cost − lower_bound`` (0: searched on the rows).
    """

    theta: FloatArray
    cost: float
    lower_bound: float
    certified: bool
    frame: tuple[tuple[float, float], tuple[float, float]]
    cells: int
    seconds: float
    summary_shortfall: float = 0.0


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


def line_cost(
    x: FloatArray, y: FloatArray, cost: Cost, theta: FloatArray, weight: FloatArray | None = None
) -> tuple[FloatArray, FloatArray]:
    """``J`` and its gradient for lines ``θ0 + θ1·x``; ``theta`` shape (k, 2) → shapes (k,), (k, 2).

    ``x``, ``y`` (n,) are the rows, or with ``weight`` (n,) a summary's bins, each
    standing for ``weight`` rows at its centroid (:class:`pipeline.summary.RowSummary`).
    """
    from pipeline import kernels

    theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
    scale = cost.scale if math.isfinite(cost.scale) else 1.0
    sums = kernels.line_costs(x, y, theta[:, 0], theta[:, 1], scale, KERNEL_CODE[cost.name], weight)
    rows = x.size if weight is None else float(weight.sum())
    factor = cost.unit / rows
    return sums[:, 0] * factor, sums[:, 1:] * factor


def _hessian(
    x: FloatArray, y: FloatArray, cost: Cost, theta: FloatArray, weight: FloatArray | None
) -> FloatArray:
    """``∇²J`` (2, 2) at ``theta``, a block of rows at a time."""
    total = np.zeros((2, 2))
    for rows in row_blocks(len(x)):
        xs = np.asarray(x[rows], dtype=np.float64)
        curvature = cost.scaled_curvature(theta[0] + theta[1] * xs - np.asarray(y[rows], dtype=np.float64))
        if weight is not None:
            curvature = curvature * weight[rows]
        total += [[curvature.sum(), curvature @ xs], [curvature @ xs, curvature @ (xs * xs)]]
    rows_count = len(x) if weight is None else float(weight.sum())
    return total * cost.unit / rows_count


def _polish(
    x: FloatArray,
    y: FloatArray,
    cost: Cost,
    theta: FloatArray,
    steps: int = 50,
    weight: FloatArray | None = None,
) -> FloatArray:
    """A few damped Newton steps downhill from ``theta`` (2,): a better upper bound, never worse."""
    best = np.asarray(theta, dtype=np.float64)
    value, gradient = (v[0] for v in line_cost(x, y, cost, best, weight))
    for _ in range(steps):
        try:
            direction = -np.linalg.solve(_hessian(x, y, cost, best, weight), gradient)
        except np.linalg.LinAlgError:
            break
        decrease = -float(direction @ gradient)  # twice what the step should take off J
        if not decrease > 0:  # not a descent direction: not near a minimum
            break
        if decrease < 4 * ROUND_OFF * abs(value):  # below J's rounding: a step would chase noise
            break
        t = 1.0
        while t > 1e-12:
            trial = best + t * direction
            trial_value, trial_gradient = (v[0] for v in line_cost(x, y, cost, trial, weight))
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
    summary: RowSummary | None = None,
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

    With a ``summary`` of the rows, the search runs on its bins, whose cost ``J_s``
    lies above ``J`` by at most :meth:`~pipeline.summary.RowSummary.shortfall` anywhere
    in the frame: the search's tolerance is ``epsilon`` less that, the proven lower
    bound is the bins' less that, and the best point is polished and costed on the rows.

    Parameters
    ----------
    x, y : ndarray, shape (n,)
        The feature and the target (memory-mapped columns do: they are read in blocks
        where a summary stands for them).
    cost : Cost
    frame : ((θ0 low, θ0 high), (θ1 low, θ1 high))
    epsilon : float
        The certificate's tolerance on ``J``, the summary's share included.
    max_seconds : float
        Budget; past it (or past :data:`MAX_CELLS` in a round) the answer is uncertified.
    summary : RowSummary, optional
        Bins that stand for the rows in the search.
    """
    began = time.perf_counter()
    shortfall = 0.0 if summary is None else summary.shortfall(cost, frame[1])
    if summary is None:
        x = np.ascontiguousarray(x, dtype=np.float64)
        y = np.ascontiguousarray(y, dtype=np.float64)
        px, py, weight = x, y, None
        search_epsilon = epsilon
    else:
        px, py, weight = summary.x, summary.y, summary.weight
        # The bins' cost may lie below the rows' by the shortfall anywhere, and above
        # them near the minimum by about as much: the search keeps the rest of epsilon,
        # a tenth of it at least (the certificate then fails where the bins are too coarse).
        search_epsilon = max(epsilon - 2.0 * shortfall, 0.1 * epsilon)
    points = (px, py, cost)
    share = np.ones_like(px) / px.size if weight is None else weight / weight.sum()
    bend = 0.5 * NEGATIVE_CURVATURE[cost.name] * cost.unit
    mean_x, mean_xx = abs(float(share @ px)), float(share @ (px * px))
    (a0, a1), (b0, b1) = frame
    half = np.array([(a1 - a0) / (2 * FIRST_GRID), (b1 - b0) / (2 * FIRST_GRID)])
    steps = np.arange(FIRST_GRID) * 2 + 1
    grid0, grid1 = np.meshgrid(a0 + steps * half[0], b0 + steps * half[1], indexing="ij")
    centres = np.column_stack([grid0.ravel(), grid1.ravel()])
    best_theta, best = centres[0], math.inf
    evaluated = 0
    lowest_open = proven = math.inf
    while centres.size:
        values, gradients = line_cost(*points, centres, weight)
        evaluated += len(centres)
        lowest = int(np.argmin(values))
        if values[lowest] < best:
            best_theta, best = centres[lowest], float(values[lowest])
            polished = _polish(*points, best_theta, weight=weight)
            if a0 <= polished[0] <= a1 and b0 <= polished[1] <= b1:
                polished_value = float(line_cost(*points, polished, weight)[0][0])
                if polished_value < best:
                    best_theta, best = polished, polished_value
        reach = half[0] ** 2 + 2 * half[0] * half[1] * mean_x + half[1] ** 2 * mean_xx
        bounds = values - np.abs(gradients) @ half - bend * reach
        open_cells = bounds < best - search_epsilon
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
    lower = min(best, proven, lowest_open) - shortfall
    if summary is not None:  # the best point, polished and costed on the rows themselves
        polished = _polish(x, y, cost, best_theta, steps=10)
        if a0 <= polished[0] <= a1 and b0 <= polished[1] <= b1:
            best_theta = polished
        best = float(line_cost(x, y, cost, best_theta)[0][0])
    return Certificate(
        theta=np.asarray(best_theta, dtype=np.float64),
        cost=best,
        lower_bound=lower,
        certified=best - lower <= epsilon,
        frame=frame,
        cells=evaluated,
        seconds=time.perf_counter() - began,
        summary_shortfall=shortfall,
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
