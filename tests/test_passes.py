"""Passes over rows larger than memory: exact medians by passes, a fit on a memory-mapped
split equal to the fit in memory, least squares and test metrics a block at a time."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline import passes
from pipeline.evaluate import regression_metrics, streamed_metrics
from pipeline.methods import gd
from pipeline.objective import least_squares, mean_squared_error
from pipeline.optimize import fit


def blocks_of(values: np.ndarray, size: int) -> passes.Stream:
    return lambda: (values[rows] for rows in passes.row_blocks(values.size, size))


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 250_001])
def test_the_median_by_passes_is_numpys_median(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passes, "GATHER_LIMIT", 5_000)  # force the narrowing passes
    rng = np.random.default_rng(n)
    values = rng.standard_cauchy(n) * 1e5  # heavy tails: a wide first interval
    values[::5] = values[0]  # and many ties
    assert passes.median(blocks_of(values, 4096), n) == np.median(values)
    for k in {0, n // 3, n - 1}:
        assert passes.order_statistic(blocks_of(values, 4096), k) == np.partition(values, k)[k]


def test_a_median_of_equal_values_and_a_wrong_rank_end_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passes, "GATHER_LIMIT", 10)
    same = np.full(1000, 2.5)
    assert passes.median(blocks_of(same, 64), same.size) == 2.5
    with pytest.raises(ValueError, match="order statistic 1000"):
        passes.order_statistic(blocks_of(same, 64), 1000)


def test_a_fit_on_a_memory_mapped_split_is_the_fit_in_memory(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 3 * passes.BLOCK_ROWS + 11
    X = rng.lognormal(7.5, 0.4, (n, 1))
    y = 50_000 + 250 * X[:, 0] + rng.normal(0, 1e5, n)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    mapped_X, mapped_y = (
        np.load(tmp_path / "X.npy", mmap_mode="r"),
        np.load(tmp_path / "y.npy", mmap_mode="r"),
    )
    for statistics in (True, False):
        kwargs = dict(theta_init=[0.0, 0.0], method=gd(0.3), max_iter=300, statistics=statistics)
        here, mapped = fit(X, y, **kwargs), fit(mapped_X, mapped_y, **kwargs)  # type: ignore[arg-type]
        assert mapped.theta.tobytes() == here.theta.tobytes()
        assert mapped.loss_history.tobytes() == here.loss_history.tobytes()
    assert mean_squared_error(mapped_X, mapped_y, here.theta) == mean_squared_error(X, y, here.theta)


def test_least_squares_over_many_blocks_agrees_with_lstsq() -> None:
    rng = np.random.default_rng(8)
    n = 2 * passes.BLOCK_ROWS + 5
    X = np.column_stack([rng.uniform(1e6, 1e6 + 10, n), rng.normal(0, 1, n)])  # a large mean, a cancellation
    y = 3.0 + X @ [2.0, -1.0] + rng.normal(0, 0.1, n)
    # The reference: lstsq on the centred columns (on the raw ones its cutoff drops a direction).
    mean = X.mean(axis=0)
    centred = np.linalg.lstsq(np.column_stack([np.ones(n), X - mean]), y, rcond=None)[0]
    reference = np.concatenate(([centred[0] - centred[1:] @ mean], centred[1:]))
    theta = least_squares(X, y)
    np.testing.assert_allclose(theta[1:], reference[1:], rtol=1e-10)
    # θ0 = ȳ − b·x̄ cancels 2e6 down to about 97: both are exact to that sum's rounding.
    assert theta[0] == pytest.approx(reference[0], abs=1e-12 * float(np.abs(reference[1:] * mean).sum()))


def test_test_metrics_by_blocks_are_those_of_whole_arrays() -> None:
    rng = np.random.default_rng(4)
    y_true = rng.lognormal(13, 0.5, 30_001)
    y_pred = y_true + rng.standard_t(3, y_true.size) * 1e5

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for rows in passes.row_blocks(y_true.size, 1000):
            yield y_true[rows], y_pred[rows]

    whole, blocked = regression_metrics(y_true, y_pred), streamed_metrics(pairs)
    assert blocked["test_median_ae"] == np.median(np.abs(y_true - y_pred))
    for name, value in whole.items():
        assert blocked[name] == pytest.approx(value, rel=1e-12), name
    residual = y_true - y_pred
    with passes.one_blas_thread():
        assert whole["test_mse"] == float(residual @ residual / residual.size)  # one block: numpy's figure
    assert math.isclose(whole["test_r2"], 1 - whole["test_mse"] / np.var(y_true), rel_tol=1e-12)


@pytest.mark.parametrize(
    ("loss", "statistics"), [("mse", True), ("mse", False), ("huber", False), ("welsch", False)]
)
def test_runs_advanced_together_are_each_the_run_alone(loss: str, statistics: bool) -> None:
    """fit_many with 16 starts and three learning rates: each result equals fit of that
    run alone to the bit (θ, path, losses, status), with 1 and 2 threads."""
    import numba

    from pipeline.costs import Cost
    from pipeline.methods import momentum
    from pipeline.optimize import Start, fit_many

    rng = np.random.default_rng(21)
    x = rng.lognormal(7.5, 0.4, 40_000)
    y = 50_000 + 250 * x + rng.standard_t(2, x.size) * 1e5
    cost = Cost() if loss == "mse" else Cost(loss, 150_000.0)
    starts = [
        Start([float(rng.uniform(-4e5, 4e5)), float(rng.uniform(-100, 600))], (gd if k % 2 else momentum)(lr))
        for k, lr in enumerate([0.05, 0.3, 0.9] * 5 + [0.5])
    ]
    settings = dict(max_iter=150, statistics=statistics, cost=cost)
    with pytest.warns(Warning):  # some runs stop at the budget
        alone = [fit(x, y, theta_init=start.theta_init, method=start.method, **settings) for start in starts]  # type: ignore[arg-type]
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):  # type: ignore[attr-defined]
        numba.set_num_threads(threads)
        try:
            with pytest.warns(Warning):
                together = fit_many(x, y, starts, **settings)  # type: ignore[arg-type]
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
        for one, many in zip(alone, together, strict=True):
            assert (many.status, many.n_iter, many.message) == (one.status, one.n_iter, one.message)
            assert many.theta.tobytes() == one.theta.tobytes()
            assert many.theta_history.tobytes() == one.theta_history.tobytes()
            assert many.loss_history.tobytes() == one.loss_history.tobytes()


class HeldRows:
    """The chunks shared by three holders as Ray's actors share them, called in this process."""

    def __init__(self, folder: Path, n_rows: int, actors: int) -> None:
        from pipeline.ray_rows import RowHolder, shares

        self.holders = [RowHolder(str(folder), *share) for share in shares(n_rows, actors)]

    def partials(
        self, y_inv: float, slopes: np.ndarray, constants: np.ndarray, c: float, kind: int
    ) -> np.ndarray:
        return np.concatenate([holder.partials(y_inv, slopes, constants, c, kind) for holder in self.holders])


@pytest.mark.parametrize("actors", [1, 3, 64])
def test_rows_shared_by_holders_give_the_one_machine_fit_to_the_bit(tmp_path: Path, actors: int) -> None:
    from pipeline.costs import Cost
    from pipeline.methods import nesterov

    rng = np.random.default_rng(actors)
    n = 100_003
    X = rng.lognormal(7.5, 0.4, (n, 1))
    y = 50_000 + 250 * X[:, 0] + rng.standard_t(2, n) * 1e5
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    held = HeldRows(tmp_path, n, actors)
    for cost in (Cost("welsch", 75_000.0), Cost("huber", 150_000.0)):
        settings = dict(theta_init=[1e5, 50.0], method=nesterov(0.2), max_iter=80, cost=cost)
        with pytest.warns(Warning):
            here, spread = fit(X, y, **settings), fit(X, y, rows=held, **settings)  # type: ignore[arg-type]
        assert spread.theta.tobytes() == here.theta.tobytes()
        assert spread.loss_history.tobytes() == here.loss_history.tobytes()
