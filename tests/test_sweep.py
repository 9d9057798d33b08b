"""Training sweeps: every run recorded in MLflow, divergence marked, the best one chosen."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib.image
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline import evaluate
from pipeline.keys import job_key
from pipeline.pictures import sweep_page
from pipeline.record import read_sweep_record
from pipeline.tracking import children, logged_model_id, sweep_parents
from tests.helpers import REPO_ROOT, ComposeFn, run_stage, sweep_cfg

START = ["model.init.theta0=0", "model.init.theta1=100"]


def experiment_id(client: MlflowClient) -> str:
    experiment = client.get_experiment_by_name("downhill")
    assert experiment is not None
    return str(experiment.experiment_id)


def children_of(client: MlflowClient, parent_id: str) -> list[mlflow.entities.Run]:
    return children(client, experiment_id(client), parent_id)


def parent_of(client: MlflowClient, record: dict[str, Any]) -> mlflow.entities.Run:
    """The sweep's parent run, found by the sweep key the record holds (it holds no run ids)."""
    found = sweep_parents(client, experiment_id(client), record["sweep_key"])
    assert found, record["sweep_key"]
    return found[0]


def run_ids_by_key(client: MlflowClient, parent_id: str) -> dict[str, str]:
    return {run.data.tags["downhill.job_key"]: run.info.run_id for run in children_of(client, parent_id)}


