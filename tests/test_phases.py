"""Momentum's phase diagram: its cells are real runs, its border the textbook one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.methods import momentum
from pipeline.optimize import fit
from pipeline.outcome import RunSummary
from pipeline.phases import curvatures, grid, phase_map, stable_lr
from tests.helpers import ComposeFn

MAX_ITER, TOL, DIVERGENCE_RATIO = 300, 1e-9, 1e6


def correlated_houses(rows: int = 2_000) -> tuple[np.ndarray, np.ndarray]:
    """Two correlated features (size and rooms) and a price: a valley narrower one way."""
    rng = np.random.default_rng(7)
    size = rng.lognormal(7.5, 0.4, rows)
    rooms = size / 400 + rng.normal(0, 0.6, rows)
    price = 50_000 + 250 * size + 8_000 * rooms + rng.normal(0, 40_000, rows)
    return np.column_stack([size, rooms]), price


def test_the_curvatures_are_the_standardized_hessians_eigenvalues() -> None:
    X, y = correlated_houses()
    standardized = (X - X.mean(axis=0)) / X.std(axis=0)
    hessian = 2 * standardized.T @ standardized / len(y)  # the intercept's own curvature is 2
    eigenvalues = np.sort(np.append(np.linalg.eigvalsh(hessian), 2.0))
    mu, L = curvatures(X, y)
    assert (mu, L) == pytest.approx((eigenvalues[0], eigenvalues[-1]), rel=1e-9)
    assert L / mu > 3  # a valley narrower one way: the border is L's


@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")  # cells out of budget
def test_the_border_is_the_textbook_one_and_each_cell_is_the_run_alone() -> None:
    X, y = correlated_houses()
    theta_init = [0.0, 0.0, 0.0]
    _, L = curvatures(X, y)
    betas = grid(0.0, 0.9, 7, log=False)
    lrs = grid(1e-2, 2 * float(stable_lr(0.9, L)), 25, log=True)
    phase = phase_map(
        X, y, theta_init, lrs, betas, max_iter=MAX_ITER, tol=TOL, divergence_ratio=DIVERGENCE_RATIO
    )
    assert phase.status.shape == phase.n_iter.shape == (7, 25)
    border = stable_lr(betas, L)[:, None]
    inside, outside = lrs[None, :] < 0.9 * border, lrs[None, :] > 1.1 * border
    assert inside.any() and outside.any()
    assert not (phase.status[inside] == "diverged").any()  # stable steps never blow up
    assert not (phase.status[outside] == "converged").any()  # beyond the border nothing arrives
    assert (phase.status[outside] == "diverged").mean() > 0.9
    for row, column in [(0, 0), (3, 12), (6, 20), (2, 24)]:
        method = momentum(float(lrs[column]), float(betas[row]))
        alone = fit(
            X,
            y,
            theta_init=theta_init,
            method=method,
            max_iter=MAX_ITER,
            tol=TOL,
            divergence_ratio=DIVERGENCE_RATIO,
        )
        assert (phase.status[row, column], phase.n_iter[row, column]) == (alone.status, alone.n_iter)


def test_the_diagram_is_drawn_on_the_houses_with_the_sweeps_momentum_runs(
    prepared: Path, compose_cfg: ComposeFn
) -> None:
    from PIL import Image

    from pipeline import phase
    from pipeline.record import write_sweep_record

    cfg = compose_cfg("optimizer=momentum", "optimizer.max_iter=100", config_name="train")
    runs = [
        RunSummary(
            "a", ["optimizer.lr=0.1", "optimizer.beta=0.5"], "a", "converged", "", method="momentum", lr=0.1
        ),
        RunSummary("b", ["optimizer.lr=auto"], "b", "converged", "", method="momentum", lr=0.5),
        RunSummary("c", ["optimizer.lr=0.1"], "c", "converged", "", method="gd", lr=0.1),
    ]
    write_sweep_record(prepared / "reports" / "sweep.json", "key", runs)
    drawn = phase.run(cfg)
    # One feature, standardized: the curvature is 2 every way, so lr=auto is 1/2 with β = 0.
    assert (drawn.mu, drawn.L) == pytest.approx((2.0, 2.0), rel=1e-9)
    points = phase.sweep_points(runs, cfg, drawn)
    assert [status for *_, status in points] == ["converged", "converged"]  # the gd run is left out
    assert [point[:2] for point in points] == [
        pytest.approx((0.1, 0.5)),
        pytest.approx((0.5, 0.0), abs=1e-12),
    ]
    with Image.open(prepared / "reports" / "phase.png") as picture:
        assert picture.size[0] >= 1000


def test_a_robust_cost_is_refused_in_one_line(compose_cfg: ComposeFn) -> None:
    from pipeline import phase
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match=r"^model.loss: the phase diagram is drawn for the MSE"):
        phase.run(compose_cfg("model.loss=huber", config_name="train"))
