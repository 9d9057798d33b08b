"""The descent animation for slides: its clock, where each run is, and the GIF itself."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageSequence

from pipeline.animation import FRAMES, clock, descent_gif, positions
from pipeline.costs import Cost
from pipeline.landscape import Colouring, landscape_grid
from pipeline.optimize import least_squares
from pipeline.outcome import RunSummary
from tests.helpers import gd_run

#: The data, its least-squares θ, and three gd runs on it (slow, converging, diverging).
Sweep = tuple[np.ndarray, np.ndarray, np.ndarray, list[RunSummary]]


@pytest.fixture
def runs() -> Sweep:
    rng = np.random.default_rng(5)
    X = np.column_stack([rng.uniform(500, 4000, 300), rng.uniform(1, 5, 300)])
    y = 30_000 + X @ np.array([250.0, 8_000.0]) + rng.normal(0, 40_000, 300)
    optimum = least_squares(X, y)
    return X, y, optimum, [gd_run(X, y, optimum, lr) for lr in (0.003, 0.3, 1.5)]


@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")  # the slow run runs out
def test_the_clock_runs_from_the_start_to_the_longest_runs_end_on_a_log_scale(runs: Sweep) -> None:
    *_, records = runs
    iterations = clock(records)
    longest = max(run.path_steps[-1] for run in records)
    assert iterations.shape == (FRAMES,) and iterations[0] == 0 and iterations[-1] == longest
    assert (np.diff(iterations) >= 0).all()
    assert (
        iterations[FRAMES // 2] < longest / 4
    )  # half the frames for the first quarter: the steps that move most


@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")
def test_a_run_is_where_its_path_says_and_stays_at_its_end(runs: Sweep) -> None:
    *_, records = runs
    run = records[0]
    steps = np.array(run.path_steps)
    at_steps = positions(run, steps)
    np.testing.assert_array_equal(at_steps, np.array(run.path_theta)[:, :2])
    after = positions(run, np.array([steps[-1] + 10_000]))
    np.testing.assert_array_equal(after[0], np.array(run.theta)[:2])


@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")
def test_the_animation_is_a_gif_for_slides(runs: Sweep) -> None:
    X, y, optimum, records = runs
    land = landscape_grid(records, X, y, optimum, Cost(), [], points=41)
    gif = descent_gif(
        records, land, ("θ0 (dollars)", "θ1 (dollars per sqft)"), Colouring.of(records, []), "3 runs"
    )
    assert len(gif) <= 5e6
    with Image.open(io.BytesIO(gif)) as animation:
        assert animation.format == "GIF" and animation.size == (800, 600)
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(animation)]
    assert 5_000 <= sum(durations) <= 10_000  # milliseconds: a slide's worth, not a film
    assert len(durations) > 30
