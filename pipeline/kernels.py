"""Compiled passes over the rows: every cost, for one run or many runs at once.

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
#: Rows per tile (32 KiB of x and y): every fused run sums a tile while it is in cache.
TILE_ROWS = 2048


def chunk_count() -> int:
    """Work pieces per pass (:data:`CHUNKS`, whatever the number of threads)."""
    return CHUNKS


def cost_sums(
    X: FloatArray,
    ys: FloatArray,
    y_inv: float,
    slopes: FloatArray,
    constants: FloatArray,
    c: float,
    kind: int,
    chunks: int,
) -> FloatArray:
    """Every run's sums in one pass over the rows: the fused kernel.

    For run ``k`` the standardized residual is ``r = X @ slopes[k] + constants[k] −
    ys·y_inv``; its sums are ``[Σρ(r), Σρ'(r), Σρ'(r)·X[:, 0], …]`` with ``ρ`` the scaled
    cost of ``kind`` (:data:`pipeline.costs.KERNEL_CODE`) at scale ``c``.

    Parameters
    ----------
    X : ndarray, shape (n, d)
        The model's columns, C-contiguous (a memory-mapped copy is read as it is).
    ys : ndarray, shape (n,)
        The target in its own units; ``y_inv`` scales it (1/σ_y).
    slopes : ndarray, shape (K, d)
    constants : ndarray, shape (K,)
        One row per run: K runs advance on one read of the rows.

    Returns
    -------
    ndarray, shape (K, d + 2)

    The rows are cut into :data:`CHUNKS` chunks and each chunk into tiles of
    :data:`TILE_ROWS` rows; every run sums a tile while it is in cache, and its tile
    sums are added in row order. A run's sums therefore take the same operations in the
    same order whatever K, the other runs and the number of threads: its θ is the same
    to the bit alone (K = 1) or fused.
    """
    slopes = np.ascontiguousarray(slopes, dtype=np.float64).reshape(-1, X.shape[1])
    constants = np.ascontiguousarray(constants, dtype=np.float64).reshape(-1)
    if X.shape[1] == 1:  # the common case: one vectorized loop per cost
        partial = _fused_one_column(
            X.reshape(-1), ys, float(y_inv), slopes[:, 0].copy(), constants, float(c), int(kind), chunks
        )
    else:
        partial = _fused_many_columns(X, ys, float(y_inv), slopes, constants, float(c), int(kind), chunks)
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
def _tile_one_column(
    x: FloatArray, ys: FloatArray, y_inv: float, a: float, b: float, c: float, kind: int
) -> Any:
    """``Σρ, Σρ', Σρ'·x`` over one tile for the line ``a·x + b``: one loop per cost, each
    branch-free so that it runs on vector registers."""
    total = 0.0
    slope_sum = 0.0
    cross = 0.0
    if kind == 0:
        for i in range(x.shape[0]):
            r = x[i] * a + b - ys[i] * y_inv
            total += r * r
            slope_sum += 2.0 * r
            cross += 2.0 * r * x[i]
    elif kind == 1:
        # With s = min(|r|, c), s·(2|r| − s) is r² within c and 2c|r| − c² beyond;
        # ρ' = 2·clip(r, −c, c).
        for i in range(x.shape[0]):
            r = x[i] * a + b - ys[i] * y_inv
            size = abs(r)
            s = min(size, c)
            total += s * (2.0 * size - s)
            derivative = 2.0 * min(max(r, -c), c)
            slope_sum += derivative
            cross += derivative * x[i]
    elif kind == 2:
        c2 = c * c
        for i in range(x.shape[0]):
            r = x[i] * a + b - ys[i] * y_inv
            u2 = r * r / c2
            total += c2 * np.log1p(u2)
            derivative = 2.0 * r / (1.0 + u2)
            slope_sum += derivative
            cross += derivative * x[i]
    else:
        c2 = c * c
        for i in range(x.shape[0]):
            r = x[i] * a + b - ys[i] * y_inv
            fade = np.exp(-(r * r / c2))
            total += c2 * (1.0 - fade)
            derivative = 2.0 * r * fade
            slope_sum += derivative
            cross += derivative * x[i]
    return total, slope_sum, cross


@njit(parallel=True, cache=True)
def _fused_one_column(
    x: FloatArray,
    ys: FloatArray,
    y_inv: float,
    a: FloatArray,
    b: FloatArray,
    c: float,
    kind: int,
    chunks: int,
) -> Any:
    n = x.shape[0]
    runs = a.shape[0]
    partial = np.zeros((chunks, runs, 3))
    size = (n + chunks - 1) // chunks
    for chunk in prange(chunks):
        low = min(n, chunk * size)
        high = min(n, low + size)
        for start in range(low, high, TILE_ROWS):
            stop = min(high, start + TILE_ROWS)
            for k in range(runs):
                total, slope_sum, cross = _tile_one_column(
                    x[start:stop], ys[start:stop], y_inv, a[k], b[k], c, kind
                )
                partial[chunk, k, 0] += total
                partial[chunk, k, 1] += slope_sum
                partial[chunk, k, 2] += cross
    return partial


@njit(cache=True, fastmath=True)
def _tile_many_columns(
    X: FloatArray,
    ys: FloatArray,
    y_inv: float,
    slopes: FloatArray,
    b: float,
    c: float,
    kind: int,
    out: FloatArray,
) -> None:
    """Adds one tile's ``Σρ, Σρ', Σρ'·X[:, j]`` to ``out`` (shape (d + 2,))."""
    d = X.shape[1]
    total = 0.0
    slope_sum = 0.0
    for i in range(X.shape[0]):
        r = b - ys[i] * y_inv
        for j in range(d):
            r += X[i, j] * slopes[j]
        value, derivative = _cost_and_slope(r, c, kind)
        total += value
        slope_sum += derivative
        for j in range(d):
            out[2 + j] += derivative * X[i, j]
    out[0] += total
    out[1] += slope_sum


@njit(parallel=True, cache=True)
def _fused_many_columns(
    X: FloatArray,
    ys: FloatArray,
    y_inv: float,
    slopes: FloatArray,
    b: FloatArray,
    c: float,
    kind: int,
    chunks: int,
) -> Any:
    n, d = X.shape
    runs = slopes.shape[0]
    partial = np.zeros((chunks, runs, d + 2))
    size = (n + chunks - 1) // chunks
    for chunk in prange(chunks):
        low = min(n, chunk * size)
        high = min(n, low + size)
        for start in range(low, high, TILE_ROWS):
            stop = min(high, start + TILE_ROWS)
            for k in range(runs):
                _tile_many_columns(
                    X[start:stop], ys[start:stop], y_inv, slopes[k], b[k], c, kind, partial[chunk, k]
                )
    return partial


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
