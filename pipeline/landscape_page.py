"""The interactive landscape: one self-contained HTML page (Plotly, its JavaScript embedded).

Pure: run summaries and the cost grid in, an HTML string out; no files, no MLflow.
Plotly is imported only here, when a page is made.

The page holds the cost surface in 3-D beside its contour map, every run's path on both
(coloured as in ``reports/landscape.png``: by the minimum it reached, or one colour while
there is one), each minimum marked, a hover on every path with the run's settings and
outcome, and a slider over iterations that moves every run's current point.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.costs import Cost
from pipeline.landscape import STATUS_STYLES, Colouring, LandscapeGrid, Mark, sample_runs, sampled_note
from pipeline.outcome import RunSummary

FloatArray = NDArray[np.float64]
#: Paths the page draws: beyond, an even sample, and a dot where every run ended (the
#: page holds each drawn path's points and its slider frames: it grows with them).
PAGE_PATHS = 300
#: Positions of the iteration slider: log-spaced, from the start to the longest run's end.
SLIDER_STEPS = 40
#: The page's live runs (:mod:`pipeline.live`): their script, inlined into the page.
LIVE_SCRIPT = Path(__file__).with_name("live.js")
#: Plotly's dash names for the line style of each status.
DASHES = {"-": "solid", "--": "dash", "-.": "dashdot", ":": "dot"}
#: Whether Plotly checks each trace and frame against its schema as it is made: two
#: thirds of the page's time (0.95 s of 1.4 s for a 100-run sweep), for values this
#: module makes itself, of the types Plotly stores. Off; a test finds the figure equal
#: to the checked one.
CHECKED = False


def _hover(run: RunSummary, loss: Cost) -> str:
    theta = ", ".join(f"{value:,.6g}" for value in (run.theta or []))
    start = ", ".join(f"{value:,.6g}" for value in (run.theta_init or []))
    gap = "unknown" if run.optimality_gap is None else f"{run.optimality_gap:.3g}"
    return (
        f"<b>{run.run_name}</b><br>method {run.method}, lr {run.lr:g}<br>start θ=({start})"
        f"<br>{run.status}, {run.n_iter} iterations, end point: {run.end_point}"
        f"<br>θ=({theta})<br>{loss.label} {run.cost:,.6g}, optimality gap {gap}"
    )


def _current(run: RunSummary, step: int) -> tuple[float, float, float]:
    """Where ``run`` is at iteration ``step``: its last recorded iterate up to then."""
    steps = np.asarray(run.path_steps)
    index = max(int(np.searchsorted(steps, step, side="right")) - 1, 0)
    theta = run.path_theta[index]
    return float(theta[0]), float(theta[1]), float(run.path_loss[index])


def landscape_page(
    runs: list[RunSummary],
    land: LandscapeGrid,
    labels: tuple[str, str],
    loss: Cost,
    colouring: Colouring,
    live: dict[str, Any] | None = None,
) -> str:
    """The page of :func:`landscape_plot`, as one HTML document that works offline; with
    ``live`` (:func:`pipeline.live.live_payload`), a click on the map starts a run there."""
    figure = landscape_plot(runs, land, labels, loss, colouring)
    # A fixed div id (Plotly draws a random one): the same sweep gives the same file, byte for byte.
    page = str(figure.to_html(include_plotlyjs=True, full_html=True, auto_play=False, div_id="landscape"))
    if live is None:
        return page
    # Python's floats as JSON keep every bit (repr); "</" is escaped so no value ends the script.
    numbers = json.dumps(live, allow_nan=False, separators=(",", ":")).replace("</", "<\\/")
    script = LIVE_SCRIPT.read_text(encoding="utf-8")
    extra = (
        f'<script type="application/json" id="downhill-live-data">{numbers}</script>\n'
        f"<script>{script}</script>\n"
    )
    head, tail = page.rsplit("</body>", 1)
    return head + extra + "</body>" + tail


def landscape_plot(
    runs: list[RunSummary], land: LandscapeGrid, labels: tuple[str, str], loss: Cost, colouring: Colouring
) -> Any:
    """The Plotly figure of the page: surface, map, paths, minima, the iteration slider.

    Parameters
    ----------
    runs : list of RunSummary
        The sweep's runs; failed ones are left out.
    land : LandscapeGrid
        The cost grid, frame and minima (:func:`pipeline.landscape.landscape_grid`).
    labels : (str, str)
        Axis labels for θ0 and θ1, with units.
    loss : Cost
        The cost minimized.
    colouring : Colouring
        The paths' colours, as in the PNG.
    """
    from plotly.subplots import make_subplots

    runs = [run for run in runs if run.status != "failed" and run.path_steps]
    drawn = sample_runs(runs, PAGE_PATHS)
    map_title = "the map, with every run's path" if len(drawn) == len(runs) else "the map"
    figure = make_subplots(
        rows=1,
        cols=2,
        specs=[[{"type": "surface"}, {"type": "xy"}]],
        column_widths=[0.5, 0.5],
        subplot_titles=(f"{loss.label}: the surface", map_title),
    )
    _add_surfaces(figure, land)
    if len(drawn) < len(runs):
        _add_end_points(figure, runs)
    for run in drawn:
        _add_path(figure, run, land, loss, colouring)
    for mark in land.marks:
        _add_mark(figure, mark)
    steps = _add_slider_points(figure, drawn, colouring, land.limits)
    (low0, high0), (low1, high1) = land.limits
    figure.update_layout(
        title=f"Cost landscape: {loss.label}, {len(runs)} runs"
        + (f" (the cost {land.surface.note})" if land.surface.note else "")
        + (f"<br>{sampled_note(len(drawn), len(runs))}" if len(drawn) < len(runs) else ""),
        height=760,
        margin={"l": 40, "r": 40, "t": 80, "b": 40},
        legend={"orientation": "h", "x": 0.55, "y": 1.08},
        # Axes that stay put while the runs move: a run that leaves the frame is hidden,
        # never followed (the surface would shrink to a dot behind a diverging run).
        scene={
            "xaxis": {"title": "θ0", "range": [low0, high0]},
            "yaxis": {"title": "θ1", "range": [low1, high1]},
            "zaxis": {"title": "cost", "range": [float(np.min(land.costs)), float(np.max(land.costs))]},
        },
        updatemenus=[_play_buttons()],
        sliders=[
            {
                "currentvalue": {"prefix": "iteration "},
                "pad": {"t": 30},
                "steps": [
                    {
                        "label": str(step),
                        "method": "animate",
                        "args": [
                            [str(step)],
                            {"mode": "immediate", "frame": {"duration": 0, "redraw": True}},
                        ],
                    }
                    for step in steps
                ],
            }
        ],
    )
    figure.update_xaxes(title_text=labels[0], range=[low0, high0], row=1, col=2)
    figure.update_yaxes(title_text=labels[1], range=[low1, high1], row=1, col=2)
    return figure


def _add_surfaces(figure: Any, land: LandscapeGrid) -> None:
    """The cost surface (left, 3-D) and its log-excess contour map (right)."""
    import plotly.graph_objects as go

    axis0, axis1 = land.theta0[0], land.theta1[:, 0]
    figure.add_trace(
        go.Surface(
            _validate=CHECKED,
            x=axis0,
            y=axis1,
            z=land.costs,
            colorscale="Blues_r",
            opacity=0.85,
            showscale=False,
            hovertemplate="θ0 %{x:,.0f}<br>θ1 %{y:,.4g}<br>cost %{z:,.6g}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    figure.add_trace(
        go.Contour(
            _validate=CHECKED,
            x=axis0,
            y=axis1,
            z=np.log10(land.excess),
            colorscale="Blues_r",
            showscale=True,
            colorbar={"title": "log10 cost above<br>the minimum", "x": 1.02},
            hovertemplate="θ0 %{x:,.0f}<br>θ1 %{y:,.4g}<extra></extra>",
            contours={"coloring": "heatmap"},
        ),
        row=1,
        col=2,
    )


def _add_path(figure: Any, run: RunSummary, land: LandscapeGrid, loss: Cost, colouring: Colouring) -> None:
    """One run's path on the surface and on the map, the part inside the frame."""
    import plotly.graph_objects as go
    from matplotlib.colors import to_hex

    (low0, high0), (low1, high1) = land.limits
    colour = to_hex(colouring(run))
    path = np.asarray(run.path_theta)
    inside = (path[:, 0] >= low0) & (path[:, 0] <= high0) & (path[:, 1] >= low1) & (path[:, 1] <= high1)
    shown = path[inside] if inside.any() else path[:1]
    cost = np.asarray(run.path_loss)[inside] if inside.any() else np.asarray(run.path_loss)[:1]
    hover = _hover(run, loss)
    dash = DASHES[STATUS_STYLES.get(run.status, "-")]
    figure.add_trace(
        go.Scatter3d(
            _validate=CHECKED,
            x=shown[:, 0],
            y=shown[:, 1],
            z=cost,
            mode="lines",
            line={"color": colour, "width": 4},
            name=run.run_name,
            showlegend=False,
            hovertemplate=hover + "<extra></extra>",
        ),
        row=1,
        col=1,
    )
    figure.add_trace(
        go.Scatter(
            _validate=CHECKED,
            x=shown[:, 0],
            y=shown[:, 1],
            mode="lines",
            line={"color": colour, "dash": dash, "width": 2},
            name=run.run_name,
            showlegend=False,
            hovertemplate=hover + "<extra></extra>",
        ),
        row=1,
        col=2,
    )


