"""Rows summarized for a robust cost's landscape and certificate: a fine 2-D histogram of (x, y).

Plain numpy, no I/O. A robust cost is a sum over the rows, with no moments to stand for
them, so every point of a landscape and every cell of the global-minimum search would
pass over every row. Above ``model.exact_rows`` rows they pass over this summary
instead: the rows binned on a grid of (x, y), each non-empty bin standing for its rows
as their count at their centroid. Its size is set by the grid, not by the row count.

**What that costs, proven.** The residual ``r = y − θ0 − θ1·x`` is linear in (x, y),
so a bin's residuals average to the residual at its centroid, ``r̄``. By Taylor's
theorem each row's ``ρ(r) = ρ(r̄) + ρ'(r̄)·(r − r̄) + ½·ρ''(ξ)·(r − r̄)²``, and the
first-order terms cancel within the bin. Summed::

    J(θ) − J_s(θ) = (1/n)·Σ ½·ρ''(ξ_i)·(r_i − r̄_b)²,     Σ (r_i − r̄_b)² = V(θ1)
    V(θ1) = S_yy − 2·θ1·S_xy + θ1²·S_xx   (the within-bin second moments, summed)

so ``|J − J_s| <= ½·sup|ρ''|·V/n`` and, one-sided, ``J >= J_s − ½·max(−ρ'')·V/n``
(the certificate's: zero for the convex costs). The pictures add each bin's
second-order term ``½·ρ''(r̄_b)·V_b(θ1)`` (its own moments), which leaves a third-order
error: ``|J − J_s2| <= (1/6)·sup|ρ‴|·D·V/n``, where no row's residual is further than
``D = w_y + |θ1|·w_x`` from its bin's, or ``½·(sup ρ'' − inf ρ'')·V/n`` where that is
less (always for Huber, whose curvature jumps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from pipeline.costs import CURVATURE_BOUND, CURVATURE_CHANGE, KERNEL_CODE, NEGATIVE_CURVATURE, Cost
from pipeline.passes import row_blocks

FloatArray = NDArray[np.float64]
#: Bins per cost scale ``c`` along the target, for the certificate: a bin's residuals
#: spread over c/40 (and as much again from x across the frame's slopes), which keeps
#: what the Welsch cost's summary may hide near 3e-5 (10⁷ King County-like rows: 1.1
#: million bins)...
CERTIFICATE_BINS_PER_SCALE = 40
#: ... and for the pictures, which add each bin's second-order term (a third-order error).
PICTURE_BINS_PER_SCALE = 4
#: Rows binned at a time (the bins found so far are merged with each batch).
SUMMARY_BATCH = 1 << 21
#: Bin indices stay within ±2³¹ so that a bin's two indices make one 64-bit key.
_INDEX_LIMIT = 1 << 31


@dataclass(frozen=True)
class RowSummary:
    """Rows (x, y) as bins: each non-empty bin's count and centroid, and the moments
    of the rows about their bin's centroid, summed over the bins.

    Attributes
    ----------
    x, y : ndarray, shape (m,)
        The centroids of the ``m`` non-empty bins.
    weight : ndarray, shape (m,)
        Rows in each bin.
    within : ndarray, shape (m, 3)
        Each bin's ``S_xx``, ``S_xy``, ``S_yy`` about its centroid.
    rows : int
        ``n``, the rows summarized.
    widths : (float, float)
        The bins' width along x and along y.
    """

    x: FloatArray
    y: FloatArray
    weight: FloatArray
    within: FloatArray
    rows: int
    widths: tuple[float, float]

    @property
    def bins(self) -> int:
        return int(self.weight.size)

    @cached_property
    def moments(self) -> tuple[float, float, float]:
        """``S_xx``, ``S_xy``, ``S_yy`` over every row: ``Σ (x − x̄_b)²`` and the like."""
        xx, xy, yy = (math.fsum(self.within[:, column]) for column in range(3))
        return xx, xy, yy

    def spread(self, theta1: float) -> float:
        """``V(θ1)/n``: the mean square of the residuals about their bin's centroid residual."""
        xx, xy, yy = self.moments
        return max(yy - 2.0 * theta1 * xy + theta1 * theta1 * xx, 0.0) / self.rows

    def error(self, cost: Cost, slopes: tuple[float, float]) -> float:
        """The most ``J`` computed from the summary can differ from ``J`` over the rows,
        for any θ whose slope lies within ``slopes`` (a quadratic in θ1: largest at an end)."""
        return 0.5 * CURVATURE_BOUND * cost.unit * max(self.spread(s) for s in slopes)

    def shortfall(self, cost: Cost, slopes: tuple[float, float]) -> float:
        """The most ``J`` over the rows can lie *below* ``J`` from the summary, slopes
        within ``slopes``: the certificate's part (0 for convex costs)."""
        return 0.5 * NEGATIVE_CURVATURE[cost.name] * cost.unit * max(self.spread(s) for s in slopes)

    def curved_error(self, cost: Cost, slopes: tuple[float, float]) -> float:
        """The most ``J`` computed from the summary to second order (:func:`bin_cost`)
        can differ from ``J`` over the rows, slopes within ``slopes``."""
        spread = max(self.spread(s) for s in slopes)
        # Second order leaves ½·(ρ''(ξ) − ρ''(r̄))·d² a row: at most the curvature's range...
        jump = 0.5 * (CURVATURE_BOUND + NEGATIVE_CURVATURE[cost.name]) * cost.unit * spread
        change = CURVATURE_CHANGE[cost.name]
        if change is None:  # ... all Huber's curvature, which jumps, gets
            return jump
        # ... or, where the curvature changes smoothly, (1/6)·sup|ρ‴|·|d|³ with |d| <= D.
        reach = self.widths[1] + max(abs(s) for s in slopes) * self.widths[0]
        return min(jump, change / cost.scale / 6.0 * cost.unit * reach * spread)

    def describe(self, cost: Cost, slopes: tuple[float, float]) -> str:
        """What a picture drawn from the summary says, e.g.
        ``from 10,000,000 rows in 812,345 bins, within ±2.1e-05``."""
        return f"from {self.rows:,} rows in {self.bins:,} bins, within ±{self.curved_error(cost, slopes):.1e}"


