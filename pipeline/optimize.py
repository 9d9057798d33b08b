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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pipeline.costs import Cost
from pipeline.methods import METHODS, Method, Problem, sgd_epochs
from pipeline.objective import (
    DataPass,
    FloatArray,
    Objective,
    OriginalUnits,
    Quadratic,
    RowCost,
    RowSource,
    Standardizer,
    as_design,
    least_squares,
    mean_squared_error,
    newton_refine,
    standardize,
)
from pipeline.passes import BLOCK_ROWS, one_blas_thread
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
    "RowSource",
    "Standardizer",
    "Start",
    "fit",
    "fit_many",
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


@dataclass(frozen=True)
class _Stop:
    """Why the loop stopped: ``kind`` is FitResult's status, or "uncertified"."""

    kind: str
    message: str
    warns: bool = False


class _StoppingRules:
    """The loop's stopping rules (listed in :func:`fit`), checked at every iterate.

    It also watches the steps for reversals, the sign of a learning rate at the
    stability limit, and keeps the last gradient norm for the result.
    """

    def __init__(
        self, max_iter: int, tol: float, divergence_ratio: float, condition: float, method: Method
    ) -> None:
        self.max_iter, self.tol, self.divergence_ratio = max_iter, tol, divergence_ratio
        self.condition, self.lr, self.epochs = condition, method.step, method.iterates_epochs
        self.first_loss = math.nan
        self.grad_norm = math.nan
        self.reversals = 0  # steps in a row that point against the step before
        self.step_before: FloatArray | None = None
        self.recent_losses: list[float] = []  # the last OSCILLATION_WINDOW + 1 losses

    def non_finite(self, iteration: int) -> _Stop:
        if iteration == 0:
            raise ValueError("theta_init is so far off that the loss overflows float64")
        return _Stop(
            "diverged",
            f"diverged at iteration {iteration}: the loss became non-finite; lr={self.lr:g} is too large",
        )

    def check(self, iteration: int, loss: float, gradient: FloatArray) -> _Stop | None:
        """The rule that stops the loop at this iterate, or None to go on."""
        if iteration == 0:
            self.first_loss = loss
        if loss > self.divergence_ratio * max(self.first_loss, np.finfo(float).tiny):
            return _Stop(
                "diverged",
                f"diverged at iteration {iteration}: the loss grew past "
                f"{self.divergence_ratio:g} times its initial value; lr={self.lr:g} is too large",
            )
        self.grad_norm = float(np.sqrt(gradient @ gradient))
        if self.grad_norm <= self.tol:
            if self.condition > MAX_CONDITION:
                return _Stop(
                    "uncertified",
                    f"stopped after {iteration} iterations with gradient norm {self.grad_norm:.2e}, but the "
                    f"standardized XᵀX has condition number {self.condition:.2e} > {MAX_CONDITION:.0e}: "
                    "float64 cannot certify θ (drop or combine collinear columns, lower the degree)",
                    warns=True,
                )
            return _Stop(
                "converged",
                f"converged after {iteration} iterations: "
                f"gradient norm {self.grad_norm:.2e} <= tol {self.tol:g}",
            )
        self.recent_losses = [*self.recent_losses[-OSCILLATION_WINDOW:], loss]
        # Oscillating: the steps keep reversing and the loss stays where it was, to a few
        # units in the last place (falling, the run converges; growing, it diverges).
        recent = self.recent_losses
        if (
            self.reversals >= OSCILLATION_WINDOW
            and not self.epochs
            and recent[0] * (1 - 1e-13) <= min(recent[1:])
            and max(recent[1:]) <= recent[0] * (1 + 1e-13)
        ):
            return _Stop(
                "oscillating",
                f"oscillating at iteration {iteration}: every step reverses the one before and the "
                f"loss has not fallen in {OSCILLATION_WINDOW} iterations; lower lr (now {self.lr:g})",
                warns=True,
            )
        if iteration >= self.max_iter:
            message = (
                f"stopped at max_iter={self.max_iter}: "
                f"gradient norm {self.grad_norm:.2e} > tol {self.tol:g}; "
                "raise max_iter or lr"
            )
            if self.condition > MAX_CONDITION:
                message += f" (condition number {self.condition:.2e}: beyond what float64 can certify)"
            return _Stop("max_iter", message, warns=True)
        return None

    def stepped(self, previous: FloatArray, w: FloatArray) -> None:
        """Count the step from ``previous`` to ``w`` as a reversal or not."""
        moved = w - previous
        # A reversal is a real step back (not float64 rounding at the bottom of the valley).
        length = float(np.sqrt(moved @ moved))
        step_before = self.step_before
        reversed_ = (
            step_before is not None
            and length > 1e-6 * max(1.0, float(np.sqrt(w @ w)))
            and float(moved @ step_before) < -0.99 * length * float(np.sqrt(step_before @ step_before))
        )
        self.reversals = self.reversals + 1 if reversed_ else 0
        self.step_before = moved


