"""The numbers behind the pictures: the cost plane, the valley floor, the thinned path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pipeline.landscape import Plane, landscape_figure, loss_curves_figure, valley_figure
from pipeline.methods import gd
from pipeline.optimize import fit, least_squares, mean_squared_error
from pipeline.outcome import RunSummary
from tests.helpers import gd_run


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    X = np.column_stack([rng.uniform(500, 4000, 200), rng.uniform(1, 5, 200)])
    y = 30_000 + X @ np.array([250.0, 8_000.0]) + rng.normal(0, 40_000, 200)
    return X, y


def test_the_plane_is_the_mse_with_other_coefficients_at_their_optimum(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = data
    optimum = least_squares(X, y)
    plane = Plane.from_data(X, y, optimum)
    for theta0, theta1 in [(0.0, 0.0), (-1e5, 400.0), (optimum[0], optimum[1])]:
        direct = mean_squared_error(X, y, [theta0, theta1, optimum[2]])
        assert plane.mse(np.array(theta0), np.array(theta1)) == pytest.approx(direct, rel=1e-9)


def test_the_valley_floor_is_the_best_intercept_for_each_slope(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    optimum = least_squares(X, y)
    plane = Plane.from_data(X, y, optimum)
    theta1 = np.array([0.0, 150.0, 400.0])
    theta0, floor = plane.valley_floor(theta1)
    for t0, t1, cost in zip(theta0, theta1, floor, strict=True):
        # The best intercept given the slope, independently: lstsq on a column of ones.
        residual = y - t1 * X[:, 0] - optimum[2] * X[:, 1]
        best = np.linalg.lstsq(np.ones((len(y), 1)), residual, rcond=None)[0][0]
        assert t0 == pytest.approx(best, rel=1e-9)
        assert cost == pytest.approx(mean_squared_error(X, y, [best, t1, optimum[2]]), rel=1e-9)


@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")  # meant to run out
def test_long_runs_keep_a_thinned_evenly_spaced_history() -> None:
    X, y = np.array([1.0, 2.0, 3.0, 5.0]), np.array([2.0, 3.0, 5.0, 4.0])
    result = fit(X, y, theta_init=[0.0, 0.0], method=gd(1e-4), max_iter=5000, tol=0.0, history_limit=100)
    steps = result.history_steps
    assert steps[0] == 0 and steps[-1] == result.n_iter == 5000
    assert len(steps) <= 102 and len(set(np.diff(steps[:-1]))) == 1
    assert result.theta_history.shape == (len(steps), 2) and result.loss_history.shape == (len(steps),)
    np.testing.assert_array_equal(result.theta_history[-1], result.theta)
    np.testing.assert_allclose(result.theta_history[0], [0.0, 0.0], atol=1e-9)
    for step, theta, loss in zip(
        steps[::25], result.theta_history[::25], result.loss_history[::25], strict=True
    ):
        assert loss == pytest.approx(mean_squared_error(X, y, theta), rel=1e-9), step


def panel_axes(figure: Any) -> list[Any]:
    """The landscape's panels, one per learning rate (not the colour bar or the zooms)."""
    return [axes for axes in figure.axes if axes.get_label().startswith("panel")]


