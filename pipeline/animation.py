"""A sweep's descent as an animation for slides: every run sliding down the cost landscape.

One GIF (Pillow, which matplotlib brings): the landscape's contours drawn once, each
run a dot with a short trail, all runs on one clock. The clock runs on a log scale of
iterations, so the first steps (where most of the walking happens) and the long crawl
are both seen, and the frame says which iteration it shows. Large type and few colours,
for a projector. Pure: run records and the landscape's grid in, GIF bytes out.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from pipeline.outcome import RunSummary

if TYPE_CHECKING:
    from pipeline.landscape import Colouring, LandscapeGrid

FloatArray = NDArray[np.float64]
#: Frames and their pace: 64 frames at 8 a second, the last held for a second: 9 s.
FRAMES, FRAMES_PER_SECOND, HOLD_FRAMES = 64, 8, 8
#: Pixels: 800 × 600, large enough for a projector, small enough for a slide deck.
SIZE_INCHES, DOTS_PER_INCH = (8.0, 6.0), 100
#: Iterates of a run's trail shown behind its dot.
TRAIL = 12


def clock(runs: list[RunSummary], frames: int = FRAMES) -> NDArray[np.int64]:
    """The iteration each frame shows, shape (frames,): 0 first, the longest run's last
    iteration last, evenly spaced in log(1 + iteration)."""
    longest = max((int(run.path_steps[-1]) for run in runs if run.path_steps), default=0)
    steps = np.expm1(np.linspace(0.0, math.log1p(longest), frames))
    return np.minimum(np.round(steps).astype(np.int64), longest)


def positions(run: RunSummary, iterations: NDArray[np.int64]) -> FloatArray:
    """Where ``run`` is at each of ``iterations`` (shape (k, 2): θ0, θ1), its recorded
    path interpolated between the iterates it kept; after its end, at its end."""
    steps = np.asarray(run.path_steps, dtype=np.float64)
    path = np.asarray(run.path_theta, dtype=np.float64)[:, :2]
    return np.column_stack([np.interp(iterations, steps, path[:, axis]) for axis in range(2)])


def descent_gif(
    runs: list[RunSummary], land: LandscapeGrid, labels: tuple[str, str], colouring: Colouring, title: str
) -> bytes:
    """The animation of ``runs`` (failed runs left out) over ``land``, as GIF bytes.

    Parameters
    ----------
    runs : list of RunSummary
        The sweep's runs, with their thinned paths.
    land : LandscapeGrid
        The cost over the frame, as the landscape picture draws it.
    labels : (str, str)
        The axes' labels, with units.
    colouring : Colouring
        The colour of each run (by learning rate, or by the minimum it reached).
    title : str
        What the animation shows.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap, LogNorm
    from matplotlib.figure import Figure
    from PIL import Image

    drawn = [run for run in runs if run.status != "failed" and run.path_steps]
    iterations = clock(drawn)
    where = [positions(run, iterations) for run in drawn]
    figure = Figure(figsize=SIZE_INCHES, dpi=DOTS_PER_INCH, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    levels = np.geomspace(float(land.excess.min()), float(land.excess.max()), 14)
    # Light greys only: white at the bottom of the valley, mid grey on the heights, so
    # the runs' colours stand out on a projector.
    greys = ListedColormap(colormaps["Greys"](np.linspace(0.0, 0.55, len(levels) - 1)))
    norm = LogNorm(vmin=float(levels[0]), vmax=float(levels[-1]))
    axes.contourf(land.theta0, land.theta1, land.excess, levels=levels, cmap=greys, norm=norm)
    axes.contour(land.theta0, land.theta1, land.excess, levels=levels, colors="0.35", linewidths=0.6)
    axes.set_xlim(*land.limits[0])
    axes.set_ylim(*land.limits[1])
    axes.set_xlabel(labels[0], fontsize=14)
    axes.set_ylabel(labels[1], fontsize=14)
    axes.tick_params(labelsize=12)
    axes.set_title(title, fontsize=15)
    trails = [axes.plot([], [], "-", color=colouring(run), linewidth=2.5, alpha=0.8)[0] for run in drawn]
    dots = [
        axes.plot([], [], "o", color=colouring(run), markersize=10, markeredgecolor="black")[0]
        for run in drawn
    ]
    stars = [
        axes.plot(
            mark.theta0,
            mark.theta1,
            "*" if mark.kind == "global minimum" else "X",
            markersize=20,
            color="gold",
            markeredgecolor="black",
            zorder=5,
        )[0]
        for mark in land.marks
    ]
    clock_text = axes.text(
        0.02,
        0.97,
        "",
        transform=axes.transAxes,
        fontsize=16,
        va="top",
        bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"},
    )
    legend = axes.legend(handles=colouring.legend(), loc="lower right", fontsize=12, framealpha=0.9)
    # The contours are drawn once and kept as pixels; each frame draws on a copy of them
    # only what moves and what lies above it, in the order a whole draw would (drawing
    # the whole figure per frame took 0.12 s a frame, most of the animation's time).
    on_top = sorted([*trails, *dots, *stars, clock_text, legend], key=lambda artist: artist.get_zorder())
    for artist in on_top:
        artist.set_animated(True)
    canvas.draw()  # type: ignore[no-untyped-call]
    figure.set_layout_engine("none")  # the layout found in that draw stays for every frame
    background = canvas.copy_from_bbox(figure.bbox)  # type: ignore[no-untyped-call]
    width, height = canvas.get_width_height()

    def frame_image(frame: int) -> Image.Image:
        frame = min(frame, len(iterations) - 1)
        for trail, dot, place in zip(trails, dots, where, strict=True):
            recent = place[max(frame - TRAIL, 0) : frame + 1]
            trail.set_data(recent[:, 0], recent[:, 1])
            dot.set_data([place[frame, 0]], [place[frame, 1]])
        clock_text.set_text(f"iteration {int(iterations[frame]):,}")
        canvas.restore_region(background)  # type: ignore[no-untyped-call]
        for artist in on_top:
            axes.draw_artist(artist)
        pixels = bytes(canvas.buffer_rgba())  # type: ignore[no-untyped-call]
        return Image.frombuffer("RGBA", (width, height), pixels, "raw", "RGBA", 0, 1)

    frames = [frame_image(frame) for frame in range(len(iterations) + HOLD_FRAMES)]
    gif = io.BytesIO()
    frames[0].save(
        gif,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=1000 // FRAMES_PER_SECOND,
        loop=0,
    )
    return gif.getvalue()
