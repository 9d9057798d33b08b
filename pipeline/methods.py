"""The optimizer's methods: small objects in the spirit of optax, each checking its own settings.

Plain numpy. A method is built by its constructor (:func:`gd`, :func:`momentum`,
:func:`nesterov`, :func:`adam`, :func:`backtracking`, :func:`sgd`), which refuses a bad
argument with a ``ValueError`` that names it; :func:`pipeline.optimize.fit` then asks it
for its update rule. The constructors' parameter names are the keys of
``conf/optimizer/<name>.yaml``: adding a method is one constructor here (listed in
:data:`METHODS`), one YAML file, and one ``params`` line in ``dvc.yaml``.

Every method walks in the optimizer's standardized coordinates, where ``lr`` means the
same on any data set; ``lr="auto"`` takes it from the curvatures μ and L of the
quadratic (see :meth:`Method.settled`). With ``coordinates="original"`` it walks on θ
in the data's own units instead, on the cost in its own units (dollars²): there the
valley is as narrow as the data make it, and plain gradient descent zig-zags as in
textbooks; ``lr`` is then in those units (about 10⁻⁷ on King County's sizes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from pipeline.objective import InOriginalUnits, OriginalUnits
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
    from pipeline.objective import Objective, Standardizer

FloatArray = NDArray[np.float64]
#: Where a method walks: standardized units (the default), or the data's own.
COORDINATES = ("standardized", "original")
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
    coordinates: str = "standardized"

    def settled(self, mu: float, L: float) -> Method:
        """The method with ``lr="auto"`` (and settings that follow it) made numbers, from
        the smallest and largest curvature μ and L of the standardized quadratic."""
        if self.auto is not None:
            return self.auto(self, mu, L)
        return replace(self, lr=1.0 / L) if self.lr == "auto" else self

    def init(self, problem: Problem) -> Update:
        """The update rule on ``problem`` (after :meth:`settled`).

        In original coordinates the method is built on the objective seen in the data's
        units and steps there; the loop still holds the standardized ``w`` (its stopping
        rules, and the tolerance on the standardized gradient, compare across coordinates).
        """
        if self.coordinates == "standardized":
            return self.build(self, problem)
        units = OriginalUnits.of(problem.scaler, problem.cost)
        inner = self.build(self, replace(problem, objective=InOriginalUnits(problem.objective, units)))

        def update(iteration: int, w: FloatArray, gradient: FloatArray) -> FloatArray:
            return units.to_standard(inner(iteration, units.to_original(w), units.gradient(gradient)))

        return update

    @property
    def step(self) -> float:
        """The numeric learning rate (after :meth:`settled`)."""
        return float(self.lr)


def _check(name: str, value: Any, rule: Bound) -> Any:
    """``value`` if it keeps ``rule`` (as int or float), else ``ValueError("<name> must be …")``."""
    rule.check(name, value)
    return int(value) if rule.integer else float(value)


def _check_coordinates(coordinates: str) -> str:
    if coordinates not in COORDINATES:
        raise ValueError(f"coordinates must be one of {', '.join(COORDINATES)}, got {coordinates!r}")
    return coordinates


def _check_lr(lr: float | str) -> float | str:
    if lr == "auto":
        return "auto"
    if isinstance(lr, str):
        raise ValueError(f"lr must be a number > 0 or 'auto', got {lr!r}")
    return float(_check("lr", lr, LEARNING_RATE))


def _gd_update(method: Method) -> Update:
    step = method.step
    return lambda _, w, gradient: w - step * gradient


def gd(lr: float | str = 0.1, coordinates: str = "standardized") -> Method:
    """The design notes' batch gradient descent: ``w ← w − lr·∇J(w)``.

    Parameters
    ----------
    lr : float or "auto"
        Step size, ``> 0``; ``auto``: 1/L.
    coordinates : {"standardized", "original"}
        Where it walks (module docstring); ``lr`` and ``auto`` are in those units.
    """
    return Method("gd", _check_lr(lr), coordinates=_check_coordinates(coordinates))


def momentum(
    lr: float | str = "auto",
    beta: float | None = None,
    nesterov: bool = False,
    coordinates: str = "standardized",
) -> Method:
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
    coordinates : {"standardized", "original"}
        Where it walks (module docstring).
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
        coordinates=_check_coordinates(coordinates),
    )


def nesterov(
    lr: float | str = "auto", beta: float | None = None, coordinates: str = "standardized"
) -> Method:
    """Nesterov's accelerated gradient: :func:`momentum` with ``nesterov=True``."""
    return momentum(lr, beta, nesterov=True, coordinates=coordinates)


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


