"""Robust costs: derivatives against finite differences, the compiled passes against numpy,
the optimizer's objective, and the limits the certificate relies on."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from pipeline import kernels
from pipeline.costs import KERNEL_CODE, LOSSES, NEGATIVE_CURVATURE, Cost, auto_scale
from pipeline.methods import backtracking, gd, sgd
from pipeline.minima import line_cost
from pipeline.optimize import ConvergenceWarning, RowCost, fit, least_squares, standardize
from tests.helpers import REPO_ROOT
from tools.workspace import user_env

COSTS = [Cost()] + [Cost(name, 1.5) for name in LOSSES if name != "mse"]
IDS = [cost.name for cost in COSTS]


@pytest.fixture
def outliers() -> tuple[np.ndarray, np.ndarray]:
    """A line with a few wild rows (the mansions of a house table)."""
    rng = np.random.default_rng(5)
    x = rng.uniform(0.0, 10.0, 300)
    y = 2.0 + 0.5 * x + rng.normal(0.0, 0.3, 300)
    y[:15] += rng.uniform(20.0, 60.0, 15)
    return x, y


@pytest.mark.parametrize("cost", COSTS, ids=IDS)
def test_each_derivative_matches_finite_differences(cost: Cost) -> None:
    r = np.linspace(-7.0, 7.0, 57) + 0.013  # off the Huber kink at ±1.5
    h = 1e-6
    np.testing.assert_allclose(
        cost.psi(r), (cost.rho(r + h) - cost.rho(r - h)) / (2 * h), rtol=1e-6, atol=1e-8
    )
    np.testing.assert_allclose(
        cost.scaled_curvature(r),
        (cost.scaled_psi(r + h) - cost.scaled_psi(r - h)) / (2 * h),
        rtol=1e-5,
        atol=1e-7,
    )


@pytest.mark.parametrize("cost", COSTS, ids=IDS)
def test_curvature_stays_within_the_bounds_the_optimizer_and_certificate_use(cost: Cost) -> None:
    r = np.linspace(-20.0, 20.0, 40_001)
    curvature = cost.scaled_curvature(r)
    assert curvature.max() <= 2.0 + 1e-12
    assert curvature.min() >= -NEGATIVE_CURVATURE[cost.name] - 1e-9
    if cost.name in ("welsch", "cauchy"):  # the bound is reached: it is not loose
        assert curvature.min() == pytest.approx(-NEGATIVE_CURVATURE[cost.name], rel=1e-4)


@pytest.mark.parametrize("cost", COSTS, ids=IDS)
def test_the_compiled_second_order_bins_agree_with_numpy(
    cost: Cost, outliers: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = outliers
    rng = np.random.default_rng(5)
    weights, within = rng.integers(1, 9, x.size).astype(float), rng.uniform(0.0, 2.0, (x.size, 3))
    theta = np.array([[1.0, 0.7], [-3.0, 2.0]])
    scale = cost.scale if math.isfinite(cost.scale) else 1.0
    sums = kernels.bin_costs(x, y, weights, within, theta[:, 0], theta[:, 1], scale, KERNEL_CODE[cost.name])
    for (a, b), total in zip(theta, sums, strict=True):
        r = a + b * x - y
        spread = within[:, 2] - 2 * b * within[:, 1] + b * b * within[:, 0]
        expected = weights @ cost.scaled_rho(r) + 0.5 * cost.scaled_curvature(r) @ spread
        assert total == pytest.approx(expected, rel=1e-12)


def test_every_cost_is_one_shape_with_its_own_kernel_branch() -> None:
    from pipeline.costs import SHAPES, Shape

    assert sorted(type(shape).__name__ for shape in SHAPES.values()) == sorted(
        kind.__name__ for kind in Shape.__subclasses__()
    )
    assert sorted(shape.code for shape in SHAPES.values()) == list(range(len(SHAPES)))
    assert tuple(SHAPES) == LOSSES


def test_the_named_costs_are_the_textbook_formulas() -> None:
    r, c = np.array([-300.0, 0.0, 50.0, 1e6]), 100.0
    np.testing.assert_allclose(Cost("welsch", c).rho(r), 1 - np.exp(-((r / c) ** 2)))
    np.testing.assert_allclose(Cost("cauchy", c).rho(r), np.log(1 + (r / c) ** 2))
    np.testing.assert_allclose(
        Cost("huber", c).rho(r), [2 * c * 300 - c * c, 0.0, 2500.0, 2 * c * 1e6 - c * c]
    )
    np.testing.assert_allclose(Cost().rho(r), r * r)


@pytest.mark.parametrize("cost", COSTS, ids=IDS)
def test_the_compiled_passes_agree_with_numpy(cost: Cost, outliers: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = outliers
    theta = np.array([[1.0, 0.7], [2.0, 0.5], [-3.0, 2.0]])
    values, gradients = line_cost(x, y, cost, theta)
    for (a, b), value, gradient in zip(theta, values, gradients, strict=True):
        r = a + b * x - y
        assert value == pytest.approx(cost.value(r), rel=1e-12)
        np.testing.assert_allclose(gradient, [cost.psi(r).mean(), (cost.psi(r) * x).mean()], rtol=1e-10)


@pytest.mark.parametrize("cost", COSTS, ids=IDS)
@pytest.mark.parametrize("columns", [1, 2])
def test_the_row_pass_agrees_with_numpy(
    cost: Cost, columns: int, outliers: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = outliers
    X = np.column_stack([x, np.sqrt(x)])[:, :columns]
    slopes, constant, y_inv = np.array([0.4, -0.2])[:columns], 0.3, 0.5
    scale = cost.scale if math.isfinite(cost.scale) else 1.0
    sums = kernels.cost_sums(
        X, y, y_inv, slopes, np.array([constant]), scale, KERNEL_CODE[cost.name], kernels.CHUNKS
    )
    r = X @ slopes + constant - y * y_inv
    psi = cost.scaled_psi(r)
    np.testing.assert_allclose(sums[0], [cost.scaled_rho(r).sum(), psi.sum(), *(psi @ X)], rtol=1e-11)


@pytest.mark.parametrize("cost", COSTS, ids=IDS)
@pytest.mark.parametrize("columns", [1, 2])
def test_a_run_fused_with_fifteen_others_gets_the_bits_it_gets_alone(cost: Cost, columns: int) -> None:
    """The fused kernel with K = 1 (a run alone) and K = 16, with 1 and 2 threads: the
    same sums to the bit, so a fused sweep's θ is each run's own."""
    import numba

    rng = np.random.default_rng(5)
    n = 3 * kernels.CHUNKS * kernels.TILE_ROWS + 17  # several tiles per chunk, a ragged end
    X = rng.lognormal(0, 1, (n, columns))
    y = X @ rng.uniform(1, 2, columns) + rng.standard_t(2, n)
    slopes, constants = rng.normal(0, 1, (16, columns)), rng.normal(0, 1, 16)
    scale, kind = (cost.scale if math.isfinite(cost.scale) else 1.0), KERNEL_CODE[cost.name]
    found = []
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):  # type: ignore[attr-defined]
        numba.set_num_threads(threads)
        try:
            fused = kernels.cost_sums(X, y, 0.7, slopes, constants, scale, kind, kernels.CHUNKS)
            alone = [
                kernels.cost_sums(X, y, 0.7, slopes[k], constants[k : k + 1], scale, kind, kernels.CHUNKS)[0]
                for k in range(16)
            ]
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
        assert fused.shape == (16, columns + 2)
        assert fused.tobytes() == np.array(alone).tobytes()
        found.append(fused.tobytes())
    assert found[0] == found[1]


@pytest.mark.parametrize("cost", COSTS, ids=IDS)
def test_a_line_costed_with_forty_others_gets_the_bits_it_gets_alone(cost: Cost) -> None:
    """The certificate's and the pictures' sums over rows (weighted or not) and over a
    summary's bins: 40 lines at once (blocks of lines, vectorized) against each line
    alone, with 1 and 2 threads: the same bits."""
    import numba

    rng = np.random.default_rng(8)
    n = 5003
    x, y = rng.lognormal(0, 1, n), rng.normal(0, 3, n)
    weights, within = rng.integers(1, 9, n).astype(float), rng.uniform(0, 1, (n, 3))
    intercepts, slopes = rng.normal(0, 1, 40), rng.normal(1, 1, 40)
    scale, kind = (cost.scale if math.isfinite(cost.scale) else 1.0), KERNEL_CODE[cost.name]

    def sums(a: np.ndarray, b: np.ndarray) -> bytes:
        return b"".join(
            [
                kernels.line_costs(x, y, a, b, scale, kind).tobytes(),
                kernels.line_costs(x, y, a, b, scale, kind, weights).tobytes(),
                kernels.bin_costs(x, y, weights, within, a, b, scale, kind).tobytes(),
            ]
        )

    found = []
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):  # type: ignore[attr-defined]
        numba.set_num_threads(threads)
        try:
            together = sums(intercepts, slopes)
            alone = [sums(intercepts[j : j + 1], slopes[j : j + 1]) for j in range(40)]
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
        rows = [np.frombuffer(part, dtype=np.float64) for part in alone]
        parts = np.split(np.frombuffer(together, dtype=np.float64), [120, 240])
        assert parts[0].tobytes() == np.concatenate([r[:3] for r in rows]).tobytes()
        assert parts[1].tobytes() == np.concatenate([r[3:6] for r in rows]).tobytes()
        assert parts[2].tobytes() == np.concatenate([r[6:] for r in rows]).tobytes()
        found.append(together)
    assert found[0] == found[1]


@pytest.mark.parametrize("cost", COSTS[1:], ids=IDS[1:])
def test_the_objective_gradient_matches_finite_differences(
    cost: Cost, outliers: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = outliers
    X = np.column_stack([x, x**2])
    scaler, _ = standardize(X, y)
    objective = RowCost(X, y, scaler, cost)
    w = np.array([0.1, -0.3, 0.2])
    _, gradient = objective.loss_and_gradient(w)
    h = 1e-6
    numeric = [(objective.loss(w + h * step) - objective.loss(w - h * step)) / (2 * h) for step in np.eye(3)]
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-9)
    # And the Hessian, from the design, against differences of the gradient.
    hessian = objective.hessian(w)
    columns = [
        (objective.gradient(w + h * step) - objective.gradient(w - h * step)) / (2 * h) for step in np.eye(3)
    ]
    np.testing.assert_allclose(hessian, np.column_stack(columns), rtol=1e-4, atol=1e-7)


def test_a_huber_fit_ignores_the_outliers_that_pull_least_squares(
    outliers: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = outliers
    clean = least_squares(x[15:], y[15:])  # what the line is without the wild rows
    robust = fit(
        x, y, theta_init=[0.0, 0.0], method=gd(0.5), max_iter=20_000, tol=1e-10, cost=Cost("huber", 1.0)
    )
    plain = least_squares(x, y)
    assert robust.converged
    assert abs(robust.theta[1] - clean[1]) < 0.2 * abs(plain[1] - clean[1])
    # The loss history is the cost in the target's units, recomputed from the residuals.
    assert robust.loss_history[-1] == pytest.approx(
        Cost("huber", 1.0).value(robust.theta[0] + robust.theta[1] * x - y)
    )


def test_sgd_and_backtracking_minimize_a_robust_cost_too(outliers: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = outliers
    cost = Cost("welsch", 1.0)
    reference = fit(x, y, theta_init=[2.0, 0.5], method=gd(0.5), max_iter=20_000, tol=1e-10, cost=cost)
    line = fit(x, y, theta_init=[2.0, 0.5], method=backtracking(1.0), max_iter=20_000, tol=1e-8, cost=cost)
    assert reference.converged and line.converged
    np.testing.assert_allclose(line.theta, reference.theta, rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        stochastic = fit(
            x,
            y,
            theta_init=[2.0, 0.5],
            method=sgd(0.05, batch_size=16, decay=0.5),
            max_iter=200,
            tol=0.0,
            cost=cost,
        )
    np.testing.assert_allclose(stochastic.theta, reference.theta, rtol=0.05)


def test_auto_scale_is_the_tuning_constant_times_the_robust_spread() -> None:
    residuals = np.array([-3.0, -1.0, 0.0, 1.0, 3.0, 100.0])
    spread = 1.4826 * np.median(np.abs(residuals - np.median(residuals)))
    assert auto_scale("welsch", residuals) == pytest.approx(2.9846 * spread)
    with pytest.raises(ValueError, match="loss_scale=auto"):
        auto_scale("huber", np.zeros(5))


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf, math.nan, "big"])
def test_a_robust_cost_needs_a_positive_finite_scale(scale: object) -> None:
    with pytest.raises(ValueError, match="loss_scale"):
        Cost("welsch", scale)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loss must be one of"):
        Cost("l1")


@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")  # tol 0: the budget, by design
def test_choosing_the_mse_changes_nothing_to_the_bit(outliers: tuple[np.ndarray, np.ndarray]) -> None:
    # model.loss=mse is the default: the statistics path, exactly as without a cost.
    x, y = outliers
    for statistics in (True, False):
        plain = fit(x, y, theta_init=[0.0, 0.0], method=gd(0.3), max_iter=500, tol=0.0, statistics=statistics)
        chosen = fit(
            x,
            y,
            theta_init=[0.0, 0.0],
            method=gd(0.3),
            max_iter=500,
            tol=0.0,
            statistics=statistics,
            cost=Cost(),
        )
        np.testing.assert_array_equal(chosen.theta, plain.theta)
        np.testing.assert_array_equal(chosen.loss_history, plain.loss_history)
    np.testing.assert_allclose(
        plain.theta, np.linalg.lstsq(np.column_stack([np.ones_like(x), x]), y)[0], rtol=1e-9
    )


def test_a_pass_compiled_now_gives_the_bits_of_the_pass_loaded_from_numbas_cache(tmp_path: Path) -> None:
    """The first process compiles the fused kernel and saves it to numba's cache, the second
    loads it: every cost's sums the same to the bit (with full fast-math they were not)."""
    script = (
        "import numpy as np; from pipeline import kernels\n"
        "rng = np.random.default_rng(2); X = rng.lognormal(0, 1, (50_000, 1)); y = rng.normal(0, 3, 50_000)\n"
        "sums = [kernels.cost_sums(X, y, 0.7, [[0.4], [1.1]], [0.2, -0.3], 0.8, k, 64) for k in range(4)]\n"
        "print([s.tobytes().hex() for s in sums])\n"
    )
    env = user_env() | {"NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    printed = [
        subprocess.run(
            [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    ]
    assert any((tmp_path / "numba").rglob("*.nbi"))  # the second process loaded what the first saved
    assert printed[0] == printed[1]
