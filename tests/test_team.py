"""Working beyond one machine without a server in the test: logins kept out of every
output, a launcher on other machines kept off a SQLite file, a job's training split
checked against the one its sweep was planned with."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline import train
from pipeline.errors import PipelineError
from pipeline.outcome import RunSummary
from pipeline.sweep import read_back
from pipeline.tracking import (
    HOST_TAG,
    LAST_SEEN_TAG,
    LEASE_EXPIRY_SECONDS,
    MACHINE_TAG,
    PID_TAG,
    close_orphaned_runs,
    lease,
    machine_id,
    tracking_uri,
)
from tests.helpers import REPO_ROOT, ComposeFn, assert_one_line_error, isolating_overrides, user_env

SECRET = "s3cret-Pa55"


def stage(
    tmp_path: Path, *arguments: str, multirun: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    mode = ["--multirun"] if multirun else []
    return subprocess.run(
        [sys.executable, "-m", "pipeline.train", *mode, *isolating_overrides(tmp_path), *arguments],
        cwd=REPO_ROOT,
        env=env or user_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.integration
@pytest.mark.parametrize("multirun", [False, True])
def test_a_password_in_the_tracking_uri_is_refused_before_anything_is_written(
    tmp_path: Path, multirun: bool
) -> None:
    logs = tmp_path / "logs"
    result = stage(
        tmp_path,
        f"mlflow.tracking_uri=http://bob:{SECRET}@127.0.0.1:9/",
        f"hydra.run.dir={logs}",
        f"hydra.sweep.dir={logs}",
        multirun=multirun,
    )
    assert result.returncode == 2
    assert_one_line_error(
        result.stderr, "mlflow.tracking_uri", "http://bob:***@127.0.0.1:9/", "MLFLOW_TRACKING_PASSWORD"
    )
    assert SECRET not in result.stdout + result.stderr
    assert not logs.exists()  # Hydra's copy of the command line was never written
    # From the environment, too.
    env = user_env() | {"MLFLOW_TRACKING_URI": f"http://bob:{SECRET}@127.0.0.1:9/"}
    result = stage(tmp_path, f"hydra.run.dir={logs}", env=env)
    assert result.returncode == 2 and SECRET not in result.stdout + result.stderr
    assert_one_line_error(result.stderr, "MLFLOW_TRACKING_URI")


def test_a_password_given_to_a_command_is_refused() -> None:
    with pytest.raises(PipelineError, match=r"--tracking-uri: https://ann:\*\*\*@mlflow.example") as refused:
        tracking_uri(None, f"https://ann:{SECRET}@mlflow.example")
    assert SECRET not in str(refused.value)
    assert (
        tracking_uri(None, "https://ann@mlflow.example") == "https://ann@mlflow.example"
    )  # a name alone is fine


def test_a_launcher_on_other_machines_needs_the_team_server(tmp_path: Path) -> None:
    result = stage(
        tmp_path, "hydra/launcher=submitit_slurm", f"hydra.sweep.dir={tmp_path / 'logs'}", multirun=True
    )
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "hydra/launcher=submitit_slurm", "SQLite", "make server")
    assert not (tmp_path / "mlflow.db").exists()


def test_a_job_refuses_a_training_split_its_sweep_did_not_plan(
    prepared: Path, compose_cfg: ComposeFn
) -> None:
    wrong = "0" * 32
    with pytest.raises(
        PipelineError, match=f"not the training split the sweep was planned with .*expected {wrong}"
    ):
        train.run(compose_cfg(f"mlflow.train_md5={wrong}", config_name="train"))
    (prepared / "data" / "split" / "train.parquet").unlink()
    with pytest.raises(PipelineError, match=r"no training split here; .* filesystem shared at the same path"):
        train.run(compose_cfg(f"mlflow.train_md5={wrong}", config_name="train"))


@pytest.mark.integration
def test_orphaned_runs_are_closed_by_their_process_here_and_by_their_lease_elsewhere(tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("orphans")
    ended = subprocess.Popen(["true"])
    ended.wait()
    here, host, now = machine_id(), socket.gethostname(), time.time()
    twin = here.rsplit("/", 1)[0] + "/pid:[1]"  # the same host name and boot: another container

    def running(tags: dict[str, object]) -> str:
        run = client.create_run(experiment, tags={key: str(value) for key, value in tags.items()})
        return str(run.info.run_id)

    fresh, stale = int(now), int(now - LEASE_EXPIRY_SECONDS - 1)
    closed = {
        "killed here": running({MACHINE_TAG: here, PID_TAG: ended.pid, LAST_SEEN_TAG: fresh}),
        "gone elsewhere": running(
            {MACHINE_TAG: "other/boot/pid:[2]", PID_TAG: os.getpid(), LAST_SEEN_TAG: stale}
        ),
        "killed here, before leases": running({HOST_TAG: host, PID_TAG: ended.pid}),
    }
    kept = {
        "alive here": running({MACHINE_TAG: here, PID_TAG: os.getpid(), LAST_SEEN_TAG: stale}),
        "alive in a twin container": running({MACHINE_TAG: twin, PID_TAG: ended.pid, LAST_SEEN_TAG: fresh}),
        "elsewhere, before leases": running({HOST_TAG: "other", PID_TAG: 1}),
    }
    assert close_orphaned_runs(client, experiment, now=now) == len(closed)
    assert {name: client.get_run(run).info.status for name, run in closed.items()} == dict.fromkeys(
        closed, "KILLED"
    )
    assert {name: client.get_run(run).info.status for name, run in kept.items()} == dict.fromkeys(
        kept, "RUNNING"
    )

    # A live run refreshes its last-seen time.
    with lease(client, kept["alive here"], every=0.05):
        time.sleep(0.5)
    assert int(client.get_run(kept["alive here"]).data.tags[LAST_SEEN_TAG]) >= int(now)


@pytest.mark.integration
def test_a_run_its_job_left_running_is_closed_when_the_sweep_reads_back(tmp_path: Path) -> None:
    """Once the launcher has returned every job, a child still RUNNING lost its end (a
    worker killed, a failed last call to the store): FINISHED if its outcome is there,
    else KILLED, so that the next identical sweep runs it again."""
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("sweep", artifact_location=(tmp_path / "mlartifacts").as_uri())
    parent = client.create_run(experiment).info.run_id
    keys = ["job-with-outcome", "job-without"]
    runs = []
    for key in keys:
        run = client.create_run(experiment, tags={"mlflow.parentRunId": parent, "downhill.job_key": key})
        runs.append(run.info.run_id)
    outcome = RunSummary.failed(keys[0], ["optimizer.lr=0.1"], "gd lr=0.1", "an outcome as logged")
    client.log_dict(runs[0], outcome.to_json(), "outcome.json")
    summaries, ids = read_back(client, experiment, parent, [["optimizer.lr=0.1"], ["optimizer.lr=1"]], keys)
    assert ids == runs
    assert [client.get_run(run).info.status for run in runs] == ["FINISHED", "KILLED"]
    assert summaries[0].message == "an outcome as logged" and summaries[1].status == "failed"
