"""Compiled passes over the rows, for ``fit(..., statistics=False)``.

numba fuses the standardized residual, its sum, its square and its products with the
columns into one loop, split over the cores: one read of X and y per pass, where
numpy needs six operations per block. Imported only when such a pass is asked for;
without numba installed, :class:`pipeline.optimize.DataPass` falls back to numpy.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def chunk_count() -> int:
    """Work pieces per pass: a few per thread, so that no core waits on another."""
    return int(4 * numba.get_num_threads())


def residual_sums(
    X: FloatArray, ys: FloatArray, slopes: FloatArray, constant: float, chunks: int
) -> FloatArray:
    """For ``r = X @ slopes + constant − ys``: ``[Σr, Σr², Σr·X[:, 0], …]``, shape (d + 2,)."""
    if X.shape[1] == 1:  # the common case, every sum in a register
        sums = _one_column_sums(X[:, 0], ys, float(slopes[0]), constant)
    else:
        sums = _many_column_sums(X, ys, slopes, constant, chunks)
    return np.asarray(sums, dtype=np.float64)


def combination_squares(X: FloatArray, slopes: FloatArray, constant: float, chunks: int) -> float:
    """``Σ (X @ slopes + constant)²`` over the rows."""
    return float(_combination_squares(X, slopes, constant, chunks))


@njit(parallel=True, cache=True, fastmath=True)
def _one_column_sums(x: FloatArray, ys: FloatArray, slope: float, constant: float) -> Any:
    total = 0.0
    squares = 0.0
    cross = 0.0
    for i in prange(x.shape[0]):
        r = x[i] * slope + constant - ys[i]
        total += r
        squares += r * r
        cross += r * x[i]
    return np.array([total, squares, cross])


@njit(parallel=True, cache=True, fastmath=True)
def _many_column_sums(X: FloatArray, ys: FloatArray, slopes: FloatArray, constant: float, chunks: int) -> Any:
    n, d = X.shape
    partial = np.zeros((chunks, d + 2))
    size = (n + chunks - 1) // chunks
    for chunk in prange(chunks):
        total = 0.0
        squares = 0.0
        cross = np.zeros(d)
        for i in range(chunk * size, min(n, (chunk + 1) * size)):
            r = constant - ys[i]
            for j in range(d):
                r += X[i, j] * slopes[j]
            total += r
            squares += r * r
            for j in range(d):
                cross[j] += r * X[i, j]
        partial[chunk, 0] = total
        partial[chunk, 1] = squares
        partial[chunk, 2:] = cross
    return partial.sum(axis=0)


@njit(parallel=True, cache=True, fastmath=True)
def _combination_squares(X: FloatArray, slopes: FloatArray, constant: float, chunks: int) -> Any:
    n, d = X.shape
    partial = np.zeros(chunks)
    size = (n + chunks - 1) // chunks
    for chunk in prange(chunks):
        squares = 0.0
        for i in range(chunk * size, min(n, (chunk + 1) * size)):
            r = constant
            for j in range(d):
                r += X[i, j] * slopes[j]
            squares += r * r
        partial[chunk] = squares
    return partial.sum()
