"""Batch gradient descent on the mean squared error of a linear model.

Plain numpy: this module knows nothing of MLflow, Hydra or files, so that it can be
imported, tested and reused on its own::

    from pipeline.optimize import fit
    result = fit(X, y, theta_init=[0.0, 100.0], lr=0.1, max_iter=1000, tol=1e-9)

The model is ``y ≈ θ0 + X @ θ[1:]``. The cost is the mean squared error
``J(θ) = mean((θ0 + X @ θ[1:] - y) ** 2)``, as in the design notes.

Why standardize inside: on the house data the intercept is in dollars and the slope in
dollars per square foot, and the two directions of the cost landscape differ in
curvature by a factor of millions, so no single learning rate suits both. The
optimizer therefore walks in standardized coordinates (each feature column centred and
divided by its standard deviation, the target likewise), where the cost is well
conditioned and a learning rate of 0.01 to 1 means the same on any data set. θ is
converted on the way in and on the way out, so callers only ever see original units.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "ConvergenceWarning",
    "FitResult",
    "Standardizer",
    "fit",
    "least_squares",
    "mean_squared_error",
]

FloatArray = NDArray[np.float64]


class ConvergenceWarning(UserWarning):
    """Issued when the iteration budget runs out before the stopping rule is met."""


@dataclass(frozen=True)
class FitResult:
    """What a gradient-descent run produced.

    Attributes
    ----------
    theta : ndarray, shape (n_features + 1,)
        Final parameters in original units, intercept first.
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
        Number of parameter updates made.
    converged : bool
        True when the gradient norm fell to ``tol`` or below.
    diverged : bool
        True when the loss became non-finite or grew past ``divergence_ratio`` times
        its initial value.
    message : str
        One sentence saying why the loop stopped.
    grad_norm : float
        Euclidean norm of the gradient at the final iterate, in standardized units.
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

    @property
    def status(self) -> str:
        """``"converged"``, ``"diverged"`` or ``"max_iter"`` (budget ran out)."""
        if self.converged:
            return "converged"
        if self.diverged:
            return "diverged"
        return "max_iter"