def _add_mark(figure: Any, mark: Mark) -> None:
    """A minimum, marked on the map (star or cross) and on the surface."""
    import plotly.graph_objects as go

    symbol, size = ("star", 18) if mark.kind == "global minimum" else ("cross", 14)
    text = f"<b>{mark.kind}</b><br>θ=({mark.theta0:,.6g}, {mark.theta1:,.6g})<br>cost {mark.cost:,.6g}"
    if mark.runs:
        text += f"<br>reached by {mark.runs} run{'s' if mark.runs != 1 else ''}"
    figure.add_trace(
        go.Scatter(
            _validate=CHECKED,
            x=[mark.theta0],
            y=[mark.theta1],
            mode="markers",
            name=mark.kind,
            marker={
                "symbol": symbol,
                "size": size,
                "color": "gold",
                "line": {"color": "black", "width": 1},
            },
            hovertemplate=text + "<extra></extra>",
        ),
        row=1,
        col=2,
    )
    figure.add_trace(
        go.Scatter3d(
            _validate=CHECKED,
            x=[mark.theta0],
            y=[mark.theta1],
            z=[mark.cost],
            mode="markers",
            showlegend=False,
            marker={"symbol": "diamond", "size": 6, "color": "gold"},
            hovertemplate=text + "<extra></extra>",
        ),
        row=1,
        col=1,
    )


