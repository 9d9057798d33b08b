"""A sweep's record, ``reports/sweep.json``: its runs' outcomes in job order and the minima they reached.

Written by the sweep (and a single training run), read by ``evaluate``, the ``store``
stage and ``prune``. Plain Python and numpy, no MLflow, no pictures: reading a record
costs a stage nothing else. Each outcome is a :class:`pipeline.outcome.RunSummary`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.files import write_atomic, write_json
from pipeline.outcome import SAME_COST, SAME_THETA, Minimum, RunSummary

if TYPE_CHECKING:
    import pandas as pd


def summary_table(runs: list[RunSummary], run_ids: Sequence[str | None]) -> pd.DataFrame:
    """One row per job of a sweep: its run, settings, outcome and final numbers."""
    import pandas as pd

    rows = []
    for run, run_id in zip(runs, run_ids, strict=True):
        nothing: list[float | None] = [None, None]
        start = list(run.theta_init) if run.theta_init else nothing
        theta = list(run.theta) if run.theta else nothing
        rows.append(
            {"run_id": run_id, "run_name": run.run_name, "method": run.method, "lr": run.lr}
            | {"status": run.status, "end_point": run.end_point, "n_iter": run.n_iter}
            | {"theta0_init": start[0], "theta1_init": start[1], "theta0": theta[0], "theta1": theta[1]}
            | {"loss": run.loss, "train_cost": run.train_cost, "train_mse": run.train_mse}
            | {"optimality_gap": run.optimality_gap, "message": run.message}
        )
    return pd.DataFrame(rows)


#: Runs up to which ``sweep.json`` holds every run's path as recorded (a few hundred
#: iterates each). Beyond, each path is thinned to :data:`THINNED_PATH_POINTS` points at
#: 7 significant digits and each run takes one line under one list of field names, so
#: that 10,000 runs stay under 10 MB; the parent run's ``sweep.json`` artifact keeps all.
FULL_RECORD_RUNS = 1000
THINNED_PATH_POINTS = 5
PATH_FIELDS = ("path_steps", "path_theta", "path_loss")


def sweep_record(key: str, runs: list[RunSummary]) -> dict[str, Any]:
    """The content of ``paths.sweep``: keys, the minima found and the outcomes; no run ids,
    times or paths. Beyond :data:`FULL_RECORD_RUNS` runs, thinned paths, a run a row."""
    minima = [asdict(minimum) for minimum in group_minima(runs)]
    if len(runs) <= FULL_RECORD_RUNS:
        return {"sweep_key": key, "minima": minima, "runs": [run.to_json() for run in runs]}
    outcomes = [_thinned(run.to_json()) for run in runs]
    fields = list(outcomes[0])
    return {
        "sweep_key": key,
        "minima": minima,
        "paths": f"thinned to {THINNED_PATH_POINTS} points a run, 7 significant digits, beyond "
        f"{FULL_RECORD_RUNS:,} runs: every point is in the sweep's parent run, artifact sweep.json",
        "fields": fields,
        "runs": [[outcome[field] for field in fields] for outcome in outcomes],
    }


def _thinned(outcome: dict[str, Any]) -> dict[str, Any]:
    """A run's outcome with its path cut to :data:`THINNED_PATH_POINTS` evenly spaced
    points (first and last kept), each number at 7 significant digits."""
    count = len(outcome["path_steps"])
    if not count:
        return outcome
    kept = sorted({round(index) for index in np.linspace(0, count - 1, min(count, THINNED_PATH_POINTS))})

    def short(value: float) -> float:
        return float(f"{value:.7g}")

    return outcome | {
        "path_steps": [outcome["path_steps"][index] for index in kept],
        "path_theta": [[short(v) for v in outcome["path_theta"][index]] for index in kept],
        "path_loss": [short(outcome["path_loss"][index]) for index in kept],
    }


def read_sweep_record(path: Path) -> tuple[str, list[RunSummary]]:
    """The sweep key and the runs of a sweep record written by :func:`write_sweep_record`."""
    if not path.is_file():
        raise PipelineError(f"{path}: no sweep record; run `dvc repro train` first")
    try:
        record = json.loads(path.read_text())
        outcomes = record["runs"]
        if "fields" in record:  # a run a row
            outcomes = [dict(zip(record["fields"], row, strict=True)) for row in outcomes]
        return str(record["sweep_key"]), [RunSummary.from_json(run) for run in outcomes]
    except (ValueError, KeyError, TypeError) as error:
        raise PipelineError(
            f"{path}: not a sweep record of this version ({error}); run `dvc repro`"
        ) from None


def write_sweep_record(path: Path, key: str, runs: list[RunSummary]) -> None:
    """Write the record of :func:`sweep_record` to ``path``, atomically: indented, or
    beyond :data:`FULL_RECORD_RUNS` runs with each run on one line."""
    record = sweep_record(key, runs)
    if "fields" not in record:
        write_json(path, record)
        return
    head = json.dumps({name: value for name, value in record.items() if name != "runs"}, indent=2)
    rows = ",\n".join("    " + json.dumps(row, separators=(",", ":")) for row in record["runs"])
    text = f'{head[:-2]},\n  "runs": [\n{rows}\n  ]\n}}\n'
    write_atomic(path, lambda tmp: tmp.write_text(text))


def group_minima(runs: list[RunSummary]) -> list[Minimum]:
    """The minima the runs reached, lowest cost first: runs at the same θ (and cost) form one."""
    groups: list[list[RunSummary]] = []
    for run in runs:
        if run.end_point not in ("global minimum", "local minimum") or run.theta is None:
            continue
        for group in groups:
            if _same_place(group[0], run):
                group.append(run)
                break
        else:
            groups.append([run])
    minima = [
        Minimum(
            kind=min(group, key=_cost).end_point,
            theta=list(min(group, key=_cost).theta or []),
            cost=_cost(min(group, key=_cost)),
            runs=len(group),
            job_keys=[run.job_key for run in group],
        )
        for group in groups
    ]
    return sorted(minima, key=lambda minimum: minimum.cost)


def _cost(run: RunSummary) -> float:
    return float(run.train_cost if run.train_cost is not None else math.inf)


def _same_place(first: RunSummary, other: RunSummary) -> bool:
    a, b = np.asarray(first.theta), np.asarray(other.theta)
    unit = np.asarray(first.theta_unit or np.ones_like(a))
    close = bool(np.all(np.abs(a - b) <= SAME_THETA * unit))
    costs = _cost(first), _cost(other)
    return close and abs(costs[0] - costs[1]) <= 1e3 * SAME_COST * max(abs(costs[0]), 1e-300)


def minima_line(runs: list[RunSummary], minima: list[Minimum]) -> str:
    """``25 runs: 2 minima — global J=0.713494 θ=(106,357, 130.63) from 13 runs; …; 3 on the plateau``."""
    parts = [
        f"{minimum.kind.split()[0]} J={minimum.cost:.6g} θ=({', '.join(_number(v) for v in minimum.theta)}) "
        f"from {minimum.runs} run{'s' if minimum.runs != 1 else ''}"
        for minimum in minima
    ]
    plateau = sum(run.end_point == "plateau" for run in runs)
    other = sum(run.end_point == "none" for run in runs)
    if plateau:
        parts.append(f"{plateau} on the plateau")
    if other:
        parts.append(f"{other} at no minimum (stopped early, diverged or failed)")
    count = f"{len(minima)} minim{'a' if len(minima) != 1 else 'um'}"
    return f"{len(runs)} runs: {count} — " + "; ".join(parts)


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.5g}"