@dataclass(frozen=True)
class Standardizer:
    """Affine map between original and standardized parameters.

    Attributes
    ----------
    x_mean, x_scale : ndarray, shape (n_features,)
        Column means and standard deviations of X.
    y_mean, y_scale : float
        Mean and standard deviation of y (``y_scale`` is 1 for a constant target).
    """

    x_mean: FloatArray
    x_scale: FloatArray
    y_mean: float
    y_scale: float

    @classmethod
    def from_data(cls, X: FloatArray, y: FloatArray) -> Standardizer:
        """Measure the columns of ``X`` (shape (n, d)) and ``y`` (shape (n,))."""
        x_mean = X.mean(axis=0)
        x_scale = X.std(axis=0)
        constant = np.flatnonzero(~(x_scale > 0))
        if constant.size:
            raise ValueError(
                f"feature column {int(constant[0])} is constant (zero variance): "
                "it cannot be standardized and its coefficient is not identifiable"
            )
        y_scale = float(y.std())
        return cls(x_mean, x_scale, float(y.mean()), y_scale if y_scale > 0 else 1.0)

    def transform(self, X: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Return the standardized design ``[1, Z]`` (shape (n, d+1)) and target (n,)."""
        Z = (X - self.x_mean) / self.x_scale
        design = np.empty((Z.shape[0], Z.shape[1] + 1))
        design[:, 0] = 1.0
        design[:, 1:] = Z
        return design, (y - self.y_mean) / self.y_scale

    def to_standard(self, theta: FloatArray) -> FloatArray:
        """Original-unit θ (intercept first) to standardized θ."""
        weights = theta[1:] * self.x_scale / self.y_scale
        intercept = (theta[0] + theta[1:] @ self.x_mean - self.y_mean) / self.y_scale
        return np.concatenate(([intercept], weights))

    def to_original(self, theta_std: FloatArray) -> FloatArray:
        """Standardized θ to original units (intercept first)."""
        slopes = theta_std[1:] * self.y_scale / self.x_scale
        intercept = self.y_mean + self.y_scale * theta_std[0] - slopes @ self.x_mean
        return np.concatenate(([intercept], slopes))


class _History:
    """Iterates kept for the loss curve and the path, at most about ``limit`` of them.

    Past the limit, every other kept iterate is dropped and the stride doubles, so a run
    of any length keeps evenly spaced iterates in bounded memory.
    """

    def __init__(self, limit: int) -> None:
        self.limit, self.stride = limit, 1
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.thetas: list[FloatArray] = []

    def record(self, step: int, loss: float, theta: FloatArray) -> None:
        if step % self.stride:
            return
        self.steps.append(step)
        self.losses.append(loss)
        self.thetas.append(theta)
        if len(self.steps) > self.limit:
            self.stride *= 2
            keep = [i for i, kept in enumerate(self.steps) if kept % self.stride == 0]
            self.steps = [self.steps[i] for i in keep]
            self.losses = [self.losses[i] for i in keep]
            self.thetas = [self.thetas[i] for i in keep]

    def finish(self, step: int, loss: float, theta: FloatArray) -> None:
        """Make sure the final iterate is the last one kept."""
        if not self.steps or self.steps[-1] != step:
            self.steps.append(step)
            self.losses.append(loss)
            self.thetas.append(theta)


def _as_design(X: ArrayLike, y: ArrayLike) -> tuple[FloatArray, FloatArray]:
    X_arr = np.asarray(X, dtype=np.float64)
    if X_arr.ndim == 1:
        X_arr = X_arr[:, np.newaxis]
    y_arr = np.asarray(y, dtype=np.float64)
    if X_arr.ndim != 2 or y_arr.ndim != 1 or X_arr.shape[0] != y_arr.shape[0]:
        raise ValueError(f"X must have shape (n, d) and y shape (n,); got {X_arr.shape} and {y_arr.shape}")
    if X_arr.shape[0] < 2:
        raise ValueError(f"need at least 2 rows to fit, got {X_arr.shape[0]}")
    if not (np.isfinite(X_arr).all() and np.isfinite(y_arr).all()):
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
    theta_arr = np.asarray(theta, dtype=np.float64)
    residual = theta_arr[0] + X_arr @ theta_arr[1:] - y_arr
    return float(residual @ residual / residual.size)


def least_squares(X: ArrayLike, y: ArrayLike) -> FloatArray:
    """The exact minimizer of the MSE, for reference and certificates.

    Solved by SVD (``numpy.linalg.lstsq``) on the standardized columns, which is
    numerically stable where the normal equations would square the condition number.

    Parameters
    ----------
    X : array_like, shape (n, d) or (n,)
    y : array_like, shape (n,)

    Returns
    -------
    theta : ndarray, shape (d + 1,)
        Intercept first, original units.
    """
    X_arr, y_arr = _as_design(X, y)
    scaler = Standardizer.from_data(X_arr, y_arr)
    design, target = scaler.transform(X_arr, y_arr)
    theta_std = np.asarray(np.linalg.lstsq(design, target, rcond=None)[0], dtype=np.float64)
    return scaler.to_original(theta_std)


def fit(
    X: ArrayLike,
    y: ArrayLike,
    *,
    theta_init: ArrayLike,
    lr: float,
    max_iter: int = 1000,
    tol: float = 1e-9,
    divergence_ratio: float = 1e6,
    history_limit: int = 100_000,
    callback: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Fit ``y ≈ θ0 + X @ θ[1:]`` by batch gradient descent on the MSE.

    Each iteration takes one step ``θ ← θ - lr · ∇J(θ)`` in standardized coordinates
    (see the module docstring). The loop stops at the first of:

    * converged: ``‖∇J‖ <= tol``, the gradient norm measured in standardized units,
      so the same ``tol`` means the same accuracy on any data set;
    * diverged: the loss is non-finite or exceeds ``divergence_ratio`` times the
      initial loss (the step is too large for the curvature);
    * budget: ``max_iter`` updates were made; a :class:`ConvergenceWarning` is issued.

    Parameters
    ----------
    X : array_like, shape (n, d) or (n,)
        Feature values, original units, finite, no constant column.
    y : array_like, shape (n,)
        Target values, original units.
    theta_init : array_like, shape (d + 1,)
        Starting parameters in original units, intercept first.
    lr : float
        Learning rate (step size) in standardized coordinates, ``> 0``. With one
        feature the cost's curvature there is 2 in every direction, so rates below 1
        converge, 0.5 lands on the optimum in one step, and rates above 1 diverge.
    max_iter : int
        Largest number of updates, ``>= 1``.
    tol : float
        Stopping tolerance on the standardized gradient norm, ``>= 0``.
    divergence_ratio : float
        Loss growth (relative to the initial loss) taken as divergence, ``> 1``.
    history_limit : int
        Most iterates kept in the histories before they are thinned.
    callback : callable, optional
        Called as ``callback(iteration, loss)`` (loss in original units) at every
        iterate, e.g. to show progress; it must not change anything.

    Returns
    -------
    FitResult
        θ in original units, the loss at every iterate, and how the loop ended.
    """
    X_arr, y_arr = _as_design(X, y)
    n_rows, n_features = X_arr.shape
    start = np.asarray(theta_init, dtype=np.float64).reshape(-1)
    if start.shape != (n_features + 1,):
        raise ValueError(f"theta_init must have {n_features + 1} values (intercept first), got {start.size}")
    if not np.isfinite(start).all():
        raise ValueError("theta_init must be finite")
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a whole number >= 1, got {max_iter!r}")
    if not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if not divergence_ratio > 1:
        raise ValueError(f"divergence_ratio must be > 1, got {divergence_ratio!r}")

    scaler = Standardizer.from_data(X_arr, y_arr)
    design, target = scaler.transform(X_arr, y_arr)
    to_mse = scaler.y_scale**2  # standardized loss → dollars², say
    theta = scaler.to_standard(start)

    history = _History(history_limit)
    first_loss = last_loss = float("nan")
    converged = diverged = False
    grad_norm = float("nan")
    message = ""
    iteration = 0
    previous = theta
    with np.errstate(over="ignore", invalid="ignore"):
        while True:
            residual = design @ theta - target
            loss = float(residual @ residual) / n_rows
            if not np.isfinite(loss):
                if iteration == 0:
                    raise ValueError("theta_init is so far off that the loss overflows float64")
                diverged = True
                message = (
                    f"diverged at iteration {iteration}: the loss became non-finite; lr={lr:g} is too large"
                )
                # Report the last iterate whose loss was finite, never NaN or inf.
                theta, iteration = previous, iteration - 1
                break
            if iteration == 0:
                first_loss = loss
            last_loss = loss
            history.record(iteration, loss, theta)
            if callback is not None:
                callback(iteration, loss * to_mse)
            if loss > divergence_ratio * max(first_loss, np.finfo(float).tiny):
                diverged = True
                message = (
                    f"diverged at iteration {iteration}: the loss grew past "
                    f"{divergence_ratio:g} times its initial value; lr={lr:g} is too large"
                )
                break
            gradient = (2.0 / n_rows) * (design.T @ residual)
            grad_norm = float(np.sqrt(gradient @ gradient))
            if grad_norm <= tol:
                converged = True
                message = (
                    f"converged after {iteration} iterations: gradient norm {grad_norm:.2e} <= tol {tol:g}"
                )
                break
            if iteration >= max_iter:
                message = (
                    f"stopped at max_iter={max_iter}: gradient norm {grad_norm:.2e} > tol {tol:g}; "
                    "raise max_iter or lr"
                )
                warnings.warn(message, ConvergenceWarning, stacklevel=2)
                break
            previous = theta
            theta = theta - lr * gradient
            iteration += 1

    history.finish(iteration, last_loss, theta)
    path = np.array([scaler.to_original(point) for point in history.thetas])
    return FitResult(
        theta=scaler.to_original(theta),
        loss_history=np.asarray(history.losses) * to_mse,
        theta_history=path,
        history_steps=np.asarray(history.steps, dtype=np.int64),
        n_iter=iteration,
        converged=converged,
        diverged=diverged,
        message=message,
        grad_norm=grad_norm,
    )
