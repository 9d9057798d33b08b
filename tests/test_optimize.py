"""The optimizer, checked against numpy.linalg.lstsq and exact hand-made solutions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.methods import gd, momentum
from pipeline.optimize import ConvergenceWarning, fit, least_squares, mean_squared_error, standardize
from tests.helpers import RAW_DIR

SEED_SQFT = np.array([1000.0, 1500.0, 2000.0, 2500.0])
SEED_PRICE = np.array([150_000.0, 210_000.0, 290_000.0, 350_000.0])


def lstsq_reference(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The independent reference: least squares on [1, X] in original units."""
    design = np.column_stack([np.ones(len(y)), X])
    return np.asarray(np.linalg.lstsq(design, y, rcond=None)[0], dtype=np.float64)


def test_seed_example_reaches_the_exact_least_squares_optimum() -> None:
    result = fit(SEED_SQFT, SEED_PRICE, theta_init=[0.0, 100.0], method=gd(0.1), max_iter=1000, tol=1e-9)
    assert result.converged and not result.diverged
    # (12,000, 136) is the exact optimum of the design-notes table: the normal equations
    # give slope 68,000,000 / 500,000 and intercept 250,000 - 136 * 1,750.
    np.testing.assert_allclose(result.theta, [12_000.0, 136.0], rtol=1e-6)
    np.testing.assert_allclose(result.theta, lstsq_reference(SEED_SQFT, SEED_PRICE), rtol=1e-6)
    # The notes' starting point: predictions 100,000 ... 250,000, errors 50,000, 60,000, 90,000, 100,000.
    assert result.loss_history[0] == pytest.approx((50_000**2 + 60_000**2 + 90_000**2 + 100_000**2) / 4)
    assert result.loss_history[-1] == pytest.approx(mean_squared_error(SEED_SQFT, SEED_PRICE, [12_000, 136]))


@pytest.mark.parametrize("lr", [0.01, 0.1, 0.5, 0.9])
def test_loss_never_rises_at_a_stable_learning_rate(lr: float) -> None:
    result = fit(SEED_SQFT, SEED_PRICE, theta_init=[0.0, 100.0], method=gd(lr), max_iter=5000, tol=1e-9)
    assert result.converged
    steps = np.diff(result.loss_history)
    # Rises no larger than float64 rounding of the loss itself (about 1e-16 relative).
    assert np.all(steps <= 1e-12 * result.loss_history[1:]), steps.max()
    assert len(result.loss_history) == result.n_iter + 1


def test_king_county_fit_matches_lstsq_on_all_rows() -> None:
    table = pd.read_csv(RAW_DIR / "kc_house_data.csv", usecols=["sqft_living", "price"])
    X, y = table["sqft_living"].to_numpy(float), table["price"].to_numpy(float)
    result = fit(X, y, theta_init=[0.0, 100.0], method=gd(0.1), max_iter=2000, tol=1e-9)
    reference = lstsq_reference(X, y)
    np.testing.assert_allclose(result.theta, reference, rtol=1e-6)
    # The fit quoted with the data set (README, "Data"): -43,580.74 + 280.6236 x.
    np.testing.assert_allclose(result.theta, [-43_580.74, 280.6236], rtol=1e-6)


def test_a_too_large_learning_rate_is_reported_as_diverged() -> None:
    result = fit(SEED_SQFT, SEED_PRICE, theta_init=[0.0, 100.0], method=gd(1.05), max_iter=2000, tol=1e-9)
    assert result.diverged and not result.converged
    assert result.status == "diverged"
    assert "diverged at iteration" in result.message
    assert np.isfinite(result.theta).all() and np.isfinite(result.loss_history).all()
    assert result.n_iter < 2000
    assert result.loss_history[-1] > 1e6 * result.loss_history[0]


def test_an_enormous_learning_rate_stops_before_nan() -> None:
    result = fit(SEED_SQFT, SEED_PRICE, theta_init=[0.0, 100.0], method=gd(1e300), max_iter=100, tol=1e-9)
    assert result.diverged
    assert np.isfinite(result.theta).all() and np.isfinite(result.loss_history).all()