@pytest.mark.e2e
def test_sweep_with_a_diverging_rate_records_every_run(
    prepared: Path, compose_cfg: ComposeFn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = run_stage("train", prepared, *START, "optimizer.lr=0.001,0.1,1.05", multirun=True)
    assert result.returncode == 0, result.stderr
    record = json.loads((prepared / "reports" / "sweep.json").read_text())
    assert [run["status"] for run in record["runs"]] == ["max_iter", "converged", "diverged"]

    # The record holds keys, never run ids, times or paths (a fresh clone's must match).
    assert "run_id" not in json.dumps(record) and str(prepared) not in json.dumps(record)
    uri = f"sqlite:///{prepared / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    parent = parent_of(client, record)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sweep.optimizer.lr"] == "0.001,0.1,1.05"  # what ran
    assert "optimizer.lr=0.001,0.1,1.05" in parent.data.params["sweep.overrides"]
    ids = run_ids_by_key(client, parent.info.run_id)
    assert set(ids) == {run["job_key"] for run in record["runs"]}
    for summary in record["runs"]:
        child = client.get_run(ids[summary["job_key"]])
        assert child.info.status == "FINISHED"
        assert float(child.data.params["optimizer.lr"]) == summary["lr"]
        assert float(child.data.params["model.init.theta0"]) == 0.0
        assert float(child.data.params["model.init.theta1"]) == 100.0
        assert child.data.tags["status"] == summary["status"]
        assert child.info.run_name == f"{summary['status']} · {summary['run_name']}"  # the table shows it
        # The key the sweep gave the job (worked out once) is the one its settings make.
        alone = sweep_cfg(prepared, *summary["overrides"])
        assert job_key(alone, child.data.tags["train_md5"]) == summary["job_key"]
        assert not [key for key in child.data.metrics if key.startswith("system/")]  # the parent's alone
        assert child.data.tags["diverged"] == str(summary["status"] == "diverged").lower()
        # The whole curve as an artifact, every step; in the charts a few hundred of its
        # points, log-spaced, the first and the last kept.
        whole = pd.read_csv(client.download_artifacts(child.info.run_id, "loss_curve.csv", str(tmp_path)))
        assert whole["step"].tolist() == list(range(summary["n_iter"] + 1))
        assert whole["train_mse"].iloc[-1] == summary["train_mse"]
        history = sorted(client.get_metric_history(child.info.run_id, "train_mse"), key=lambda m: m.step)
        assert 1 < len(history) <= 310 and history[0].step == 0 and history[-1].step == summary["n_iter"]
        assert [m.value for m in history] == whole.set_index("step")["train_mse"][
            [m.step for m in history]
        ].tolist()
        assert child.data.metrics["optimum_mse"] == pytest.approx(summary["optimum_mse"])
        # The gap history for log-scale charts: a few hundred points ending at the final gap.
        gaps = sorted(client.get_metric_history(child.info.run_id, "optimality_gap"), key=lambda m: m.step)
        assert 1 < len(gaps) <= 310
        assert gaps[-1].step == summary["n_iter"]  # a diverged run's too: its final θ's gap
        assert gaps[-1].value == pytest.approx(summary["optimality_gap"], abs=1e-15)
        assert child.data.metrics["log10_lr"] == pytest.approx(math.log10(summary["lr"]))
        assert child.data.metrics["converged"] == float(summary["status"] == "converged")
        # The training split as the run's dataset input (the runs table's Dataset column).
        assert child.inputs is not None
        (train_input,) = child.inputs.dataset_inputs
        assert (
            train_input.dataset.name == "train" and train_input.dataset.digest == child.data.tags["train_md5"]
        )
        assert {tag.key: tag.value for tag in train_input.tags}["mlflow.data.context"] == "training"
        profile = json.loads(train_input.dataset.profile or "{}")
        assert profile["num_rows"] == int(child.data.params["n_train"]) > 17_000

    # The least-squares reference, independently: lstsq on the training split.
    train = pd.read_parquet(prepared / "data" / "split" / "train.parquet")
    design = np.column_stack([np.ones(len(train)), train["sqft_living"]])
    reference = np.linalg.lstsq(design, train["price"].to_numpy(), rcond=None)[0]
    converged = record["runs"][1]
    np.testing.assert_allclose(converged["theta"], reference, rtol=1e-6)
    assert abs(converged["optimality_gap"]) < 1e-12

    # evaluate picks the converged run, not the diverged one, and marks it in MLflow.
    converged_id = ids[converged["job_key"]]
    report = evaluate.run(compose_cfg())
    assert report["run_id"] == converged_id
    chosen_inputs = client.get_run(converged_id).inputs
    assert chosen_inputs is not None
    contexts = {
        item.dataset.name: {tag.key: tag.value for tag in item.tags}["mlflow.data.context"]
        for item in chosen_inputs.dataset_inputs
    }
    assert contexts == {"train": "training", "test": "testing"}
    metrics = json.loads((prepared / "reports" / "metrics.json").read_text())
    assert set(metrics) == {"test_mse", "test_rmse", "test_r2", "test_mae", "test_median_ae", "train_mse"}
    assert metrics["test_rmse"] == pytest.approx(np.sqrt(metrics["test_mse"]))
    best = client.get_run(converged_id)
    assert best.data.tags["best_of_sweep"] == "true"
    assert best.data.metrics["test_mse"] == pytest.approx(metrics["test_mse"])
    assert client.get_run(parent.info.run_id).data.tags["best_run_id"] == converged_id
    chosen = json.loads((prepared / "reports" / "best_run.json").read_text())
    assert chosen["run_id"] == converged_id and chosen["champion"] is True

    # The logged model loads back and predicts θ0 + θ1 x.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # models:/ URIs resolve there
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"models:/{logged_model_id(best)}")
    sqft = pd.DataFrame({"sqft_living": [1500.0, 2500.0]})
    np.testing.assert_allclose(
        model.predict(sqft), converged["theta"][0] + converged["theta"][1] * sqft["sqft_living"], rtol=1e-12
    )
    diverged = client.get_run(ids[record["runs"][2]["job_key"]])
    assert logged_model_id(diverged) is None  # a diverged θ is never a model

    # The sweep's pictures and summary: written under reports/ and logged to the parent.
    for name in ("landscape", "valley", "loss_curves"):
        png = prepared / "reports" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(png).shape[0] > 400
    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id)}
    assert artifacts >= {"landscape.png", "valley.png", "loss_curves.png", "sweep_summary.csv", "sweep.json"}
    summary = pd.read_csv(client.download_artifacts(parent.info.run_id, "sweep_summary.csv", str(prepared)))
    assert summary["status"].tolist() == ["max_iter", "converged", "diverged"]
    assert summary["run_id"].tolist() == [ids[run["job_key"]] for run in record["runs"]]
    curve = pd.read_csv(prepared / "reports" / "best_loss_curve.csv")
    assert curve["step"].tolist() == list(range(converged["n_iter"] + 1))
    # The gap for dvc plots' log axis: from the curve and the least-squares MSE, never below round-off.
    expected = (curve["train_mse"] - converged["optimum_mse"]) / converged["optimum_mse"]
    np.testing.assert_allclose(curve["optimality_gap"], np.maximum(expected, np.finfo(float).eps), rtol=1e-12)
    assert curve["optimality_gap"].iloc[0] > 1e-3 and curve["optimality_gap"].iloc[-1] < 1e-12

    # The champion in the registry, and predictions with it from the command line.
    version = client.get_model_version_by_alias("house-price", "champion")
    assert version.run_id == converged_id and str(version.version) == chosen["model_version"]
    predicted = subprocess.run(
        [sys.executable, "-m", "pipeline.predict", "1500", "--tracking-uri", uri],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert predicted.returncode == 0, predicted.stderr
    expected = converged["theta"][0] + 1500 * converged["theta"][1]
    first, last = predicted.stdout.splitlines()
    assert first == f"sqft_living = 1,500: predicted price {expected:,.2f}"
    assert last.startswith(f"model house-price version {version.version} (run {converged_id})")


@pytest.mark.e2e
def test_an_invalid_job_fails_clearly_while_the_sweep_completes(prepared: Path) -> None:
    result = run_stage("train", prepared, *START, "optimizer.lr=0.1,-1", multirun=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: 1 of 2 runs failed") and "optimizer.lr: expected a number > 0, got -1" in last
    )
    record = json.loads((prepared / "reports" / "sweep.json").read_text())
    assert [run["status"] for run in record["runs"]] == ["converged", "failed"]
    client = MlflowClient(tracking_uri=f"sqlite:///{prepared / 'mlflow.db'}")
    parent = parent_of(client, record)
    statuses = sorted(run.info.status for run in children_of(client, parent.info.run_id))
    assert statuses == ["FAILED", "FINISHED"]
    assert parent.info.status == "FAILED"  # so that the same sweep, run again, resumes it


@pytest.mark.e2e
def test_a_single_run_is_recorded_in_mlflow_and_leaves_the_sweeps_outputs_alone(prepared: Path) -> None:
    reports = prepared / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "sweep.json").write_text("the sweep's record\n")
    result = run_stage("train", prepared, "data=kc_house")
    assert result.returncode == 0, result.stderr
    assert (reports / "sweep.json").read_text() == "the sweep's record\n"
    assert sorted(path.name for path in reports.iterdir()) == ["ingest.json", "sweep.json"]
    client = MlflowClient(tracking_uri=f"sqlite:///{prepared / 'mlflow.db'}")
    (only,) = client.search_runs([experiment_id(client)])
    assert only.data.tags["status"] == "converged" and only.data.params["optimizer.lr"] == "0.1"
    outcome = json.loads(
        Path(client.download_artifacts(only.info.run_id, "outcome.json", str(prepared))).read_text()
    )
    assert outcome["theta_init"] == [0.0, 100.0]
    link = f"http://127.0.0.1:5000/#/experiments/{only.info.experiment_id}/runs/{only.info.run_id}"
    assert f"{link}?workflowType=machine_learning" in result.stdout


