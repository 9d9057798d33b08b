"""Compiled passes over the rows, for ``fit(..., statistics=False)``.

numba fuses the standardized residual, its sum, its square and its products with the
columns into one loop, split over the cores: one read of X and y per pass, where
numpy needs six operations per block. Imported only when such a pass is asked for;
without numba installed, :class:`pipeline.optimize.DataPass` falls back to numpy.
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
