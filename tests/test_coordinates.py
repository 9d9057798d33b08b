"""Descents in the data's own units (``optimizer.coordinates=original``): each method steps
on θ as its textbook formula says, checked against plain numpy written out here."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import PipelineError
from pipeline.methods import Method, adam, backtracking, gd, momentum, nesterov, sgd
from pipeline.optimize import ConvergenceWarning, fit
from pipeline.train import read_method
from tests.helpers import REPO_ROOT, ComposeFn, run_stage

#: ``(θ, ∇J(θ), iteration) → next θ``: a method's textbook step, in plain numpy.
Step = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def sizes_and_prices(n: int = 200, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Sizes as houses have them (far from 0, so the valley is narrow) and their prices."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(500.0, 4000.0, n)
    return x[:, None], 20_000.0 + 250.0 * x + rng.normal(0.0, 30_000.0, n)


def mse_gradient(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """∇ of J(θ) = mean((θ0 + θ1·x − y)²), in dollars², with respect to θ."""
    design = np.column_stack([np.ones(len(y)), x[:, 0]])
    return lambda theta: 2.0 / len(y) * design.T @ (design @ theta - y)


def largest_curvature(x: np.ndarray) -> float:
    design = np.column_stack([np.ones(len(x)), x[:, 0]])
    return float(np.linalg.eigvalsh(2.0 / len(x) * design.T @ design)[-1])


def walk(
    step_of: Callable[[], Step], gradient: Callable[[np.ndarray], np.ndarray], start: list[float], n: int
) -> np.ndarray:
    step, theta, path = step_of(), np.array(start), [np.array(start)]
    for iteration in range(n):
        theta = step(theta, gradient(theta), iteration)
        path.append(theta)
    return np.array(path)


def heavy_ball(
    lr: float, beta: float, gradient: Callable[[np.ndarray], np.ndarray], look_ahead: bool
) -> Callable[[], Step]:
    def make() -> Step:
        velocity = np.zeros(2)

        def step(theta: np.ndarray, g: np.ndarray, _: int) -> np.ndarray:
            nonlocal velocity
            if look_ahead:
                g = gradient(theta + beta * velocity)
            velocity = beta * velocity - lr * g
            return theta + velocity

        return step

    return make


def adam_steps(lr: float, b1: float = 0.9, b2: float = 0.999) -> Callable[[], Step]:
    def make() -> Step:
        first, second = np.zeros(2), np.zeros(2)

        def step(theta: np.ndarray, g: np.ndarray, iteration: int) -> np.ndarray:
            nonlocal first, second
            first, second = b1 * first + (1 - b1) * g, b2 * second + (1 - b2) * g**2
            corrected1, corrected2 = first / (1 - b1 ** (iteration + 1)), second / (1 - b2 ** (iteration + 1))
            return theta - lr * corrected1 / (np.sqrt(corrected2) + 1e-12)

        return step

    return make


X, Y = sizes_and_prices()
GRADIENT = mse_gradient(X, Y)
CASES: dict[str, tuple[Method, Callable[[], Step]]] = {
    "gd": (gd(1e-7, coordinates="original"), lambda: lambda theta, g, _: theta - 1e-7 * g),
    "momentum": (momentum(2e-8, 0.8, coordinates="original"), heavy_ball(2e-8, 0.8, GRADIENT, False)),
    "nesterov": (nesterov(2e-8, 0.8, coordinates="original"), heavy_ball(2e-8, 0.8, GRADIENT, True)),
    "adam": (adam(500.0, coordinates="original"), adam_steps(500.0)),
}


@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")
@pytest.mark.parametrize("name", sorted(CASES))
def test_each_method_steps_on_theta_in_dollars_as_its_formula_says(name: str) -> None:
    method, reference = CASES[name]
    start = [10_000.0, 600.0]
    result = fit(X, Y, theta_init=start, method=method, max_iter=40, tol=0.0)
    expected = walk(reference, GRADIENT, start, 40)
    assert result.theta_history.shape == expected.shape
    scale = np.abs(expected).max(axis=0)  # per component: θ0 in dollars, θ1 in dollars per sqft
    np.testing.assert_array_less(np.abs(result.theta_history - expected) / scale, 1e-9)


@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")  # one step, on purpose
def test_lr_auto_is_one_over_the_largest_curvature_in_dollars() -> None:
    result = fit(X, Y, theta_init=[0.0, 0.0], method=gd("auto", coordinates="original"), max_iter=1)
    assert result.lr == pytest.approx(1.0 / largest_curvature(X), rel=1e-9)


@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")  # 30 steps, on purpose
def test_backtracking_in_dollars_only_takes_steps_that_lower_the_cost() -> None:
    result = fit(
        X, Y, theta_init=[0.0, 600.0], method=backtracking(1e-5, coordinates="original"), max_iter=30
    )
    assert (np.diff(result.loss_history) < 0).all()


def test_where_the_valley_is_round_the_walk_in_dollars_ends_at_lstsq() -> None:
    """Sizes near 0 and of unit spread: the valley is round in dollars too, and gd arrives,
    stopping on the standardized gradient norm as in standardized coordinates."""
    rng = np.random.default_rng(8)
    x = rng.normal(0.0, 1.0, (300, 1))
    y = 3.0 + 2.0 * x[:, 0] + rng.normal(0.0, 0.5, 300)
    result = fit(
        x, y, theta_init=[0.0, 0.0], method=gd(0.3, coordinates="original"), max_iter=5_000, tol=1e-9
    )
    exact = np.linalg.lstsq(np.column_stack([np.ones(300), x[:, 0]]), y, rcond=None)[0]
    assert result.converged and result.grad_norm <= 1e-9
    np.testing.assert_allclose(result.theta, exact, rtol=1e-8)


def test_on_the_houses_gd_in_dollars_zig_zags_across_the_valley_and_standardized_gd_does_not() -> None:
    houses = pd.read_csv(REPO_ROOT / "data" / "raw" / "kc_house_data.csv", usecols=["sqft_living", "price"])
    x, y = houses[["sqft_living"]].to_numpy(float), houses["price"].to_numpy(float)
    edge = 2.0 / largest_curvature(x)  # the stable limit in dollars
    with pytest.warns(ConvergenceWarning):
        zig = fit(x, y, theta_init=[0.0, 600.0], method=gd(0.9 * edge, coordinates="original"), max_iter=20)
        straight = fit(x, y, theta_init=[0.0, 600.0], method=gd(0.5), max_iter=20)
    slope_steps = np.diff(zig.theta_history[:, 1])
    assert (np.sign(slope_steps[1:]) != np.sign(slope_steps[:-1])).all()  # every step crosses the floor
    assert (np.diff(zig.loss_history) < 0).all()  # and still goes downhill
    assert (np.sign(np.diff(straight.theta_history[:, 1])) == -1).all()  # straight down the slope


def test_sgd_keeps_to_standardized_coordinates_and_says_so(compose_cfg: ComposeFn) -> None:
    with pytest.raises(ValueError, match="coordinates must be 'standardized' with sgd"):
        sgd(coordinates="original")
    with pytest.raises(PipelineError, match=r"^optimizer.coordinates: expected 'standardized' with sgd"):
        read_method(compose_cfg("optimizer=sgd", "optimizer.coordinates=original", config_name="train"))
    with pytest.raises(
        PipelineError, match=r"^optimizer.coordinates: expected one of standardized, original"
    ):
        read_method(compose_cfg("optimizer.coordinates=raw", config_name="train"))


@pytest.mark.e2e
def test_the_classroom_sweep_crawls_zig_zags_and_diverges_within_its_budget(prepared: Path) -> None:
    """``+experiment=classroom`` as a teacher runs it: five rates from one start, in dollars."""
    result = run_stage("train", prepared, "+experiment=classroom", multirun=True)
    assert result.returncode == 0, result.stderr
    runs = {run["lr"]: run for run in json.loads((prepared / "reports" / "sweep.json").read_text())["runs"]}
    assert {lr: run["status"] for lr, run in runs.items()} == {
        1e-8: "max_iter",  # crawls
        1e-7: "max_iter",  # about 1/L: down to the floor, then stuck on it
        1.5e-7: "max_iter",  # zig-zags
        1.85e-7: "max_iter",  # zig-zags hard
        2e-7: "diverged",  # past 2/L
    }
    assert all(run["n_iter"] == 3000 for lr, run in runs.items() if lr != 2e-7)
    # None arrives: each is still far up the valley (the optimum's MSE is 6.9e10).
    assert all(run["optimality_gap"] > 1e-3 for run in runs.values())
    assert runs[1e-8]["train_mse"] > runs[1e-7]["train_mse"]  # the crawl is behind
    for lr in (1.5e-7, 1.85e-7):  # across the valley: θ1 above, below, above the floor...
        slopes = np.array(runs[lr]["path_theta"])[:8, 1]
        assert (np.sign(np.diff(slopes)[1:]) != np.sign(np.diff(slopes)[:-1])).all(), slopes
    assert (prepared / "reports" / "descent.gif").stat().st_size > 0


@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")  # 24 steps, on purpose
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_with_two_features_and_without_an_intercept_gd_in_dollars_is_its_formula(fit_intercept: bool) -> None:
    rng = np.random.default_rng(4)
    x = np.column_stack([rng.uniform(500.0, 4000.0, 150), rng.integers(1, 6, 150).astype(float)])
    y = 20_000.0 + x @ np.array([250.0, 9_000.0]) + rng.normal(0.0, 30_000.0, 150)
    design = np.column_stack([np.ones(150), x]) if fit_intercept else x
    theta, path = np.array([5_000.0, 100.0, 2_000.0]), []
    free = theta if fit_intercept else theta[1:]
    for _ in range(25):
        path.append(free.copy())
        free = free - 5e-8 * (2.0 / 150 * design.T @ (design @ free - y))
    start = theta if fit_intercept else np.array([0.0, *theta[1:]])
    method = gd(5e-8, coordinates="original")
    result = fit(x, y, theta_init=start, method=method, max_iter=24, tol=0.0, fit_intercept=fit_intercept)
    walked = result.theta_history if fit_intercept else result.theta_history[:, 1:]
    expected = np.array(path)
    np.testing.assert_array_less(np.abs(walked - expected) / np.abs(expected).max(axis=0), 1e-9)
