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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pipeline.costs import KERNEL_CODE, Cost
from pipeline.model import linear_prediction
from pipeline.passes import BLOCK_ROWS, one_blas_thread, row_blocks

FloatArray = NDArray[np.float64]
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


class RowSource(Protocol):
    """Where a pass over the rows runs, when not here (:mod:`pipeline.ray_rows`): the sums
    of each chunk of the one-machine pass, shape (CHUNKS, K, d + 2), in chunk order, each
    computed as :func:`pipeline.kernels.chunk_partials` computes it."""

    def partials(
        self, y_inv: float, slopes: FloatArray, constants: FloatArray, c: float, kind: int
    ) -> FloatArray: ...


class RowCost:
    """A cost (:mod:`pipeline.costs`) in standardized units, from a pass over the rows.

    ``J_s(w) = mean(ρ̃_s(r))`` with ``r = X @ (w/σ) + k − y/σ_y`` the standardized
    residual (the centring folded into the constant ``k``, so the standardized design
    is never built) and ``ρ̃_s`` the cost's scaled form at scale ``c/σ_y``; its second
    derivative is at most 2, as the MSE's, so the quadratic's curvature bounds it.
    Each evaluation is one compiled pass over the rows on all cores (:mod:`pipeline.kernels`),
    summed in a fixed number of chunks so that the result does not depend on the number
    of threads; :meth:`passes` advances many runs on one read of the rows. ``X`` and
    ``y`` are read where they are (a memory-mapped copy stays on disk), or the passes
    run where ``rows`` holds them (other machines): the same chunks' sums, added here
    in the same order, so the same bits.
    """

    def __init__(
        self, X: FloatArray, y: FloatArray, scaler: Standardizer, cost: Cost, rows: RowSource | None = None
    ) -> None:
        from pipeline import kernels  # numba compiles (or loads) the loops: only when asked for

        self.X, self.y, self.scaler = np.ascontiguousarray(X), np.ascontiguousarray(y), scaler
        self.rows = X.shape[0]
        self.kernels, self.chunks = kernels, kernels.chunk_count()
        self.cost = cost.standardized(scaler.y_scale)
        self.kind = KERNEL_CODE[cost.name]
        self.scale = self.cost.scale if not cost.is_mse else 1.0
        self.source = rows  # None: the passes run here, on X and y

    def _split(self, W: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Slopes on the raw columns (K, d) and constants (K,) of the standardized residual
        for parameters ``W`` of shape (K, p)."""
        scaler = self.scaler
        weights = W[:, 1:] if scaler.fit_intercept else W
        slopes = weights / scaler.x_scale
        if not scaler.fit_intercept:
            return slopes, np.zeros(W.shape[0])
        return slopes, W[:, 0] - slopes @ scaler.x_mean + scaler.y_mean / scaler.y_scale

    def passes(self, W: FloatArray) -> tuple[FloatArray, FloatArray]:
        """The loss (K,) and gradient (K, p) of K runs at once, one read of the rows:
        each run's figures are those :meth:`loss_and_gradient` gives it alone, to the bit."""
        slopes, constants = self._split(np.atleast_2d(W))
        y_inv = 1.0 / self.scaler.y_scale
        if self.source is None:
            sums = self.kernels.cost_sums(
                self.X, self.y, y_inv, slopes, constants, self.scale, self.kind, self.chunks
            )
        else:  # the chunks' sums from where the rows are, added as cost_sums adds them
            sums = np.sum(self.source.partials(y_inv, slopes, constants, self.scale, self.kind), axis=0)
        total, slope_sum, cross = sums[:, 0], sums[:, 1], sums[:, 2:]
        scaler, n = self.scaler, self.rows
        weights_gradient = (cross / n - np.outer(slope_sum / n, scaler.x_mean)) / scaler.x_scale
        if scaler.fit_intercept:
            return total / n, np.column_stack([slope_sum / n, weights_gradient])
        return total / n, weights_gradient

    def loss_and_gradient(self, w: FloatArray) -> tuple[float, FloatArray]:
        losses, gradients = self.passes(w[np.newaxis])
        return float(losses[0]), np.asarray(gradients[0], dtype=np.float64)

    def gradient(self, w: FloatArray) -> FloatArray:
        return self.loss_and_gradient(w)[1]

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

    def hessian(self, w: FloatArray) -> FloatArray:
        """The Hessian of ``J_s`` at ``w``, shape (p, p), from the standardized design, a block at a time."""
        total = np.zeros((len(w), len(w)))
        for rows in row_blocks(self.rows):
            design, target = self.scaler.design(self.X[rows], self.y[rows])
            curvature = self.cost.scaled_curvature(design @ w - target)
            total += (design * curvature[:, np.newaxis]).T @ design
        return np.asarray(total / self.rows, dtype=np.float64)


class DataPass(RowCost):
    """The MSE as :class:`Quadratic` gives it (loss, gradient, curvature), each from a pass
    over the rows: slower than the statistics by a pass per iteration, but each loss
    comes from the residuals."""

    def __init__(
        self, X: FloatArray, y: FloatArray, scaler: Standardizer, rows: RowSource | None = None
    ) -> None:
        super().__init__(X, y, scaler, Cost(), rows)

    def curvature_along(self, g: FloatArray) -> float:
        """``gᵀQg``: the squares of the standardized design's combination ``g``, no target."""
        scaler = self.scaler
        slopes = (g[1:] if scaler.fit_intercept else g) / scaler.x_scale
        constant = float(g[0] - slopes @ scaler.x_mean) if scaler.fit_intercept else 0.0
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


@dataclass(frozen=True)
class OriginalUnits:
    """The free parameters in the data's own units, ``v = T·w + t`` (θ, intercept first,
    or the slopes alone without an intercept), and the cost in its own units,
    ``factor × J(w)`` (dollars², say): where plain gradient descent zig-zags.

    Attributes
    ----------
    T, T_inv : ndarray, shape (p, p)
        The linear part of the map from standardized ``w`` to ``v``, and its inverse.
    t : ndarray, shape (p,)
        Its constant part (the target's mean, in the intercept).
    factor : float
        From the standardized cost to the cost in the target's units.
    """

    T: FloatArray
    T_inv: FloatArray
    t: FloatArray
    factor: float

    @classmethod
    def of(cls, scaler: Standardizer, cost: Cost) -> OriginalUnits:
        """The map :meth:`Standardizer.to_original` makes, as a matrix, and ``cost``'s
        factor to its own units."""
        factor = cost.standard_factor(scaler.y_scale)
        ratio = scaler.y_scale / scaler.x_scale  # a slope's original units per standardized unit
        if not scaler.fit_intercept:
            return cls(np.diag(ratio), np.diag(1.0 / ratio), np.zeros(ratio.size), factor)
        p = ratio.size + 1
        T, T_inv, t = np.zeros((p, p)), np.zeros((p, p)), np.zeros(p)
        T[0, 0], T[0, 1:], T[1:, 1:] = scaler.y_scale, -ratio * scaler.x_mean, np.diag(ratio)
        # w0 = (v0 − ȳ + x̄·v_slopes) / s_y and w_j = v_j / ratio_j, written out (exact inverse)
        T_inv[0, 0], T_inv[0, 1:], T_inv[1:, 1:] = (
            1.0 / scaler.y_scale,
            scaler.x_mean / scaler.y_scale,
            np.diag(1.0 / ratio),
        )
        t[0] = scaler.y_mean
        return cls(T, T_inv, t, factor)

    def to_original(self, w: FloatArray) -> FloatArray:
        return np.asarray(self.T @ w + self.t, dtype=np.float64)

    def to_standard(self, v: FloatArray) -> FloatArray:
        return np.asarray(self.T_inv @ (v - self.t), dtype=np.float64)

    def gradient(self, standard_gradient: FloatArray) -> FloatArray:
        """∇ of the cost in its units with respect to ``v``, from ∇J(w): ``factor·T⁻ᵀ∇J``."""
        return np.asarray(self.factor * (self.T_inv.T @ standard_gradient), dtype=np.float64)

    def curvatures(self, quadratic: Quadratic) -> tuple[float, float]:
        """μ and L of the quadratic seen in these units: ``factor·T⁻ᵀ(2Q)T⁻¹``'s extreme
        eigenvalues (on King County's size alone, L/μ is about 3 × 10⁷)."""
        hessian = self.factor * (self.T_inv.T @ (2.0 * quadratic.Q) @ self.T_inv)
        eigenvalues = np.linalg.eigvalsh((hessian + hessian.T) / 2.0)
        return float(max(eigenvalues[0], 0.0)), float(eigenvalues[-1])


class InOriginalUnits:
    """An :class:`Objective` seen in the data's own units (:class:`OriginalUnits`): a
    method built on it steps on ``v``, in the cost's own units."""

    def __init__(self, inner: Objective, units: OriginalUnits) -> None:
        self.inner, self.units = inner, units

    def loss_and_gradient(self, v: FloatArray) -> tuple[float, FloatArray]:
        loss, gradient = self.inner.loss_and_gradient(self.units.to_standard(v))
        return self.units.factor * loss, self.units.gradient(gradient)

    def gradient(self, v: FloatArray) -> FloatArray:
        return self.units.gradient(self.inner.gradient(self.units.to_standard(v)))

    def armijo(
        self, v: FloatArray, gradient: FloatArray, trial: float, shrink: float = 0.5, decrease: float = 1e-4
    ) -> float:
        """The first of ``trial, shrink·trial, …`` that lowers the cost by ``decrease·t‖g‖²``
        (the cost evaluated at each trial: the step is not along the standardized gradient)."""
        loss, squared = self.loss_and_gradient(v)[0], float(gradient @ gradient)
        while trial > MIN_TRIAL and not (
            self.loss_and_gradient(v - trial * gradient)[0] <= loss - decrease * trial * squared
        ):
            trial *= shrink
        return trial


class Objective(Protocol):
    """The standardized cost as a method sees it: :class:`Quadratic`, :class:`DataPass`, :class:`RowCost`."""

    def loss_and_gradient(self, w: FloatArray) -> tuple[float, FloatArray]: ...

    def gradient(self, w: FloatArray) -> FloatArray: ...

    def armijo(
        self, w: FloatArray, gradient: FloatArray, trial: float, shrink: float = 0.5, decrease: float = 1e-4
    ) -> float: ...


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
        for rows in row_blocks(n_rows):
            block = X[rows] - x_shift
            target = y[rows] - y_shift
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
    """``X`` as a float64 matrix (n, d) (a vector is one column) and ``y`` (n,), checked.

    Arrays already of float64 (a memory-mapped split, say) are used where they are,
    and checked a block at a time."""
    X_arr = np.asarray(X, dtype=np.float64)
    if X_arr.ndim == 1:
        X_arr = X_arr[:, np.newaxis]
    y_arr = np.asarray(y, dtype=np.float64)
    if X_arr.ndim != 2 or y_arr.ndim != 1 or X_arr.shape[0] != y_arr.shape[0]:
        raise ValueError(f"X must have shape (n, d) and y shape (n,); got {X_arr.shape} and {y_arr.shape}")
    if X_arr.shape[0] < 2:
        raise ValueError(f"need at least 2 rows to fit, got {X_arr.shape[0]}")
    if check_finite and not all(
        np.isfinite(X_arr[rows]).all() and np.isfinite(y_arr[rows]).all() for rows in row_blocks(len(y_arr))
    ):
        raise ValueError("X and y must be finite (no NaN or infinity)")
    return X_arr, y_arr


def residual_blocks(X: FloatArray, y: FloatArray, theta: FloatArray) -> Iterator[FloatArray]:
    """``θ0 + X @ θ[1:] − y`` a block of rows at a time, shape (≤ BLOCK_ROWS,) each."""
    for rows in row_blocks(len(y)):
        yield linear_prediction(theta, X[rows]) - y[rows]


def mean_squared_error(X: ArrayLike, y: ArrayLike, theta: ArrayLike) -> float:
    """Mean squared error of ``θ0 + X @ θ[1:]`` against ``y``, from the residuals.

    Parameters
    ----------
    X : array_like, shape (n, d) or (n,)
    y : array_like, shape (n,)
    theta : array_like, shape (d + 1,)
        Intercept first, original units.
    """
    X_arr, y_arr = as_design(X, y, check_finite=False)  # a non-finite value shows in the sum
    theta_arr = np.asarray(theta, dtype=np.float64)
    with one_blas_thread():
        total = math.fsum(float(r @ r) for r in residual_blocks(X_arr, y_arr, theta_arr))
    return total / len(y_arr)


def newton_refine(
    w: FloatArray, quadratic: Quadratic, scaler: Standardizer, X: FloatArray, y: FloatArray, steps: int
) -> tuple[FloatArray, float, float]:
    """Iterative refinement of ``w``: ``steps`` times ``w ← w − Q⁻¹·Dᵀ(Dw − t)/N``.

    On an ill-conditioned problem, ``J = wᵀQw − 2bᵀw + c`` cancels most of its digits
    near the minimum (with an exact fit, all of them), so the statistics cannot see the
    last digits of ``w``. Residuals computed over the rows can: each Newton step with
    them gains about ``1/(cond(Q)·ε)``, so a few reach what ``lstsq`` reaches. Each
    step is one pass over the rows a block at a time (the standardized design ``D`` and
    target ``t`` are built per block); the blocks' sums are added exactly (``fsum``).
    Returns the refined ``w``, its loss and gradient norm, both from the residuals.
    """
    n = len(y)
    with one_blas_thread():
        for _ in range(steps):
            half_gradient, _ = _design_pass(w, scaler, X, y)
            w = w - np.linalg.solve(quadratic.Q, half_gradient / n)
        half_gradient, squares = _design_pass(w, scaler, X, y)
        gradient = 2.0 * half_gradient / n
        return w, squares / n, float(np.sqrt(gradient @ gradient))


def _design_pass(
    w: FloatArray, scaler: Standardizer, X: FloatArray, y: FloatArray
) -> tuple[FloatArray, float]:
    """``Dᵀ(Dw − t)`` and ``‖Dw − t‖²`` over the rows, each block's sum added exactly."""
    parts, squares = [], []
    for rows in row_blocks(len(y)):
        design, target = scaler.design(X[rows], y[rows])
        residual = design @ w - target
        parts.append(design.T @ residual)
        squares.append(float(residual @ residual))
    cross = np.array([math.fsum(column) for column in zip(*parts, strict=True)], dtype=np.float64)
    return cross, math.fsum(squares)


#: Newton steps on the residuals that finish :func:`least_squares` (see :func:`newton_refine`).
LEAST_SQUARES_STEPS = 3


def least_squares(X: ArrayLike, y: ArrayLike, *, fit_intercept: bool = True) -> FloatArray:
    """The exact minimizer of the MSE, for reference and certificates.

    The standardized normal equations from one pass over the rows (:func:`standardize`),
    solved, then :data:`LEAST_SQUARES_STEPS` Newton steps whose gradients come from the
    residuals (:func:`newton_refine`): as accurate as an SVD of the whole design
    (``numpy.linalg.lstsq``) up to condition numbers about 1e10, where it reaches more
    digits (``tests/test_strd.py``), and in memory that does not grow with the rows.

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
    scaler, quadratic = standardize(X_arr, y_arr, fit_intercept)
    with one_blas_thread():
        free = np.asarray(np.linalg.lstsq(quadratic.Q, quadratic.b, rcond=None)[0], dtype=np.float64)
    if np.linalg.cond(quadratic.Q) < 1.0 / np.finfo(np.float64).eps:
        free = newton_refine(free, quadratic, scaler, X_arr, y_arr, LEAST_SQUARES_STEPS)[0]
    return np.asarray(scaler.to_original(free), dtype=np.float64)