def bin_widths(x_scale: float, y_scale: float, cost: Cost, bins_per_scale: int) -> tuple[float, float]:
    """Widths along x and y: ``c / bins_per_scale`` along y, and along x what moves a
    residual as much at a slope of twice ``y_scale / x_scale`` (the data's own slope scale)."""
    width_y = cost.scale / bins_per_scale
    slope_reach = 2.0 * y_scale / x_scale if x_scale > 0 else 1.0
    return width_y / slope_reach, width_y


def bin_rows(x: FloatArray, y: FloatArray, cost: Cost, bins_per_scale: int) -> RowSummary:
    """Bin the rows ``x``, ``y`` (shape (n,) each; memory-mapped columns are read a
    batch at a time) on the grid :func:`bin_widths` gives for ``cost``: ``bins_per_scale``
    bins per ``c`` along y (:data:`CERTIFICATE_BINS_PER_SCALE`, :data:`PICTURE_BINS_PER_SCALE`).

    Two passes: the scales of x and y, then the bins. Each bin keeps its rows' count and
    their sums, and sums of squares and products, taken from the bin's lower corner
    (values within one width, so the within-bin moments do not cancel catastrophically).
    """
    n = int(x.shape[0])
    if n == 0 or not math.isfinite(cost.scale):
        raise ValueError("bin_rows: needs rows and a robust cost with a finite scale")
    moments = np.zeros(4)
    with np.errstate(over="ignore", invalid="ignore"):  # values near float64's limits: refused below
        for rows in row_blocks(n):
            xs, ys = np.asarray(x[rows], dtype=np.float64), np.asarray(y[rows], dtype=np.float64)
            moments += [xs.sum(), xs @ xs, ys.sum(), ys @ ys]
        x_var = max(moments[1] / n - (moments[0] / n) ** 2, 0.0)
        y_var = max(moments[3] / n - (moments[2] / n) ** 2, 0.0)
    if not (math.isfinite(x_var) and math.isfinite(y_var)):
        raise ValueError("bin_rows: the values are too far from 0 for the bins' width")
    widths = bin_widths(math.sqrt(x_var), math.sqrt(y_var), cost, bins_per_scale)
    keys = np.empty(0, dtype=np.int64)
    sums = np.empty((0, 6))
    for start in range(0, n, SUMMARY_BATCH):
        stop = min(n, start + SUMMARY_BATCH)
        batch_keys, batch_sums = _binned(np.asarray(x[start:stop]), np.asarray(y[start:stop]), widths)
        keys, sums = _merged(np.concatenate([keys, batch_keys]), np.concatenate([sums, batch_sums]))
    count = sums[:, 0]
    corner_x = (keys >> 32).astype(np.float64) * widths[0]
    corner_y = ((keys & 0xFFFFFFFF) - _INDEX_LIMIT).astype(np.float64) * widths[1]
    mean_dx, mean_dy = sums[:, 1] / count, sums[:, 2] / count
    # Σ(d − d̄)(e − ē) over a bin's rows = Σd·e − count·d̄·ē, each d within one width.
    within = np.column_stack(
        [
            np.maximum(sums[:, 3] - count * mean_dx * mean_dx, 0.0),
            sums[:, 4] - count * mean_dx * mean_dy,
            np.maximum(sums[:, 5] - count * mean_dy * mean_dy, 0.0),
        ]
    )
    return RowSummary(
        x=corner_x + mean_dx,
        y=corner_y + mean_dy,
        weight=count,
        within=within,
        rows=n,
        widths=widths,
    )