@dataclass(frozen=True)
class _Problem:
    """What the loop works on, set up once: data, scaling, curvature, cost, objective."""

    X: FloatArray
    y: FloatArray
    scaler: Standardizer
    quadratic: Quadratic
    condition: float
    method: Method
    cost: Cost
    objective: Objective
    start: FloatArray  # θ_init in standardized coordinates

    @property
    def to_mse(self) -> float:
        """Factor from a standardized loss to original units (dollars², say)."""
        return self.cost.standard_factor(self.scaler.y_scale)


@dataclass(frozen=True)
class Start:
    """One run of :func:`fit_many`: where it starts and how it steps.

    Attributes
    ----------
    theta_init : array_like, shape (d + 1,)
        Starting parameters in original units, intercept first.
    method : Method
        How the run steps, with its learning rate.
    """

    theta_init: ArrayLike
    method: Method


def _set_up(
    X: ArrayLike,
    y: ArrayLike,
    starts: Sequence[Start],
    *,
    fit_intercept: bool,
    statistics: bool,
    cost: Cost | None,
    rows: RowSource | None = None,
) -> list[_Problem]:
    """Each run's problem; the rows' statistics and objectives are made once and shared."""
    X_arr, y_arr = as_design(X, y, check_finite=False)  # standardize() checks, in its pass
    n_features = X_arr.shape[1]
    points = [np.asarray(start.theta_init, dtype=np.float64).reshape(-1) for start in starts]
    for point in points:
        if point.shape != (n_features + 1,):
            raise ValueError(
                f"theta_init must have {n_features + 1} values (intercept first), got {point.size}"
            )
        if not np.isfinite(point).all():
            raise ValueError("theta_init must be finite")
    scaler, quadratic = standardize(X_arr, y_arr, fit_intercept)
    mu, L = quadratic.curvatures()
    cost = cost if cost is not None else Cost()
    condition = L / mu if mu > 0 else math.inf
    shared: dict[str, Objective] = {}  # one objective (one pass a round) for every run that uses it

    def objective_of(method: Method) -> Objective:
        if not cost.is_mse:
            kind = "rows"
        elif statistics or method.iterates_epochs:
            return quadratic
        else:
            kind = "mse rows"
        if kind not in shared:
            shared[kind] = (
                RowCost(X_arr, y_arr, scaler, cost) if kind == "rows" else DataPass(X_arr, y_arr, scaler)
            )
        return shared[kind]

    problems = []
    for start, point in zip(starts, points, strict=True):
        method = start.method
        if method.coordinates == "original":  # lr="auto" from the curvature in the data's own units
            method = method.settled(*OriginalUnits.of(scaler, cost).curvatures(quadratic))
        else:
            method = method.settled(mu, L)  # lr="auto" from the curvature
        problems.append(
            _Problem(
                X_arr,
                y_arr,
                scaler,
                quadratic,
                condition,
                method,
                cost,
                objective_of(method),
                scaler.to_standard(point),
            )
        )
    return problems


