"""Compiled passes over the rows: every cost, for one run or many runs at once.

numba fuses the standardized residual, its cost, the cost's derivative and its
products with the columns into one loop, split over the cores: one read of X and y
per pass (for every run of a fused sweep at once), where numpy needs six operations
per block. Every sum is added in an order fixed by the source (see SAFE_FLAGS). Imported only when such a pass
is asked for (numba compiles, or loads from its cache, on first use).

The robust costs use the scaled form of :mod:`pipeline.costs` with scale ``c``:
``r²`` (mse), Huber's ``r²`` / ``2c|r| − c²``, ``c²·log(1 + r²/c²)`` (cauchy) and
``c²·(1 − exp(−r²/c²))`` (welsch), codes 0 to 3 (``costs.KERNEL_CODE``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import get_num_threads, njit, prange
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


#: Work pieces per pass. Fixed, not a multiple of the thread count: the sums are then
#: added in the same order on any machine and with any number of threads, so θ does
#: not depend on how many cores a launcher gives a job.
CHUNKS = 64
#: The fast-math flags that cannot change a finite result: no NaN, no infinity, a zero's
#: sign ignored. Not reassociation, contraction or approximate functions, which let the
#: compiler choose the order of a sum, and its choice differed between a loop compiled
#: now and the same loop loaded from numba's cache.
SAFE_FLAGS = {"nnan", "ninf", "nsz"}
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
    partial = chunk_partials(X, ys, y_inv, slopes, constants, c, kind, chunk_bounds(X.shape[0], chunks))
    # Summed here, in numpy's fixed order: inside a parallel function numba would turn
    # this sum into a parallel reduction whose order follows the thread count.
    return np.asarray(np.sum(partial, axis=0), dtype=np.float64)


def chunk_bounds(n_rows: int, chunks: int = CHUNKS) -> NDArray[np.int64]:
    """Where each of the ``chunks`` chunks of ``n_rows`` rows starts, and the end: shape (chunks + 1,)."""
    size = (n_rows + chunks - 1) // chunks
    return np.minimum(np.arange(chunks + 1, dtype=np.int64) * size, n_rows)


def chunk_partials(
    X: FloatArray,
    ys: FloatArray,
    y_inv: float,
    slopes: FloatArray,
    constants: FloatArray,
    c: float,
    kind: int,
    bounds: NDArray[np.int64],
) -> FloatArray:
    """Each chunk's sums of :func:`cost_sums`, shape (len(bounds) − 1, K, d + 2): the chunk
    ``k`` is rows ``bounds[k]:bounds[k + 1]`` of ``X`` and ``ys``. A machine holding some
    of the chunks (:mod:`pipeline.ray_rows`) computes their sums exactly as here."""
    slopes = np.ascontiguousarray(slopes, dtype=np.float64).reshape(-1, X.shape[1])
    constants = np.ascontiguousarray(constants, dtype=np.float64).reshape(-1)
    bounds = np.ascontiguousarray(bounds, dtype=np.int64)
    if X.shape[1] == 1:  # the common case: one vectorized loop per cost
        return np.asarray(
            _fused_one_column(
                X.reshape(-1), ys, float(y_inv), slopes[:, 0].copy(), constants, float(c), int(kind), bounds
            ),
            dtype=np.float64,
        )
    return np.asarray(
        _fused_many_columns(X, ys, float(y_inv), slopes, constants, float(c), int(kind), bounds),
        dtype=np.float64,
    )


def combination_squares(X: FloatArray, slopes: FloatArray, constant: float, chunks: int) -> float:
    """``Σ (X @ slopes + constant)²`` over the rows."""
    return float(np.sum(_combination_squares(X, slopes, constant, chunks)))


# Each chunk is summed by a plain compiled loop over its slice of rows (which numba
# vectorizes), the chunks run in parallel, and the partial sums come back to be added
# in numpy's fixed order.


@njit(cache=True, fastmath=SAFE_FLAGS)
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


@njit(cache=True, inline="always")
def _cost_and_slope(r: float, c: float, kind: int) -> Any:
    """ρ(r) in the scaled form and dρ/dr; Huber's without branches (see below)."""
    if kind == 0:
        return r * r, 2.0 * r
    if kind == 1:
        # With s = min(|r|, c), s·(2|r| − s) is r² within c and 2c|r| − c² beyond;
        # ρ' = 2·clip(r, −c, c). Selects, not branches: the lanes stay on vector registers.
        size = abs(r)
        s = size if size < c else c
        clipped = r if r > -c else -c
        return s * (2.0 * size - s), 2.0 * (clipped if clipped < c else c)
    u2 = r * r / (c * c)
    if kind == 2:
        return c * c * np.log1p(u2), 2.0 * r / (1.0 + u2)
    fade = np.exp(-u2)
    return c * c * (1.0 - fade), 2.0 * r * fade