def _binned(
    x: FloatArray, y: FloatArray, widths: tuple[float, float]
) -> tuple[NDArray[np.int64], FloatArray]:
    """One batch's bins: sorted keys (m,) and per bin ``[count, Σdx, Σdy, Σdx², Σdx·dy, Σdy²]`` (m, 6),
    ``dx``, ``dy`` taken from the bin's lower corner."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    column = np.floor(x / widths[0])
    row = np.floor(y / widths[1])
    if np.abs(column).max() >= _INDEX_LIMIT - 1 or np.abs(row).max() >= _INDEX_LIMIT - 1:
        raise ValueError("bin_rows: the values are too far from 0 for the bins' width")
    dx = x - column * widths[0]
    dy = y - row * widths[1]
    keys = (column.astype(np.int64) << 32) + (row.astype(np.int64) + _INDEX_LIMIT)
    unique, inverse = np.unique(keys, return_inverse=True)
    sums = np.empty((unique.size, 6))
    for index, values in enumerate((None, dx, dy, dx * dx, dx * dy, dy * dy)):
        sums[:, index] = np.bincount(inverse, values, minlength=unique.size)
    return unique, sums


def _merged(keys: NDArray[np.int64], sums: FloatArray) -> tuple[NDArray[np.int64], FloatArray]:
    """Bins of the same key added together: sorted unique keys and their sums."""
    unique, inverse = np.unique(keys, return_inverse=True)
    merged = np.empty((unique.size, sums.shape[1]))
    for index in range(sums.shape[1]):
        merged[:, index] = np.bincount(inverse, sums[:, index], minlength=unique.size)
    return unique, merged


def bin_cost(summary: RowSummary, cost: Cost, theta: FloatArray) -> FloatArray:
    """``J`` to second order over the summary's bins for lines ``θ0 + θ1·x``: ``theta``
    (k, 2) → (k,), within :meth:`RowSummary.curved_error` of ``J`` over the rows."""
    from pipeline import kernels

    theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
    sums = kernels.bin_costs(
        summary.x,
        summary.y,
        summary.weight,
        summary.within,
        theta[:, 0],
        theta[:, 1],
        cost.scale,
        KERNEL_CODE[cost.name],
    )
    return sums * cost.unit / summary.rows
