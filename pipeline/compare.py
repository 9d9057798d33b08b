"""Compare runs: ``python -m pipeline.compare RUN_A RUN_B`` or ``--sweep PARENT``.

MLflow's own compare view has no "show only differences" switch (MLflow issue 10477).
This prints only the settings that differ, the data hashes, the code commits and the
metric deltas of two runs (run ids or run names), and writes a PNG with both curves of
the optimality gap; ``--sweep`` does the same across a sweep's children, grouped by
outcome. It reads the store and writes only the picture.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError, exit_on_error, first_line
from pipeline.files import output_file
from pipeline.settings import CONF_DIR

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

#: Tags that say where a run's data and code came from.
PROVENANCE = ("data_md5", "train_md5", "git_commit", "downhill.job_key")
#: Final metrics worth a delta (the histories are drawn, not printed).
METRICS = (
    "train_mse",
    "optimality_gap",
    "n_iter",
    "theta0",
    "theta1",
    "test_mse",
    "test_rmse",
    "test_r2",
    "converged",
    "diverged",
)


def settings_of(run: Run) -> dict[str, str]:
    """A run's settings: the config keys it logged (MLflow also logs each model's
    config as params, ``theta`` among them; those are results, not settings)."""
    return {key: value for key, value in run.data.params.items() if "." in key and "/" not in key}


def differing(settings: Sequence[Mapping[str, str]]) -> dict[str, list[str | None]]:
    """The keys whose values are not the same in every mapping, with each one's value (or None)."""
    keys = sorted(set().union(*settings))
    values = {key: [mapping.get(key) for mapping in settings] for key in keys}
    return {key: found for key, found in values.items() if len(set(found)) > 1}


def metric_deltas(a: Mapping[str, float], b: Mapping[str, float]) -> list[tuple[str, float, float, float]]:
    """(metric, a, b, b − a) for the final metrics both runs have."""
    return [(name, a[name], b[name], b[name] - a[name]) for name in METRICS if name in a and name in b]