class _Walk:
    """One run of the loop: its iterate, stopping rules, update and history."""

    def __init__(
        self,
        problem: _Problem,
        rules: _StoppingRules,
        history_limit: int,
        callback: Callable[[int, float], None] | None,
    ) -> None:
        self.problem, self.rules, self.callback = problem, rules, callback
        self.update = problem.method.init(
            Problem(problem.objective, problem.scaler, problem.X, problem.y, problem.cost)
        )
        self.history = _History(history_limit)
        self.w = self.previous = problem.start
        self.iteration, self.last_loss = 0, math.nan
        self.stop: _Stop | None = None

    def advance(self, loss: float, gradient: FloatArray) -> None:
        """Take the loss and gradient at the iterate: stop, or step to the next one."""
        if not math.isfinite(loss):
            self.stop = self.rules.non_finite(self.iteration)
            self.w, self.iteration = (
                self.previous,
                self.iteration - 1,
            )  # the last iterate whose loss was finite
            return
        self.last_loss = loss
        self.history.record(self.iteration, loss, self.w)
        if self.callback is not None:
            self.callback(self.iteration, loss * self.problem.to_mse)
        self.stop = self.rules.check(self.iteration, loss, gradient)
        if self.stop is None:
            self.previous, self.w = self.w, self.update(self.iteration, self.w, gradient)
            self.rules.stepped(self.previous, self.w)
            self.iteration += 1

    def finish(self) -> FitResult:
        """Refine a converged run where the statistics cannot see the last digits; the result."""
        problem, stop = self.problem, self.stop
        assert stop is not None
        w, iteration, last_loss, grad_norm = self.w, self.iteration, self.last_loss, self.rules.grad_norm
        if (
            stop.kind == "converged"
            and problem.objective is problem.quadratic
            and problem.condition > REFINE_CONDITION
        ):
            w, last_loss, grad_norm = newton_refine(
                w, problem.quadratic, problem.scaler, problem.X, problem.y, REFINEMENT_STEPS
            )
            iteration += REFINEMENT_STEPS
            message = f"{stop.message}; then {REFINEMENT_STEPS} Newton steps on the rows' residuals"
            stop = _Stop(stop.kind, message + f" (condition number {problem.condition:.1e})")
        self.history.finish(iteration, last_loss, w)
        return _result(problem, self.history, w, iteration, stop, grad_norm)


def _result(
    problem: _Problem, history: _History, w: FloatArray, iteration: int, stop: _Stop, grad_norm: float
) -> FitResult:
    objective, scaler = problem.objective, problem.scaler
    if isinstance(objective, RowCost) and not problem.cost.is_mse:
        hessian = objective.hessian(w)
    else:
        hessian = 2.0 * problem.quadratic.Q
    with one_blas_thread():
        curvature = np.linalg.eigvalsh(hessian) if np.isfinite(hessian).all() else np.full(len(w), math.nan)
    path = np.asarray(scaler.to_original(np.array(history.points)), dtype=np.float64).reshape(
        -1, problem.X.shape[1] + 1
    )
    return FitResult(
        theta=np.asarray(scaler.to_original(w), dtype=np.float64),
        loss_history=np.asarray(history.losses) * problem.to_mse,
        theta_history=path,
        history_steps=np.asarray(history.steps, dtype=np.int64),
        n_iter=iteration,
        converged=stop.kind == "converged",
        diverged=stop.kind == "diverged",
        message=stop.message,
        grad_norm=grad_norm,
        lr=problem.method.step,
        condition_number=problem.condition,
        oscillating=stop.kind == "oscillating",
        hessian_eigenvalues=np.asarray(curvature, dtype=np.float64),
    )


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
    rows: RowSource | None = None,
) -> FitResult:
    """Fit ``y ≈ θ0 + X @ θ[1:]`` by gradient descent on the MSE (or another cost).

    Each iteration takes one step of ``method`` in standardized coordinates (module
    docstring): ``gd``, ``momentum``, ``nesterov``, ``adam``, ``backtracking`` or ``sgd``
    (one iteration is an epoch of mini-batches) from :mod:`pipeline.methods`.
    The loop stops at the first of: *converged*, ``‖∇J‖ <= tol`` in standardized units
    (unless the condition number exceeds :data:`MAX_CONDITION`: then float64 cannot
    certify θ, and the run says so); *diverged*, the loss non-finite or past
    ``divergence_ratio`` times the initial loss; *oscillating*, every step reversing the
    one before for :data:`OSCILLATION_WINDOW` iterations without lowering the loss;
    *budget*, ``max_iter`` iterations. The last two issue a :class:`ConvergenceWarning`.

    Parameters
    ----------
    X : array_like, shape (n, d) or (n,)
        Feature values, original units, finite, no constant column.
    y : array_like, shape (n,)
        Target values, original units.
    theta_init : array_like, shape (d + 1,)
        Starting parameters in original units, intercept first (ignored without one).
    method : Method
        How to step, with its learning rate: ``gd(0.1)``, ``nesterov("auto")``, … With one
        feature and an intercept the standardized curvature is 2 in every direction: plain
        gd converges below 1, lands on the optimum in one step at 0.5, diverges above 1.
    max_iter, tol, divergence_ratio : int, float, float
        The budget (``>= 1``), the tolerance on the standardized gradient norm (``>= 0``)
        and the loss growth taken as divergence (``> 1``).
    fit_intercept : bool
        False for a model through the origin.
    history_limit : int
        Most iterates kept in the histories before they are thinned.
    callback : callable, optional
        ``callback(iteration, loss)``, the loss in original units, at every iterate.
    statistics : bool
        True: full-batch MSE iterations use XᵀX, Xᵀy, yᵀy and N, O(d²) each. False: every
        iteration passes over the rows (:class:`DataPass`), the same iterates.
    cost : Cost, optional
        The cost minimized (:mod:`pipeline.costs`), the MSE by default. A robust cost
        passes over the rows every iteration (:class:`RowCost`).
    rows : RowSource, optional
        Where those passes run when not here: the rows spread over other machines
        (:mod:`pipeline.ray_rows`); the same θ to the bit.

    Returns
    -------
    FitResult
        θ in original units, the loss and θ along the way, and how the loop ended.
    """
    return fit_many(
        X,
        y,
        [Start(theta_init, method)],
        max_iter=max_iter,
        tol=tol,
        fit_intercept=fit_intercept,
        divergence_ratio=divergence_ratio,
        history_limit=history_limit,
        callback=callback,
        statistics=statistics,
        cost=cost,
        rows=rows,
        stacklevel=3,
    )[0]


