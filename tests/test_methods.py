"""Every method, lr="auto", polynomials, models through the origin, the certificate.

References are independent of the optimizer: numpy.linalg.lstsq, coefficients that
generated exact data, and exact rational arithmetic (fractions) where float64 lstsq
would itself lose digits.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from pipeline.methods import METHODS, adam, backtracking, gd, momentum, nesterov, sgd
from pipeline.model import polynomial_columns
from pipeline.optimize import ConvergenceWarning, fit, least_squares
from tests.helpers import RAW_DIR, ComposeFn
from tools.exact import exact_polynomial_fit


def relative_error(theta: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(theta - reference) / np.abs(reference)))


@pytest.fixture(scope="module")
def king_county() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = pd.read_csv(RAW_DIR / "kc_house_data.csv", usecols=["sqft_living", "bathrooms", "price"])
    X = table[["sqft_living", "bathrooms"]].to_numpy(np.float64)
    y = table["price"].to_numpy(np.float64)
    design = np.column_stack([np.ones(len(y)), X])
    return X, y, np.asarray(np.linalg.lstsq(design, y, rcond=None)[0])


@pytest.mark.parametrize("method", ["gd", "momentum", "nesterov", "adam", "backtracking"])
def test_every_full_batch_method_reaches_lstsq(
    king_county: tuple[np.ndarray, np.ndarray, np.ndarray], method: str
) -> None:
    X, y, reference = king_county
    lr: float | str = 0.01 if method == "adam" else "auto"
    result = fit(X, y, theta_init=[0.0, 100.0, 0.0], method=METHODS[method](lr), max_iter=50_000, tol=1e-10)
    assert result.converged, result.message
    assert relative_error(result.theta, reference) < 1e-6


@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")  # SGD runs its epochs out
def test_mini_batch_sgd_with_decay_gets_close_and_is_repeatable(
    king_county: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    X, y, reference = king_county
    runs = [
        fit(
            X,
            y,
            theta_init=[0.0, 0.0, 0.0],
            method=sgd(0.02, batch_size=64, decay=0.5),
            max_iter=40,
            tol=0.0,
        )
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].theta, runs[1].theta)  # the seed fixes the shuffles
    optimum = np.mean((reference[0] + X @ reference[1:] - y) ** 2)
    final = np.mean((runs[0].theta[0] + X @ runs[0].theta[1:] - y) ** 2)
    assert (final - optimum) / optimum < 1e-3
    assert runs[0].n_iter == 40 and not runs[0].converged


def test_auto_settings_follow_the_curvature() -> None:
    assert gd("auto").settled(0.5, 8.0).lr == 1 / 8.0
    heavy = momentum("auto").settled(1.0, 9.0)
    assert heavy.lr == pytest.approx(4 / 16) and heavy.settings["beta"] == pytest.approx(0.25)
    ahead = nesterov("auto").settled(1.0, 9.0)
    assert ahead.lr == pytest.approx(1 / 9) and ahead.settings["beta"] == pytest.approx(0.5)
    # A given rate keeps the classic momentum 0.9, a given momentum is kept.
    assert momentum(0.1).settled(1.0, 9.0).settings["beta"] == 0.9
    assert momentum("auto", beta=0.3).settled(1.0, 9.0).settings["beta"] == 0.3


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: gd(-0.1), "lr must be a number > 0"),
        (lambda: gd("fast"), "lr must be a number > 0 or 'auto'"),
        (lambda: momentum(0.1, beta=1.0), "beta must be a number >= 0 and < 1"),
        (lambda: adam(b2=1.5), "b2 must be a number >= 0 and < 1"),
        (lambda: backtracking(shrink=1.0), "shrink must be a number > 0 and < 1"),
        (lambda: backtracking(grow=0.5), "grow must be a number >= 1"),
        (lambda: sgd(batch_size=0), "batch_size must be a whole number >= 1"),
        (
            lambda: sgd(batch_size=2.5),  # type: ignore[arg-type]
            "batch_size must be a finite whole number",
        ),
        (lambda: sgd(decay=-1), "decay must be a number >= 0"),
    ],
)
def test_each_method_checks_its_own_arguments(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


@pytest.mark.parametrize("method", ["momentum", "nesterov"])
def test_collinear_columns_to_1e_minus_9(method: str) -> None:
    rng = np.random.default_rng(4)
    x1 = rng.normal(0.0, 1.0, 3000)
    x2 = x1 + rng.normal(0.0, 0.014, 3000)  # correlation 0.9999: condition number about 1e4
    X = np.column_stack([x1, 3.0 * x2])
    true = np.array([1.5, 2.0, -3.0])
    y = true[0] + X @ true[1:]
    result = fit(X, y, theta_init=[0.0, 0.0, 0.0], method=METHODS[method]("auto"), max_iter=20_000, tol=1e-14)
    assert 5e3 < result.condition_number < 5e4
    assert result.converged and result.n_iter <= 20_000
    assert relative_error(result.theta, true) < 1e-9


def test_degree_5_polynomial_to_1e_minus_6_against_exact_rationals() -> None:
    x = list(range(21))
    rng = np.random.default_rng(5)
    # Targets on a grid of exact binary fractions, so float64 and Fraction see the same data.
    y = [Fraction(int(v)) / 64 for v in rng.integers(-64_000, 64_000, 21)]
    exact = np.array([float(c) for c in exact_polynomial_fit(x, y, 5)])
    X = polynomial_columns(np.array(x, dtype=np.float64)[:, np.newaxis], 5)
    target = np.array([float(v) for v in y])
    result = fit(X, target, theta_init=np.zeros(6), method=momentum("auto"), max_iter=200_000, tol=1e-13)
    assert 1e6 < result.condition_number < 1e7
    assert result.converged and result.n_iter <= 200_000
    assert relative_error(result.theta, exact) < 1e-6


@pytest.mark.parametrize("exact_fit", [False, True], ids=["noisy", "exact fit"])
def test_ill_conditioned_polynomials_as_accurate_as_lstsq_against_exact_rationals(exact_fit: bool) -> None:
    # Degree 5 on x in [5, 35]: the standardized XᵀX has condition number about 2e7.
    x = list(range(5, 36))
    if exact_fit:  # residuals all zero: nothing but rounding is left to see
        coefficients = [Fraction(3, 8), Fraction(-7, 4), Fraction(5, 2), Fraction(-1, 8), Fraction(3, 64)]
        coefficients.append(Fraction(-1, 512))
        y = [sum((c * Fraction(v) ** i for i, c in enumerate(coefficients)), Fraction(0)) for v in x]
    else:
        rng = np.random.default_rng(1)
        y = [Fraction(int(v)) / 64 for v in rng.integers(-64_000, 64_000, len(x))]
    exact = np.array([float(c) for c in exact_polynomial_fit(x, y, 5)])
    X = polynomial_columns(np.array(x, dtype=np.float64)[:, np.newaxis], 5)
    target = np.array([float(v) for v in y])
    raw = np.column_stack([np.ones(len(x)), X])
    lstsq_error = relative_error(np.linalg.lstsq(raw, target, rcond=None)[0], exact)
    result = fit(X, target, theta_init=np.zeros(6), method=nesterov("auto"), max_iter=200_000, tol=1e-13)
    assert 1e7 < result.condition_number < 1e8
    assert result.converged, result.message
    assert relative_error(result.theta, exact) <= 10 * lstsq_error


def test_through_the_origin_to_1e_minus_12_against_exact_rationals() -> None:
    rng = np.random.default_rng(6)
    x = rng.integers(1, 5000, 400) / 8.0
    y = 2.5 * x + rng.integers(-4000, 4000, 400) / 16.0
    exact = sum(Fraction(a) * Fraction(b) for a, b in zip(x, y, strict=True)) / sum(
        Fraction(a) ** 2 for a in x
    )
    result = fit(
        x, y, theta_init=[0.0, 1.0], method=gd("auto"), fit_intercept=False, max_iter=1000, tol=1e-15
    )
    assert result.converged and result.theta[0] == 0.0
    assert abs(result.theta[1] - float(exact)) / float(exact) < 1e-12
    np.testing.assert_allclose(least_squares(x, y, fit_intercept=False), [0.0, float(exact)], rtol=1e-12)


def test_beyond_what_float64_can_certify_the_run_says_so() -> None:
    X = polynomial_columns(np.arange(21.0)[:, np.newaxis], 10)
    y = X @ np.ones(10)
    with pytest.warns(ConvergenceWarning, match="condition number"):
        result = fit(X, y, theta_init=np.zeros(11), method=nesterov("auto"), max_iter=20_000, tol=1e-9)
    assert result.condition_number > 1e8
    assert not result.converged
    assert "condition number" in result.message


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match=r"method must be one of gd\(...\), momentum"):
        fit([1.0, 2.0, 3.0], [1.0, 2.0, 4.0], theta_init=[0.0, 0.0], method="lbfgs")  # type: ignore[arg-type]
    assert set(METHODS) == {"gd", "momentum", "nesterov", "adam", "backtracking", "sgd"}


def test_random_starts_are_seeded_and_inside_the_box(compose_cfg: ComposeFn) -> None:
    from pipeline.train import read_settings

    def start(seed: int) -> np.ndarray:
        cfg = compose_cfg("model.init.random=true", f"model.init.seed={seed}", config_name="train")
        return read_settings(cfg).theta_init

    first, again, other = start(1), start(1), start(2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    for theta in (first, other):
        assert -500_000 <= theta[0] <= 500_000 and 0 <= theta[1] <= 600


def test_polynomial_settings_build_powers_of_the_one_feature(compose_cfg: ComposeFn) -> None:
    from pipeline.errors import PipelineError
    from pipeline.train import read_settings

    settings = read_settings(compose_cfg("model.degree=3", config_name="train"))
    assert settings.model.degree == 3 and settings.theta_init.shape == (4,)
    with pytest.raises(PipelineError, match=r"model\.degree: a polynomial is built from one feature"):
        read_settings(
            compose_cfg("model.degree=3", "data.features=[sqft_living,bedrooms]", config_name="train")
        )
    np.testing.assert_array_equal(polynomial_columns(np.array([[2.0], [3.0]]), 3), [[2, 4, 8], [3, 9, 27]])


def test_sgd_steps_from_batch_statistics_equal_steps_over_the_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The two forms of an SGD epoch agree, and the statistics summed a block of batches at
    a time (3 here: blocks of 192 rows, the last one short) are those summed at once."""
    from pipeline import methods
    from pipeline.costs import Cost
    from pipeline.methods import Problem, _batch_statistics, _statistics_epochs, _streaming_epochs
    from pipeline.objective import standardize

    rng = np.random.default_rng(8)
    X = rng.normal(size=(1000, 2))
    y = 0.5 + X @ np.array([1.0, -2.0]) + rng.normal(0.0, 0.1, 1000)
    scaler, quadratic = standardize(X, y)
    problem = Problem(quadratic, scaler, X, y, Cost())
    order = np.random.default_rng(1).permutation(1000)
    at_once = _batch_statistics(problem, order, 64)
    monkeypatch.setattr(methods, "BATCHES_AT_ONCE", 3)
    in_blocks = _batch_statistics(problem, order, 64)
    for whole, blocked in zip(at_once, in_blocks, strict=True):
        np.testing.assert_array_equal(blocked, whole)
    streaming = _streaming_epochs(problem, order, 64, 0.05, 0.5, np.random.default_rng(9))
    statistics = _statistics_epochs(*in_blocks, 0.05, 0.5, np.random.default_rng(9))
    w_rows = w_stats = np.zeros(3)
    for epoch in range(4):
        w_rows = streaming(epoch, w_rows, w_rows)
        w_stats = statistics(epoch, w_stats, w_stats)
    np.testing.assert_allclose(w_stats, w_rows, rtol=1e-12)
    assert np.abs(scaler.to_original(w_rows) - [0.5, 1.0, -2.0]).max() < 0.05


