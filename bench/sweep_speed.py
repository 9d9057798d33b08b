"""How long a 100-run sweep takes, and where the time goes.

Run with ``make bench`` (or ``.venv/bin/python bench/sweep_speed.py``). On a fresh
store in a temporary folder, with the King County training split, it times:

* the sweep of 5 starting θ0 × 5 starting θ1 × 4 learning rates (1,000-iteration
  budget, curves and models logged) with Hydra's basic launcher, with joblib
  (``n_jobs=2``) and with the project's fused launcher (fitted together, recorded in
  a forked worker per core), end to end as a user runs it;
* a per-job breakdown measured in this process: composing a job's config, the fit,
  logging its curve, logging its model, and the sweep's pictures;
* the baseline: the basic launcher's sweep with each run's curves logged as a
  per-step logger logs them, one ``log_metric`` call per metric and step, in place of
  the batched curve logging. A call's time is measured on 5 runs of the longest
  curve's 1,001 steps (it costs milliseconds a call on SQLite) and multiplied by the
  calls the fused sweep's 100 runs make: the two curves a run records (``train_mse``
  and ``optimality_gap``) at each of its iterates, from its ``sweep.json``. Into a
  store as the project makes it (the ratio's baseline), and, for comparison, into one
  as MLflow makes it itself, whose every commit waits for the disk. Beside it, the
  figure as it was first defined (the longest run's ``train_mse`` alone, for every
  run), for comparison with earlier benches;
* growth in runs: the same grid shape at 100 and 1,000 runs (10,000 with ``--huge``),
  a 200-iteration budget, joblib ``n_jobs=2``: seconds per run against the 100-run
  sweep's (goal within 1.3 ×), and the peak anonymous memory of the launching process
  (goal ≤ 1 GB) and of the whole process tree (PSS, ``tools/measure.py``).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

GRID = [
    "model.init.theta0=-500000,-250000,0,250000,500000",
    "model.init.theta1=0,150,300,450,600",
    "optimizer.lr=0.001,0.01,0.1,1.05",
    "optimizer.max_iter=1000",
]
RUNS = 100
BASELINE_RUNS = 5
#: The 100-run sweep's goal on 2 cores (15 s is the least that counts as progress)...
TARGET_SECONDS = 12.0
#: ... and MLflow's time per run, timed alone (90 ms the least that counts).
RUN_LOGGING_GOAL = 0.060
#: How a store MLflow makes itself differs from the project's (``pipeline.tracking``).
MLFLOW_OWN_STORE = "rollback journal, a sync per commit"


def row(label: str, seconds: float, ratio: str) -> None:
    print(f"{label:<58}{seconds:9.3f}  {ratio}", flush=True)


def overrides(folder: Path) -> list[str]:
    return [
        f"paths.root={folder}",
        f"paths.raw_dir={REPO_ROOT / 'data' / 'raw'}",
        f"mlflow.tracking_uri=sqlite:///{folder / 'mlflow.db'}",
        f"hydra.sweep.dir={folder / 'logs'}",
        f"hydra.run.dir={folder / 'logs'}",
    ]


def prepared(folder: Path) -> Path:
    from hydra import compose, initialize_config_dir

    from pipeline import ingest, split

    folder.mkdir(parents=True)
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO_ROOT / "conf")):
        cfg = compose("config", overrides=overrides(folder)[:3])
    ingest.run(cfg)
    split.run(cfg)
    return folder


def sweep_seconds(folder: Path, launcher: list[str]) -> float:
    """A 100-run sweep as a user runs it, into a new store in ``folder``."""
    from tools.workspace import user_env

    command = [sys.executable, "-m", "pipeline.train", "--multirun", *GRID, *launcher, *overrides(folder)]
    start = time.perf_counter()
    # The user's environment: this process's MLFLOW_TRACKING_URI (which MLflow's
    # set_tracking_uri writes) would send every sweep to the breakdown's store.
    done = subprocess.run(command, cwd=REPO_ROOT, env=user_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bench: the sweep failed:\n{done.stderr[-3000:]}")
    return elapsed


def per_step_calls(folder: Path) -> tuple[int, int]:
    """The ``log_metric`` calls a per-step logger makes for the sweep in ``folder`` (each
    run's two curves, ``train_mse`` and ``optimality_gap``, at each of its iterates), and
    the longest run's iterates."""
    runs = json.loads((folder / "reports" / "sweep.json").read_text())["runs"]
    if len(runs) != RUNS:
        sys.exit(f"bench: {folder / 'reports' / 'sweep.json'} holds {len(runs)} runs, not {RUNS}")
    iterates = [run["n_iter"] + 1 for run in runs]
    return 2 * sum(iterates), max(iterates)


def scale_grid(runs: int) -> list[str]:
    """A grid of ``runs`` jobs (100, 1,000 or 10,000): starts × rates, a short budget."""
    starts = {100: (5, 5), 1000: (10, 10), 10000: (10, 100)}[runs]
    rates = "0.001,0.002,0.005,0.01,0.02,0.05,0.1,0.2,0.5,1.05" if runs > 100 else "0.001,0.01,0.1,1.05"
    return [
        f"model.init.theta0=range(-500000,500000,{1_000_000 // starts[0]})",
        f"model.init.theta1=range(0,600,{600 // starts[1]})",
        f"optimizer.lr={rates}",
        "optimizer.max_iter=200",
    ]


#: The sweep's outputs and their size goals at 10,000 runs, MB.
REPORT_GOALS = {
    "sweep.json": 10.0,
    "landscape.html": 20.0,
    "landscape.png": 2.0,
    "valley.png": 2.0,
    "loss_curves.png": 2.0,
}


def scale_rows(root: Path, sizes: list[int]) -> None:
    """Seconds per run and peak memory as the sweep grows, each size on a fresh store."""
    from pipeline.keys import code_digest
    from tools.measure import measured_run

    code = code_digest.__wrapped__()  # read again at the resume: an edit meanwhile voids it

    first = None
    per_run_of: dict[int, float] = {}
    for runs in sizes:
        folder = prepared(root / f"scale{runs}")
        launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
        command = [sys.executable, "-m", "pipeline.train", "--multirun", *scale_grid(runs), *launcher]
        done = measured_run([*command, *overrides(folder)])
        per_run = done.seconds / runs
        first = first or per_run
        per_run_of[runs] = per_run
        row(
            f"sweep of {runs:,} runs (200 iterations, joblib), per run",
            per_run,
            f"{per_run / first:.2f} x the 100-run sweep's (goal <= 1.3); launching process "
            f"{done.own_anonymous:.0f} MB (goal <= 1 GB), tree {done.anonymous:.0f} MB anon.",
        )
        megabytes = {name: (folder / "reports" / name).stat().st_size / 1e6 for name in REPORT_GOALS}
        print(
            "    outputs: "
            + ", ".join(
                f"{name} {size:.1f} MB (goal at 10,000 runs <= {REPORT_GOALS[name]:g})"
                for name, size in megabytes.items()
            ),
            flush=True,
        )
    if 1000 in per_run_of:
        resume_row(root, 1000, per_run_of[1000], code)


def resume_row(root: Path, runs: int, seconds_per_run: float, code: str) -> None:
    """A ``runs``-run sweep killed with SIGKILL (its whole process group, workers too)
    halfway, then run again: how many jobs the second run launched, and whether its
    ``sweep.json`` is the uninterrupted sweep's (``root/scale<runs>``), byte for byte.
    ``code``: the train stage's code digest when the uninterrupted sweep started."""
    import os
    import re
    import signal

    from pipeline.keys import code_digest
    from tools.workspace import user_env

    folder = prepared(root / f"resume{runs}")
    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    command = [sys.executable, "-m", "pipeline.train", "--multirun", *scale_grid(runs), *launcher]
    command += overrides(folder)
    with tempfile.TemporaryFile() as output:
        first = subprocess.Popen(
            command, cwd=REPO_ROOT, env=user_env(), stdout=output, stderr=output, start_new_session=True
        )
        time.sleep(seconds_per_run * runs / 2)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    again = subprocess.run(command, cwd=REPO_ROOT, env=user_env(), capture_output=True, text=True)
    if again.returncode != 0:
        sys.exit(f"bench: the resumed sweep failed:\n{again.stderr[-3000:]}")
    launched = re.search(r"(\d+) jobs to run \(of (\d+)\)", again.stdout + again.stderr)
    resumed, whole = (
        json.loads((path / "reports/sweep.json").read_text()) for path in (folder, root / f"scale{runs}")
    )
    same = (folder / "reports/sweep.json").read_bytes() == (
        root / f"scale{runs}/reports/sweep.json"
    ).read_bytes()
    if launched and int(launched.group(1)) == runs:
        print(
            "    void: the first sweep had ended by the kill (the machine ran faster than during "
            "the uninterrupted sweep), so the second was a new sweep, not a resume",
            flush=True,
        )
    if not same and code_digest.__wrapped__() != code:
        print(
            "    void: the train stage's code was edited while the bench ran (its job keys "
            "hash the code), so the resumed sweep is another sweep; run the bench again",
            flush=True,
        )
    print(
        f"    kill -9 after {seconds_per_run * runs / 2:.0f} s, then again: "
        f"{launched.group(1) if launched else '?'} of {runs:,} jobs ran the second time; "
        f"sweep.json {'equals' if same else 'DIFFERS FROM'} the uninterrupted sweep's"
        + ("" if same else f": {first_difference(resumed, whole)}"),
        flush=True,
    )


def first_difference(resumed: Any, whole: Any, where: str = "") -> str:
    """Where two sweep records first differ, and how (for the bench's report)."""
    if isinstance(resumed, dict) and isinstance(whole, dict):
        # The sweep's key first (all job keys differ where it does: other code or data),
        # then the runs: a run that differs explains the minima that do.
        order = {"sweep_key": 0, "runs": 1}
        for key in sorted(set(resumed) | set(whole), key=lambda name: (order.get(name, 2), name)):
            if resumed.get(key) != whole.get(key):
                return first_difference(resumed.get(key), whole.get(key), f"{where}.{key}")
    if isinstance(resumed, list) and isinstance(whole, list) and len(resumed) == len(whole):
        for index, (left, right) in enumerate(zip(resumed, whole, strict=True)):
            if left != right:
                return first_difference(left, right, f"{where}[{index}]")
    return f"{where or 'the record'}: {str(resumed)[:200]} (resumed) against {str(whole)[:200]}"


def mean_seconds(action: Callable[[], object], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        action()
    return (time.perf_counter() - start) / repeats


def breakdown(folder: Path) -> dict[str, float]:
    """Seconds per job for each part, and for the pictures of the whole sweep."""
    import warnings

    import mlflow
    import pandas as pd
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from pipeline.compose import QuickComposer
    from pipeline.costs import Cost
    from pipeline.optimize import ConvergenceWarning
    from pipeline.outcome import RunSummary
    from pipeline.pictures import sweep_figures
    from pipeline.runlog import (
        CHART_POINTS,
        RunPlace,
        RunRecord,
        curve_csv,
        flat_params,
        log_model,
        plot_indices,
    )
    from pipeline.tracking import (
        context_tags,
        dataset_input,
        log_dataset_input,
        open_store,
        process_tags,
    )
    from pipeline.train import fit_with_settings, read_settings

    jobs = [
        [
            f"model.init.theta0={t0}",
            f"model.init.theta1={t1}",
            f"optimizer.lr={lr}",
            "optimizer.max_iter=1000",
            *overrides(folder)[:3],  # a job's own overrides, as the sweeper hands them: Hydra's
            # load_sweep_config applies the job's overrides, not the master config's
        ]
        for t0 in (-500000, 0, 500000)
        for t1 in (0, 600)
        for lr in (0.001, 0.01, 0.1, 1.05)
    ]
    parts: dict[str, float] = {}
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(REPO_ROOT / "conf")))
    master = loader.load_configuration("train", overrides=overrides(folder)[:3], run_mode=RunMode.MULTIRUN)
    start = time.perf_counter()
    for job in jobs:
        loader.load_sweep_config(master, job)
    parts["compose a job's config, Hydra's way (its launchers' own)"] = (time.perf_counter() - start) / len(
        jobs
    )
    quick = QuickComposer(loader)
    start = time.perf_counter()
    configs = [quick.load_sweep_config(master, job) for job in jobs]
    parts["compose a job's config, the quick way (the project's sweeper)"] = (
        time.perf_counter() - start
    ) / len(jobs)
    table = pd.read_parquet(folder / "data" / "split" / "train.parquet")
    X, y = table[["sqft_living"]].to_numpy(), table["price"].to_numpy()
    settings = [read_settings(cfg) for cfg in configs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        results = [fit_with_settings(X, y, setting, Cost()) for setting in settings]
        parts["fit (1,000-iteration budget)"] = (time.perf_counter() - start) / len(jobs)

    # The store as the project opens it (write-ahead log, syncing at checkpoints).
    uri = f"sqlite:///{folder / 'breakdown.db'}"
    mlflow.set_tracking_uri(uri)
    store = open_store(uri, "bench")
    client, experiment = store.client, store.experiment
    # A store as MLflow makes it itself (rollback journal, syncing every commit): where
    # a user who logs each step with MLflow's defaults records.
    mlflow_own = MlflowClient(f"sqlite:///{folder / 'mlflow-own.db'}")
    mlflow_own_experiment = mlflow_own.create_experiment("bench", artifact_location=(folder / "own").as_uri())
    longest = max(results, key=lambda result: len(result.loss_history))
    curve = [
        Metric("train_mse", float(v), 0, int(s))
        for s, v in zip(longest.history_steps, longest.loss_history, strict=True)
    ]
    shown = plot_indices(len(curve), CHART_POINTS)
    logged = [curve[i] for i in shown] + [
        Metric("optimality_gap", curve[i].value, 0, curve[i].step) for i in shown
    ]
    whole = curve_csv(longest.history_steps, longest.loss_history, "train_mse")

    def place(run: Any) -> RunPlace:
        return RunPlace(client, run.info.run_id, experiment, run.info.artifact_uri)

    def batched() -> None:
        RunRecord(metrics=logged, files={"loss_curve.csv": whole}).send(place(client.create_run(experiment)))

    parts[f"curve logging: {len(logged)} points in one batch, the whole curve ({len(curve)}) as a file"] = (
        mean_seconds(batched, BASELINE_RUNS)
    )

    def per_step(into: MlflowClient, experiment: str) -> None:
        run = into.create_run(experiment)
        for metric in curve:
            into.log_metric(run.info.run_id, metric.key, metric.value, step=metric.step)

    parts[f"one log_metric call (the baseline's unit: {BASELINE_RUNS} runs of {len(curve)} steps)"] = (
        mean_seconds(lambda: per_step(client, experiment), BASELINE_RUNS) / len(curve)
    )
    parts[f"the same into a store MLflow made itself ({MLFLOW_OWN_STORE})"] = mean_seconds(
        lambda: per_step(mlflow_own, mlflow_own_experiment), BASELINE_RUNS
    ) / len(curve)

    def model() -> None:
        with mlflow.start_run(experiment_id=experiment) as run:
            log_model(settings[0].model, results[0].theta, X, place(run))

    model()  # the first finds the template (saved once per machine and kind); the others stamp it
    parts["model logging (pyfunc from code, a stamped copy of one saved model)"] = mean_seconds(
        model, BASELINE_RUNS
    )

    split = {"sqft_living": X[:, 0], "price": y}
    calls: dict[str, list[float]] = {
        name: [] for name in ("create", "model", "batch", "files", "inputs", "end")
    }

    def whole_run() -> None:  # every store call a job makes, as train.run makes them, each timed
        marks = [time.perf_counter()]
        # A fit that takes a moment is made first: its run starts with its outcome (name, tags).
        outcome = {name: "x" for name in ("status", "end_point", "converged", "diverged", "message")}
        run = client.create_run(
            experiment, run_name="converged · x", tags=context_tags() | process_tags() | outcome
        )
        marks.append(time.perf_counter())
        log_model(settings[0].model, results[0].theta, X, place(run))
        marks.append(time.perf_counter())
        record = RunRecord(metrics=logged, params=flat_params(configs[0]))
        record.add_metrics({f"final{i}": float(i) for i in range(16)})
        record.send(place(run))
        marks.append(time.perf_counter())
        RunRecord(files={"loss_curve.csv": whole, "outcome.json": "{}"}).send(place(run))
        marks.append(time.perf_counter())
        inputs = dataset_input(
            split, len(split["price"]), "data/split/train.parquet", "train", "price", "md5", "training"
        )
        log_dataset_input(client, run.info.run_id, inputs)
        marks.append(time.perf_counter())
        client.set_terminated(run.info.run_id, "FINISHED")
        marks.append(time.perf_counter())
        for name, start, end in zip(calls, marks, marks[1:], strict=False):
            calls[name].append(end - start)

    whole_run()  # warm-up
    for values in calls.values():
        values.clear()
    for _ in range(12):
        whole_run()
    for name, values in calls.items():
        parts[f"  one run's MLflow call: {name} (median of 12)"] = statistics.median(values)
    parts["MLflow's calls of one whole run (start, model, record, inputs, end)"] = sum(
        statistics.median(values) for values in calls.values()
    )
    runs = [
        RunSummary(
            job_key=str(i),
            overrides=job,
            run_name=str(i),
            status=result.status,  # type: ignore[arg-type]
            message="",
            lr=float(result.lr),
            theta_init=[float(v) for v in setting.theta_init],
            theta=result.theta.tolist(),
            degree=1,
            optimum_mse=float(min(r.loss_history.min() for r in results)),
            optimum_theta=results[2].theta.tolist(),
            path_steps=result.history_steps[::10].tolist(),
            path_theta=result.theta_history[::10].tolist(),
            path_loss=result.loss_history[::10].tolist(),
        )
        for i, (job, setting, result) in enumerate(zip(jobs, settings, results, strict=True))
    ]
    start = time.perf_counter()
    for figure in sweep_figures(configs[0], runs * 4).values():  # about 100 paths, as the sweep draws
        figure.savefig(folder / "figure.png", dpi=110)
    parts["pictures of the sweep (all three, once per sweep)"] = time.perf_counter() - start
    return parts


def main() -> None:
    import argparse

    import pipeline  # noqa: F401  (the offline defaults of offline.env)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--huge", action="store_true", help="also a 10,000-run sweep (about 20 minutes)")
    huge = parser.parse_args().huge

    print(f"{'measure':<58}{'seconds':>9}  ratio")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        parts = breakdown(prepared(root / "breakdown"))
        for label, seconds in parts.items():
            ratio = "per sweep" if "once per sweep" in label else "per job"
            if "log_metric call" in label or MLFLOW_OWN_STORE in label:
                ratio = "per call"
            if label.startswith("MLflow's calls of one whole run"):
                ratio = (
                    f"per job, {seconds / RUN_LOGGING_GOAL:.2f} of the {1000 * RUN_LOGGING_GOAL:.0f} ms goal"
                )
            row(label, seconds, ratio)
        # Each sweep makes a new store, a copy of the empty-store template that the first
        # store on a machine makes (pipeline.tracking.new_sqlite_store): made here, untimed.
        from pipeline.tracking import new_sqlite_store

        new_sqlite_store(root / "first-store.db")
        basic = sweep_seconds(prepared(root / "basic"), [])
        row(f"sweep of {RUNS} runs, basic launcher", basic, f"{basic / TARGET_SECONDS:.2f} of the 12 s goal")
        joblib = sweep_seconds(
            prepared(root / "joblib"), ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
        )
        row(
            f"sweep of {RUNS} runs, joblib n_jobs=2",
            joblib,
            f"{joblib / TARGET_SECONDS:.2f} of the 12 s goal",
        )
        fused = sweep_seconds(prepared(root / "fused"), ["hydra/launcher=fused"])
        row(f"sweep of {RUNS} runs, fused launcher", fused, f"{fused / TARGET_SECONDS:.2f} of the 12 s goal")
        batched = parts[next(k for k in parts if "in one batch" in k)]
        per_call = parts[next(k for k in parts if "baseline's unit" in k)]
        per_call_own = parts[next(k for k in parts if MLFLOW_OWN_STORE in k)]
        calls, longest = per_step_calls(root / "fused")
        baseline = basic + calls * per_call - RUNS * batched
        row(
            f"baseline: basic sweep, per-step logging ({calls:,} calls at {1000 * per_call:.2f} ms)",
            baseline,
            f"{baseline / basic:.1f} x the basic sweep, {baseline / joblib:.1f} x joblib, "
            f"{baseline / fused:.1f} x fused (goal >= 30)",
        )
        own = basic + calls * per_call_own - RUNS * batched
        row(
            f"the same into a store MLflow made itself ({1000 * per_call_own:.2f} ms a call)",
            own,
            f"{own / fused:.1f} x fused ({MLFLOW_OWN_STORE})",
        )
        first = basic + RUNS * (longest * per_call - batched)
        row(
            f"as first defined: train_mse alone, {longest:,} steps every run",
            first,
            f"{first / fused:.1f} x fused",
        )
        scale_rows(root, [100, 1000, *([10000] if huge else [])])


if __name__ == "__main__":
    main()
