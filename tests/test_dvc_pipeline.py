"""End to end, as a user runs it: `dvc repro` in a fresh copy of the repository."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from pipeline.tracking import children
from tests.helpers import VENV_BIN, copy_project, user_env

pytestmark = pytest.mark.e2e  # the project's commands as a user runs them


def run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(command, cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


def only_the_store_check_pending(status: str) -> bool:
    """``dvc status`` lists nothing but the store check, which always runs."""
    return [line.strip() for line in status.strip().splitlines()] == ["store:", "always changed"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"))


def test_dvc_repro_runs_everything_then_nothing_then_only_what_changed(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dvc = str(VENV_BIN / "dvc")
    first = run([dvc, "repro"], project)
    assert stages_run(first) == ["ingest", "split", "store", "train", "evaluate"]
    for output in (
        "data/ingested.parquet",
        "data/split/train.parquet",
        "data/split/test.parquet",
        "reports/sweep.json",
        "reports/metrics.json",
        "mlflow.db",
    ):
        assert (project / output).is_file(), output
    # The store at rest is one file: every stage's write-ahead log folded back into it.
    assert not list(project.glob("mlflow.db-*"))

    # The default store, at the copy's root: one sweep parent and one child per job.
    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("downhill")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [run for run in runs if run.data.tags.get("downhill.role") == "sweep"]
    assert len(parents) == 1
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1 == 16
    statuses = sorted({run.data.tags["status"] for run in children})
    assert statuses == ["converged", "diverged", "max_iter"]  # the default sweep shows all three
    for child in children:
        assert {"model.init.theta0", "model.init.theta1", "optimizer.lr"} <= set(child.data.params)
        assert len(client.get_metric_history(child.info.run_id, "train_mse")) > 1

    chosen = json.loads((project / "reports" / "best_run.json").read_text())
    best = client.get_run(chosen["run_id"])
    assert best.data.tags["best_of_sweep"] == "true" and best.data.tags["status"] == "converged"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/house-price@champion")
    prediction = model.predict(pd.DataFrame({"sqft_living": [1500.0]}))
    np.testing.assert_allclose(prediction, chosen["theta"][0] + 1500.0 * chosen["theta"][1], rtol=1e-12)

    second = run([dvc, "repro"], project)
    assert stages_run(second) == ["store"]  # DVC cannot see the store: it is checked every time
    assert only_the_store_check_pending(run([dvc, "status"], project))

    # The store deleted: nothing DVC tracks changed, yet the runs and the champion come back.
    (project / "mlflow.db").unlink()
    repaired = run([dvc, "repro"], project)
    assert stages_run(repaired) == ["store", "train", "evaluate"]
    predicted = run([str(VENV_BIN / "python"), "-m", "pipeline.predict", "1500"], project)
    assert "sqft_living = 1,500: predicted price" in predicted
    assert stages_run(run([dvc, "repro"], project)) == ["store"]

    train_conf = project / "conf" / "train.yaml"
    text = train_conf.read_text()
    assert "optimizer.lr: 0.001,0.01,0.1,1.05" in text
    train_conf.write_text(
        text.replace("optimizer.lr: 0.001,0.01,0.1,1.05", "optimizer.lr: 0.001,0.02,0.1,1.05")
    )
    third = run([dvc, "repro"], project)
    assert stages_run(third) == ["store", "train", "evaluate"]


def wait_for_finished_runs(database: Path, process: subprocess.Popen[bytes], count: int) -> list[str]:
    """Ids of the first ``count`` runs to finish, read straight from the SQLite store."""
    deadline = time.monotonic() + 300
    finished: list[str] = []
    while len(finished) < count:
        assert time.monotonic() < deadline and process.poll() is None, (
            "the sweep ended before it could be killed"
        )
        if database.exists():
            with (
                contextlib.closing(sqlite3.connect(database)) as connection,
                contextlib.suppress(sqlite3.OperationalError),  # tables not created yet
            ):
                query = "SELECT run_uuid FROM runs WHERE status = 'FINISHED'"
                finished = [row[0] for row in connection.execute(query)]
        time.sleep(0.1)
    return finished


def test_dvc_repro_completes_after_a_kill_9_mid_sweep(tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    dvc = str(VENV_BIN / "dvc")
    process = subprocess.Popen(
        [dvc, "repro"],
        cwd=project,
        env=user_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        finished = wait_for_finished_runs(project / "mlflow.db", process, count=3)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)

    again = run([dvc, "repro"], project)
    assert stages_run(again)[-2:] == ["train", "evaluate"]
    assert "resuming sweep" in again
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("downhill")
    assert experiment is not None
    # The killed sweep was resumed: one parent, the finished runs kept under it, each job
    # run once, plus at most the one that was cut off (closed, then deleted as a duplicate).
    everything = client.search_runs([experiment.experiment_id], max_results=1000, run_view_type=ViewType.ALL)
    parents = [r for r in everything if r.data.tags.get("downhill.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    kept = children(client, experiment.experiment_id, parents[0].info.run_id)
    assert len(kept) == 16 and {r.info.status for r in kept} == {"FINISHED"}
    assert set(finished) - {parents[0].info.run_id} <= {r.info.run_id for r in kept}  # none redone
    assert len(everything) - 1 <= 16 + 1
    assert "RUNNING" not in {r.info.status for r in everything}
    assert (project / "reports" / "metrics.json").is_file()
    assert only_the_store_check_pending(run([dvc, "status"], project))


def test_switching_the_data_and_back_leaves_the_king_county_champion(tmp_path: Path) -> None:
    """Each data config registers its own model: the four-row table never takes house-price."""
    project = copy_project(tmp_path)
    dvc, python = str(VENV_BIN / "dvc"), str(VENV_BIN / "python")
    config = project / "conf" / "config.yaml"
    king_county = config.read_text()
    assert "  - data: kc_house" in king_county
    run([dvc, "repro"], project)
    before = run([python, "-m", "pipeline.predict", "1500"], project).splitlines()[0]

    config.write_text(king_county.replace("  - data: kc_house", "  - data: seed_example"))
    run([dvc, "repro"], project)
    seed = run([python, "-m", "pipeline.predict", "1500"], project)
    assert "sqft = 1,500: predicted price 216,666.67" in seed  # the seed table's own model

    config.write_text(king_county)
    again = run([dvc, "repro"], project)  # DVC's run-cache may restore train without running it
    assert "Running stage 'evaluate'" in again or "evaluate" not in stages_run(again)
    after = run([python, "-m", "pipeline.predict", "1500"], project)
    assert after.splitlines()[0] == before  # sqft_living = 1,500: the King County model answers
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("house-price", "champion")
    assert champion.tags["features"] == "sqft_living"


def test_a_colleague_pulls_the_workspace_from_a_dvc_remote(project: Path, tmp_path: Path) -> None:
    """A team shares DVC outputs through a remote (a local folder here): after `dvc push`,
    a colleague's clone and `dvc pull` give the same data and splits, up to date."""
    dvc = str(VENV_BIN / "dvc")
    run([dvc, "repro", "split"], project)  # done already where the first test ran
    remote = tmp_path / "team-remote"
    run([dvc, "remote", "add", "-d", "team", str(remote)], project)
    committer = ["git", "-c", "user.name=ann", "-c", "user.email=ann@example.com"]
    run(["git", "add", "-A"], project)
    run([*committer, "commit", "-qm", "outputs and the team's remote", "--allow-empty"], project)
    run([dvc, "push", "--with-deps", "split"], project)
    assert any(remote.rglob("*")), "the remote holds the outputs"

    colleague = tmp_path / "colleague"
    run(["git", "clone", "-q", str(project), str(colleague)], tmp_path)
    assert not (colleague / "data" / "split" / "train.parquet").exists()
    run([dvc, "pull", "--with-deps", "split"], colleague)
    for output in ("data/ingested.parquet", "data/split/train.parquet", "data/split/test.parquet"):
        assert (colleague / output).read_bytes() == (project / output).read_bytes(), output
    status = run([dvc, "status"], colleague)
    assert "ingest:" not in status and "split:" not in status, status  # what was pulled is up to date