@njit(cache=True, inline="always")
def _cost_and_curvature(r: float, c: float, kind: int) -> Any:
    """ρ(r) and d²ρ/dr² in the scaled form (``costs.Cost.scaled_curvature``), one exp."""
    if kind == 0:
        return r * r, 2.0
    if kind == 1:
        size = abs(r)
        s = size if size < c else c
        return s * (2.0 * size - s), (2.0 if size <= c else 0.0)
    u2 = r * r / (c * c)
    if kind == 2:
        return c * c * np.log1p(u2), 2.0 * (1.0 - u2) / ((1.0 + u2) * (1.0 + u2))
    fade = np.exp(-u2)
    return c * c * (1.0 - fade), 2.0 * (1.0 - 2.0 * u2) * fade


# The sums below are written in four lanes (a run's rows i ≡ j mod 4 in lane j, added in
# a fixed order at the end), and compiled with SAFE_FLAGS only: the compiler may not
# reorder a sum or fuse a multiply-add, so every sum is what the source says, on any
# machine and whether numba compiled the loop now or loaded it from its cache (with full
# fast-math the two differed in the last bits).
#
# The innermost loop runs over the runs, not the rows: the runs are independent, so the
# compiler puts four of them on one vector register (from 16 runs on) without touching
# any run's order of sums, and a run's bits are the same vectorized or not, fused or alone.


@njit(cache=True, inline="always")
def _tile_runs(
    x: FloatArray,
    ys: FloatArray,
    y_inv: float,
    a: FloatArray,
    b: FloatArray,
    c: float,
    kind: int,
    lanes: FloatArray,
) -> None:
    """Adds one tile's ``Σρ, Σρ', Σρ'·x`` of every run's line ``a[k]·x + b[k]`` to
    ``lanes`` (shape (12, K)): row ``4·s + j`` holds sum ``s`` over the rows in lane ``j``."""
    runs = a.shape[0]
    m = x.shape[0]
    whole = m - m % 4
    t0, t1, t2, t3 = lanes[0], lanes[1], lanes[2], lanes[3]
    s0, s1, s2, s3 = lanes[4], lanes[5], lanes[6], lanes[7]
    u0, u1, u2, u3 = lanes[8], lanes[9], lanes[10], lanes[11]
    for i in range(0, whole, 4):
        x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        y0, y1, y2, y3 = ys[i] * y_inv, ys[i + 1] * y_inv, ys[i + 2] * y_inv, ys[i + 3] * y_inv
        for k in range(runs):
            v0, d0 = _cost_and_slope(x0 * a[k] + b[k] - y0, c, kind)
            v1, d1 = _cost_and_slope(x1 * a[k] + b[k] - y1, c, kind)
            v2, d2 = _cost_and_slope(x2 * a[k] + b[k] - y2, c, kind)
            v3, d3 = _cost_and_slope(x3 * a[k] + b[k] - y3, c, kind)
            t0[k], t1[k], t2[k], t3[k] = t0[k] + v0, t1[k] + v1, t2[k] + v2, t3[k] + v3
            s0[k], s1[k], s2[k], s3[k] = s0[k] + d0, s1[k] + d1, s2[k] + d2, s3[k] + d3
            u0[k], u1[k], u2[k], u3[k] = u0[k] + d0 * x0, u1[k] + d1 * x1, u2[k] + d2 * x2, u3[k] + d3 * x3
    for i in range(whole, m):  # the tile's last rows, in lane 0
        xi, yi = x[i], ys[i] * y_inv
        for k in range(runs):
            v0, d0 = _cost_and_slope(xi * a[k] + b[k] - yi, c, kind)
            t0[k], s0[k], u0[k] = t0[k] + v0, s0[k] + d0, u0[k] + d0 * xi


