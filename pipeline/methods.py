"""The optimizer's methods: small objects in the spirit of optax, each checking its own settings.

Plain numpy. A method is built by its constructor (:func:`gd`, :func:`momentum`,
:func:`nesterov`, :func:`adam`, :func:`backtracking`, :func:`sgd`), which refuses a bad
argument with a ``ValueError`` that names it; :func:`pipeline.optimize.fit` then asks it
for its update rule. The constructors' parameter names are the keys of
``conf/optimizer/<name>.yaml``: adding a method is one constructor here (listed in
:data:`METHODS`), one YAML file, and one ``params`` line in ``dvc.yaml``.

Every method walks in the optimizer's standardized coordinates, where ``lr`` means the
same on any data set; ``lr="auto"`` takes it from the curvatures μ and L of the
quadratic (see :meth:`Method.settled`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from pipeline.rules import (
    BATCH_SIZE,
    DECAY_RATE,
    GROW,
    LEARNING_RATE,
    SEED,
    SHRINK,
    STEP_DECAY,
    SUFFICIENT_DECREASE,
    Bound,
)

if TYPE_CHECKING:
    from pipeline.costs import Cost
    from pipeline.optimize import Objective, Standardizer

FloatArray = NDArray[np.float64]
#: ``(iteration, w, ∇J(w)) → next w``: one step; holds the method's state (velocity, moments).
Update = Callable[[int, FloatArray, FloatArray], FloatArray]


@dataclass(frozen=True)
class Problem:
    """What a method may use to build its update rule.

    Attributes
    ----------
    objective : Objective
        Loss and gradient at standardized ``w`` (and ``armijo`` for line searches).
    scaler : Standardizer
        The map between original and standardized units.
    X, y : ndarray, shapes (n, d) and (n,)
        The rows, original units: only mini-batch methods read them.
    cost : Cost
        The cost minimized.
    """

    objective: Objective
    scaler: Standardizer
    X: FloatArray
    y: FloatArray
    cost: Cost

    @property
    def width(self) -> int:
        """Number of free standardized parameters."""
        return int(self.X.shape[1] + (1 if self.scaler.fit_intercept else 0))


@dataclass(frozen=True)
class Method:
    """A gradient method: its name, step size and own settings, and how it steps.

    Built by the constructors below, never directly; ``settings`` holds what the
    constructor was given (after checking), by parameter name.
    """

    name: str
    lr: float | str
    settings: dict[str, Any] = field(default_factory=dict)
    build: Callable[[Method, Problem], Update] = field(default=lambda method, problem: _gd_update(method))
    auto: Callable[[Method, float, float], Method] | None = None
    iterates_epochs: bool = False

    def settled(self, mu: float, L: float) -> Method:
        """The method with ``lr="auto"`` (and settings that follow it) made numbers, from
        the smallest and largest curvature μ and L of the standardized quadratic."""
        if self.auto is not None:
            return self.auto(self, mu, L)
        return replace(self, lr=1.0 / L) if self.lr == "auto" else self

    def init(self, problem: Problem) -> Update:
        """The update rule on ``problem`` (after :meth:`settled`)."""
        return self.build(self, problem)

    @property
    def step(self) -> float:
        """The numeric learning rate (after :meth:`settled`)."""
        return float(self.lr)


def _check(name: str, value: Any, rule: Bound) -> Any:
    """``value`` if it keeps ``rule`` (as int or float), else ``ValueError("<name> must be …")``."""
    rule.check(name, value)
    return int(value) if rule.integer else float(value)


def _check_lr(lr: float | str) -> float | str:
    if lr == "auto":
        return "auto"
    if isinstance(lr, str):
        raise ValueError(f"lr must be a number > 0 or 'auto', got {lr!r}")
    return float(_check("lr", lr, LEARNING_RATE))


def _gd_update(method: Method) -> Update:
    step = method.step
    return lambda _, w, gradient: w - step * gradient


def gd(lr: float | str = 0.1) -> Method:
    """The design notes' batch gradient descent: ``w ← w − lr·∇J(w)``.

    Parameters
    ----------
    lr : float or "auto"
        Step size, ``> 0``; ``auto``: 1/L.
    """
    return Method("gd", _check_lr(lr))


def momentum(lr: float | str = "auto", beta: float | None = None, nesterov: bool = False) -> Method:
    """Heavy ball, ``v ← β·v − lr·∇J(w)``, ``w ← w + v``; with ``nesterov`` the gradient
    is taken at the look-ahead point ``w + β·v``.

    Parameters
    ----------
    lr : float or "auto"
        ``auto``: 4/(√L+√μ)² with β = ((√L−√μ)/(√L+√μ))² (heavy ball), or 1/L with
        β = (√L−√μ)/(√L+√μ) (Nesterov).
    beta : float, optional
        In [0, 1); None: 0.9, or the optimum that goes with ``lr="auto"``.
    nesterov : bool
    """
    settings = {
        "beta": None if beta is None else _check("beta", beta, DECAY_RATE),
        "nesterov": bool(nesterov),
    }
    return Method(
        "nesterov" if nesterov else "momentum",
        _check_lr(lr),
        settings,
        build=_heavy_ball,
        auto=_momentum_auto,
    )


def nesterov(lr: float | str = "auto", beta: float | None = None) -> Method:
    """Nesterov's accelerated gradient: :func:`momentum` with ``nesterov=True``."""
    return momentum(lr, beta, nesterov=True)


