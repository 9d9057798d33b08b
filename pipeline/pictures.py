"""A sweep's pictures and page: the landscape, the valley, the loss curves and the interactive page.

Drawn from the sweep record's runs and the training split, written atomically to the
paths of ``conf/paths``. The page (Plotly, about a second) is drawn by a forked copy
of the process while the process draws the pictures. A sweep's forked copy may draw
them all ahead, while the runs are recorded, from the outcomes the runs are expected to
record (:func:`draw_ahead`): the sweep moves those into place if the runs it reads back
are the same (:func:`publish_drawn`). Used by the sweep and a single training run; the
stages that only read a record never import it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from omegaconf import DictConfig

from pipeline.costs import Cost
from pipeline.errors import PipelineError
from pipeline.files import resolve, write_atomic
from pipeline.outcome import Minimum, RunSummary, status_counts
from pipeline.passes import end_with_parent, fork_is_safe
from pipeline.record import group_minima, minima_line, write_sweep_record
from pipeline.rules import EXACT_ROWS
from pipeline.settings import optimizer_file, read_flag, read_number
from pipeline.summary import PICTURE_BINS_PER_SCALE, RowSummary, bin_rows
from pipeline.tracking import process_alive

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


def write_sweep_outputs(
    config: DictConfig, key: str, runs: list[RunSummary], drawn: DrawnAhead | None = None
) -> list[Path]:
    """Write the sweep record, its pictures and its page (atomically); return the
    pictures' and the page's paths. ``drawn``: those drawn ahead (:func:`draw_ahead`),
    moved into place where they were drawn from ``runs``, else drawn again here."""
    write_sweep_record(resolve(config, config.paths.sweep), key, runs)
    written = publish_drawn(config, drawn, runs) if drawn is not None else None
    if written is None:
        written = _draw_here(config, runs)
    else:
        log.info("the pictures and the page: drawn while the runs were recorded")
    if read_flag(config, "pictures.animation"):
        gif = sweep_animation(config, runs)
        if gif is not None:
            written.append(resolve(config, config.paths.animation))
            write_atomic(written[-1], lambda tmp: tmp.write_bytes(gif))
    log.info("%d runs: %s", len(runs), status_counts(runs))
    log.info("%s", minima_line(runs, group_minima(runs)))
    return written


def _draw_here(config: DictConfig, runs: list[RunSummary]) -> list[Path]:
    """Draw the pictures and the page of ``runs`` into place; return their paths."""
    return list(_draw(config, runs, lambda name: resolve(config, config.paths[name])).values())


def _draw(
    config: DictConfig,
    runs: list[RunSummary],
    path_of: Callable[[str], Path],
    write: Callable[[Path, Callable[[Path], object]], None] = write_atomic,
) -> dict[str, Path]:
    """Draw the pictures and the page of ``runs``, each to ``path_of(its path key)`` by
    ``write`` (atomically, by default); return the paths written by path key, in the
    order of :data:`DRAWN`."""
    page_path = path_of("landscape_page")

    def write_page() -> bool:
        page = sweep_page(config, runs)
        if page is not None:
            write(page_path, lambda tmp: tmp.write_text(page))
        return page is not None

    def draw(names: Sequence[str]) -> dict[str, Path]:
        paths = {}
        for name, figure in sweep_figures(config, runs, names).items():
            paths[name] = path_of(name)
            write(paths[name], partial(figure.savefig, format="png", dpi=110))
        return paths

    def beside_the_page() -> bool:
        draw(PICTURES_BESIDE_THE_PAGE)
        return write_page()

    # The page (Plotly, about a second) and the loss curves are drawn by a forked copy of
    # this process while this one draws the other pictures; should the copy fail, they
    # are drawn here, where an error is reported as any other.
    drawer = _forked(beside_the_page)
    written = draw([name for name in PICTURES if name not in PICTURES_BESIDE_THE_PAGE])
    if drawer is not None:
        drawer.join()
    if drawer is not None and drawer.exitcode == 0:
        written |= {name: path_of(name) for name in PICTURES_BESIDE_THE_PAGE}
        written["landscape_page"] = page_path
    else:
        written |= draw(PICTURES_BESIDE_THE_PAGE)
        if write_page():
            written["landscape_page"] = page_path
    return {name: written[name] for name in DRAWN if name in written}


#: What a sweep draws, by path key: the pictures, then the page.
DRAWN = (*PICTURES, "landscape_page")


@dataclass(frozen=True)
class DrawnAhead:
    """A sweep's pictures and page drawn before its runs were read back, from the
    outcomes they were expected to record (:func:`draw_ahead`): ``digest`` of those runs
    (:func:`runs_digest`), and the files drawn, by path key (scratch files beside their
    paths, :func:`scratch_path`)."""

    digest: str
    files: dict[str, str]


def runs_digest(runs: list[RunSummary]) -> str:
    """A hash of everything in ``runs``: what a sweep's pictures and page are drawn from."""
    text = json.dumps([run.to_json() for run in runs], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def scratch_path(target: Path, pid: int) -> Path:
    """Where process ``pid`` draws ``target`` ahead: a hidden file beside it, moved into
    place in one rename."""
    return target.with_name(f".{target.name}.ahead-{pid}.tmp")


def draw_ahead(config: DictConfig, runs: list[RunSummary], owner: int) -> DrawnAhead:
    """Draw the pictures and the page of ``runs`` (the outcomes a sweep's runs are
    expected to record) into scratch files beside their paths, named by process
    ``owner``: done by the sweep's forked copy while the runs are recorded
    (:func:`pipeline.sweep.draw_sweep_ahead`). Drawn from ``runs`` as they will be read
    back from their ``outcome.json`` (JSON has no NaN), so that equal digests mean equal
    pictures. Scratch files left by a copy that is gone (its sweep killed) are removed
    first."""
    runs = [RunSummary.from_json(json.loads(json.dumps(run.to_json()))) for run in runs]
    targets = {name: resolve(config, config.paths[name]) for name in DRAWN}
    for target in targets.values():
        _remove_stale_scratch(target)
    # Written straight to the scratch files (each of them published only once all are
    # whole): a temporary file beside one would outlive a copy killed mid-write.
    written = _draw(config, runs, lambda name: scratch_path(targets[name], owner), _write_directly)
    return DrawnAhead(runs_digest(runs), {name: str(path) for name, path in written.items()})


def _write_directly(path: Path, write: Callable[[Path], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path)


def publish_drawn(config: DictConfig, drawn: DrawnAhead, runs: list[RunSummary]) -> list[Path] | None:
    """Move the pictures and the page drawn ahead into place where they were drawn from
    ``runs`` (as the sweep read them back); return their paths. None where the runs
    differ from those expected (a job failed as it was recorded, say): nothing is
    moved, and the scratch files are left to :func:`discard_drawn`."""
    if drawn.digest != runs_digest(runs):
        log.debug("the runs read back are not those the pictures were drawn ahead from: drawn again")
        return None
    written = []
    for name, scratch in drawn.files.items():
        target = resolve(config, config.paths[name])
        try:
            os.replace(scratch, target)
        except OSError as error:
            raise PipelineError(f"{target}: cannot write it ({error.strerror or error})") from None
        written.append(target)
    return written


def discard_drawn(config: DictConfig, pid: int) -> None:
    """Remove what process ``pid`` drew ahead and was not moved into place."""
    for name in DRAWN:
        scratch_path(resolve(config, config.paths[name]), pid).unlink(missing_ok=True)


def _remove_stale_scratch(target: Path) -> None:
    """Remove the scratch files of ``target`` drawn by processes that are gone."""
    for path in target.parent.glob(f".{target.name}.ahead-*.tmp"):
        pid = path.name.removesuffix(".tmp").rpartition("-")[2]
        if pid.isdigit() and not process_alive(int(pid)):
            path.unlink(missing_ok=True)


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
    end_with_parent()  # nothing drawn for a sweep that is gone
    try:
        done = action()
    except BaseException:  # the parent draws the page again and reports what is wrong
        done = False
    sys.stdout.flush()
    os._exit(0 if done else 1)
