"""``python -m pipeline.phase [overrides]``: momentum's phase diagram on the training split.

For the classroom: over a grid of learning rates and momentum β, one real run of
heavy-ball momentum per cell from ``model.init`` with the ``optimizer.*`` budget and
stopping rules, coloured by how it ended and how many iterations it took, the
textbook stability border drawn over it, and the last sweep's momentum runs
(``paths.sweep``) as dots. Writes ``paths.phase`` (PNG). The MSE of a straight line
only (``model.loss=mse``, ``model.degree=1``): its curvature is what the border is
made of. About ten seconds on the houses (1,200 runs).
"""

from __future__ import annotations

import logging
from functools import partial

import hydra
from omegaconf import DictConfig, OmegaConf

from pipeline.columns import training_split
from pipeline.errors import PipelineError, exit_on_error
from pipeline.files import resolve, write_atomic
from pipeline.methods import momentum
from pipeline.outcome import RunSummary
from pipeline.phases import PhaseMap, curvatures, grid, phase_figure, phase_map, stable_lr
from pipeline.record import read_sweep_record
from pipeline.rules import DIVERGENCE_RATIO, MAX_ITER, TOLERANCE
from pipeline.settings import check_overrides, read_flag, read_number

log = logging.getLogger("pipeline.phase")

#: The grid: learning rates from 1e-3 to twice the widest stable step, log-spaced, by β
#: from 0 to 0.98. Cells: 40 × 30.
LR_CELLS, BETA_CELLS, LOWEST_LR, TOP_BETA = 40, 30, 1e-3, 0.98


def sweep_points(runs: list[RunSummary], cfg: DictConfig, phase: PhaseMap) -> list[tuple[float, float, str]]:
    """The sweep's heavy-ball runs as (lr, β, status), as :func:`pipeline.methods.momentum`
    settles them (``lr=auto`` and an unset β included), from each run's overrides over ``cfg``."""
    points: list[tuple[float, float, str]] = []
    for run in runs:
        if run.method != "momentum" or run.status == "failed":
            continue
        given = dict(item.split("=", 1) for item in run.overrides if "=" in item)
        lr = given.get("optimizer.lr", OmegaConf.select(cfg, "optimizer.lr", default=None))
        beta = given.get("optimizer.beta", OmegaConf.select(cfg, "optimizer.beta", default=None))
        settled = momentum(
            "auto" if lr in ("auto", None) else float(lr), None if beta in ("null", None) else float(beta)
        ).settled(phase.mu, phase.L)
        points.append((float(settled.lr), float(settled.settings["beta"]), run.status))
    return points


def run(cfg: DictConfig) -> PhaseMap:
    """Draw the diagram into ``paths.phase``; return the cells."""
    loss = OmegaConf.select(cfg, "model.loss", default=None)
    if loss != "mse":
        raise PipelineError(
            f"model.loss: the phase diagram is drawn for the MSE (model.loss=mse), got {loss!r}"
        )
    if read_number(cfg, "model.degree", at_least=1, integer=True) != 1:
        raise PipelineError("model.degree: the phase diagram is drawn for a straight line (model.degree=1)")
    split = training_split(cfg)
    theta_init = [read_number(cfg, "model.init.theta0"), read_number(cfg, "model.init.theta1")]
    if len(split.features) != 1:
        raise PipelineError("data.features: the phase diagram is drawn for one feature")
    X, y = split.columns.X, split.columns.y
    max_iter = int(read_number(cfg, "optimizer.max_iter", MAX_ITER))
    tol = read_number(cfg, "optimizer.tol", TOLERANCE)
    divergence_ratio = read_number(cfg, "optimizer.divergence_ratio", DIVERGENCE_RATIO)
    fit_intercept = read_flag(cfg, "model.fit_intercept")
    _, top = curvatures(X, y, fit_intercept)
    phase = phase_map(
        X,
        y,
        theta_init,
        grid(LOWEST_LR, 2 * float(stable_lr(TOP_BETA, top)), LR_CELLS, log=True),
        grid(0.0, TOP_BETA, BETA_CELLS, log=False),
        max_iter=max_iter,
        tol=tol,
        divergence_ratio=divergence_ratio,
        fit_intercept=fit_intercept,
    )
    sweep = resolve(cfg, cfg.paths.sweep)
    points = sweep_points(read_sweep_record(sweep)[1], cfg, phase) if sweep.is_file() else []
    title = (
        f"Heavy-ball momentum on {split.path.name} ({', '.join(split.features)} → {split.target}), "
        f"from θ = ({theta_init[0]:,.0f}, {theta_init[1]:,.4g}): {phase.status.size:,} runs"
    )
    figure = phase_figure(phase, points, title)
    target = resolve(cfg, cfg.paths.phase)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, partial(figure.savefig, format="png", dpi=110))
    counts = {status: int((phase.status == status).sum()) for status in ("converged", "max_iter", "diverged")}
    log.info("%s: %s; %d of the sweep's runs drawn", target, counts, len(points))
    return phase


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@exit_on_error
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    check_overrides("train")
    main()
