"""Gradient descent on the mean squared error of a linear model.

Plain numpy: this module knows nothing of MLflow, Hydra or files, so that it can be
imported, tested and reused on its own::

    from pipeline.methods import gd, nesterov
    from pipeline.optimize import fit
    result = fit(X, y, theta_init=[0.0, 100.0], method=gd(0.1), max_iter=1000, tol=1e-9)
    result = fit(X, y, theta_init=[0.0, 100.0], method=nesterov("auto"))

The model is ``y ≈ θ0 + X @ θ[1:]`` (or ``X @ θ[1:]`` with ``fit_intercept=False``).
The cost is the mean squared error ``J(θ) = mean((θ0 + X @ θ[1:] - y) ** 2)``, as in
the design notes.

Why standardize inside: on the house data the intercept is in dollars and the slope in
dollars per square foot, and the two directions of the cost landscape differ in
curvature by a factor of millions, so no single learning rate suits both. The
optimizer therefore walks in standardized coordinates (each feature column centred and
divided by its standard deviation, the target likewise; without an intercept, divided
by their root mean square), where a learning rate of 0.01 to 1 means the same on any
data set. θ is converted on the way in and on the way out, so callers only ever see
original units.

Why statistics: the MSE of a linear model is a quadratic, ``J = θᵀQθ − 2bᵀθ + c`` with
``Q = DᵀD/N``, ``b = Dᵀy/N``, ``c = yᵀy/N`` for the (standardized) design D. These are
computed in one blocked pass over the data; every full-batch iteration then costs
O(d²) instead of a pass over N rows, with the same iterates. Only mini-batch SGD
passes over the data each epoch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import ThreadpoolController

from pipeline.costs import KERNEL_CODE, Cost
from pipeline.methods import METHODS, Method, Problem, Update
from pipeline.model import linear_prediction
from pipeline.rules import DIVERGENCE_RATIO, MAX_ITER, TOLERANCE

__all__ = [
    "METHODS",
    "ConvergenceWarning",
    "DataPass",
    "FitResult",
    "Objective",
    "Quadratic",
    "RowCost",
    "Standardizer",
    "fit",
    "least_squares",
    "mean_squared_error",
    "standardize",
]

FloatArray = NDArray[np.float64]
#: Rows per block when the statistics are accumulated: a few MB, cache-friendly.
BLOCK_ROWS = 1 << 16
#: Full-batch iterations whose steps all reverse the one before while the loss neither
#: falls nor grows, in a row, before a run is called oscillating (and stopped).
OSCILLATION_WINDOW = 50
#: Past this condition number of the standardized XᵀX/N, float64 cannot certify θ.
MAX_CONDITION = 1e10
#: Past this condition number, a run that converged on the statistics is finished by
#: :data:`REFINEMENT_STEPS` Newton steps whose gradients come from residuals over the
#: rows: the rounding of XᵀX and Xᵀy is what limits its accuracy there, not the descent.
REFINE_CONDITION = 1e4
REFINEMENT_STEPS = 3
#: Backtracking's smallest trial step: below it the search gives up shrinking.
MIN_TRIAL = 1e-30


class ConvergenceWarning(UserWarning):
    """Issued when the iteration budget runs out before the stopping rule is met."""


@dataclass(frozen=True)
class FitResult:
    """What a gradient-descent run produced.

    Attributes
    ----------
    theta : ndarray, shape (n_features + 1,)
        Final parameters in original units, intercept first (0 without an intercept).
    loss_history : ndarray, shape (m,)
        Training MSE (original units) at the iterates ``history_steps``: every iterate
        from the initial θ on (m = n_iter + 1), unless the run is longer than
        ``history_limit``, when it is thinned to evenly spaced iterates, the last kept.
        For a diverged run it ends at the last finite loss.
    theta_history : ndarray, shape (m, n_features + 1)
        θ (original units, intercept first) at the same iterates: the path downhill.
    history_steps : ndarray of int, shape (m,)
        The iteration number of each recorded iterate, 0 first, ``n_iter`` last.
    n_iter : int
        Number of iterations made (for ``sgd``: epochs).
    converged : bool
        True when the gradient norm fell to ``tol`` or below on a problem whose
        condition number float64 can handle.
    diverged : bool
        True when the loss became non-finite or grew past ``divergence_ratio`` times
        its initial value.
    oscillating : bool
        True when the iterates jumped back and forth (every step opposite to the one
        before) for :data:`OSCILLATION_WINDOW` iterations without lowering the loss: a
        learning rate at the stability limit. The loop stops there.
    message : str
        One sentence saying why the loop stopped.
    grad_norm : float
        Euclidean norm of the gradient at the final iterate, in standardized units.
    lr : float
        The learning rate used (the one chosen, for ``lr="auto"``).
    condition_number : float
        Condition number of the standardized XᵀX/N.
    hessian_eigenvalues : ndarray, shape (p,)
        Eigenvalues of the cost's Hessian at the final iterate, standardized units,
        ascending: all positive at a minimum, all near 0 on a plateau.
    """

    theta: FloatArray
    loss_history: FloatArray
    theta_history: FloatArray
    history_steps: NDArray[np.int64]
    n_iter: int
    converged: bool
    diverged: bool
    message: str
    grad_norm: float
    lr: float = math.nan
    condition_number: float = math.nan
    oscillating: bool = False
    hessian_eigenvalues: FloatArray = field(default_factory=lambda: np.zeros(0))

    @property
    def status(self) -> str:
        """``"converged"``, ``"diverged"``, ``"oscillating"`` or ``"max_iter"`` (budget ran out)."""
        if self.converged:
            return "converged"
        if self.diverged:
            return "diverged"
        if self.oscillating:
            return "oscillating"
        return "max_iter"


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


def _refine(
    w: FloatArray, quadratic: Quadratic, scaler: Standardizer, X: FloatArray, y: FloatArray
) -> tuple[FloatArray, float, float]:
    """Iterative refinement of a converged ``w``: ``w ← w − Q⁻¹·Dᵀ(Dw − t)/N``.

    On an ill-conditioned problem, ``J = wᵀQw − 2bᵀw + c`` cancels most of its digits
    near the minimum (with an exact fit, all of them), so the statistics cannot see the
    last digits of ``w``. Residuals computed over the rows can: each Newton step with
    them gains about ``1/(cond(Q)·ε)``, so a few reach what ``lstsq`` reaches.
    Returns the refined ``w``, its loss and gradient norm, both from the residuals.
    """
    design, target = scaler.design(X, y)
    n = design.shape[0]
    with one_blas_thread():
        for _ in range(REFINEMENT_STEPS):
            half_gradient = design.T @ (design @ w - target) / n
            w = w - np.linalg.solve(quadratic.Q, half_gradient)
        residual = design @ w - target
        gradient = 2.0 * design.T @ residual / n
        return w, float(residual @ residual / n), float(np.sqrt(gradient @ gradient))


class _History:
    """Iterates kept for the loss curve and the path, at most about ``limit`` of them.

    Past the limit, every other kept iterate is dropped and the stride doubles, so a run
    of any length keeps evenly spaced iterates in bounded memory.
    """

    def __init__(self, limit: int) -> None:
        self.limit, self.stride = limit, 1
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.points: list[FloatArray] = []

    def record(self, step: int, loss: float, point: FloatArray) -> None:
        if step % self.stride:
            return
        self.steps.append(step)
        self.losses.append(loss)
        self.points.append(point)
        if len(self.steps) > self.limit:
            self.stride *= 2
            keep = [i for i, kept in enumerate(self.steps) if kept % self.stride == 0]
            self.steps = [self.steps[i] for i in keep]
            self.losses = [self.losses[i] for i in keep]
            self.points = [self.points[i] for i in keep]

    def finish(self, step: int, loss: float, point: FloatArray) -> None:
        """Make sure the final iterate is the last one kept."""
        if not self.steps or self.steps[-1] != step:
            self.steps.append(step)
            self.losses.append(loss)
            self.points.append(point)


def _as_design(X: ArrayLike, y: ArrayLike, *, check_finite: bool = True) -> tuple[FloatArray, FloatArray]:
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
    X_arr, y_arr = _as_design(X, y)
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
    X_arr, y_arr = _as_design(X, y)
    scaler, _ = standardize(X_arr, y_arr, fit_intercept)
    design, target = scaler.design(X_arr, y_arr)
    with one_blas_thread():
        free = np.asarray(np.linalg.lstsq(design, target, rcond=None)[0], dtype=np.float64)
    return np.asarray(scaler.to_original(free), dtype=np.float64)


def _check_settings(method: Method, max_iter: int, tol: float, divergence_ratio: float) -> None:
    if not isinstance(method, Method):
        raise ValueError(
            f"method must be one of {', '.join(f'{name}(...)' for name in METHODS)} "
            f"from pipeline.methods; got {method!r}"
        )
    MAX_ITER.check("max_iter", max_iter)
    TOLERANCE.check("tol", tol)
    DIVERGENCE_RATIO.check("divergence_ratio", divergence_ratio)


def fit(
    X: ArrayLike,
    y: ArrayLike,
    *,
    theta_init: ArrayLike,
    method: Method,
    max_iter: int = 1000,
    tol: float = 1e-9,
    fit_intercept: bool = True,
    divergence_ratio: float = 1e6,
    history_limit: int = 100_000,
    callback: Callable[[int, float], None] | None = None,
    statistics: bool = True,
    cost: Cost | None = None,
) -> FitResult:
    """Fit ``y ≈ θ0 + X @ θ[1:]`` by gradient descent on the MSE (or another cost).

    Each iteration takes one step of ``method`` in standardized coordinates (see the
    module docstring): :func:`~pipeline.methods.gd`, :func:`~pipeline.methods.momentum`,
    :func:`~pipeline.methods.nesterov`, :func:`~pipeline.methods.adam`,
    :func:`~pipeline.methods.backtracking` or :func:`~pipeline.methods.sgd` (one
    iteration is an epoch of mini-batches).

    The loop stops at the first of:

    * converged: ``‖∇J‖ <= tol``, the full-batch gradient norm in standardized units,
      so the same ``tol`` means the same accuracy on any data set, unless the
      condition number exceeds :data:`MAX_CONDITION` (then float64 cannot certify θ,
      and the run says so instead of claiming convergence);
    * diverged: the loss is non-finite or exceeds ``divergence_ratio`` times the
      initial loss (the step is too large for the curvature);
    * budget: ``max_iter`` iterations were made; a :class:`ConvergenceWarning` is issued.

    Parameters
    ----------
    X : array_like, shape (n, d) or (n,)
        Feature values, original units, finite, no constant column.
    y : array_like, shape (n,)
        Target values, original units.
    theta_init : array_like, shape (d + 1,)
        Starting parameters in original units, intercept first (ignored without one).
    method : Method
        How to step, with its learning rate: ``gd(0.1)``, ``nesterov("auto")``, …
        (:mod:`pipeline.methods`). The step size is in standardized coordinates; with
        one feature and an intercept the curvature is 2 in every direction: plain gd
        converges below 1, lands on the optimum in one step at 0.5, and diverges above 1.
    max_iter : int
        Largest number of iterations, ``>= 1``.
    tol : float
        Stopping tolerance on the standardized gradient norm, ``>= 0``.
    fit_intercept : bool
        False for a model through the origin.
    divergence_ratio : float
        Loss growth (relative to the initial loss) taken as divergence, ``> 1``.
    history_limit : int
        Most iterates kept in the histories before they are thinned.
    callback : callable, optional
        Called as ``callback(iteration, loss)`` (loss in original units) at every
        iterate, e.g. to show progress; it must not change anything.
    statistics : bool
        True (the default): full-batch iterations use XᵀX, Xᵀy, yᵀy and N, O(d²) each.
        False: every iteration passes over the rows (:class:`DataPass`); the same
        iterates, each loss from the residuals. ``sgd`` has its own scheme either way.
    cost : Cost, optional
        The cost minimized (:mod:`pipeline.costs`); the MSE by default. A robust cost
        passes over the rows every iteration (:class:`RowCost`), whatever ``statistics``.

    Returns
    -------
    FitResult
        θ in original units, the loss and θ along the way, and how the loop ended.
    """
    X_arr, y_arr = _as_design(X, y, check_finite=False)  # standardize() checks, in its pass
    n_features = X_arr.shape[1]
    start = np.asarray(theta_init, dtype=np.float64).reshape(-1)
    if start.shape != (n_features + 1,):
        raise ValueError(f"theta_init must have {n_features + 1} values (intercept first), got {start.size}")
    if not np.isfinite(start).all():
        raise ValueError("theta_init must be finite")
    _check_settings(method, max_iter, tol, divergence_ratio)

    scaler, quadratic = standardize(X_arr, y_arr, fit_intercept)
    mu, L = quadratic.curvatures()
    condition = L / mu if mu > 0 else math.inf
    method = method.settled(mu, L)  # lr="auto" from the curvature
    step = method.step
    cost = cost if cost is not None else Cost()
    to_mse = cost.standard_factor(scaler.y_scale)  # standardized loss → dollars², say
    w = scaler.to_standard(start)

    objective: Objective
    if not cost.is_mse:
        objective = RowCost(X_arr, y_arr, scaler, cost)
    elif statistics or method.iterates_epochs:
        objective = quadratic
    else:
        objective = DataPass(X_arr, y_arr, scaler)
    update = method.init(Problem(objective, scaler, X_arr, y_arr, cost))
    history = _History(history_limit)
    first_loss = last_loss = math.nan
    converged = diverged = False
    grad_norm = math.nan
    message = ""
    iteration = 0
    previous = w
    oscillating = False
    reversals = 0  # steps in a row that point against the step before
    step_before: FloatArray | None = None
    recent_losses: list[float] = []  # the last OSCILLATION_WINDOW + 1 losses
    with np.errstate(over="ignore", invalid="ignore"):
        while True:
            loss, gradient = objective.loss_and_gradient(w)
            if not math.isfinite(loss):
                if iteration == 0:
                    raise ValueError("theta_init is so far off that the loss overflows float64")
                diverged = True
                message = (
                    f"diverged at iteration {iteration}: the loss became non-finite; lr={step:g} is too large"
                )
                # Report the last iterate whose loss was finite, never NaN or inf.
                w, iteration = previous, iteration - 1
                break
            if iteration == 0:
                first_loss = loss
            last_loss = loss
            history.record(iteration, loss, w)
            if callback is not None:
                callback(iteration, loss * to_mse)
            if loss > divergence_ratio * max(first_loss, np.finfo(float).tiny):
                diverged = True
                message = (
                    f"diverged at iteration {iteration}: the loss grew past "
                    f"{divergence_ratio:g} times its initial value; lr={step:g} is too large"
                )
                break
            grad_norm = float(np.sqrt(gradient @ gradient))
            if grad_norm <= tol:
                if condition > MAX_CONDITION:
                    message = (
                        f"stopped after {iteration} iterations with gradient norm {grad_norm:.2e}, but the "
                        f"standardized XᵀX has condition number {condition:.2e} > {MAX_CONDITION:.0e}: "
                        "float64 cannot certify θ (drop or combine collinear columns, lower the degree)"
                    )
                    warnings.warn(message, ConvergenceWarning, stacklevel=2)
                else:
                    converged = True
                    message = f"converged after {iteration} iterations: " + (
                        f"gradient norm {grad_norm:.2e} <= tol {tol:g}"
                    )
                break
            recent_losses = [*recent_losses[-OSCILLATION_WINDOW:], loss]
            # Oscillating: the steps keep reversing and the loss stays where it was, to a few
            # units in the last place (falling, the run converges; growing, it diverges).
            if (
                reversals >= OSCILLATION_WINDOW
                and not method.iterates_epochs
                and recent_losses[0] * (1 - 1e-13) <= min(recent_losses[1:])
                and max(recent_losses[1:]) <= recent_losses[0] * (1 + 1e-13)
            ):
                oscillating = True
                message = (
                    f"oscillating at iteration {iteration}: every step reverses the one before and the "
                    f"loss has not fallen in {OSCILLATION_WINDOW} iterations; lower lr (now {step:g})"
                )
                warnings.warn(message, ConvergenceWarning, stacklevel=2)
                break
            if iteration >= max_iter:
                message = (
                    f"stopped at max_iter={max_iter}: gradient norm {grad_norm:.2e} > tol {tol:g}; "
                    "raise max_iter or lr"
                )
                if condition > MAX_CONDITION:
                    message += f" (condition number {condition:.2e}: beyond what float64 can certify)"
                warnings.warn(message, ConvergenceWarning, stacklevel=2)
                break
            previous = w
            w = update(iteration, w, gradient)
            moved = w - previous
            # A reversal is a real step back (not float64 rounding at the bottom of the valley).
            length = float(np.sqrt(moved @ moved))
            reversed_ = (
                step_before is not None
                and length > 1e-6 * max(1.0, float(np.sqrt(w @ w)))
                and float(moved @ step_before) < -0.99 * length * float(np.sqrt(step_before @ step_before))
            )
            reversals = reversals + 1 if reversed_ else 0
            step_before = moved
            iteration += 1

    if converged and objective is quadratic and condition > REFINE_CONDITION:
        w, last_loss, grad_norm = _refine(w, quadratic, scaler, X_arr, y_arr)
        iteration += REFINEMENT_STEPS
        message += f"; then {REFINEMENT_STEPS} Newton steps on the rows' residuals"
        message += f" (condition number {condition:.1e})"
    history.finish(iteration, last_loss, w)
    hessian = objective.hessian(w, X_arr, y_arr) if isinstance(objective, RowCost) else 2.0 * quadratic.Q
    with one_blas_thread():
        curvature = np.linalg.eigvalsh(hessian) if np.isfinite(hessian).all() else np.full(len(w), math.nan)
    path = np.asarray(scaler.to_original(np.array(history.points)), dtype=np.float64).reshape(
        -1, n_features + 1
    )
    return FitResult(
        theta=np.asarray(scaler.to_original(w), dtype=np.float64),
        loss_history=np.asarray(history.losses) * to_mse,
        theta_history=path,
        history_steps=np.asarray(history.steps, dtype=np.int64),
        n_iter=iteration,
        converged=converged,
        diverged=diverged,
        message=message,
        grad_norm=grad_norm,
        lr=step,
        condition_number=condition,
        oscillating=oscillating,
        hessian_eigenvalues=np.asarray(curvature, dtype=np.float64),
    )


def sgd_epochs(problem: Problem, step: float, batch_size: int, seed: int, decay: float) -> Update:
    """The update of :func:`pipeline.methods.sgd`: one epoch of mini-batches per call.

    The rows are shuffled once; every epoch visits the same mini-batches in a new random
    order. A mini-batch step on the MSE, w ← w − (2r/b)·Bᵀ(Bw − g), depends on the batch
    only through BᵀB and Bᵀg, so these are summed for every batch in one vectorized pass
    at set-up (while p <= batch_size they take no more memory than the rows); an epoch is
    then a loop of p×p updates that reads no data at all. A robust cost has no such
    statistics: its epochs read each batch's rows.
    """
    X, y, scaler, cost = problem.X, problem.y, problem.scaler, problem.cost
    rng = np.random.default_rng(seed)
    order = rng.permutation(X.shape[0])
    design, target = scaler.design(X[order], y[order])
    n_rows, width = design.shape
    size = min(int(batch_size), n_rows)
    if not cost.is_mse:
        return _streaming_epochs(design, target, size, step, decay, rng, cost.standardized(scaler.y_scale))
    if width > size:  # statistics would outweigh the rows: stream the rows instead
        return _streaming_epochs(design, target, size, step, decay, rng)
    return _statistics_epochs(*_batch_statistics(design, target, size), step, decay, rng)


def _statistics_epochs(
    grams: FloatArray,
    moments: FloatArray,
    counts: NDArray[np.int64],
    step: float,
    decay: float,
    rng: np.random.Generator,
) -> Update:
    """SGD epochs from each mini-batch's BᵀB and Bᵀg: the same steps, no data read."""

    identity = np.eye(grams.shape[1])

    def epoch(iteration: int, w: FloatArray, _: FloatArray) -> FloatArray:
        # Each batch's step as an affine map w ← A_k w + c_k, built for all k at once.
        scaled = (2.0 * step / (1.0 + decay * iteration)) / counts
        maps = identity - scaled[:, np.newaxis, np.newaxis] * grams
        shifts = scaled[:, np.newaxis] * moments
        for k in rng.permutation(counts.size):
            w = maps[k] @ w + shifts[k]
        return w

    return epoch