@njit(cache=True, fastmath=SAFE_FLAGS)
def _tile_one_column(
    x: FloatArray,
    ys: FloatArray,
    y_inv: float,
    a: FloatArray,
    b: FloatArray,
    c: float,
    kind: int,
    lanes: FloatArray,
) -> None:
    """:func:`_tile_runs` with ``kind`` a constant in each branch: the loop over the runs
    then holds one cost's code only, which the compiler vectorizes (with ``kind`` read in
    the loop it did not)."""
    if kind == 0:
        _tile_runs(x, ys, y_inv, a, b, c, 0, lanes)
    elif kind == 1:
        _tile_runs(x, ys, y_inv, a, b, c, 1, lanes)
    elif kind == 2:
        _tile_runs(x, ys, y_inv, a, b, c, 2, lanes)
    else:
        _tile_runs(x, ys, y_inv, a, b, c, 3, lanes)


@njit(parallel=True, cache=True)
def _fused_one_column(
    x: FloatArray,
    ys: FloatArray,
    y_inv: float,
    a: FloatArray,
    b: FloatArray,
    c: float,
    kind: int,
    bounds: NDArray[np.int64],
) -> Any:
    runs = a.shape[0]
    chunks = bounds.shape[0] - 1
    partial = np.zeros((chunks, runs, 3))
    for chunk in prange(chunks):
        low = bounds[chunk]
        high = bounds[chunk + 1]
        lanes = np.empty((12, runs))
        for start in range(low, high, TILE_ROWS):
            stop = min(high, start + TILE_ROWS)
            lanes[:] = 0.0
            _tile_one_column(x[start:stop], ys[start:stop], y_inv, a, b, c, kind, lanes)
            for k in range(runs):
                for s in range(3):
                    partial[chunk, k, s] += (lanes[4 * s, k] + lanes[4 * s + 1, k]) + (
                        lanes[4 * s + 2, k] + lanes[4 * s + 3, k]
                    )
    return partial


@njit(cache=True)
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
    bounds: NDArray[np.int64],
) -> Any:
    d = X.shape[1]
    runs = slopes.shape[0]
    chunks = bounds.shape[0] - 1
    partial = np.zeros((chunks, runs, d + 2))
    for chunk in prange(chunks):
        low = bounds[chunk]
        high = bounds[chunk + 1]
        for start in range(low, high, TILE_ROWS):
            stop = min(high, start + TILE_ROWS)
            for k in range(runs):
                _tile_many_columns(
                    X[start:stop], ys[start:stop], y_inv, slopes[k], b[k], c, kind, partial[chunk, k]
                )
    return partial


# Many lines (or points θ) over the same rows: as for the fused runs, the innermost loop
# runs over the lines, each summed over the rows in order (the same bits as a line alone),
# and blocks of lines go to the threads.


