"""Faults: bad settings, numerical extremes, signals, kill -9, concurrent sweeps, repeatability."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from pipeline import ingest, split, train
from pipeline.errors import PipelineError
from pipeline.settings import override_problem
from tests.helpers import (
    REPO_ROOT,
    ComposeFn,
    assert_one_line_error,
    isolating_overrides,
    run_stage,
    user_env,
)

START = ["model.init.theta0=0", "model.init.theta1=100"]


def store(tmp_path: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def train_runs(client: MlflowClient) -> list[Run]:
    experiment = client.get_experiment_by_name("downhill")
    return [] if experiment is None else client.search_runs([experiment.experiment_id], max_results=1000)


@pytest.mark.parametrize(
    ("config_name", "argument", "message"),
    [
        ("train", "optimizer.lrr=0.1", "unknown setting 'optimizer.lrr'; did you mean 'optimizer.lr'?"),
        (
            "train",
            "data=kc_hous",
            "data=kc_hous: no such data config; the choices are: kc_house, seed_example",
        ),
        ("config", "data.featurs=[sqft]", "unknown setting 'data.featurs'; did you mean 'data.features'?"),
        (
            "train",
            "optimizer=adamw",
            "optimizer=adamw: no such optimizer config; the choices are: adam, backtracking",
        ),
    ],
)
def test_command_line_typos_are_named(config_name: str, argument: str, message: str) -> None:
    problem = override_problem([argument], config_name)
    assert problem is not None and problem.startswith(message)


@pytest.mark.parametrize(
    ("stage", "argument", "message"),
    [
        ("split", "split.test_fraction=1.5", "split.test_fraction: expected a number > 0 and < 1, got 1.5"),
        ("split", "split.seed=abc", "split.seed: expected a whole number, got 'abc'"),
        ("train", "optimizer.lr=fast", "optimizer.lr: expected a number > 0 or 'auto', got 'fast'"),
        (
            "train",
            "optimizer.name=adamw",
            "optimizer.name: expected one of gd, momentum, nesterov, adam, backtracking, sgd; "
            "got 'adamw'; did you mean 'adam'?",
        ),
        ("train", "model.degree=11", "model.degree: expected a whole number from 1 to 10, got 11"),
    ],
)
def test_bad_values_are_named(
    prepared: Path, compose_cfg: ComposeFn, stage: str, argument: str, message: str
) -> None:
    with pytest.raises(PipelineError) as raised:
        if stage == "split":
            split.run(compose_cfg(argument))
        else:
            train.read_settings(compose_cfg(argument, config_name="train"))
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("module", "argument", "message"),
    [
        ("train", "optimizer.lrr=0.1", "unknown setting 'optimizer.lrr'; did you mean 'optimizer.lr'?"),
        ("split", "split.test_fraction=1.5", "split.test_fraction: expected a number > 0 and < 1, got 1.5"),
    ],
)
def test_setting_mistakes_end_in_one_line(prepared: Path, module: str, argument: str, message: str) -> None:
    """As a user sees them: exit status 2, one line, no traceback (the rest are checked in-process)."""
    result = run_stage(module, prepared, argument)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, message)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=0", "optimizer.lr: expected a number > 0, got 0"),
        ("optimizer.lr=-0.5", "optimizer.lr: expected a number > 0, got -0.5"),
        ("optimizer.lr=nan", "optimizer.lr: expected a finite number, got nan"),
        ("optimizer.lr=inf", "optimizer.lr: expected a finite number, got inf"),
        ("optimizer.max_iter=0", "optimizer.max_iter: expected a whole number >= 1, got 0"),
        ("optimizer.max_iter=2.5", "optimizer.max_iter: expected a finite whole number, got 2.5"),
        ("optimizer.tol=-1", "optimizer.tol: expected a number >= 0, got -1"),
        ("optimizer.divergence_ratio=1", "optimizer.divergence_ratio: expected a number > 1, got 1"),
        ("model.init.theta0=null", "model.init.theta0: missing"),
        ("model.init.theta1=true", "model.init.theta1: expected a number, got True"),
    ],
)
def test_invalid_training_settings_are_named(compose_cfg: ComposeFn, override: str, message: str) -> None:
    with pytest.raises(PipelineError) as raised:
        train.read_settings(compose_cfg(override, config_name="train"))
    assert str(raised.value).startswith(message)


def test_learning_rates_from_1e_minus_12_to_1e6(prepared: Path, compose_cfg: ComposeFn) -> None:
    rates = "1e-12,1e-3,0.1,0.9,1.5,1e6"
    result = run_stage(
        "train", prepared, *START, f"optimizer.lr={rates}", "optimizer.max_iter=500", multirun=True
    )
    assert result.returncode == 0, result.stderr
    runs = json.loads((prepared / "reports" / "sweep.json").read_text())["runs"]
    statuses = [run["status"] for run in runs]
    assert statuses == ["max_iter", "max_iter", "converged", "converged", "diverged", "diverged"]
    assert all("diverged at iteration" in run["message"] for run in runs[4:])
    client = store(prepared)
    logged = {run.data.tags.get("downhill.job_key"): run for run in train_runs(client)}
    for run in runs:
        assert all(math.isfinite(value) for value in run["theta"]), run
        has_model = "downhill.model_uri" in logged[run["job_key"]].data.tags
        assert has_model == (run["status"] != "diverged")  # a diverged θ is never a model
    from pipeline import evaluate

    assert evaluate.run(compose_cfg())["job_key"] in {runs[2]["job_key"], runs[3]["job_key"]}


@pytest.fixture
def slow_sweep(prepared: Path) -> Iterator[subprocess.Popen[str]]:
    """A sweep of a quick run, then one slow enough (tiny rate, huge budget) to stop mid-way.

    Killed at teardown whatever happens, so that a failing test leaves nothing running.
    """
    overrides = [*START, "optimizer.lr=0.1,1e-9", "optimizer.max_iter=100000000"]
    command = [
        sys.executable,
        "-m",
        "pipeline.train",
        "--multirun",
        *isolating_overrides(prepared),
        *overrides,
    ]
    command.append(f"hydra.sweep.dir={prepared / 'logs'}")
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As a foreground command gets it: a shell starts background jobs (CI, say) with
        # SIGINT ignored, and Python keeps an ignored SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def wait_for_second_run(client: MlflowClient, process: subprocess.Popen[str]) -> None:
    """Until the quick run has finished and the slow one is under way."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        runs = train_runs(client) if (Path(client.tracking_uri[len("sqlite:///") :])).exists() else []
        children = [run for run in runs if run.data.tags.get("downhill.role") == "train"]
        if len(children) == 2 and any(run.info.status == "FINISHED" for run in children):
            time.sleep(0.5)  # well inside the slow run's loop
            return
        time.sleep(0.2)
    raise AssertionError("the sweep did not reach its second run in time")


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_the_current_run_as_killed_and_keeps_finished_ones(
    prepared: Path, slow_sweep: subprocess.Popen[str], signum: int, status: int
) -> None:
    client, process = store(prepared), slow_sweep
    wait_for_second_run(client, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith(("error: interrupted", "error: terminated"))
    by_role: dict[str, list[Run]] = {}
    for run in train_runs(client):
        by_role.setdefault(run.data.tags["downhill.role"], []).append(run)
    (parent,) = by_role["sweep"]
    assert parent.info.status == "KILLED"
    statuses = sorted((run.data.params["optimizer.lr"], run.info.status) for run in by_role["train"])
    assert statuses == [("0.1", "FINISHED"), ("1e-09", "KILLED")]
    quick = next(run for run in by_role["train"] if run.info.status == "FINISHED")
    assert len(client.get_metric_history(quick.info.run_id, "train_mse")) > 1
    assert not (prepared / "reports" / "sweep.json").exists()  # no record of a sweep that did not end


def test_kill_9_loses_no_finished_run_and_the_next_sweep_tidies_up(
    prepared: Path, slow_sweep: subprocess.Popen[str]
) -> None:
    client, process = store(prepared), slow_sweep
    wait_for_second_run(client, process)
    process.kill()
    process.communicate(timeout=60)
    statuses = sorted(run.info.status for run in train_runs(client))
    assert statuses == ["FINISHED", "RUNNING", "RUNNING"]  # parent and slow run were cut off

    result = run_stage("train", prepared, *START, "optimizer.lr=0.1", multirun=True)
    assert result.returncode == 0, result.stderr
    assert "marked 2 runs KILLED" in result.stderr + result.stdout
    statuses = sorted(run.info.status for run in train_runs(client))
    assert statuses == ["FINISHED", "FINISHED", "FINISHED", "KILLED", "KILLED"]


def test_two_sweeps_at_once_on_a_new_store_both_finish(compose_cfg: ComposeFn, tmp_path: Path) -> None:
    shared_store = f"mlflow.tracking_uri=sqlite:///{tmp_path / 'shared.db'}"
    processes = []
    for name in ("a", "b"):
        root = tmp_path / name
        cfg = compose_cfg(f"paths.root={root}", "data=seed_example")
        ingest.run(cfg)
        split.run(cfg)
        command = [sys.executable, "-m", "pipeline.train", "--multirun", *isolating_overrides(root)]
        command += [
            shared_store,
            "data=seed_example",
            *START,
            "optimizer.lr=0.01,0.1,0.3",
            f"hydra.sweep.dir={root}/logs",
        ]
        processes.append(
            subprocess.Popen(command, cwd=REPO_ROOT, env=user_env(), stderr=subprocess.PIPE, text=True)
        )
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'shared.db'}")
    runs = train_runs(client)
    assert sorted(run.data.tags["downhill.role"] for run in runs) == ["sweep"] * 2 + ["train"] * 6
    assert all(run.info.status == "FINISHED" for run in runs)
    for name in ("a", "b"):
        record = json.loads((tmp_path / name / "reports" / "sweep.json").read_text())
        assert {run["status"] for run in record["runs"]} == {"converged"}


def test_the_same_config_gives_bit_identical_results(prepared: Path, compose_cfg: ComposeFn) -> None:
    first_split = (prepared / "data" / "split" / "train.parquet").read_bytes()
    records = []
    for _ in range(2):
        cfg = compose_cfg()
        ingest.run(cfg)
        split.run(cfg)
        assert (prepared / "data" / "split" / "train.parquet").read_bytes() == first_split
        records.append(train.run(compose_cfg(config_name="train")))
    first, second = records
    assert first.job_key == second.job_key  # the same settings, split and code: one key
    for key in ("theta", "train_mse", "n_iter", "optimality_gap"):
        assert getattr(first, key) == getattr(second, key), key  # exactly, not approximately
    client = store(prepared)
    runs = [run for run in train_runs(client) if run.data.tags.get("downhill.job_key") == first.job_key]
    assert len(runs) == 2
    curves = [
        [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_mse")] for run in runs
    ]
    assert sorted(curves[0]) == sorted(curves[1])
