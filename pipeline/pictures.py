"""A sweep's pictures and page: the landscape, the valley, the loss curves and the interactive page.

Drawn from the sweep record's runs and the training split, written atomically to the
paths of ``conf/paths``. The page (Plotly, about a second) is drawn by a forked copy
of the process while the process draws the pictures. Used by the sweep and a single
training run; the stages that only read a record never import it.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from omegaconf import DictConfig

from pipeline.costs import Cost
from pipeline.files import resolve, write_atomic
from pipeline.outcome import Minimum, RunSummary, status_counts
from pipeline.passes import fork_is_safe
from pipeline.record import group_minima, minima_line, write_sweep_record
from pipeline.rules import EXACT_ROWS
from pipeline.settings import optimizer_file, read_flag, read_number
from pipeline.summary import PICTURE_BINS_PER_SCALE, RowSummary, bin_rows

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pipeline.landscape import LandscapeGrid

log = logging.getLogger("pipeline.sweep")

#: Figures of a sweep, by their key in ``paths``.
FIGURES = ("landscape", "valley", "loss_curves")
#: Points per side of the page's surface: enough to see the valleys, light to turn in 3-D.
PAGE_GRID_POINTS = 81


def axis_labels(config: DictConfig) -> tuple[str, str]:
    """Labels for θ0 and θ1 with units, from ``data.units``."""
    target_unit = config.data.units.target
    feature, feature_unit = config.data.features[0], config.data.units.features[0]
    return (
        f"θ0, intercept ({target_unit})",
        f"θ1, coefficient of {feature} ({target_unit} per {feature_unit})",
    )


class Drawing(NamedTuple):
    """What the pictures and the page draw: the runs that ran, the training columns, the
    global minimum (if known), the cost, the minima found, and the rows' summary where a
    robust cost has more rows than ``model.exact_rows`` (else None)."""

    runs: list[RunSummary]
    X: np.ndarray
    y: np.ndarray
    optimum: np.ndarray | None
    loss: Cost
    minima: list[Minimum]
    summary: RowSummary | None


#: Summaries made in this process, by column copy and cost: the pictures and the page share one.
_summaries: dict[tuple[str, Cost], RowSummary] = {}


def _drawing_inputs(config: DictConfig, runs: list[RunSummary]) -> Drawing | None:
    """What the pictures and the page draw (see :class:`Drawing`); None when no run ran."""
    from pipeline.columns import model_columns, training_split

    drawn = [run for run in runs if run.status != "failed"]
    if not drawn:
        return None
    split = training_split(config)
    X, y = model_columns(split.columns.X, drawn[0].degree, split.copy), split.columns.y
    first = drawn[0]
    optimum = None if first.optimum_theta is None else np.asarray(first.optimum_theta)
    loss = Cost(first.loss, first.loss_scale if first.loss_scale is not None else math.inf)
    summary = None
    if not loss.is_mse and X.shape[1] == 1 and len(y) > read_number(config, "model.exact_rows", EXACT_ROWS):
        key = (str(split.copy), loss)
        if key not in _summaries:
            _summaries[key] = bin_rows(X[:, 0], y, loss, PICTURE_BINS_PER_SCALE)
        summary = _summaries[key]
    return Drawing(drawn, X, y, optimum, loss, group_minima(runs), summary)


#: A sweep's pictures, by their path key (``paths.<name>``), in the order they are listed.
PICTURES = ("landscape", "valley", "loss_curves")
#: Those a forked copy draws beside the page (about as long as the others take here).
PICTURES_BESIDE_THE_PAGE = ("loss_curves",)


def sweep_figures(
    config: DictConfig, runs: list[RunSummary], names: Sequence[str] = PICTURES
) -> dict[str, Figure]:
    """The pictures ``names`` of a sweep (landscape, valley, loss curves), keyed by their
    path key."""
    from pipeline.landscape import landscape_figure, loss_curves_figure, valley_figure

    inputs = _drawing_inputs(config, runs)
    if inputs is None:
        return {}
    drawn, X, y, optimum, loss, minima, summary = inputs
    labels = axis_labels(config)
    makers = {
        "landscape": lambda: landscape_figure(drawn, X, y, optimum, labels, loss, minima, summary),
        "valley": lambda: valley_figure(drawn, X, y, optimum, labels, loss, minima, summary),
        "loss_curves": lambda: loss_curves_figure(drawn, minima),
    }
    return {name: makers[name]() for name in PICTURES if name in names}


def _page_grid(config: DictConfig, runs: list[RunSummary]) -> tuple[Drawing, LandscapeGrid] | None:
    """What the page and the animation draw, and the cost over their (coarser) grid."""
    from pipeline.landscape import landscape_grid

    inputs = _drawing_inputs(config, runs)
    if inputs is None:
        return None
    drawn, X, y, optimum, loss, minima, summary = inputs
    return inputs, landscape_grid(
        drawn, X, y, optimum, loss, minima, points=PAGE_GRID_POINTS, summary=summary
    )


def sweep_page(config: DictConfig, runs: list[RunSummary]) -> str | None:
    """The interactive landscape page of a sweep (HTML), or None when no run ran."""
    from pipeline.landscape import Colouring
    from pipeline.landscape_page import landscape_page

    found = _page_grid(config, runs)
    if found is None:
        return None
    inputs, land = found
    colouring = Colouring.of(inputs.runs, inputs.minima, single=True)
    return landscape_page(
        inputs.runs, land, axis_labels(config), inputs.loss, colouring, _live_runs(config, inputs, land)
    )


def _live_runs(config: DictConfig, inputs: Drawing, land: LandscapeGrid) -> dict[str, Any] | None:
    """What the page's live runs need (:mod:`pipeline.live`), or None where its map is not
    the whole model: more than one feature, or no intercept."""
    from omegaconf import OmegaConf

    from pipeline.live import LIVE_METHODS, live_payload

    if inputs.X.shape[1] != 1 or not read_flag(config, "model.fit_intercept"):
        return None
    settings = OmegaConf.to_container(config.optimizer, resolve=True)
    assert isinstance(settings, dict)
    chosen = {str(key): value for key, value in settings.items()}
    # A sweep's own config holds the values before its grid: where every run took one rate
    # (the robust experiment's 0.5), a live run starts from that one; "auto" stays "auto"
    # (its runs record the rate it settled on, and momentum's β goes with it).
    rates = {(run.method, run.lr) for run in inputs.runs}
    if len(rates) == 1 and next(iter(rates))[0] == chosen.get("name") and chosen.get("lr") != "auto":
        chosen["lr"] = next(iter(rates))[1]
    return live_payload(
        inputs.X[:, 0],
        inputs.y,
        inputs.loss,
        {name: optimizer_file(name) for name in LIVE_METHODS},
        chosen,
        land.limits[1],
        inputs.summary,
    )


def sweep_animation(config: DictConfig, runs: list[RunSummary]) -> bytes | None:
    """The descent of every run as a GIF (:mod:`pipeline.animation`), or None when no run ran."""
    from pipeline.animation import descent_gif
    from pipeline.landscape import Colouring

    found = _page_grid(config, runs)
    if found is None:
        return None
    inputs, land = found
    what = "cost" if inputs.loss.is_mse else f"{inputs.loss.name} cost"
    title = f"{len(inputs.runs)} runs of gradient descent down the {what}"
    return descent_gif(
        inputs.runs, land, axis_labels(config), Colouring.of(inputs.runs, inputs.minima), title
    )


def load_drawing_modules() -> None:
    """Import what the sweep's pictures and page are drawn with (matplotlib and plotly,
    some 0.5 s), for a process that waits now and draws later."""
    import importlib

    for name in (
        "matplotlib.backends.backend_agg",
        "matplotlib.figure",
        "plotly.graph_objects",
        "plotly.subplots",
    ):
        importlib.import_module(name)


def write_sweep_outputs(config: DictConfig, key: str, runs: list[RunSummary]) -> list[Path]:
    """Write the sweep record, its pictures and its page (atomically); return the
    pictures' and the page's paths."""
    write_sweep_record(resolve(config, config.paths.sweep), key, runs)
    page_path = resolve(config, config.paths.landscape_page)

    def write_page() -> bool:
        page = sweep_page(config, runs)
        if page is not None:
            write_atomic(page_path, lambda tmp: tmp.write_text(page))
        return page is not None

    def draw(names: Sequence[str]) -> list[Path]:
        paths = []
        for name, figure in sweep_figures(config, runs, names).items():
            paths.append(resolve(config, config.paths[name]))
            write_atomic(paths[-1], partial(figure.savefig, format="png", dpi=110))
        return paths

    def beside_the_page() -> bool:
        draw(PICTURES_BESIDE_THE_PAGE)
        return write_page()

    # The page (Plotly, about a second) and the loss curves are drawn by a forked copy of
    # this process while this one draws the other pictures; should the copy fail, they
    # are drawn here, where an error is reported as any other.
    drawer = _forked(beside_the_page)
    here = [name for name in PICTURES if name not in PICTURES_BESIDE_THE_PAGE]
    written = draw(here)
    if drawer is not None:
        drawer.join()
    if drawer is not None and drawer.exitcode == 0:
        written += [resolve(config, config.paths[name]) for name in PICTURES_BESIDE_THE_PAGE]
        written.append(page_path)
    else:
        written += draw(PICTURES_BESIDE_THE_PAGE)
        if write_page():
            written.append(page_path)
    if read_flag(config, "pictures.animation"):
        gif = sweep_animation(config, runs)
        if gif is not None:
            written.append(resolve(config, config.paths.animation))
            write_atomic(written[-1], lambda tmp: tmp.write_bytes(gif))
    log.info("%d runs: %s", len(runs), status_counts(runs))
    log.info("%s", minima_line(runs, group_minima(runs)))
    return written


def _forked(action: Callable[[], bool]) -> multiprocessing.process.BaseProcess | None:
    """A forked copy of this process that runs ``action`` and exits 0 if it returned True
    (1 if not, or on an error); None where forking is unsafe (:func:`fork_is_safe`).

    The threads of this project's sweep and of joblib's launcher wait
    on their own locks, which the copy never takes.
    """
    if not fork_is_safe():
        return None
    context = multiprocessing.get_context("fork")
    process = context.Process(target=_exit_with, args=(action,), name="sweep-page", daemon=True)
    process.start()
    return process


def _exit_with(action: Callable[[], bool]) -> None:
    """In a forked copy: run ``action`` and leave (0 if it returned True), silently."""
    try:
        done = action()
    except BaseException:  # the parent draws the page again and reports what is wrong
        done = False
    sys.stdout.flush()
    os._exit(0 if done else 1)