@njit(cache=True, inline="always")
def _line_block(
    x: FloatArray,
    y: FloatArray,
    w: FloatArray,
    a: FloatArray,
    b: FloatArray,
    c: float,
    kind: int,
    total: FloatArray,
    slope_sum: FloatArray,
    cross: FloatArray,
) -> None:
    """Adds ``Σρ, Σρ', Σρ'·x`` of each line ``a[p] + b[p]·x`` to ``total[p]``,
    ``slope_sum[p]``, ``cross[p]``; each row counts ``w[i]`` times (``w`` empty: once)."""
    weighted = w.shape[0] > 0
    for i in range(x.shape[0]):
        xi, yi = x[i], y[i]
        wi = w[i] if weighted else 1.0  # × 1.0 is exact: the unweighted sums are unchanged
        for p in range(a.shape[0]):
            value, slope = _cost_and_slope(a[p] + b[p] * xi - yi, c, kind)
            value, slope = value * wi, slope * wi
            total[p] += value
            slope_sum[p] += slope
            cross[p] += slope * xi


@njit(cache=True, fastmath=SAFE_FLAGS)
def _line_block_of_kind(
    x: FloatArray,
    y: FloatArray,
    w: FloatArray,
    a: FloatArray,
    b: FloatArray,
    c: float,
    kind: int,
    sums: FloatArray,
) -> None:
    """:func:`_line_block` with ``kind`` a constant (see :func:`_tile_one_column`);
    ``sums`` (3, points)."""
    if kind == 0:
        _line_block(x, y, w, a, b, c, 0, sums[0], sums[1], sums[2])
    elif kind == 1:
        _line_block(x, y, w, a, b, c, 1, sums[0], sums[1], sums[2])
    elif kind == 2:
        _line_block(x, y, w, a, b, c, 2, sums[0], sums[1], sums[2])
    else:
        _line_block(x, y, w, a, b, c, 3, sums[0], sums[1], sums[2])