def _batch_statistics(
    design: FloatArray, target: FloatArray, size: int
) -> tuple[FloatArray, FloatArray, NDArray[np.int64]]:
    """BᵀB (k, p, p), Bᵀg (k, p) and row counts (k,) of consecutive batches of ``size`` rows."""
    n_rows, width = design.shape
    whole = n_rows // size * size
    blocks = design[:whole].reshape(-1, size, width)
    goals = target[:whole].reshape(-1, size)
    grams = np.matmul(blocks.transpose(0, 2, 1), blocks)
    moments = np.matmul(blocks.transpose(0, 2, 1), goals[:, :, np.newaxis])[:, :, 0]
    counts = np.full(grams.shape[0], size, dtype=np.int64)
    if whole < n_rows:  # the last, shorter batch
        rest, rest_goal = design[whole:], target[whole:]
        grams = np.concatenate([grams, (rest.T @ rest)[np.newaxis]])
        moments = np.concatenate([moments, (rest.T @ rest_goal)[np.newaxis]])
        counts = np.append(counts, n_rows - whole)
    return grams, moments, counts


def _streaming_epochs(
    design: FloatArray,
    target: FloatArray,
    size: int,
    step: float,
    decay: float,
    rng: np.random.Generator,
    cost: Cost | None = None,
) -> Update:
    """SGD epochs that read each mini-batch's rows (wide designs, p > batch size; robust costs)."""
    starts = np.arange(0, design.shape[0], size)

    def epoch(iteration: int, w: FloatArray, _: FloatArray) -> FloatArray:
        if cost is not None:  # a robust cost's batch gradient: ρ̃'(r) in place of 2r
            rate = step / (1.0 + decay * iteration)
            for begin in rng.permutation(starts):
                block, goal = design[begin : begin + size], target[begin : begin + size]
                w = w - (rate / block.shape[0]) * (cost.scaled_psi(block @ w - goal) @ block)
            return w
        rate = 2.0 * step / (1.0 + decay * iteration)
        for begin in rng.permutation(starts):
            block, goal = design[begin : begin + size], target[begin : begin + size]
            w = w - (rate / block.shape[0]) * ((block @ w - goal) @ block)
        return w

    return epoch