def _momentum_auto(method: Method, mu: float, L: float) -> Method:
    beta = method.settings["beta"]
    if method.lr != "auto":
        return replace(method, settings=method.settings | {"beta": 0.9 if beta is None else beta})
    root_L, root_mu = math.sqrt(L), math.sqrt(mu)
    if method.settings["nesterov"]:
        step, best = 1.0 / L, (root_L - root_mu) / (root_L + root_mu)
    else:
        step, best = 4.0 / (root_L + root_mu) ** 2, ((root_L - root_mu) / (root_L + root_mu)) ** 2
    return replace(method, lr=step, settings=method.settings | {"beta": best if beta is None else beta})


def _heavy_ball(method: Method, problem: Problem) -> Update:
    step, beta, look_ahead = method.step, float(method.settings["beta"]), method.settings["nesterov"]
    velocity = np.zeros(problem.width)
    objective = problem.objective

    def update(_: int, w: FloatArray, gradient: FloatArray) -> FloatArray:
        nonlocal velocity
        if look_ahead:
            gradient = objective.gradient(w + beta * velocity)
        velocity = beta * velocity - step * gradient
        return w + velocity

    return update


def adam(lr: float | str = 0.05, b1: float = 0.9, b2: float = 0.999) -> Method:
    """Adam on the full batch, with bias-corrected first and second moments.

    Parameters
    ----------
    lr : float or "auto"
    b1, b2 : float
        Decay rates of the moments, in [0, 1).
    """
    settings = {"b1": _check("b1", b1, DECAY_RATE), "b2": _check("b2", b2, DECAY_RATE)}
    return Method("adam", _check_lr(lr), settings, build=_adam)


def _adam(method: Method, problem: Problem) -> Update:
    step = method.step
    beta1: float = method.settings["b1"]
    beta2: float = method.settings["b2"]
    first = np.zeros(problem.width)
    second = np.zeros(problem.width)

    def update(iteration: int, w: FloatArray, gradient: FloatArray) -> FloatArray:
        nonlocal first, second
        first = beta1 * first + (1 - beta1) * gradient
        second = beta2 * second + (1 - beta2) * gradient**2
        corrected1 = first / (1 - beta1 ** (iteration + 1))
        corrected2 = second / (1 - beta2 ** (iteration + 1))
        return w - step * corrected1 / (np.sqrt(corrected2) + 1e-12)

    return update


def backtracking(
    lr: float | str = 1.0, shrink: float = 0.5, grow: float = 2.0, sufficient_decrease: float = 1e-4
) -> Method:
    """Gradient descent with an Armijo line search.

    Each iteration first tries ``grow`` times the last accepted step (``lr`` at the
    start), then multiplies it by ``shrink`` until the cost falls by at least
    ``sufficient_decrease · t · ‖∇J‖²``.

    Parameters
    ----------
    lr : float or "auto"
        The first trial step.
    shrink : float
        In (0, 1).
    grow : float
        ``>= 1``: lets the step grow back after a cautious stretch.
    sufficient_decrease : float
        Armijo's constant, in (0, 1).
    """
    settings = {
        "shrink": _check("shrink", shrink, SHRINK),
        "grow": _check("grow", grow, GROW),
        "sufficient_decrease": _check("sufficient_decrease", sufficient_decrease, SUFFICIENT_DECREASE),
    }
    return Method("backtracking", _check_lr(lr), settings, build=_armijo)


def _armijo(method: Method, problem: Problem) -> Update:
    trial, objective = method.step, problem.objective
    shrink, grow, decrease = (method.settings[key] for key in ("shrink", "grow", "sufficient_decrease"))

    def update(_: int, w: FloatArray, gradient: FloatArray) -> FloatArray:
        nonlocal trial
        trial = objective.armijo(w, gradient, grow * trial, shrink, decrease)
        return w - trial * gradient

    return update


def sgd(lr: float | str = 0.05, batch_size: int = 32, seed: int = 0, decay: float = 0.0) -> Method:
    """Mini-batch stochastic gradient descent: one iteration is one epoch over the rows.

    The rows are shuffled once (``seed``) into fixed mini-batches of ``batch_size``;
    every epoch visits them in a new random order, with step ``lr / (1 + decay·epoch)``.

    Parameters
    ----------
    lr : float or "auto"
    batch_size : int
        ``>= 1``.
    seed : int
        ``>= 0``.
    decay : float
        ``>= 0``.
    """
    settings = {
        "batch_size": _check("batch_size", batch_size, BATCH_SIZE),
        "seed": _check("seed", seed, SEED),
        "decay": _check("decay", decay, STEP_DECAY),
    }
    return Method("sgd", _check_lr(lr), settings, build=_sgd, iterates_epochs=True)


def _sgd(method: Method, problem: Problem) -> Update:
    from pipeline.optimize import sgd_epochs

    return sgd_epochs(problem, method.step, **method.settings)


#: Every method by its ``optimizer.name``.
METHODS: dict[str, Callable[..., Method]] = {
    "gd": gd,
    "momentum": momentum,
    "nesterov": nesterov,
    "adam": adam,
    "backtracking": backtracking,
    "sgd": sgd,
}