def _line_blocks(lines: int) -> NDArray[np.int64]:
    """The blocks of lines a thread takes at once (:func:`chunk_bounds` of them): up to 32
    lines (vectors of them), fewer where there are too few to keep every thread busy.
    A line's sums do not depend on its block."""
    threads = get_num_threads()
    size = min(32, max(1, (lines + threads - 1) // threads))
    return chunk_bounds(lines, max(1, (lines + size - 1) // size))


@njit(parallel=True, cache=True)
def _line_costs(
    x: FloatArray,
    y: FloatArray,
    w: FloatArray,
    intercepts: FloatArray,
    slopes: FloatArray,
    c: float,
    kind: int,
    blocks: NDArray[np.int64],
) -> Any:
    out = np.zeros((intercepts.shape[0], 3))
    for block in prange(blocks.shape[0] - 1):
        low, high = blocks[block], blocks[block + 1]
        sums = np.zeros((3, high - low))
        _line_block_of_kind(x, y, w, intercepts[low:high], slopes[low:high], c, kind, sums)
        out[low:high] = sums.T
    return out


def line_costs(
    x: FloatArray,
    y: FloatArray,
    intercepts: FloatArray,
    slopes: FloatArray,
    c: float,
    kind: int,
    weights: FloatArray | None = None,
) -> FloatArray:
    """For each line ``a + b·x`` (``intercepts``, ``slopes``: shape (k,)): ``[Σρ, Σρ', Σρ'·x]``, shape (k, 3).

    Each point ``x[i], y[i]`` counts ``weights[i]`` times when given (the bins of a
    :class:`pipeline.summary.RowSummary`), once otherwise. Blocks of lines per thread,
    each line summed over the points in order: the result does not depend on the
    number of threads or the blocks. For landscapes and the global-minimum search.
    """
    w = np.empty(0) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    return np.asarray(
        _line_costs(
            np.ascontiguousarray(x, dtype=np.float64),
            np.ascontiguousarray(y, dtype=np.float64),
            w,
            np.ascontiguousarray(intercepts, dtype=np.float64),
            np.ascontiguousarray(slopes, dtype=np.float64),
            float(c),
            int(kind),
            _line_blocks(len(intercepts)),
        ),
        dtype=np.float64,
    )


@njit(cache=True, inline="always")
def _bin_block(
    x: FloatArray,
    y: FloatArray,
    w: FloatArray,
    sxx: FloatArray,
    sxy: FloatArray,
    syy: FloatArray,
    a: FloatArray,
    b: FloatArray,
    c: float,
    kind: int,
    total: FloatArray,
) -> None:
    """Adds each line's cost over the bins to second order (:func:`bin_costs`) to ``total[p]``."""
    for i in range(x.shape[0]):
        xi, yi, wi, xx, xy, yy = x[i], y[i], w[i], sxx[i], sxy[i], syy[i]
        for p in range(a.shape[0]):
            value, curvature = _cost_and_curvature(a[p] + b[p] * xi - yi, c, kind)
            total[p] += wi * value + 0.5 * curvature * (yy - 2.0 * b[p] * xy + b[p] * b[p] * xx)


@njit(cache=True, fastmath=SAFE_FLAGS)
def _bin_block_of_kind(
    x: FloatArray,
    y: FloatArray,
    w: FloatArray,
    within: tuple[FloatArray, FloatArray, FloatArray],
    a: FloatArray,
    b: FloatArray,
    c: float,
    kind: int,
    total: FloatArray,
) -> None:
    """:func:`_bin_block` with ``kind`` a constant (see :func:`_tile_one_column`)."""
    sxx, sxy, syy = within
    if kind == 0:
        _bin_block(x, y, w, sxx, sxy, syy, a, b, c, 0, total)
    elif kind == 1:
        _bin_block(x, y, w, sxx, sxy, syy, a, b, c, 1, total)
    elif kind == 2:
        _bin_block(x, y, w, sxx, sxy, syy, a, b, c, 2, total)
    else:
        _bin_block(x, y, w, sxx, sxy, syy, a, b, c, 3, total)


@njit(parallel=True, cache=True)
def _bin_costs(
    x: FloatArray,
    y: FloatArray,
    w: FloatArray,
    sxx: FloatArray,
    sxy: FloatArray,
    syy: FloatArray,
    intercepts: FloatArray,
    slopes: FloatArray,
    c: float,
    kind: int,
    blocks: NDArray[np.int64],
) -> Any:
    out = np.zeros(intercepts.shape[0])
    for block in prange(blocks.shape[0] - 1):
        low, high = blocks[block], blocks[block + 1]
        _bin_block_of_kind(
            x, y, w, (sxx, sxy, syy), intercepts[low:high], slopes[low:high], c, kind, out[low:high]
        )
    return out


def bin_costs(
    x: FloatArray,
    y: FloatArray,
    weights: FloatArray,
    within: FloatArray,
    intercepts: FloatArray,
    slopes: FloatArray,
    c: float,
    kind: int,
) -> FloatArray:
    """``Σρ`` over a summary's bins for each line ``a + b·x``, to second order: each bin
    counts ``weights[i]·ρ(r̄) + ½·ρ''(r̄)·V_i``, with ``r̄`` the residual at its centroid
    ``x[i], y[i]`` and ``V_i`` the square of its rows' residuals about it, from
    ``within[i] = [S_xx, S_xy, S_yy]`` (shape (m, 3)); shape (k,). For pictures."""
    return np.asarray(
        _bin_costs(
            np.ascontiguousarray(x, dtype=np.float64),
            np.ascontiguousarray(y, dtype=np.float64),
            np.ascontiguousarray(weights, dtype=np.float64),
            np.ascontiguousarray(within[:, 0], dtype=np.float64),
            np.ascontiguousarray(within[:, 1], dtype=np.float64),
            np.ascontiguousarray(within[:, 2], dtype=np.float64),
            np.ascontiguousarray(intercepts, dtype=np.float64),
            np.ascontiguousarray(slopes, dtype=np.float64),
            float(c),
            int(kind),
            _line_blocks(len(intercepts)),
        ),
        dtype=np.float64,
    )
