"""Faults: bad settings, numerical extremes, signals, kill -9, concurrent sweeps, repeatability."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from pipeline import ingest, split, train
from pipeline.errors import PipelineError
from pipeline.settings import override_problem
from pipeline.tracking import logged_model_id, open_store
from tests.helpers import (
    REPO_ROOT,
    ComposeFn,
    assert_one_line_error,
    isolating_overrides,
    log_split_at_once,
    run_stage,
    two_sweeps_at_once,
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
            "data=kc_hous: no such data config; the choices are: generated, kc_house, seed_example",
        ),
        ("config", "data.featurs=[sqft]", "unknown setting 'data.featurs'; did you mean 'data.features'?"),
        (
            "train",
            "optimizer=adamw",
            "optimizer=adamw: no such optimizer config; the choices are: adam, backtracking",
        ),
        # Other libraries' names for the project's settings, and a key of another choice.
        (
            "train",
            "optimizer.momentum=0.9",
            "unknown setting 'optimizer.momentum'; did you mean 'optimizer.beta' "
            "(with optimizer=momentum or optimizer=nesterov)?",
        ),
        (
            "train",
            "optimizer=adam optimizer.beta1=0.8",
            "unknown setting 'optimizer.beta1'; did you mean 'optimizer.b1'?",
        ),
        (
            "train",
            "optimizer.beta2=0.99",
            "unknown setting 'optimizer.beta2'; did you mean 'optimizer.b2' (with optimizer=adam)?",
        ),
        (
            "train",
            "optimizer.beta=0.5",
            "unknown setting 'optimizer.beta'; it is a setting of optimizer=momentum and optimizer=nesterov",
        ),
    ],
)
def test_command_line_typos_are_named(config_name: str, argument: str, message: str) -> None:
    problem = override_problem(argument.split(), config_name)
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
@pytest.mark.e2e
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


@pytest.mark.parametrize("scale", ["1e-300", "1e200", "0.0"])
def test_a_loss_scale_whose_square_is_not_a_number_is_named(compose_cfg: ComposeFn, scale: str) -> None:
    """1e-300 ended in a ZeroDivisionError traceback: c² is 0 in float64."""
    cfg = compose_cfg("model.loss=welsch", f"model.loss_scale={scale}", config_name="train")
    with pytest.raises(PipelineError) as raised:
        train.read_settings(cfg)
    assert (
        str(raised.value)
        == f"model.loss_scale: expected a number >= 1e-150 and < 1e+150, got {float(scale)!r}"
    )


@pytest.mark.e2e
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
        has_model = logged_model_id(logged[run["job_key"]]) is not None
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
    open_store(f"sqlite:///{prepared / 'mlflow.db'}", "downhill")  # not made while the test reads it
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
        runs = train_runs(client)
        children = [run for run in runs if run.data.tags.get("downhill.role") == "train"]
        if len(children) == 2 and any(run.info.status == "FINISHED" for run in children):
            time.sleep(0.5)  # well inside the slow run's loop
            return
        time.sleep(0.2)
    raise AssertionError("the sweep did not reach its second run in time")


#: An entry point whose stop signal arrives while a finalizer runs (as SIGTERM met
#: GitPython's ``Repo.__del__`` in a fused worker): Python cannot raise it there.
STOPPED_IN_A_FINALIZER = """
import os, signal, sys, time
from pipeline.errors import exit_on_error

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.{signal})
        for _ in range(100_000):  # the handler runs here, inside the finalizer
            pass

@exit_on_error
def main():
    Finalized()
    time.sleep(5)
    print("went on after the signal")

