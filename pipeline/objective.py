"""What gradient descent minimizes: the standardized problem and its objectives.

Plain numpy, no I/O. A linear model's parameters are walked in standardized
coordinates (:class:`Standardizer`, see :mod:`pipeline.optimize` for why); there the
MSE is a quadratic (:class:`Quadratic`, from one blocked pass over the rows:
:func:`standardize`), or the same loss from a pass over the rows per evaluation
(:class:`DataPass`), or a robust cost's (:class:`RowCost`). Each answers what a method
asks of it (:class:`Objective`). The exact least-squares solution is here too, for
reference and certificates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import ThreadpoolController

from pipeline.costs import KERNEL_CODE, Cost
from pipeline.model import linear_prediction

FloatArray = NDArray[np.float64]
#: Rows per block when the statistics are accumulated: a few MB, cache-friendly.
BLOCK_ROWS = 1 << 16
#: Backtracking's smallest trial step: below it the search gives up shrinking.
MIN_TRIAL = 1e-30


@dataclass(frozen=True)
class Standardizer:
    """Affine map between original and standardized parameters.

    Attributes
    ----------
    x_mean, x_scale : ndarray, shape (n_features,)
        Column means (0 without an intercept) and scales of X.
    y_mean, y_scale : float
        Mean (0 without an intercept) and scale of y (1 for a zero target).
    fit_intercept : bool
        Whether the model has an intercept; without one nothing is centred.
    """

    x_mean: FloatArray
    x_scale: FloatArray
    y_mean: float
    y_scale: float
    fit_intercept: bool = True

    def design(self, X: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The standardized design (n, p) and target (n,); p = d+1 with an intercept."""
        Z = (X - self.x_mean) / self.x_scale
        if self.fit_intercept:
            Z = np.column_stack([np.ones(Z.shape[0]), Z])
        return Z, (y - self.y_mean) / self.y_scale

    def to_standard(self, theta: FloatArray) -> FloatArray:
        """Original-unit θ (intercept first) to the standardized free parameters."""
        weights = theta[1:] * self.x_scale / self.y_scale
        if not self.fit_intercept:
            return np.asarray(weights, dtype=np.float64)
        intercept = (theta[0] + theta[1:] @ self.x_mean - self.y_mean) / self.y_scale
        return np.concatenate(([intercept], weights))

    def to_original(self, free: FloatArray) -> FloatArray:
        """Standardized free parameters, shape (p,) or (m, p), to θ in original units."""
        free = np.atleast_2d(free)
        weights = free[:, 1:] if self.fit_intercept else free
        slopes = weights * self.y_scale / self.x_scale
        if self.fit_intercept:
            intercept = self.y_mean + self.y_scale * free[:, 0] - slopes @ self.x_mean
        else:
            intercept = np.zeros(free.shape[0])
        theta = np.column_stack([intercept, slopes])
        return theta[0] if theta.shape[0] == 1 else theta


@dataclass(frozen=True)
class Quadratic:
    """The standardized MSE as a quadratic: ``J(w) = wᵀQw − 2bᵀw + c``.

    Attributes
    ----------
    Q : ndarray, shape (p, p)
    b : ndarray, shape (p,)
    c : float
    """

    Q: FloatArray
    b: FloatArray
    c: float

    def gradient(self, w: FloatArray) -> FloatArray:
        return np.asarray(2.0 * (self.Q @ w - self.b), dtype=np.float64)

    def loss_and_gradient(self, w: FloatArray) -> tuple[float, FloatArray]:
        Qw = self.Q @ w
        return float(w @ Qw - 2.0 * (self.b @ w) + self.c), np.asarray(2.0 * (Qw - self.b), dtype=np.float64)

    def curvature_along(self, g: FloatArray) -> float:
        """``gᵀQg``: how fast the loss bends along ``g``."""
        return float(g @ (self.Q @ g))

    def curvatures(self) -> tuple[float, float]:
        """Smallest and largest eigenvalue of the Hessian 2Q (μ and L)."""
        eigenvalues = np.linalg.eigvalsh(self.Q)
        return 2.0 * float(max(eigenvalues[0], 0.0)), 2.0 * float(eigenvalues[-1])

    def armijo(
        self, w: FloatArray, gradient: FloatArray, trial: float, shrink: float = 0.5, decrease: float = 1e-4
    ) -> float:
        """The first of ``trial, shrink·trial, …`` that lowers J by ``decrease`` × t‖g‖²."""
        return _exact_armijo(self.curvature_along(gradient), gradient, trial, shrink, decrease)