@pytest.mark.e2e
def test_basic_joblib_and_fused_launchers_give_the_same_sweep_bit_for_bit(tmp_path: Path) -> None:
    """The default sweep, in this process, in two joblib workers (handed 5 jobs at a
    time), and fitted together (the fused launcher): the same record, θ and best run."""
    from tests.helpers import prepare_data

    records, pages = [], []
    launchers: tuple[tuple[str, list[str]], ...] = (
        ("basic", []),
        ("joblib", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.max_batch_size=5"]),
        ("fused", ["hydra/launcher=fused", "hydra.launcher.n_jobs=2"]),
    )
    for name, launcher in launchers:
        folder = prepare_data(tmp_path / name)
        result = run_stage("train", folder, *launcher, multirun=True)
        assert result.returncode == 0, result.stderr
        if name == "fused":  # fitted ahead, recorded in two forked workers, every fit taken by its job
            assert "fused: 16 of 16 runs fitted together in 1 group(s)" in result.stdout
            assert "fused: recording 16 runs in 2 processes" in result.stdout
            assert "were not taken" not in result.stdout + result.stderr and "Traceback" not in result.stderr
            for number in range(16):  # each job's own log and the overrides that make it again
                job = folder / "logs" / "sweep" / str(number)
                assert "gd lr=" in (job / "train.log").read_text()
                assert (job / ".hydra" / "overrides.yaml").read_text().startswith("- model.init.theta0=")
        if name == "joblib":  # four launches, each job numbered as in one
            numbered = {path.name for path in (folder / "logs" / "sweep").iterdir() if path.is_dir()}
            assert numbered == {str(number) for number in range(16)}
            assert result.stdout.count("is launching 5 jobs") == 3
        records.append((folder / "reports" / "sweep.json").read_text())
        client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
        parent = parent_of(client, json.loads(records[-1]))
        assert parent.info.status == "FINISHED" and len(children_of(client, parent.info.run_id)) == 16
        # The pictures and the page were drawn while the runs were recorded, then moved
        # into place: no scratch file is left beside them.
        assert "drawn while the runs were recorded" in result.stdout
        assert not [path.name for path in (folder / "reports").iterdir() if ".ahead-" in path.name]
        pages.append((folder / "reports" / "landscape.html").read_text())
    assert records[0] == records[1] == records[2]  # every θ, loss and path identical, to the last bit
    assert len(json.loads(records[0])["runs"]) == 16
    # What was drawn ahead is what the runs read back draw: the page made here from the record.
    _, runs = read_sweep_record(folder / "reports" / "sweep.json")
    assert pages[0] == pages[1] == pages[2] == sweep_page(sweep_cfg(folder), runs)


def test_pictures_drawn_ahead_go_into_place_for_the_runs_they_were_drawn_from_alone(
    prepared: Path, compose_cfg: ComposeFn
) -> None:
    """:func:`pipeline.train.expected_outcomes` knows each job's outcome before it runs (a
    converged run at numpy's least squares), or says None (a robust cost, a wrong
    setting). The sweep's copy draws the pictures and the page of those beside their
    paths; they go into place for those runs alone, and what was not moved is removed.
    Scratch files of a process that is gone are removed, those of a live one kept."""
    from pipeline.columns import training_split
    from pipeline.outcome import RunSummary
    from pipeline.pictures import DRAWN, discard_drawn, draw_ahead, publish_drawn, scratch_path
    from pipeline.train import expected_outcomes

    configs = [compose_cfg(f"optimizer.lr={lr}", config_name="train") for lr in (0.1, 1.5)]
    split = training_split(configs[0])
    keys = [job_key(cfg, split.md5) for cfg in configs]
    runs = expected_outcomes(configs, keys, {})
    assert runs is not None and [run.status for run in runs] == ["converged", "diverged"]
    assert [run.job_key for run in runs] == keys
    design = np.column_stack([np.ones(len(split.columns.y)), split.columns.X[:, 0]])
    least_squares = np.linalg.lstsq(design, split.columns.y, rcond=None)[0]
    np.testing.assert_allclose(np.asarray(runs[0].theta, dtype=float), least_squares, rtol=1e-6)
    for wrong in ("model.loss=huber", "optimizer.lr=-1"):
        assert expected_outcomes([compose_cfg(wrong, config_name="train")], keys[:1], {}) is None

    config = compose_cfg(config_name="train")
    reports = prepared / "reports"
    ended = subprocess.Popen(["true"])
    ended.wait()
    stale, kept = scratch_path(reports / "landscape.png", ended.pid), scratch_path(reports / "valley.png", 1)
    stale.write_text("drawn ahead by a sweep that was killed")
    kept.write_text("drawn ahead by a sweep under way")
    drawn = draw_ahead(config, runs, os.getpid())
    assert not stale.exists() and kept.exists() and list(drawn.files) == list(DRAWN)

    def scratch() -> list[str]:
        return sorted(path.name for path in reports.iterdir() if ".ahead-" in path.name)

    assert publish_drawn(config, drawn, runs[:1]) is None  # other runs read back: nothing moved
    assert not (reports / "landscape.png").exists() and len(scratch()) == len(DRAWN) + 1
    discard_drawn(config, os.getpid())
    assert scratch() == [kept.name]
    drawn = draw_ahead(config, runs, os.getpid())
    written = publish_drawn(config, drawn, runs)
    assert written == [
        reports / name for name in ("landscape.png", "valley.png", "loss_curves.png", "landscape.html")
    ]
    assert scratch() == [kept.name] and all(path.stat().st_size > 0 for path in written)
    read_back = [RunSummary.from_json(json.loads(json.dumps(run.to_json()))) for run in runs]
    assert (reports / "landscape.html").read_text() == sweep_page(config, read_back)


@pytest.mark.slow  # robust fits are checked bit for bit in the default tier (tests/test_passes.py)
def test_a_fused_robust_sweep_is_the_basic_launchers_sweep(tmp_path: Path) -> None:
    """Huber runs advanced together (one pass over the rows per round for all eight):
    the same record, to the last bit, as the runs made one at a time."""
    from tests.helpers import prepare_data

    grid = ["model.loss=huber", "model.loss_scale=150000", "model.init.theta1=0,600", "optimizer.lr=0.1,0.9"]
    records = []
    for name, launcher in (("basic", []), ("fused", ["hydra/launcher=fused"])):
        folder = prepare_data(tmp_path / name)
        result = run_stage("train", folder, *grid, "optimizer.max_iter=300", *launcher, multirun=True)
        assert result.returncode == 0, result.stderr
        records.append((folder / "reports" / "sweep.json").read_text())
    assert "fused: 8 of 8 runs fitted together in 1 group(s)" in result.stdout
    assert records[0] == records[1]
    assert {run["loss"] for run in json.loads(records[0])["runs"]} == {"huber"}


@pytest.mark.e2e  # starts joblib's worker processes
def test_joblibs_workers_start_while_the_sweep_is_planned_and_run_its_jobs() -> None:
    """The workers warmed up (imports done) are the ones the launcher's own call then uses."""
    import os

    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
    from joblib import Parallel, delayed

    from pipeline import train
    from pipeline.sweep import WorkerWarmUp
    from tests.helpers import process_id_after

    settings: dict[str, Any] = {"n_jobs": 2, "backend": None, "pre_dispatch": "2*n_jobs"}
    launcher = JoblibLauncher(**settings)
    launcher.task_function = train.main
    warm_up = WorkerWarmUp(launcher, 6)
    assert warm_up.task_module == "pipeline.train"
    warm_up.start()
    warm_up.join()
    assert len(warm_up.workers) == 2 and os.getpid() not in warm_up.workers
    settings["backend"] = "loky"  # as the launcher sets it
    process_joblib_cfg(settings)
    assert set(Parallel(**settings)(delayed(process_id_after)(0.2) for _ in range(6))) <= warm_up.workers
    WorkerWarmUp(object(), 6).join()  # another launcher: nothing to do


@pytest.mark.e2e  # starts joblib's worker processes
@pytest.mark.parametrize(("n_jobs", "jobs", "workers"), [(16, 4, 4), (2, 4, 2), (-1, 1, 1), (-100, 4, 1)])
def test_joblib_starts_at_most_a_worker_per_job(n_jobs: int, jobs: int, workers: int) -> None:
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

    from pipeline.sweep import WorkerWarmUp

    launcher = JoblibLauncher(n_jobs=n_jobs, backend=None)
    warm_up = WorkerWarmUp(launcher, jobs)
    assert warm_up.count == workers and launcher.joblib["n_jobs"] == workers  # the launcher's too
    warm_up.start()  # one worker is this process: nothing to warm up, no thread importing beside it
    assert warm_up.thread.is_alive() == (workers > 1)
    warm_up.join()


def test_joblib_with_no_workers_is_refused_in_one_line() -> None:
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

    from pipeline.errors import PipelineError
    from pipeline.sweep import WorkerWarmUp

    with pytest.raises(
        PipelineError, match=r"^hydra.launcher.n_jobs: expected a whole number of workers other than 0"
    ):
        WorkerWarmUp(JoblibLauncher(n_jobs=0, backend=None), 4)


@pytest.mark.e2e
def test_a_joblib_sweep_with_one_worker_runs(prepared: Path) -> None:
    """It failed 3 of 3 times: a warm-up thread imported MLflow beside the main thread."""
    result = run_stage(
        "train",
        prepared,
        *START,
        "optimizer.lr=0.01,0.1",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=1",
        multirun=True,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads((prepared / "reports" / "sweep.json").read_text())
    assert [run["status"] for run in record["runs"]] == ["converged", "converged"]


@pytest.mark.e2e
def test_the_page_drawn_by_a_forked_copy_is_the_page(prepared: Path) -> None:
    """The page is drawn beside the pictures by a forked copy of the process; where the
    copy fails, the process draws it itself: the same bytes either way. In a fresh
    interpreter: once numba's parallel passes ran in a process (an earlier test here),
    it no longer forks (GNU OpenMP aborts the copy) and draws the page itself."""
    probe = "from pathlib import Path; from tests.helpers import page_drawn_by_a_fork as check; "
    probe += f"check(Path({str(prepared)!r}))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.e2e
def test_an_empty_sweep_fails_and_keeps_the_previous_record(prepared: Path) -> None:
    first = run_stage("train", prepared, *START, "optimizer.lr=0.1", multirun=True)
    assert first.returncode == 0, first.stderr
    before = (prepared / "reports" / "sweep.json").read_bytes()
    result = run_stage("train", prepared, "optimizer.lr=range(1,1)", multirun=True)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the sweep has no jobs") and "Traceback" not in result.stderr
    assert (prepared / "reports" / "sweep.json").read_bytes() == before


@pytest.mark.e2e
def test_a_failure_while_finishing_the_sweep_exits_non_zero(prepared: Path) -> None:
    blocker = prepared / "not_a_folder"
    blocker.write_text("a file where the sweep record's folder should be")
    result = run_stage(
        "train", prepared, *START, "optimizer.lr=0.1", f"paths.sweep={blocker}/sweep.json", multirun=True
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: finishing the sweep:") and "Traceback" not in result.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{prepared / 'mlflow.db'}")
    parents = [
        run
        for run in client.search_runs([experiment_id(client)])
        if run.data.tags.get("downhill.role") == "sweep"
    ]
    assert [run.info.status for run in parents] == ["FAILED"]


def test_runs_inside_dvc_exp_run_name_the_experiment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.tracking import process_tags

    monkeypatch.setenv("DVC_EXP_NAME", "salty-fish")  # what dvc exp run sets for its stages
    assert process_tags()["dvc.experiment"] == "salty-fish"
    monkeypatch.delenv("DVC_EXP_NAME")
    assert "dvc.experiment" not in process_tags()


@pytest.mark.e2e
def test_the_launching_process_reads_the_sweeps_progress_from_the_store(
    prepared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from pipeline import progress

    result = run_stage("train", prepared, *START, "optimizer.lr=0.1,1.05", multirun=True)
    assert result.returncode == 0, result.stderr
    record = json.loads((prepared / "reports" / "sweep.json").read_text())
    client = MlflowClient(tracking_uri=f"sqlite:///{prepared / 'mlflow.db'}")
    parent = parent_of(client, record)
    converged = record["runs"][0]
    reading = progress.SweepProgress(client, parent.info.experiment_id, parent.info.run_id, 3)
    line = reading()
    assert line == f"2 of 3 done, best so far {converged['train_mse']:.6g}"  # the diverged run is not "best"
    assert reading() == line  # read again: the runs seen before are not counted twice

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(progress, "WATCH_SECONDS", 0.01)
    terminal = Terminal()
    with progress.SweepWatch(client, parent.info.experiment_id, parent.info.run_id, 3, terminal):
        time.sleep(0.5)
    assert f"\r{line}\x1b[K" in terminal.getvalue() and terminal.getvalue().endswith("\r\x1b[K")


@pytest.mark.parametrize(
    ("choice", "in_process", "warm_up", "remote"),
    [
        ("basic", True, False, None),
        ("joblib", False, True, None),
        ("submitit_local", False, False, None),
        ("submitit_slurm", False, False, "hydra/launcher=submitit_slurm"),
    ],
)
def test_the_launcher_table_knows_hydras_launchers(
    compose_cfg: ComposeFn, choice: str, in_process: bool, warm_up: bool, remote: str | None
) -> None:
    """Each launcher as Hydra composes it (its ``_target_``), found in the one table."""
    from hydra import compose, initialize_config_dir

    from pipeline.launchers import LAUNCHERS, launcher_of
    from tests.helpers import CONF_DIR

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        config = compose("train", overrides=[f"hydra/launcher={choice}"], return_hydra_config=True)
    assert config.hydra.launcher._target_ in LAUNCHERS
    launcher = launcher_of(config)
    assert (launcher.name, launcher.in_process, launcher.warm_up) == (choice, in_process, warm_up)
    assert launcher.remote(config) == remote


@pytest.mark.parametrize("lr", [0.5, 1.5])  # one step to the optimum; past the stability limit
def test_a_runs_final_metrics_compare_well_in_mlflow(prepared: Path, lr: float) -> None:
    from pipeline import train
    from pipeline.outcome import relative_gap
    from tests.helpers import project_cfg

    summary = train.run(project_cfg(prepared, "train", f"optimizer.lr={lr}"))
    client = MlflowClient(tracking_uri=f"sqlite:///{prepared / 'mlflow.db'}")
    (run,) = client.search_runs([experiment_id(client)])
    metrics, tags = run.data.metrics, run.data.tags
    assert summary.optimum_mse is not None and summary.train_mse is not None
    final_gap = relative_gap(summary.train_mse, summary.optimum_mse)
    # The last point of the gap's curve is that of the run's train_mse, diverged or not.
    assert metrics["optimality_gap"] == pytest.approx(final_gap, rel=1e-12)
    assert metrics["train_mse"] == pytest.approx(summary.train_mse, rel=1e-12)
    floor = np.finfo(np.float64).eps
    assert metrics["log10_optimality_gap"] == pytest.approx(math.log10(max(final_gap, floor)), rel=1e-12)
    assert (tags.get("gap_clamped") == "true") is bool(final_gap < floor)
    assert metrics["outcome"] == {"converged": 0, "diverged": 3}[summary.status]
    assert summary.status == ("converged" if lr == 0.5 else "diverged")
    assert not {"theta", "features", "degree", "positive"} & set(run.data.params)  # no model config


def test_a_job_takes_the_key_its_sweep_worked_out_for_the_split_it_planned(prepared: Path) -> None:
    from pipeline import train
    from pipeline.columns import training_split
    from tests.helpers import project_cfg

    md5 = training_split(project_cfg(prepared, "train")).md5
    made = job_key(project_cfg(prepared, "train"), md5)
    given = project_cfg(prepared, "train", "mlflow.job_key=given", f"mlflow.train_md5={md5}")
    assert train.key_of(given, md5) == train.read_job(given).key == "given"
    # Given for another split, or with none planned, the key is made from the settings.
    assert train.key_of(given, "another split") == job_key(given, "another split")
    assert train.key_of(project_cfg(prepared, "train", "mlflow.job_key=given"), md5) == made


def test_a_fit_of_a_moment_is_made_before_its_run_which_starts_with_its_outcome(
    prepared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fit that takes a moment (the MSE on the rows' statistics, a budget within
    MOMENT_BUDGET) is made first: its run is created with its outcome in its name and
    tags. A fit that may be long (a larger budget, SGD's epochs) is
    made inside a run created with the plain name, which gains the outcome once known."""
    from pipeline import train
    from pipeline.columns import training_split
    from tests.helpers import project_cfg

    created: list[tuple[str, dict[str, str]]] = []
    create_run = MlflowClient.create_run

    def recording_create_run(self: MlflowClient, *args: Any, **kwargs: Any) -> Any:
        created.append((kwargs["run_name"], dict(kwargs["tags"])))
        return create_run(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "create_run", recording_create_run)
    client = MlflowClient(tracking_uri=f"sqlite:///{prepared / 'mlflow.db'}")
    outcome_keys = ("status", "end_point", "converged", "diverged", "message")
    cases = [
        ("optimizer.lr=0.5",),  # one step to the optimum
        ("optimizer.lr=0.5", f"optimizer.max_iter={train.MOMENT_BUDGET + 1}"),
        ("optimizer=sgd", "optimizer.lr=0.05"),
    ]
    for case, overrides in enumerate(cases):
        cfg = project_cfg(prepared, "train", *overrides)
        summary = train.run(cfg)
        name, tags = created[case]
        (run,) = client.search_runs([experiment_id(client)], f"tags.`downhill.job_key` = '{summary.job_key}'")
        assert run.info.run_name == f"{summary.status} · {train.run_name(cfg)}"
        assert run.data.tags["status"] == summary.status and run.data.tags["message"] == summary.message
        if case == 0:
            assert name == run.info.run_name
            assert {key: tags[key] for key in outcome_keys} == {
                key: run.data.tags[key] for key in outcome_keys
            }
        else:
            assert name == train.run_name(cfg) and not set(outcome_keys) & set(tags)
    # What it was created with is the fit's, at numpy's least squares; none where the fit
    # may be long or its settings are wrong (that run fails inside, saying why).
    cfg = project_cfg(prepared, "train", "optimizer.lr=0.5")
    first = train.fitted_first(cfg, train.read_job(cfg))
    assert first is not None and first[1].status == "converged"
    split = training_split(cfg)
    design = np.column_stack([np.ones(len(split.columns.y)), split.columns.X[:, 0]])
    least_squares = np.linalg.lstsq(design, split.columns.y, rcond=None)[0]
    np.testing.assert_allclose(np.asarray(first[1].theta, dtype=float), least_squares, rtol=1e-6)
    for long_or_wrong in (
        "model.loss=huber",
        "optimizer.lr=-1",
        f"optimizer.max_iter={train.MOMENT_BUDGET + 1}",
    ):
        cfg = project_cfg(prepared, "train", long_or_wrong)
        assert train.fitted_first(cfg, train.read_job(cfg)) is None


@pytest.mark.e2e
def test_the_machines_load_is_recorded_on_the_sweeps_parent_alone(prepared: Path) -> None:
    # One run long enough (a few seconds) for the monitor's samples, every 2 s.
    result = run_stage(
        "train", prepared, *START, "optimizer.lr=1e-9", "optimizer.max_iter=250000", multirun=True
    )
    assert result.returncode == 0, result.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{prepared / 'mlflow.db'}")
    parent = parent_of(client, json.loads((prepared / "reports" / "sweep.json").read_text()))
    assert "system/cpu_utilization_percentage" in parent.data.metrics
    assert "system/system_memory_usage_megabytes" in parent.data.metrics
    (child,) = children_of(client, parent.info.run_id)
    assert not [key for key in child.data.metrics if key.startswith("system/")]
    assert "system metrics" not in result.stderr.lower()  # the monitor starts and stops quietly