def adam(
    lr: float | str = 0.05, b1: float = 0.9, b2: float = 0.999, coordinates: str = "standardized"
) -> Method:
    """Adam on the full batch, with bias-corrected first and second moments.

    Parameters
    ----------
    lr : float or "auto"
    b1, b2 : float
        Decay rates of the moments, in [0, 1).
    coordinates : {"standardized", "original"}
        Where it walks (module docstring).
    """
    settings = {"b1": _check("b1", b1, DECAY_RATE), "b2": _check("b2", b2, DECAY_RATE)}
    return Method("adam", _check_lr(lr), settings, build=_adam, coordinates=_check_coordinates(coordinates))


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
    lr: float | str = 1.0,
    shrink: float = 0.5,
    grow: float = 2.0,
    sufficient_decrease: float = 1e-4,
    coordinates: str = "standardized",
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
    coordinates : {"standardized", "original"}
        Where it walks (module docstring).
    """
    settings = {
        "shrink": _check("shrink", shrink, SHRINK),
        "grow": _check("grow", grow, GROW),
        "sufficient_decrease": _check("sufficient_decrease", sufficient_decrease, SUFFICIENT_DECREASE),
    }
    return Method(
        "backtracking", _check_lr(lr), settings, build=_armijo, coordinates=_check_coordinates(coordinates)
    )


def _armijo(method: Method, problem: Problem) -> Update:
    trial, objective = method.step, problem.objective
    shrink, grow, decrease = (method.settings[key] for key in ("shrink", "grow", "sufficient_decrease"))

    def update(_: int, w: FloatArray, gradient: FloatArray) -> FloatArray:
        nonlocal trial
        trial = objective.armijo(w, gradient, grow * trial, shrink, decrease)
        return w - trial * gradient

    return update


def sgd(
    lr: float | str = 0.05,
    batch_size: int = 32,
    seed: int = 0,
    decay: float = 0.0,
    coordinates: str = "standardized",
) -> Method:
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
    coordinates : {"standardized"}
        Its epochs step on the rows' own mini-batch sums, in standardized units only.
    """
    settings = {
        "batch_size": _check("batch_size", batch_size, BATCH_SIZE),
        "seed": _check("seed", seed, SEED),
        "decay": _check("decay", decay, STEP_DECAY),
    }
    if coordinates != "standardized":  # a mini-batch step is made from standardized sums
        raise ValueError(
            f"coordinates must be 'standardized' with sgd (its epochs step in them), got {coordinates!r}"
        )
    return Method("sgd", _check_lr(lr), settings, build=_sgd, iterates_epochs=True)


def _sgd(method: Method, problem: Problem) -> Update:
    return sgd_epochs(problem, method.step, **method.settings)