class DataPass:
    """The same loss, gradient and curvature as :class:`Quadratic`, each from a pass over the rows.

    For ``statistics=False``: every evaluation reads X and y once and never builds the
    standardized design: ``r = X @ (w/σ) + k − y/σ_y`` is the standardized residual,
    with the centring folded into the constant ``k``. The pass is one loop compiled by
    numba over all cores (:mod:`pipeline.kernels`), summed in a fixed number of chunks
    so that the result does not depend on the number of threads. Slower than the
    statistics by a pass per iteration, but each loss comes from the residuals.
    """

    def __init__(self, X: FloatArray, y: FloatArray, scaler: Standardizer) -> None:
        from pipeline import kernels  # numba compiles (or loads) the loops: only when asked for

        self.X, self.scaler = np.ascontiguousarray(X), scaler
        self.y_scaled = y / scaler.y_scale  # one copy, so that a pass does one less operation
        self.rows = X.shape[0]
        self.kernels, self.chunks = kernels, kernels.chunk_count()

    def _split(self, w: FloatArray) -> tuple[FloatArray, float]:
        """Slopes on the raw columns and the constant of the standardized residual."""
        scaler = self.scaler
        weights = w[1:] if scaler.fit_intercept else w
        slopes = weights / scaler.x_scale
        constant = (
            float(w[0] - slopes @ scaler.x_mean + scaler.y_mean / scaler.y_scale)
            if scaler.fit_intercept
            else 0.0
        )
        return slopes, constant

    def loss_and_gradient(self, w: FloatArray) -> tuple[float, FloatArray]:
        slopes, constant = self._split(w)
        sums = self.kernels.residual_sums(self.X, self.y_scaled, slopes, constant, self.chunks)
        total, squares, cross = float(sums[0]), float(sums[1]), np.asarray(sums[2:], dtype=np.float64)
        scaler, n = self.scaler, self.rows
        weights_gradient = 2.0 * (cross / n - scaler.x_mean * (total / n)) / scaler.x_scale
        if scaler.fit_intercept:
            return squares / n, np.concatenate(([2.0 * total / n], weights_gradient))
        return squares / n, weights_gradient

    def gradient(self, w: FloatArray) -> FloatArray:
        return self.loss_and_gradient(w)[1]

    def curvature_along(self, g: FloatArray) -> float:
        slopes, constant = self._split(g)
        constant -= self.scaler.y_mean / self.scaler.y_scale if self.scaler.fit_intercept else 0.0
        return float(self.kernels.combination_squares(self.X, slopes, constant, self.chunks) / self.rows)

    def armijo(
        self, w: FloatArray, gradient: FloatArray, trial: float, shrink: float = 0.5, decrease: float = 1e-4
    ) -> float:
        """The first of ``trial, shrink·trial, …`` that lowers J by ``decrease`` × t‖g‖²."""
        return _exact_armijo(self.curvature_along(gradient), gradient, trial, shrink, decrease)


def _exact_armijo(
    curvature: float, gradient: FloatArray, trial: float, shrink: float, decrease: float
) -> float:
    """Backtracking on a quadratic: J(w − t g) − J(w) = −t‖g‖² + t² gᵀQg exactly, no cancellation."""
    squared = float(gradient @ gradient)
    while trial * curvature > (1.0 - decrease) * squared and trial > MIN_TRIAL:
        trial *= shrink
    return trial