@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")  # one run is meant to stop
def test_figures_draw_every_kind_of_run(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    optimum = least_squares(X, y)
    runs = [gd_run(X, y, optimum, lr) for lr in (0.001, 0.3, 1.5)]
    runs.append(
        RunSummary.failed("bad", ["optimizer.lr=-1"], "gd lr=-1", "optimizer.lr: expected a number > 0")
    )
    assert {run.status for run in runs} == {"max_iter", "converged", "diverged", "failed"}
    labels = ("θ0 (dollars)", "θ1 (dollars per square foot)")
    landscape = landscape_figure(runs, X, y, optimum, labels)
    assert "other coefficients at their optimum" in landscape.get_suptitle()
    panels = panel_axes(landscape)
    assert [axes.get_label() for axes in panels] == ["panel lr=0.001", "panel lr=0.3", "panel lr=1.5"]
    assert panels[-1].get_xlabel() == labels[0]
    assert panels[0].get_title() == "lr = 0.001: 1 max_iter"
    assert valley_figure(runs, X, y, optimum, labels).axes[0].get_ylabel() == "training MSE"
    assert loss_curves_figure(runs).axes[0].get_yscale() == "log"


@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")
def test_diverged_paths_end_with_a_cross_on_the_frame(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = data
    optimum = least_squares(X, y)
    runs = [gd_run(X, y, optimum, lr) for lr in (0.3, 1.2, 1.5, 3.0)]  # the last ones leave the frame at once
    diverged = sum(run.status == "diverged" for run in runs)
    assert diverged >= 2
    panels = panel_axes(landscape_figure(runs, X, y, optimum, ("θ0", "θ1")))
    (x0, x1), (y0, y1) = panels[0].get_xlim(), panels[0].get_ylim()
    crosses = [line for axes in panels for line in axes.get_lines() if line.get_marker() == "X"]
    assert len(crosses) == diverged  # every diverged run is drawn, also when its first step leaves
    for line in crosses:
        x = float(np.asarray(line.get_xdata(), dtype=float)[0])
        y_ = float(np.asarray(line.get_ydata(), dtype=float)[0])
        near_x = min(abs(x - x0), abs(x - x1)) / (x1 - x0)
        near_y = min(abs(y_ - y0), abs(y_ - y1)) / (y1 - y0)
        assert min(near_x, near_y) < 1e-9, (x, y_)


@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")
def test_the_landscape_page_is_one_offline_file_with_every_run_and_a_slider(
    data: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import re

    from pipeline import landscape_page as page_module
    from pipeline.costs import Cost
    from pipeline.landscape import Colouring, landscape_grid
    from pipeline.landscape_page import landscape_page, landscape_plot

    X, y = data
    optimum = least_squares(X, y)
    runs = [gd_run(X, y, optimum, lr) for lr in (0.001, 0.3, 1.5)]
    land = landscape_grid(runs, X, y, optimum, Cost(), [], points=30)
    colouring = Colouring.of(runs, [], single=True)
    page = landscape_page(runs, land, ("θ0", "θ1"), Cost(), colouring)
    assert not re.search(r"<script[^>]+src=", page)  # the JavaScript is in the page: it works offline
    assert "Plotly.newPlot" in page and len(page) > 1_000_000
    # The same sweep gives the same file, byte for byte (DVC tracks it; a fresh clone stays clean).
    assert landscape_page(runs, land, ("θ0", "θ1"), Cost(), colouring) == page

    figure = landscape_plot(runs, land, ("θ0", "θ1"), Cost(), colouring)
    names = [trace.name for trace in figure.data]
    for run in runs:  # each run's path on the surface and on the map
        assert names.count(run.run_name) == 2
    assert "global minimum" in names
    # The slider: one frame per position, each moving the current points; at the last,
    # every run that stayed in the frame is at its end.
    slider = figure.layout.sliders[0]
    assert [step.label for step in slider.steps] == [frame.name for frame in figure.frames]
    assert slider.steps[0].label == "0" and int(slider.steps[-1].label) == max(
        run.path_steps[-1] for run in runs
    )
    (low0, high0), (low1, high1) = land.limits
    last = figure.frames[-1].data[1]
    for run, x, y_ in zip(runs, last.x, last.y, strict=True):
        end = run.path_theta[-1][:2]
        if low0 <= end[0] <= high0 and low1 <= end[1] <= high1:
            np.testing.assert_allclose([x, y_], end)
        else:  # it left the frame: hidden, so that the axes never follow it
            assert run.status == "diverged" and np.isnan(x) and np.isnan(y_)
    assert any(run.status == "diverged" for run in runs)
    # Play and pause, and axes that stay put while the points move.
    labels = [button.label for button in figure.layout.updatemenus[0].buttons]
    assert labels == ["▶ play", "▶▶ fast", "❚❚ pause"]
    scene = figure.layout.scene
    assert list(scene.xaxis.range) == [low0, high0] and list(scene.yaxis.range) == [low1, high1]
    assert list(scene.zaxis.range) == [land.costs.min(), land.costs.max()]

    # Made without Plotly's schema checks (for speed), the figure is the one they make.
    def as_json(plot: Any) -> str:
        return json.dumps(json.loads(plot.to_json()), sort_keys=True)

    monkeypatch.setattr(page_module, "CHECKED", True)
    assert as_json(landscape_plot(runs, land, ("θ0", "θ1"), Cost(), colouring)) == as_json(figure)


@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")
def test_beyond_a_panels_share_of_paths_a_sample_is_drawn_with_every_runs_end(
    data: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import landscape, landscape_page
    from pipeline.costs import Cost

    X, y = data
    optimum = least_squares(X, y)
    runs = [gd_run(X, y, optimum, lr) for lr in (0.1, 0.2, 0.3, 0.4, 0.5)]
    runs = [RunSummary.from_json(run.to_json() | {"lr": 0.3}) for run in runs]  # one panel of five
    monkeypatch.setattr(landscape, "PANEL_PATHS", 2)
    monkeypatch.setattr(landscape, "LOSS_CURVES", 2)
    figure = landscape_figure(runs, X, y, optimum, ("θ0", "θ1"))
    (panel,) = panel_axes(figure)
    assert panel.get_title().endswith("2 of 5 paths (an even sample); dots: every run's end")
    assert "with a sample of the paths" in figure.get_suptitle()
    ends = [line for line in panel.get_lines() if line.get_marker() == "." and len(line.get_xdata()) == 5]
    assert len(ends) == 1  # every run's end, one dot each
    np.testing.assert_allclose(ends[0].get_xdata(), np.array([run.theta for run in runs], dtype=float)[:, 0])
    assert "2 of 5 runs drawn" in loss_curves_figure(runs).axes[0].get_title()

    monkeypatch.setattr(landscape_page, "PAGE_PATHS", 2)
    land = landscape.landscape_grid(runs, X, y, optimum, Cost(), [], points=20)
    plot = landscape_page.landscape_plot(runs, land, ("θ0", "θ1"), Cost(), landscape.Colouring.of(runs, []))
    names = [trace.name for trace in plot.data]
    assert sum(name == run.run_name for run in runs for name in names) == 2 * 2  # surface and map
    assert "where the 5 runs that did not diverge ended" in names
    assert "2 of 5 paths" in plot.layout.title.text


def text_boxes_overlap(figure: Any, first: Any, second: Any) -> bool:
    """Whether two drawn texts' boxes overlap on the rendered figure."""
    renderer = figure.canvas.get_renderer()
    return bool(first.get_window_extent(renderer).overlaps(second.get_window_extent(renderer)))


@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")
def test_pictures_read_on_a_projector(
    data: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_hex

    from pipeline import landscape as pictures
    from pipeline.landscape import INSET_PLACES, RATE_COLOURS

    X, y = data
    optimum = least_squares(X, y)
    rates = (0.001, 0.01, 0.1, 0.3)
    runs = [gd_run(X, y, optimum, lr) for lr in rates]
    # Each learning rate its own colour from the qualitative palette, in order.
    valley = valley_figure(runs, X, y, optimum, ("θ0", "θ1"))
    legend = {
        text.get_text(): to_hex(line.get_color())
        for line, text in zip(valley.legends[0].get_lines(), valley.legends[0].get_texts(), strict=True)
    }
    assert [legend[f"lr = {rate:g}"] for rate in rates] == list(RATE_COLOURS[:4])
    # Wherever the zoom goes (near the top is where it could), its title does not run into its panel's.
    for place in [place for place in INSET_PLACES if place[1] > 0.5]:
        monkeypatch.setattr(pictures, "_emptiest_corner", lambda axes, runs, place=place: place)
        landscape = landscape_figure(runs, X, y, optimum, ("θ0", "θ1"))
        FigureCanvasAgg(landscape).draw()  # type: ignore[no-untyped-call]
        for panel in panel_axes(landscape):
            (inset,) = panel.child_axes
            assert not text_boxes_overlap(landscape, panel.title, inset.title), (place, panel.get_label())
    # The loss curves name float64's floor at the minimum.
    curves = loss_curves_figure(runs)
    curves_legend = curves.axes[0].get_legend()
    assert curves_legend is not None
    labels = [text.get_text() for text in curves_legend.get_texts()]
    assert any(label.startswith("float64's round-off at the minimum: 2.2e-16 ×") for label in labels)


@pytest.mark.filterwarnings("ignore::pipeline.optimize.ConvergenceWarning")
def test_a_sweep_that_races_methods_colours_its_paths_by_method(data: tuple[np.ndarray, np.ndarray]) -> None:
    from pipeline.landscape import Colouring
    from pipeline.outcome import Minimum

    X, y = data
    optimum = least_squares(X, y)
    runs = [gd_run(X, y, optimum, 0.3) for _ in range(4)]
    runs = [
        RunSummary.from_json(run.to_json() | {"method": method, "job_key": method})
        for run, method in zip(runs, ["gd", "momentum", "adam", "momentum"], strict=True)
    ]
    minima = [
        Minimum("global minimum", [1.0, 2.0], 0.5, 2, ["gd", "adam"]),
        Minimum("local minimum", [3.0, 4.0], 0.6, 2, ["momentum"]),
    ]
    colouring = Colouring.of(runs, minima)
    colours = [colouring(run) for run in runs]
    assert colours[1] == colours[3] and len({colours[0], colours[1], colours[2]}) == 3
    assert [handle.get_label() for handle in colouring.legend()] == ["gd", "momentum", "adam"]
    one_method = [RunSummary.from_json(run.to_json() | {"method": "gd"}) for run in runs]
    assert Colouring.of(one_method, minima).legend()[0].get_label() == "to the global minimum"