def fit_many(
    X: ArrayLike,
    y: ArrayLike,
    starts: Sequence[Start],
    *,
    max_iter: int = 1000,
    tol: float = 1e-9,
    fit_intercept: bool = True,
    divergence_ratio: float = 1e6,
    history_limit: int = 100_000,
    callback: Callable[[int, float], None] | None = None,
    statistics: bool = True,
    cost: Cost | None = None,
    rows: RowSource | None = None,
    stacklevel: int = 2,
) -> list[FitResult]:
    """Several runs of :func:`fit` on the same rows and cost, advanced together.

    Each round, every run still going gets its loss and gradient from one pass over the
    rows for all of them (:meth:`RowCost.passes`, the fused kernel), then steps as
    :func:`fit` steps it, with its own method and stopping rules. A run's figures do not
    depend on the others: each result is, to the bit, :func:`fit` of that run alone
    (which is this function with one start). The statistics are made once for all.

    Parameters
    ----------
    starts : sequence of Start, length K
        Each run's θ_init (original units) and method.
    X, y, max_iter, tol, fit_intercept, divergence_ratio, history_limit, statistics, cost, rows
        As for :func:`fit`, shared by every run.
    callback : callable, optional
        ``callback(iteration, loss)`` at every iterate of every run.

    Returns
    -------
    list of FitResult, length K
        In the order of ``starts``; a run that stops early issues its own warning.
    """
    for start in starts:
        _check_settings(start.method, max_iter, tol, divergence_ratio)
    problems = _set_up(X, y, starts, fit_intercept=fit_intercept, statistics=statistics, cost=cost, rows=rows)
    walks = [
        _Walk(
            problem,
            _StoppingRules(max_iter, tol, divergence_ratio, problem.condition, problem.method),
            history_limit,
            callback,
        )
        for problem in problems
    ]
    with np.errstate(over="ignore", invalid="ignore"):
        going = walks
        while going:
            for objective in {id(walk.problem.objective): walk.problem.objective for walk in going}.values():
                together = [walk for walk in going if walk.problem.objective is objective]
                if isinstance(objective, RowCost) and len(together) > 1:
                    losses, gradients = objective.passes(np.array([walk.w for walk in together]))
                    for walk, loss, gradient in zip(together, losses, gradients, strict=True):
                        walk.advance(float(loss), np.asarray(gradient, dtype=np.float64))
                else:
                    for walk in together:
                        walk.advance(*objective.loss_and_gradient(walk.w))
            going = [walk for walk in going if walk.stop is None]
    results = []
    for walk in walks:
        assert walk.stop is not None
        if walk.stop.warns:
            warnings.warn(walk.stop.message, ConvergenceWarning, stacklevel=stacklevel)
        results.append(walk.finish())
    return results