# Backtracking is left out: its halvings compare two nearly equal numbers, so rounding
# can pick another step; it is checked for reaching the optimum instead.
@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")  # 30 iterations, by design
@pytest.mark.parametrize("method", ["gd", "momentum", "nesterov", "adam"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_a_pass_over_the_rows_gives_the_iterates_of_the_statistics(method: str, fit_intercept: bool) -> None:
    rng = np.random.default_rng(12)
    X = np.column_stack([rng.uniform(500, 4000, 70_000), rng.uniform(1, 5, 70_000)])  # more than a block
    y = 30_000 + X @ np.array([250.0, 8_000.0]) + rng.normal(0, 40_000, 70_000)
    settings = {
        "theta_init": [1e4, 100.0, 0.0],
        "method": METHODS[method](0.05 if method == "adam" else "auto"),
    }
    with_stats = fit(X, y, max_iter=30, tol=0.0, fit_intercept=fit_intercept, **settings)  # type: ignore[arg-type]
    with_rows = fit(X, y, max_iter=30, tol=0.0, fit_intercept=fit_intercept, statistics=False, **settings)  # type: ignore[arg-type]
    np.testing.assert_allclose(with_rows.theta, with_stats.theta, rtol=1e-8)
    np.testing.assert_allclose(with_rows.loss_history, with_stats.loss_history, rtol=1e-9)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_a_pass_over_the_rows_reaches_lstsq(
    king_county: tuple[np.ndarray, np.ndarray, np.ndarray], fit_intercept: bool
) -> None:
    X, y, _ = king_county
    reference = least_squares(X, y, fit_intercept=fit_intercept)
    for method in ("backtracking", "nesterov"):
        result = fit(
            X, y, theta_init=[0.0, 0.0, 0.0], method=METHODS[method]("auto"), fit_intercept=fit_intercept,
            max_iter=20_000, tol=1e-10, statistics=False,
        )  # fmt: skip
        assert result.converged, (method, result.message)
        nonzero = reference != 0
        assert relative_error(result.theta[nonzero], reference[nonzero]) < 1e-6, method


@pytest.mark.parametrize("columns", [1, 3])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_the_compiled_pass_agrees_with_the_statistics_for_any_thread_count(
    columns: int, fit_intercept: bool
) -> None:
    import numba

    from pipeline.optimize import DataPass, standardize

    rng = np.random.default_rng(13)
    X = rng.uniform(1, 100, (150_000, columns))
    y = X @ rng.uniform(-2, 2, columns) + 5.0 + rng.normal(0, 1, 150_000)
    scaler, quadratic = standardize(X, y, fit_intercept)
    w = rng.normal(0, 1, columns + int(fit_intercept))
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):  # type: ignore[attr-defined]
        numba.set_num_threads(threads)
        try:
            pass_ = DataPass(X, y, scaler)
            loss, gradient = pass_.loss_and_gradient(w)
            results.append((loss, gradient.tolist(), pass_.curvature_along(w)))
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
        expected_loss, expected_gradient = quadratic.loss_and_gradient(w)
        assert loss == pytest.approx(expected_loss, rel=1e-9)
        np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-7, atol=1e-12)
        assert pass_.curvature_along(w) == pytest.approx(quadratic.curvature_along(w), rel=1e-9)
    assert results[0] == results[1]  # bit for bit: the sums do not depend on the threads