def test_running_out_of_iterations_warns_and_is_not_converged() -> None:
    with pytest.warns(ConvergenceWarning, match="max_iter=50"):
        result = fit(SEED_SQFT, SEED_PRICE, theta_init=[0.0, 100.0], method=gd(0.001), max_iter=50, tol=1e-9)
    assert not result.converged and not result.diverged
    assert result.status == "max_iter"
    assert result.n_iter == 50 and len(result.loss_history) == 51


def test_several_features_match_lstsq() -> None:
    rng = np.random.default_rng(7)
    X = np.column_stack([rng.uniform(500, 4000, 300), rng.integers(1, 6, 300), rng.normal(0, 1e-3, 300)])
    y = 25_000 + X @ np.array([180.0, 9_000.0, 3e6]) + rng.normal(0, 20_000, 300)
    result = fit(X, y, theta_init=np.zeros(4), method=gd(0.3), max_iter=20_000, tol=1e-10)
    assert result.converged
    np.testing.assert_allclose(result.theta, lstsq_reference(X, y), rtol=1e-6)
    np.testing.assert_allclose(least_squares(X, y), lstsq_reference(X, y), rtol=1e-9)


def test_starting_at_the_optimum_converges_at_once() -> None:
    result = fit(SEED_SQFT, SEED_PRICE, theta_init=[12_000.0, 136.0], method=gd(0.1), tol=1e-9)
    assert result.converged and result.n_iter == 0


def test_standardizer_round_trips_theta() -> None:
    X = np.array([[1.0, 10.0], [2.0, 30.0], [4.0, 20.0]])
    scaler, _ = standardize(X, np.array([3.0, 5.0, 4.0]))
    theta = np.array([-7.0, 2.5, 0.125])
    np.testing.assert_allclose(scaler.to_original(scaler.to_standard(theta)), theta, rtol=1e-14)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_iter": 0}, "max_iter must be"),
        ({"tol": -1.0}, "tol must be"),
        ({"theta_init": [1.0]}, "theta_init must have 2 values"),
    ],
)
def test_invalid_settings_are_refused(settings: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "theta_init": [0.0, 100.0],
        "method": gd(0.1),
        "max_iter": 10,
        "tol": 1e-9,
    } | settings
    with pytest.raises(ValueError, match=message):
        fit(SEED_SQFT, SEED_PRICE, **arguments)  # type: ignore[arg-type]


def test_a_constant_feature_is_refused() -> None:
    with pytest.raises(ValueError, match="feature column 0 is constant"):
        fit(np.full(4, 1500.0), SEED_PRICE, theta_init=[0.0, 0.0], method=gd(0.1))


def test_a_rate_at_the_stability_limit_is_reported_as_oscillating() -> None:
    # lr = 1 reflects every standardized iterate through the minimum: it jumps back and
    # forth for ever at the same loss. Not "max_iter, raise lr": lower it.
    with pytest.warns(ConvergenceWarning, match="oscillating"):
        result = fit(SEED_SQFT, SEED_PRICE, theta_init=[0.0, 100.0], method=gd(1.0), max_iter=2000, tol=1e-9)
    assert result.status == "oscillating" and not result.converged and not result.diverged
    assert "lower lr" in result.message and result.n_iter < 2000
    start, jump = result.theta_history[0], result.theta_history[1]
    np.testing.assert_allclose(result.theta_history[2], start, rtol=1e-9, atol=1e-6)  # back where it began
    assert not np.allclose(jump, start)


def test_runs_that_settle_are_never_called_oscillating() -> None:
    for lr in (0.5, 0.9, 0.99):
        result = fit(SEED_SQFT, SEED_PRICE, theta_init=[0.0, 100.0], method=gd(lr), max_iter=20000, tol=1e-9)
        assert result.status == "converged", (lr, result.message)
    heavy_ball = fit(SEED_SQFT, SEED_PRICE, theta_init=[0.0, 100.0], method=momentum("auto"), tol=1e-9)
    assert heavy_ball.status == "converged"