def sgd_epochs(problem: Problem, step: float, batch_size: int, seed: int, decay: float) -> Update:
    """The update of :func:`pipeline.methods.sgd`: one epoch of mini-batches per call.

    The rows are shuffled once; every epoch visits the same mini-batches in a new random
    order. A mini-batch step on the MSE, w ← w − (2r/b)·Bᵀ(Bw − g), depends on the batch
    only through BᵀB and Bᵀg, so these are summed for every batch at set-up, a block of
    batches at a time (while p <= batch_size they take no more memory than the rows); an
    epoch is then a loop of p×p updates that reads no data at all. A robust cost has no
    such statistics: its epochs read each batch's rows where they are (a memory-mapped
    split stays on disk). Neither copies the rows whole: only the shuffle's order (4 bytes
    a row) is held.
    """
    rows, scaler, cost = problem.X.shape[0], problem.scaler, problem.cost
    rng = np.random.default_rng(seed)
    # The permutation rng.permutation(rows) gives (its draws do not depend on the width of
    # the integers), in 4 bytes a row where the row numbers fit.
    order: NDArray[np.integer[Any]] = np.arange(rows, dtype=np.int32 if rows < 2**31 else np.int64)
    rng.shuffle(order)
    size = min(int(batch_size), rows)
    if not cost.is_mse:
        return _streaming_epochs(problem, order, size, step, decay, rng, cost.standardized(scaler.y_scale))
    if problem.width > size:  # statistics would outweigh the rows: stream the rows instead
        return _streaming_epochs(problem, order, size, step, decay, rng)
    return _statistics_epochs(*_batch_statistics(problem, order, size), step, decay, rng)


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


#: Mini-batches whose statistics are summed at a time: their rows, gathered in the
#: shuffle's order, are the only copy of the rows ever made (a few MB).
BATCHES_AT_ONCE = 1 << 12


def _batch_statistics(
    problem: Problem, order: NDArray[np.integer[Any]], size: int
) -> tuple[FloatArray, FloatArray, NDArray[np.int64]]:
    """BᵀB (k, p, p), Bᵀg (k, p) and row counts (k,) of the consecutive batches of ``size``
    rows in the shuffle's ``order``, from the standardized design a block of batches at a time."""
    n_rows, width = order.size, problem.width
    batches = -(-n_rows // size)
    grams = np.empty((batches, width, width))
    moments = np.empty((batches, width))
    counts = np.full(batches, size, dtype=np.int64)
    block = size * BATCHES_AT_ONCE
    for begin in range(0, n_rows, block):
        rows = order[begin : begin + block]
        design, target = problem.scaler.design(problem.X[rows], problem.y[rows])
        first, whole = begin // size, rows.size // size * size
        stack = design[:whole].reshape(-1, size, width)
        goals = target[:whole].reshape(-1, size)
        last = first + stack.shape[0]
        grams[first:last] = np.matmul(stack.transpose(0, 2, 1), stack)
        moments[first:last] = np.matmul(stack.transpose(0, 2, 1), goals[:, :, np.newaxis])[:, :, 0]
        if whole < rows.size:  # the last, shorter batch
            rest, rest_goal = design[whole:], target[whole:]
            grams[last], moments[last], counts[last] = rest.T @ rest, rest.T @ rest_goal, rows.size - whole
    return grams, moments, counts


def _streaming_epochs(
    problem: Problem,
    order: NDArray[np.integer[Any]],
    size: int,
    step: float,
    decay: float,
    rng: np.random.Generator,
    cost: Cost | None = None,
) -> Update:
    """SGD epochs that read each mini-batch's rows (wide designs, p > batch size; robust costs)."""
    starts = np.arange(0, order.size, size)
    X, y, scaler = problem.X, problem.y, problem.scaler

    def batch(begin: int) -> tuple[FloatArray, FloatArray]:
        rows = order[begin : begin + size]
        return scaler.design(X[rows], y[rows])

    def epoch(iteration: int, w: FloatArray, _: FloatArray) -> FloatArray:
        if cost is not None:  # a robust cost's batch gradient: ρ̃'(r) in place of 2r
            rate = step / (1.0 + decay * iteration)
            for begin in rng.permutation(starts):
                block, goal = batch(begin)
                w = w - (rate / block.shape[0]) * (cost.scaled_psi(block @ w - goal) @ block)
            return w
        rate = 2.0 * step / (1.0 + decay * iteration)
        for begin in rng.permutation(starts):
            block, goal = batch(begin)
            w = w - (rate / block.shape[0]) * ((block @ w - goal) @ block)
        return w

    return epoch


#: Every method by its ``optimizer.name``.
METHODS: dict[str, Callable[..., Method]] = {
    "gd": gd,
    "momentum": momentum,
    "nesterov": nesterov,
    "adam": adam,
    "backtracking": backtracking,
    "sgd": sgd,
}
