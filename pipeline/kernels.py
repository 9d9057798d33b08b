"""Compiled passes over the rows: the MSE without statistics, and the robust costs.

numba fuses the standardized residual, its cost, the cost's derivative and its
products with the columns into one loop, split over the cores: one read of X and y
per pass, where numpy needs six operations per block. Imported only when such a pass
is asked for (numba compiles, or loads from its cache, on first use).

The robust costs use the scaled form of :mod:`pipeline.costs` with scale ``c``:
``r²`` (mse), Huber's ``r²`` / ``2c|r| − c²``, ``c²·log(1 + r²/c²)`` (cauchy) and
``c²·(1 − exp(−r²/c²))`` (welsch), codes 0 to 3 (``costs.KERNEL_CODE``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


#: Work pieces per pass. Fixed, not a multiple of the thread count: the sums are then
#: added in the same order on any machine and with any number of threads, so θ does
#: not depend on how many cores a launcher gives a job.
CHUNKS = 64


def chunk_count() -> int:
    """Work pieces per pass (:data:`CHUNKS`, whatever the number of threads)."""
    return CHUNKS


def residual_sums(
    X: FloatArray, ys: FloatArray, slopes: FloatArray, constant: float, chunks: int
) -> FloatArray:
    """For ``r = X @ slopes + constant − ys``: ``[Σr, Σr², Σr·X[:, 0], …]``, shape (d + 2,)."""
    if X.shape[1] == 1:  # the common case, every sum in a register
        partial = _one_column_sums(X[:, 0], ys, float(slopes[0]), constant, chunks)
    else:
        partial = _many_column_sums(X, ys, slopes, constant, chunks)
    # Summed here, in numpy's fixed order: inside a parallel function numba would turn
    # this sum into a parallel reduction whose order follows the thread count.
    return np.asarray(np.sum(partial, axis=0), dtype=np.float64)


def combination_squares(X: FloatArray, slopes: FloatArray, constant: float, chunks: int) -> float:
    """``Σ (X @ slopes + constant)²`` over the rows."""
    return float(np.sum(_combination_squares(X, slopes, constant, chunks)))


# Each chunk is summed by a plain compiled loop over its slice of rows (which numba
# vectorizes), the chunks run in parallel, and the partial sums come back to be added
# in numpy's fixed order.


@njit(cache=True, fastmath=True)
def _slice_one_column(x: FloatArray, ys: FloatArray, slope: float, constant: float) -> Any:
    total = 0.0
    squares = 0.0
    cross = 0.0
    for i in range(x.shape[0]):
        r = x[i] * slope + constant - ys[i]
        total += r
        squares += r * r
        cross += r * x[i]
    return total, squares, cross


@njit(parallel=True, cache=True)
def _one_column_sums(x: FloatArray, ys: FloatArray, slope: float, constant: float, chunks: int) -> Any:
    n = x.shape[0]
    partial = np.zeros((chunks, 3))
    size = (n + chunks - 1) // chunks
    for chunk in prange(chunks):
        low = min(n, chunk * size)
        high = min(n, low + size)
        total, squares, cross = _slice_one_column(x[low:high], ys[low:high], slope, constant)
        partial[chunk, 0] = total
        partial[chunk, 1] = squares
        partial[chunk, 2] = cross
    return partial


@njit(cache=True, fastmath=True)
def _slice_many_columns(
    X: FloatArray, ys: FloatArray, slopes: FloatArray, constant: float, out: FloatArray
) -> None:
    d = X.shape[1]
    total = 0.0
    squares = 0.0
    cross = np.zeros(d)
    for i in range(X.shape[0]):
        r = constant - ys[i]
        for j in range(d):
            r += X[i, j] * slopes[j]
        total += r
        squares += r * r
        for j in range(d):
            cross[j] += r * X[i, j]
    out[0] = total
    out[1] = squares
    out[2:] = cross


@njit(parallel=True, cache=True)
def _many_column_sums(X: FloatArray, ys: FloatArray, slopes: FloatArray, constant: float, chunks: int) -> Any:
    n, d = X.shape
    partial = np.zeros((chunks, d + 2))
    size = (n + chunks - 1) // chunks
    for chunk in prange(chunks):
        low = min(n, chunk * size)
        high = min(n, low + size)
        _slice_many_columns(X[low:high], ys[low:high], slopes, constant, partial[chunk])
    return partial


@njit(cache=True, fastmath=True)
def _slice_squares(X: FloatArray, slopes: FloatArray, constant: float) -> float:
    squares = 0.0
    for i in range(X.shape[0]):
        r = constant
        for j in range(X.shape[1]):
            r += X[i, j] * slopes[j]
        squares += r * r
    return squares


@njit(parallel=True, cache=True)
def _combination_squares(X: FloatArray, slopes: FloatArray, constant: float, chunks: int) -> Any:
    n = X.shape[0]
    partial = np.zeros(chunks)
    size = (n + chunks - 1) // chunks
    for chunk in prange(chunks):
        low = min(n, chunk * size)
        high = min(n, low + size)
        partial[chunk] = _slice_squares(X[low:high], slopes, constant)
    return partial


# The robust costs. ``kind`` is ``costs.KERNEL_CODE``; ``c`` the scale in the residual's units.


@njit(cache=True, fastmath=True, inline="always")
def _cost_and_slope(r: float, c: float, kind: int) -> Any:
    """ρ(r) in the scaled form and dρ/dr."""
    if kind == 0:
        return r * r, 2.0 * r
    if kind == 1:
        if abs(r) <= c:
            return r * r, 2.0 * r
        if r > 0:
            return 2.0 * c * r - c * c, 2.0 * c
        return -2.0 * c * r - c * c, -2.0 * c
    u2 = r * r / (c * c)
    if kind == 2:
        return c * c * np.log1p(u2), 2.0 * r / (1.0 + u2)
    fade = np.exp(-u2)
    return c * c * (1.0 - fade), 2.0 * r * fade


@njit(cache=True, fastmath=True)
def _slice_cost(
    X: FloatArray, ys: FloatArray, slopes: FloatArray, constant: float, c: float, kind: int, out: FloatArray
) -> None:
    d = X.shape[1]
    total = 0.0
    slope_sum = 0.0
    cross = np.zeros(d)
    for i in range(X.shape[0]):
        r = constant - ys[i]
        for j in range(d):
            r += X[i, j] * slopes[j]
        value, slope = _cost_and_slope(r, c, kind)
        total += value
        slope_sum += slope
        for j in range(d):
            cross[j] += slope * X[i, j]
    out[0] = total
    out[1] = slope_sum
    out[2:] = cross


@njit(parallel=True, cache=True)
def _cost_sums(
    X: FloatArray, ys: FloatArray, slopes: FloatArray, constant: float, c: float, kind: int, chunks: int
) -> Any:
    n, d = X.shape
    partial = np.zeros((chunks, d + 2))
    size = (n + chunks - 1) // chunks
    for chunk in prange(chunks):
        low = min(n, chunk * size)
        high = min(n, low + size)
        _slice_cost(X[low:high], ys[low:high], slopes, constant, c, kind, partial[chunk])
    return partial


@njit(cache=True, fastmath=True)
def _slice_huber(x: FloatArray, ys: FloatArray, slope: float, constant: float, c: float) -> Any:
    # Branch-free, so that the loop runs on vector registers: with a = min(|r|, c),
    # a·(2|r| − a) is r² within c and 2c|r| − c² beyond; ρ' = 2·clip(r, −c, c).
    total = 0.0
    slope_sum = 0.0
    cross = 0.0
    for i in range(x.shape[0]):
        r = x[i] * slope + constant - ys[i]
        size = abs(r)
        a = min(size, c)
        total += a * (2.0 * size - a)
        derivative = 2.0 * min(max(r, -c), c)
        slope_sum += derivative
        cross += derivative * x[i]
    return total, slope_sum, cross


@njit(parallel=True, cache=True)
def _huber_sums(x: FloatArray, ys: FloatArray, slope: float, constant: float, c: float, chunks: int) -> Any:
    n = x.shape[0]
    partial = np.zeros((chunks, 3))
    size = (n + chunks - 1) // chunks
    for chunk in prange(chunks):
        low = min(n, chunk * size)
        high = min(n, low + size)
        total, slope_sum, cross = _slice_huber(x[low:high], ys[low:high], slope, constant, c)
        partial[chunk, 0] = total
        partial[chunk, 1] = slope_sum
        partial[chunk, 2] = cross
    return partial


def cost_sums(
    X: FloatArray, ys: FloatArray, slopes: FloatArray, constant: float, c: float, kind: int, chunks: int
) -> FloatArray:
    """For ``r = X @ slopes + constant − ys``: ``[Σρ(r), Σρ'(r), Σρ'(r)·X[:, 0], …]``, shape (d + 2,)."""
    if kind == 1 and X.shape[1] == 1:  # Huber on one column: the vectorized loop
        partial = _huber_sums(X[:, 0], ys, float(slopes[0]), constant, c, chunks)
    else:
        partial = _cost_sums(X, ys, slopes, constant, c, kind, chunks)
    return np.asarray(np.sum(partial, axis=0), dtype=np.float64)


@njit(parallel=True, cache=True, fastmath=True)
def _line_costs(
    x: FloatArray, y: FloatArray, intercepts: FloatArray, slopes: FloatArray, c: float, kind: int
) -> Any:
    k = intercepts.shape[0]
    out = np.zeros((k, 3))
    for point in prange(k):
        a = intercepts[point]
        b = slopes[point]
        total = 0.0
        slope_sum = 0.0
        cross = 0.0
        for i in range(x.shape[0]):
            value, slope = _cost_and_slope(a + b * x[i] - y[i], c, kind)
            total += value
            slope_sum += slope
            cross += slope * x[i]
        out[point, 0] = total
        out[point, 1] = slope_sum
        out[point, 2] = cross
    return out


def line_costs(
    x: FloatArray, y: FloatArray, intercepts: FloatArray, slopes: FloatArray, c: float, kind: int
) -> FloatArray:
    """For each line ``a + b·x`` (``intercepts``, ``slopes``: shape (k,)): ``[Σρ, Σρ', Σρ'·x]``, shape (k, 3).

    One point per thread at a time, each summed over the rows in order: the result does
    not depend on the number of threads. For landscapes and the global-minimum search.
    """
    return np.asarray(
        _line_costs(
            np.ascontiguousarray(x, dtype=np.float64),
            np.ascontiguousarray(y, dtype=np.float64),
            np.ascontiguousarray(intercepts, dtype=np.float64),
            np.ascontiguousarray(slopes, dtype=np.float64),
            float(c),
            int(kind),
        ),
        dtype=np.float64,
    )