main()
"""


@pytest.mark.parametrize(("name", "status"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_stop_signal_met_in_a_finalizer_still_stops_the_process_cleanly(name: str, status: int) -> None:
    script = STOPPED_IN_A_FINALIZER.format(signal=name)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == status, result.stderr
    assert "went on" not in result.stdout
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert result.stderr.strip().startswith(("error: terminated", "error: interrupted"))


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_sigterm_to_a_joblib_sweeps_process_group_ends_every_run(prepared: Path) -> None:
    """As `kill -TERM -<pgid>` (or a CI runner) sends it: the launcher and its workers at once."""
    command = [sys.executable, "-m", "pipeline.train", "--multirun", *isolating_overrides(prepared)]
    command += [*START, "optimizer.lr=0.1,1e-9,1e-10", "optimizer.max_iter=100000000"]
    command += ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={prepared / 'logs'}"]
    open_store(f"sqlite:///{prepared / 'mlflow.db'}", "downhill")  # not made while this test reads it
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=user_env(), stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        client = store(prepared)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the quick run done, both slow ones under way
            assert process.poll() is None, process.communicate()
            runs = train_runs(client)
            if sum(run.data.tags.get("downhill.role") == "train" for run in runs) == 3:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 143, stderr
    statuses = sorted((run.data.tags["downhill.role"], run.info.status) for run in train_runs(client))
    assert ("train", "RUNNING") not in statuses and ("sweep", "RUNNING") not in statuses, statuses
    assert statuses.count(("train", "KILLED")) == 2 and ("sweep", "KILLED") in statuses, statuses


@pytest.mark.e2e
def test_sigterm_while_the_fused_launchers_workers_record_ends_every_run(prepared: Path) -> None:
    """The launching process stops its forked workers; each ends its run KILLED (or
    FINISHED, had it finished), none is left RUNNING, and the exit status says SIGTERM."""
    command = [sys.executable, "-m", "pipeline.train", "--multirun", *isolating_overrides(prepared)]
    command += ["model.init.theta0=range(0,40)", "model.init.theta1=100", "optimizer.lr=0.1"]
    command += ["hydra/launcher=fused", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={prepared / 'logs'}"]
    open_store(f"sqlite:///{prepared / 'mlflow.db'}", "downhill")  # not made while this test reads it
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=user_env(), stderr=subprocess.PIPE, text=True)
    try:
        client = store(prepared)
        deadline = time.monotonic() + 120
        while not any(run.data.tags.get("downhill.role") == "train" for run in train_runs(client)):
            assert time.monotonic() < deadline and process.poll() is None, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    statuses = [(run.data.tags["downhill.role"], run.info.status) for run in train_runs(client)]
    assert ("sweep", "KILLED") in statuses and not any(status == "RUNNING" for _, status in statuses)
    assert sum(role == "train" for role, _ in statuses) < 40  # stopped, not run to the end


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_a_log_file_that_cannot_be_written_leaves_the_error_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A job's log file on a disk that filled: its handler fails as the job logs why it
    failed, and printed its traceback (``--- Logging error ---``) over the one line."""
    import logging

    from pipeline.errors import exit_on_error

    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here (a file that is always out of space)")
    job_log = logging.getLogger("pipeline.test_full_disk")
    handler = logging.FileHandler("/dev/full")  # every write: ENOSPC, No space left on device
    job_log.addHandler(handler)

    @exit_on_error
    def job() -> None:
        error = PipelineError("train: recording the run failed: database or disk is full")
        job_log.error("%s", error)
        raise error

    try:
        with pytest.raises(SystemExit) as stopped:
            job()
    finally:
        job_log.removeHandler(handler)
        with contextlib.suppress(OSError):  # its last flush fails as well
            handler.close()
    assert stopped.value.code == 2 and logging.raiseExceptions  # restored for the caller
    assert capsys.readouterr().err == "error: train: recording the run failed: database or disk is full\n"