def _add_end_points(figure: Any, runs: list[RunSummary]) -> None:
    """Where every run ended, one small dot each, on the map: the density a sample of
    paths cannot show."""
    ends = np.array([run.theta[:2] for run in runs if run.status != "diverged" and run.theta])
    if not ends.size:
        return
    figure.add_scatter(
        x=ends[:, 0],
        y=ends[:, 1],
        mode="markers",
        marker={"size": 3, "color": "black", "opacity": 0.35},
        name=f"where the {len(ends):,} runs that did not diverge ended",
        hoverinfo="skip",
        row=1,
        col=2,
    )


#: Milliseconds a frame stays on screen when played: slow, and fast.
PLAY_SLOW, PLAY_FAST = 400, 80


def _play_buttons() -> dict[str, Any]:
    """Play (slow or fast) from the slider's position, and pause where it is."""

    def play(label: str, milliseconds: int) -> dict[str, Any]:
        pace = {"frame": {"duration": milliseconds, "redraw": True}, "transition": {"duration": 0}}
        return {"label": label, "method": "animate", "args": [None, pace | {"fromcurrent": True}]}

    pause = {"frame": {"duration": 0, "redraw": False}, "mode": "immediate", "transition": {"duration": 0}}
    return {
        "type": "buttons",
        "direction": "left",
        "x": 0.0,
        "y": -0.02,
        "xanchor": "left",
        "yanchor": "top",
        "buttons": [
            play("▶ play", PLAY_SLOW),
            play("▶▶ fast", PLAY_FAST),
            {"label": "❚❚ pause", "method": "animate", "args": [[None], pause]},
        ],
    }


def _add_slider_points(
    figure: Any, runs: list[RunSummary], colouring: Colouring, limits: tuple[tuple[float, float], ...]
) -> list[int]:
    """Every run's current point, on both panels, and a frame per slider step; returns the
    steps. A point outside the frame ``limits`` is not drawn (NaN)."""
    import plotly.graph_objects as go
    from matplotlib.colors import to_hex

    longest = max((run.path_steps[-1] for run in runs), default=0)
    steps = sorted(
        {0, *np.unique(np.geomspace(1, max(longest, 1), SLIDER_STEPS).round().astype(int)).tolist()}
    )
    colours = [to_hex(colouring(run)) for run in runs]

    (low0, high0), (low1, high1) = limits

    def points(step: int) -> tuple[Any, Any]:
        now = np.array([_current(run, step) for run in runs]).reshape(-1, 3)
        outside = (now[:, 0] < low0) | (now[:, 0] > high0) | (now[:, 1] < low1) | (now[:, 1] > high1)
        now[outside] = np.nan
        flat = go.Scatter(
            _validate=CHECKED,
            x=now[:, 0],
            y=now[:, 1],
            mode="markers",
            name="current point",
            marker={"size": 9, "color": colours, "line": {"color": "white", "width": 1}},
            text=[run.run_name for run in runs],
            hovertemplate="%{text}<extra></extra>",
        )
        deep = go.Scatter3d(
            _validate=CHECKED,
            x=now[:, 0],
            y=now[:, 1],
            z=now[:, 2],
            mode="markers",
            showlegend=False,
            marker={"size": 4, "color": colours},
            hoverinfo="skip",
        )
        return deep, flat

    deep, flat = points(0)
    figure.add_trace(deep, row=1, col=1)
    figure.add_trace(flat, row=1, col=2)
    moving = [len(figure.data) - 2, len(figure.data) - 1]
    figure.frames = [
        go.Frame(_validate=CHECKED, name=str(step), data=list(points(step)), traces=moving) for step in steps
    ]
    return steps