class RowCost(DataPass):
    """A robust cost (:mod:`pipeline.costs`) in standardized units, from a pass over the rows.

    ``J_s(w) = mean(ρ̃_s(r))`` with ``r`` the standardized residual (as in
    :class:`DataPass`) and ``ρ̃_s`` the cost's scaled form at scale ``c/σ_y``; its
    second derivative is at most 2, as the MSE's, so the quadratic's curvature bounds it.
    Each evaluation is one compiled pass over the rows on all cores.
    """

    def __init__(self, X: FloatArray, y: FloatArray, scaler: Standardizer, cost: Cost) -> None:
        super().__init__(X, y, scaler)
        self.cost = cost.standardized(scaler.y_scale)
        self.kind = KERNEL_CODE[cost.name]

    def loss_and_gradient(self, w: FloatArray) -> tuple[float, FloatArray]:
        slopes, constant = self._split(w)
        sums = self.kernels.cost_sums(
            self.X, self.y_scaled, slopes, constant, self.cost.scale, self.kind, self.chunks
        )
        total, slope_sum, cross = float(sums[0]), float(sums[1]), np.asarray(sums[2:], dtype=np.float64)
        scaler, n = self.scaler, self.rows
        weights_gradient = (cross / n - scaler.x_mean * (slope_sum / n)) / scaler.x_scale
        if scaler.fit_intercept:
            return total / n, np.concatenate(([slope_sum / n], weights_gradient))
        return total / n, weights_gradient

    def loss(self, w: FloatArray) -> float:
        return self.loss_and_gradient(w)[0]

    def armijo(
        self, w: FloatArray, gradient: FloatArray, trial: float, shrink: float = 0.5, decrease: float = 1e-4
    ) -> float:
        """The first of ``trial, shrink·trial, …`` that lowers J by ``decrease`` × t‖g‖² (evaluated)."""
        squared = float(gradient @ gradient)
        start = self.loss(w)
        while self.loss(w - trial * gradient) > start - decrease * trial * squared and trial > MIN_TRIAL:
            trial *= shrink
        return trial

    def hessian(self, w: FloatArray, X: FloatArray, y: FloatArray) -> FloatArray:
        """The Hessian of ``J_s`` at ``w``, shape (p, p), from the standardized design (one pass)."""
        design, target = self.scaler.design(X, y)
        curvature = self.cost.scaled_curvature(design @ w - target)
        return np.asarray((design * curvature[:, np.newaxis]).T @ design / self.rows, dtype=np.float64)


class Objective(Protocol):
    """The standardized cost as a method sees it: :class:`Quadratic`, :class:`DataPass`, :class:`RowCost`."""

    def loss_and_gradient(self, w: FloatArray) -> tuple[float, FloatArray]: ...

    def gradient(self, w: FloatArray) -> FloatArray: ...

    def armijo(
        self, w: FloatArray, gradient: FloatArray, trial: float, shrink: float = 0.5, decrease: float = 1e-4
    ) -> float: ...


def one_blas_thread() -> Any:
    """BLAS on one thread: a multi-threaded BLAS adds partial sums in an order that depends
    on its thread count (joblib's workers get one thread, the main process all cores), and
    θ must not depend on the launcher. The matrices here are narrow: one thread is as fast.

    The libraries are looked up once per process (a lookup costs about a millisecond).
    """
    global _blas_controller
    if _blas_controller is None:
        _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")


_blas_controller: ThreadpoolController | None = None