def test_a_disk_that_fills_during_a_sweep_ends_in_one_line_and_the_sweep_resumes(tmp_path: Path) -> None:
    """It printed some 900 lines of `database or disk is full` and left a run RUNNING."""
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespace here (unshare -m needs root): no small disk to fill")
    probe = (
        "import json; from pathlib import Path; from tests.helpers import sweep_on_a_disk_that_fills as s; "
    )
    probe += f"print(json.dumps(s(Path({str(tmp_path / 'disk')!r}))))"
    done = subprocess.run(
        ["unshare", "-m", sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        env=user_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    status, stderr = seen["full"]
    assert status == 2 and "Traceback" not in stderr
    assert_one_line_error(
        stderr, "No space left on device", "run the same command again: it resumes the sweep"
    )
    # What the full disk kept from being closed (the parent, and under load the run that was
    # recording) stays RUNNING until the next sweep; the parent ends FAILED where space came
    # back first (the pictures drawn ahead, removed unused). Either way the next sweep resumes it.
    assert ["sweep", "RUNNING"] in seen["after_full"] or ["sweep", "FAILED"] in seen["after_full"]
    assert seen["resumed"][0] == 0, seen["resumed"][1]
    assert all(status in ("FINISHED", "KILLED") for _, status in seen["after_resume"]), seen["after_resume"]
    assert seen["after_resume"].count(["train", "FINISHED"]) == 4
    assert seen["record"] == ["converged"] * 4


@pytest.mark.e2e
def test_two_sweeps_at_once_on_a_new_store_both_finish(tmp_path: Path) -> None:
    two_sweeps_at_once(tmp_path)


@pytest.mark.e2e
def test_two_processes_log_the_same_split_at_once_on_a_new_store(tmp_path: Path) -> None:
    """The race behind a converged run that ended FAILED: MLflow looks a dataset up, then
    inserts it, so the second of two processes that log it first loses on the unique key."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no copy of this process's MLflow state
    stores = [f"sqlite:///{tmp_path / f'mlflow{i}.db'}" for i in range(3)]  # lost 10 of 10 before the fix
    with context.Manager() as manager, context.Pool(2) as pool:
        for uri in stores:
            experiment_id = MlflowClient(uri).create_experiment("downhill")
            start = manager.Barrier(2)
            results = pool.starmap(log_split_at_once, [(uri, experiment_id, start)] * 2)
            assert results == ["ok", "ok"]
            runs = MlflowClient(uri).search_runs([experiment_id])
            assert len(runs) == 2 and all(run.inputs and len(run.inputs.dataset_inputs) == 1 for run in runs)


def test_a_child_that_ended_failed_is_failed_in_the_sweep_record(tmp_path: Path) -> None:
    """Its outcome was logged (converged), then the store failed before the run ended:
    MLflow's status, the run's tags and the sweep record say failed, all three."""
    from pipeline.outcome import RunSummary
    from pipeline.sweep import read_back

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("downhill", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(experiment_id)
    child = client.create_run(
        experiment_id,
        tags={"mlflow.parentRunId": parent.info.run_id, "downhill.job_key": "k1", "error": "boom"},
    )
    converged = replace(RunSummary.failed("k1", [], "gd", ""), status="converged", message="converged")
    outcome = tmp_path / "outcome.json"
    outcome.write_text(json.dumps(converged.to_json()))
    client.log_artifact(child.info.run_id, str(outcome))
    client.set_terminated(child.info.run_id, status="FAILED")
    runs, run_ids = read_back(client, experiment_id, parent.info.run_id, [["optimizer.lr=0.1"]], ["k1"])
    assert run_ids == [child.info.run_id]
    assert runs[0].status == "failed" and runs[0].message == "boom"


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


#: Inside ``unshare -m``: a 2 MB disk at $1, the command after the options run on it twice,
#: the second time on the file $3, which does not fit; what the disk held after each, and
#: the second run's exit status and stderr, copied to $2.
INGEST_ON_A_SMALL_DISK = """
disk=$1 out=$2 big=$3; shift 3
mount -t tmpfs -o size=2m tmpfs "$disk" || exit 90
"$@" || exit 91
cp -a "$disk" "$out/before"
"$@" data=generated "data.path=$big" 2> "$out/stderr"; echo $? > "$out/status"
cp -a "$disk" "$out/after"
"""


def test_a_disk_that_fills_during_ingest_leaves_the_previous_output_whole(tmp_path: Path) -> None:
    from pipeline import generate

    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespace here (unshare -m needs root): no small disk to fill")
    big = tmp_path / "sales.csv"
    generate.generate(big, 1_000_000, seed=4)  # 4 MB as Parquet: the disk fills part way
    disk, out = tmp_path / "disk", tmp_path / "seen"
    disk.mkdir()
    out.mkdir()
    ingest_command = [sys.executable, "-m", "pipeline.ingest", *isolating_overrides(disk)]
    ingest_command.append(f"hydra.run.dir={tmp_path / 'logs'}")
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", INGEST_ON_A_SMALL_DISK, "sh", disk, out, big, *ingest_command],
        cwd=REPO_ROOT,
        env=user_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (out / "status").read_text().strip() == "2"
    assert_one_line_error((out / "stderr").read_text(), "ingested.parquet: cannot write it", "No space left")

    def files(folder: Path) -> dict[str, bytes]:
        return {
            str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()
        }

    before, after = files(out / "before"), files(out / "after")
    assert "data/ingested.parquet" in before
    assert after == before  # the King County table and its report as they were, no partial file
