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

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pipeline.costs import Cost
from pipeline.methods import METHODS, Method, Problem, sgd_epochs
from pipeline.objective import (
    BLOCK_ROWS,
    DataPass,
    FloatArray,
    Objective,
    Quadratic,
    RowCost,
    Standardizer,
    as_design,
    least_squares,
    mean_squared_error,
    one_blas_thread,
    standardize,
)
from pipeline.rules import DIVERGENCE_RATIO, MAX_ITER, TOLERANCE

# The objective's names and SGD's update lived here before they got homes of their own
# (pipeline.objective, pipeline.methods): still importable from this module.
__all__ = [
    "BLOCK_ROWS",
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
    "one_blas_thread",
    "sgd_epochs",
    "standardize",
]

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
    X_arr, y_arr = as_design(X, y, check_finite=False)  # standardize() checks, in its pass
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
