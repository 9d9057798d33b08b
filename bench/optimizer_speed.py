"""How fast the optimizer is against the direct solvers and scikit-learn, in one run.

Run with ``make bench`` (or ``.venv/bin/python bench/optimizer_speed.py [--rows N]``).
Every figure is printed with its ratio to a baseline measured in the same run:

1. full-batch gradient descent, 1,000 iterations on N rows x 1 feature (default 10
   million), against ``numpy.linalg.solve`` on XᵀX (building XᵀX included),
   ``numpy.linalg.lstsq`` and scikit-learn's ``LinearRegression``;
2. full-batch gradient descent with ``statistics=False`` (a pass over the rows per
   iteration), as bytes read per second, against ``np.dot`` over the same columns
   (the machine's memory bandwidth, as numpy reaches it);
3. mini-batch SGD: its one-off set-up and one epoch, against the same ``np.dot``; an
   epoch needs no pass over the rows (see ``pipeline.optimize``);
4. on the King County data: the time to an optimality gap of 1e-9 against the time
   scikit-learn's ``SGDRegressor`` (standardized, default settings) takes to reach its
   own best gap; both gaps printed;
5. the robust costs (huber, cauchy, welsch): one iteration, a compiled pass over the
   rows computing the cost, its derivative and their sums, as bytes read per second
   against the same ``np.dot`` (targets: Huber >= 50 %; cauchy and welsch need a
   ``log`` or ``exp`` per row), and the global-minimum certificate of the Welsch cost
   on the King County training rows (target: within 1e-4 in under 10 s);
6. accuracy, not speed: a degree-5 polynomial on x = 5..35 (condition number about
   2e7), noisy and exact-fit, against the exact rational least-squares solution, beside
   float64 ``numpy.linalg.lstsq`` on the raw design (target: at most 10 x its error).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from pipeline.costs import Cost  # noqa: E402
from pipeline.methods import gd, nesterov, sgd  # noqa: E402
from pipeline.minima import certify_global_minimum  # noqa: E402
from pipeline.optimize import (  # noqa: E402
    ConvergenceWarning,
    fit,
    least_squares,
    mean_squared_error,
)
from tools.exact import exact_polynomial_fit  # noqa: E402


def best_time(work: Callable[[], object], repeats: int = 3) -> float:
    """Fastest of ``repeats`` wall-clock timings, in seconds."""
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        timings.append(time.perf_counter() - start)
    return min(timings)


def row(label: str, seconds: float, ratio: str) -> None:
    print(f"{label:<58}{seconds:10.4f}  {ratio}")


def house_like(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` made-up sales: square feet and a noisy price, shapes (rows,) and (rows,)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(500, 5000, rows)
    return x, 20_000 + 280 * x + rng.normal(0, 250_000, rows)


def full_batch(rows: int) -> None:
    from sklearn.linear_model import LinearRegression

    x, y = house_like(rows, seed=0)
    X = x[:, np.newaxis]

    def normal_equations() -> np.ndarray:
        design = np.column_stack([np.ones(rows), x])
        return np.linalg.solve(design.T @ design, design.T @ y)

    def descent() -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return fit(X, y, theta_init=[0.0, 0.0], method=gd(0.01), max_iter=1000, tol=0.0).theta

    solve = best_time(normal_equations)
    ours = best_time(descent)
    lstsq = best_time(lambda: np.linalg.lstsq(np.column_stack([np.ones(rows), x]), y, rcond=None), repeats=1)
    sklearn = best_time(lambda: LinearRegression().fit(X, y), repeats=1)
    print(f"\n1. full-batch gradient descent, {rows:,} rows x 1 feature")
    row("numpy.linalg.solve on XᵀX, XᵀX built (baseline)", solve, "1.00")
    row("fit(method='gd'), 1,000 iterations", ours, f"{ours / solve:.2f} x solve (target <= 2)")
    row("numpy.linalg.lstsq", lstsq, f"{lstsq / ours:.1f} x slower than fit (target >= 5)")
    row("sklearn LinearRegression().fit", sklearn, f"{sklearn / ours:.1f} x slower than fit (target >= 5)")
    reference = normal_equations()
    theta = descent()
    print(f"   θ from fit {theta}, from solve {reference}")


def iteration_times(X: np.ndarray, y: np.ndarray, **options: object) -> tuple[float, float]:
    """Seconds before the first iterate (set-up), and the median seconds per iteration
    over 20, read from the times at which ``fit`` calls its callback."""
    stamps: list[float] = []
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit(
            X,
            y,
            theta_init=[0.0, 0.0],
            max_iter=20,
            tol=0.0,
            callback=lambda iteration, loss: stamps.append(time.perf_counter()),
            **({"method": gd(0.01)} | options),  # type: ignore[arg-type]
        )
    return stamps[0] - start, float(np.median(np.diff(stamps)))


def bandwidth_baseline(x: np.ndarray, y: np.ndarray) -> float:
    dot = best_time(lambda: np.dot(x, y))
    row(
        "np.dot over the feature and target columns (baseline)", dot, f"{2 * x.size * 8 / dot / 1e9:.1f} GB/s"
    )
    return dot


def data_pass(rows: int) -> None:
    x, y = house_like(rows, seed=2)
    print(f"\n2. full-batch gd with statistics off: a pass over the {rows:,} rows per iteration")
    dot = bandwidth_baseline(x, y)
    _, iteration = iteration_times(x[:, np.newaxis], y, statistics=False)
    row(
        "one iteration (median of 20; reads the same two columns)",
        iteration,
        f"{2 * rows * 8 / iteration / 1e9:.1f} GB/s = {dot / iteration:.0%} of np.dot's (target >= 50%)",
    )


def sgd_epochs(rows: int) -> None:
    x, y = house_like(rows, seed=1)
    print(f"\n3. mini-batch SGD (batch 4,096), {rows:,} rows")
    dot = bandwidth_baseline(x, y)
    setup, epoch = iteration_times(x[:, np.newaxis], y, method=sgd(0.01, batch_size=4096))
    row("sgd set-up: shuffle once, sum BᵀB and Bᵀg per batch", setup, f"{setup / dot:.1f} x np.dot")
    row(
        "sgd epoch (median of 20; reads no rows)",
        epoch,
        f"{dot / epoch:.0%} of np.dot's pace (target >= 50%)",
    )


def king_county() -> None:
    import pandas as pd
    from sklearn.linear_model import SGDRegressor
    from sklearn.preprocessing import StandardScaler

    table = pd.read_csv(REPO_ROOT / "data" / "raw" / "kc_house_data.csv", usecols=["sqft_living", "price"])
    X = table[["sqft_living"]].to_numpy(np.float64)
    y = table["price"].to_numpy(np.float64)
    optimum = mean_squared_error(X, y, least_squares(X, y))

    def sklearn_sgd() -> float:
        scaler = StandardScaler().fit(X)
        model = SGDRegressor(random_state=0).fit(scaler.transform(X), y)
        predictions = model.predict(scaler.transform(X))
        return float(np.mean((predictions - y) ** 2))

    def ours() -> float:
        result = fit(X, y, theta_init=[0.0, 100.0], method=nesterov("auto"), max_iter=10_000, tol=1e-12)
        return mean_squared_error(X, y, result.theta)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SGDRegressor's own convergence warnings
        sklearn_time = best_time(sklearn_sgd)
        sklearn_gap = (sklearn_sgd() - optimum) / optimum
    our_time = best_time(ours)
    our_gap = (ours() - optimum) / optimum
    print("\n4. King County, 21,613 rows: time to the optimality gap shown")
    row(f"sklearn SGDRegressor, standardized (gap {sklearn_gap:.2e}) (baseline)", sklearn_time, "1.00")
    row(
        f"fit(method='nesterov', lr='auto') (gap {our_gap:.2e})",
        our_time,
        f"{our_time / sklearn_time:.3f} x SGDRegressor (target <= 0.1)",
    )


def robust_costs(rows: int) -> None:
    x, y = house_like(rows, seed=4)
    print(f"\n5. robust costs: a compiled pass over the {rows:,} rows per iteration")
    dot = bandwidth_baseline(x, y)
    for name in ("huber", "cauchy", "welsch"):
        _, iteration = iteration_times(x[:, np.newaxis], y, cost=Cost(name, 250_000.0))
        row(
            f"one {name} iteration (median of 20)",
            iteration,
            f"{2 * rows * 8 / iteration / 1e9:.1f} GB/s = {dot / iteration:.0%} of np.dot's",
        )
    import pandas as pd

    table = pd.read_csv(REPO_ROOT / "data" / "raw" / "kc_house_data.csv", usecols=["sqft_living", "price"])
    sample = table.sample(frac=0.8, random_state=42)  # the size of the default training split
    house_x, house_y = sample["sqft_living"].to_numpy(float), sample["price"].to_numpy(float)
    frame = ((-650_000.0, 650_000.0), (-90.0, 690.0))
    certify_global_minimum(house_x[:100], house_y[:100], Cost("welsch", 75_000.0), frame)  # compile first
    start = time.perf_counter()
    certificate = certify_global_minimum(house_x, house_y, Cost("welsch", 75_000.0), frame)
    row(
        f"certify the Welsch minimum, 80 % of the houses ({house_x.size:,})",
        time.perf_counter() - start,
        f"{certificate.cells:,} cells, J within {certificate.cost - certificate.lower_bound:.1e} "
        f"(target 1e-4 in 10 s), θ=({certificate.theta[0]:,.0f}, {certificate.theta[1]:.2f})",
    )


def ill_conditioned() -> None:
    from pipeline.model import polynomial_columns

    print("\n6. degree 5 on x = 5..35, relative error against exact rationals (accuracy, not time)")
    x = list(range(5, 36))
    rng = np.random.default_rng(1)
    coefficients = [
        Fraction(3, 8),
        Fraction(-7, 4),
        Fraction(5, 2),
        Fraction(-1, 8),
        Fraction(3, 64),
        Fraction(-1, 512),
    ]
    cases = {
        "noisy": [Fraction(int(v)) / 64 for v in rng.integers(-64_000, 64_000, len(x))],
        "exact fit": [
            sum((c * Fraction(v) ** i for i, c in enumerate(coefficients)), Fraction(0)) for v in x
        ],
    }
    X = polynomial_columns(np.array(x, dtype=np.float64)[:, np.newaxis], 5)
    for name, y in cases.items():
        exact = np.array([float(c) for c in exact_polynomial_fit(x, y, 5)])
        target = np.array([float(v) for v in y])
        lstsq = np.linalg.lstsq(np.column_stack([np.ones(len(x)), X]), target, rcond=None)[0]
        result = fit(X, target, theta_init=np.zeros(6), method=nesterov("auto"), max_iter=200_000, tol=1e-13)
        ours, theirs = (float(np.max(np.abs(t - exact) / np.abs(exact))) for t in (result.theta, lstsq))
        print(
            f"   {name}: condition number {result.condition_number:.1e}; fit {ours:.1e}, "
            f"lstsq on the raw design {theirs:.1e}: {ours / theirs:.2g} x lstsq's error (target <= 10)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    options = parser.parse_args()
    print(f"{'measure':<58}{'seconds':>10}  ratio")
    full_batch(options.rows)
    data_pass(options.rows)
    sgd_epochs(options.rows)
    king_county()
    robust_costs(options.rows)
    ill_conditioned()


if __name__ == "__main__":
    main()