def standardize(X: FloatArray, y: FloatArray, fit_intercept: bool = True) -> tuple[Standardizer, Quadratic]:
    """The scales and the standardized quadratic of the problem, in one pass over the rows.

    The rows are read once, in blocks that stay in cache. Each block is shifted by the
    first block's means before its cross products are summed, so that a large mean costs
    no digits (the shifted data algorithm); the exact centring is applied at the end.
    The scales and ``Q``, ``b``, ``c`` all follow from these sums. A non-finite value
    anywhere shows in them, so the data need no separate check.
    """
    n_rows, n_features = X.shape
    head = slice(0, BLOCK_ROWS)
    x_shift = X[head].mean(axis=0) if fit_intercept else np.zeros(n_features)
    y_shift = float(y[head].mean()) if fit_intercept else 0.0
    sums, sum_y = np.zeros(n_features), 0.0
    cross = np.zeros((n_features, n_features))
    cross_y = np.zeros(n_features)
    yy = 0.0
    with np.errstate(over="ignore", invalid="ignore"), one_blas_thread():
        for start in range(0, n_rows, BLOCK_ROWS):
            block = X[start : start + BLOCK_ROWS] - x_shift
            target = y[start : start + BLOCK_ROWS] - y_shift
            sums += block.sum(axis=0)
            sum_y += float(target.sum())
            cross += block.T @ block
            cross_y += block.T @ target
            yy += float(target @ target)
        # From shifted sums to sums around the means: subtract n·(mean − shift) products.
        # Without an intercept nothing is centred: the sums are taken around 0 as they are.
        x_mean, y_mean = np.zeros(n_features), 0.0
        if fit_intercept:
            offset, offset_y = sums / n_rows, sum_y / n_rows
            x_mean, y_mean = x_shift + offset, y_shift + offset_y
            cross -= n_rows * np.outer(offset, offset)
            cross_y -= n_rows * offset * offset_y
            yy -= n_rows * offset_y**2
    if not (np.isfinite(cross).all() and np.isfinite(cross_y).all() and math.isfinite(yy)):
        raise ValueError("X and y must be finite (no NaN or infinity) and their squares must fit in float64")
    x_scale = np.sqrt(np.diag(cross) / n_rows)
    flat = np.flatnonzero(~(x_scale > 0))
    if flat.size:
        what = "constant (zero variance)" if fit_intercept else "all zero"
        raise ValueError(
            f"feature column {int(flat[0])} is {what}: it cannot be standardized "
            "and its coefficient is not identifiable"
        )
    y_scale = math.sqrt(yy / n_rows) or 1.0
    scaler = Standardizer(x_mean, x_scale, y_mean, y_scale, fit_intercept)
    weights_Q = cross / n_rows / np.outer(x_scale, x_scale)
    weights_b = cross_y / n_rows / (x_scale * y_scale)
    c = yy / n_rows / y_scale**2
    if not fit_intercept:
        return scaler, Quadratic(weights_Q, weights_b, c)
    # The intercept column is all ones and every other column is centred: orthogonal.
    Q = np.zeros((n_features + 1, n_features + 1))
    Q[0, 0] = 1.0
    Q[1:, 1:] = weights_Q
    return scaler, Quadratic(Q, np.concatenate(([0.0], weights_b)), c)


def as_design(X: ArrayLike, y: ArrayLike, *, check_finite: bool = True) -> tuple[FloatArray, FloatArray]:
    """``X`` as a float64 matrix (n, d) (a vector is one column) and ``y`` (n,), checked."""
    X_arr = np.asarray(X, dtype=np.float64)
    if X_arr.ndim == 1:
        X_arr = X_arr[:, np.newaxis]
    y_arr = np.asarray(y, dtype=np.float64)
    if X_arr.ndim != 2 or y_arr.ndim != 1 or X_arr.shape[0] != y_arr.shape[0]:
        raise ValueError(f"X must have shape (n, d) and y shape (n,); got {X_arr.shape} and {y_arr.shape}")
    if X_arr.shape[0] < 2:
        raise ValueError(f"need at least 2 rows to fit, got {X_arr.shape[0]}")
    if check_finite and not (np.isfinite(X_arr).all() and np.isfinite(y_arr).all()):
        raise ValueError("X and y must be finite (no NaN or infinity)")
    return X_arr, y_arr


def mean_squared_error(X: ArrayLike, y: ArrayLike, theta: ArrayLike) -> float:
    """Mean squared error of ``θ0 + X @ θ[1:]`` against ``y``, from the residuals.

    Parameters
    ----------
    X : array_like, shape (n, d) or (n,)
    y : array_like, shape (n,)
    theta : array_like, shape (d + 1,)
        Intercept first, original units.
    """
    X_arr, y_arr = as_design(X, y)
    with one_blas_thread():
        residual = linear_prediction(theta, X_arr) - y_arr
        return float(residual @ residual / residual.size)


def least_squares(X: ArrayLike, y: ArrayLike, *, fit_intercept: bool = True) -> FloatArray:
    """The exact minimizer of the MSE, for reference and certificates.

    Solved by SVD (``numpy.linalg.lstsq``) on the standardized columns, which is
    numerically stable where the normal equations would square the condition number.

    Parameters
    ----------
    X : array_like, shape (n, d) or (n,)
    y : array_like, shape (n,)
    fit_intercept : bool
        False for a model through the origin (θ0 is then 0).

    Returns
    -------
    theta : ndarray, shape (d + 1,)
        Intercept first, original units.
    """
    X_arr, y_arr = as_design(X, y)
    scaler, _ = standardize(X_arr, y_arr, fit_intercept)
    design, target = scaler.design(X_arr, y_arr)
    with one_blas_thread():
        free = np.asarray(np.linalg.lstsq(design, target, rcond=None)[0], dtype=np.float64)
    return np.asarray(scaler.to_original(free), dtype=np.float64)