def _number(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else str(value)


def find_run(client: MlflowClient, experiment_id: str, ref: str) -> Run:
    """A run by its id, or by its name with or without its outcome (the newest of that name):
    ``converged · gd lr=0.1 θ0=0 θ1=100``, or its settings part alone."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(ref)
    except MlflowException:
        pass
    escaped = ref.replace("'", "\\'")
    found: list[Run] = []
    # As named, or as train names it once the outcome is known: "converged · <name>"
    # (before December 2026: "<name> · converged").
    for condition in (f"= '{escaped}'", f"LIKE '% · {escaped}'", f"LIKE '{escaped} · %'"):
        found = list(
            client.search_runs(
                [experiment_id],
                filter_string=f"attributes.run_name {condition}",
                order_by=["attributes.start_time DESC"],
                max_results=1000,
            )
        )
        if found:
            break
    if not found:
        raise PipelineError(f"no run with id or name {ref!r} in this experiment")
    if len(found) > 1:  # the same settings in several sweeps: say which one is compared
        others = ", ".join(run.info.run_id for run in found[1:6]) + (", …" if len(found) > 6 else "")
        print(
            f"note: {len(found)} runs are named {ref!r}; comparing the newest, {found[0].info.run_id} "
            f"({found[0].info.run_name}); give a run id for another: {others}",
            file=sys.stderr,
        )
    return found[0]


def gap_figure(curves: Sequence[tuple[str, Sequence[tuple[int, float]], str]], title: str) -> Figure:
    """Optimality gap per iteration, log scale: one (label, [(step, gap)], colour) per run."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 6), layout="constrained")
    axes = figure.add_subplot()
    for label, points, colour in curves:
        shown = [(step, gap) for step, gap in points if gap > 0]  # a log scale has no 0
        if shown:
            axes.plot(*zip(*shown, strict=True), label=label, color=colour, lw=1.6)
    axes.set_xscale("symlog", linthresh=10)
    axes.set_yscale("log")
    axes.axhline(1e-16, color="grey", lw=0.8, ls=":", label="float64 round-off")
    axes.set_xlabel("iteration")
    axes.set_ylabel("optimality gap (training MSE − minimum) / minimum")
    axes.set_title(title)
    # Beside the curves, never over them: at slide size a legend inside hides the ends.
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return figure


def gap_history(client: MlflowClient, run: Run) -> list[tuple[int, float]]:
    history = client.get_metric_history(run.info.run_id, "optimality_gap")
    return sorted((metric.step, metric.value) for metric in history)


def compare_two(client: MlflowClient, a: Run, b: Run) -> tuple[list[str], Figure]:
    """The report's lines and the picture for two runs."""
    names = [a.info.run_name or a.info.run_id, b.info.run_name or b.info.run_id]
    lines = [
        f"A: {names[0]} ({a.info.run_id}, {a.info.status})",
        f"B: {names[1]} ({b.info.run_id}, {b.info.status})",
    ]
    changed = differing([settings_of(a), settings_of(b)])
    lines.append(
        f"settings that differ ({len(changed)} of {len(set(settings_of(a)) | set(settings_of(b)))}):"
    )
    lines += [f"  {key}: {first} → {second}" for key, (first, second) in changed.items()] or ["  none"]
    lines.append("data and code:")
    for tag in PROVENANCE:
        first, second = a.data.tags.get(tag, "-"), b.data.tags.get(tag, "-")
        lines.append(f"  {tag}: {first}" + ("  (same)" if first == second else f" → {second}"))
    lines.append("metrics (A, B, B − A):")
    for name, first_value, second_value, delta in metric_deltas(a.data.metrics, b.data.metrics):
        lines.append(f"  {name}: {_number(first_value)}, {_number(second_value)}, {_number(delta)}")
    curves = [
        (f"A: {names[0]}", gap_history(client, a), "tab:blue"),
        (f"B: {names[1]}", gap_history(client, b), "tab:red"),
    ]
    return lines, gap_figure(curves, "Optimality gap of two runs")


def compare_sweep(client: MlflowClient, experiment_id: str, parent: Run) -> tuple[list[str], Figure]:
    """The report's lines and the picture for a sweep's children, grouped by outcome."""
    from pipeline.tracking import children

    runs = sorted(children(client, experiment_id, parent.info.run_id), key=lambda run: run.info.start_time)
    if not runs:
        raise PipelineError(f"run {parent.info.run_id} has no child runs: is it a sweep's parent?")
    varying = differing([settings_of(run) for run in runs])
    lines = [f"sweep {parent.info.run_name} ({parent.info.run_id}): {len(runs)} runs"]
    lines.append("settings that vary: " + (", ".join(varying) or "none"))
    colours = {"converged": "tab:green", "max_iter": "tab:orange", "oscillating": "tab:purple"}
    curves = []
    by_status: dict[str, list[Run]] = {}
    for run in runs:
        by_status.setdefault(run.data.tags.get("status", run.info.status.lower()), []).append(run)
    for status, group in sorted(by_status.items()):
        lines.append(f"{status} ({len(group)}):")
        for run in group:
            settings = ", ".join(f"{key}={settings_of(run).get(key)}" for key in varying)
            mse = run.data.metrics.get("train_mse", math.nan)
            gap = run.data.metrics.get("optimality_gap", math.nan)
            lines.append(f"  {settings}: train MSE {_number(mse)}, gap {_number(gap)}")
            curves.append((f"{status}: {settings}", gap_history(client, run), colours.get(status, "tab:red")))
    return lines, gap_figure(curves, f"Optimality gap of every run of {parent.info.run_name}")


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="two run ids or names")
    parser.add_argument("--sweep", help="a sweep's parent run (id or name): compare its children")
    parser.add_argument("--out", type=Path, help="the picture (default: logs/compare.png in the project)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: as the pipeline's)")
    options = parser.parse_args(argv)
    if bool(options.sweep) == (len(options.runs) == 2) or (options.runs and len(options.runs) != 2):
        parser.error("give two runs, or --sweep PARENT")
    options.out = output_file(
        options.out or CONF_DIR.parent / "logs" / "compare.png", "--out", CONF_DIR.parent
    )
    return options


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    from functools import partial

    from hydra import compose, initialize_config_dir
    from mlflow.exceptions import MlflowException

    from pipeline.files import write_atomic
    from pipeline.tracking import open_store, redact, tracking_uri

    options = arguments(argv)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="config")
    uri = tracking_uri(cfg.mlflow.tracking_uri, options.tracking_uri)
    store = open_store(uri, str(cfg.mlflow.experiment), create=False)
    client, experiment_id = store.client, store.experiment
    try:
        if options.sweep:
            lines, figure = compare_sweep(
                client, experiment_id, find_run(client, experiment_id, options.sweep)
            )
        else:
            a, b = (find_run(client, experiment_id, ref) for ref in options.runs)
            lines, figure = compare_two(client, a, b)
    except MlflowException as error:
        raise PipelineError(f"MLflow store {redact(uri)}: {first_line(error)}") from None
    write_atomic(options.out, partial(figure.savefig, format="png", dpi=110))
    print("\n".join([*lines, f"picture: {options.out}"]))


if __name__ == "__main__":
    main()
