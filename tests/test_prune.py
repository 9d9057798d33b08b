"""`python -m pipeline.prune`: old sweeps go, with their artifacts and model versions;
the champion, the workspace's sweep and best run stay; a copied project prunes only its
own store."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tests.helpers import REPO_ROOT, prepare_data, run_stage, user_env

START = ["model.init.theta0=0", "model.init.theta1=100", "optimizer.max_iter=200"]


def command(module: str, folder: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"pipeline.{module}", *arguments],
        cwd=REPO_ROOT,
        env=user_env() | {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def artifact_files(folder: Path) -> set[Path]:
    return {path.relative_to(folder) for path in (folder / "mlartifacts").rglob("*") if path.is_file()}


@pytest.mark.e2e
def test_prune_keeps_what_is_relied_on_and_purges_the_rest(tmp_path: Path) -> None:
    project = prepare_data(tmp_path / "project")
    sweeps = []
    for rate, promote in (("0.1", "auto"), ("0.03", "never"), ("0.01", "never")):
        swept = run_stage("train", project, *START, f"optimizer.lr={rate}", multirun=True)
        assert swept.returncode == 0, swept.stderr
        evaluated = run_stage("evaluate", project, f"registry.promote={promote}")
        assert evaluated.returncode == 0, evaluated.stderr
        sweeps.append(rate)
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("downhill")
    assert experiment is not None
    every = client.search_runs([experiment.experiment_id])
    runs = {run.data.params.get("optimizer.lr"): run for run in every}
    versions = {v.run_id: v.version for v in client.search_model_versions("name = 'house-price'")}
    assert len(versions) == 3
    champion = client.get_model_version_by_alias("house-price", "champion")
    assert champion.run_id == runs["0.1"].info.run_id

    # A copy prunes its own store only: the original keeps every file.
    copy = tmp_path / "copy"
    shutil.copytree(project, copy, symlinks=True)
    before = artifact_files(project)
    pruned_copy = command("prune", copy, "--keep=1", f"paths.root={copy}")
    assert pruned_copy.returncode == 0, pruned_copy.stderr
    assert artifact_files(project) == before
    assert client.get_run(runs["0.03"].info.run_id).info.lifecycle_stage == "active"

    dry = command("prune", project, "--keep=1", "--dry-run", f"paths.root={project}")
    assert dry.returncode == 0 and "would delete 1 sweeps (2 runs, 1 model versions" in dry.stdout, dry.stderr
    pruned = command("prune", project, "--keep=1", f"paths.root={project}")
    assert pruned.returncode == 0, pruned.stderr
    assert "deleted 1 sweeps (2 runs, 1 model versions" in pruned.stdout and "kept 2 sweeps" in pruned.stdout

    # The middle sweep is gone for good: runs, files, model version. The first keeps the
    # champion, the last is the workspace's (reports/sweep.json, reports/best_run.json).
    gone = runs["0.03"]
    with pytest.raises(MlflowException):
        client.get_run(gone.info.run_id)
    assert not any(gone.info.run_id in str(path) for path in artifact_files(project))
    left = [v.run_id for v in client.search_model_versions("name = 'house-price'")]
    assert gone.info.run_id not in left and len(left) == 2
    assert sum(path.name == "MLmodel" for path in artifact_files(project)) == 2  # its logged model too
    for kept in ("0.1", "0.01"):
        run = client.get_run(runs[kept].info.run_id)
        assert run.info.lifecycle_stage == "active"
        assert client.get_model_version("house-price", versions[run.info.run_id]).run_id == run.info.run_id
    predicted = command("predict", project, "1500")
    assert predicted.returncode == 0 and "predicted price" in predicted.stdout, predicted.stderr

    refused = command("prune", project, "--keep=0", f"paths.root={project}")
    assert refused.returncode == 2 and refused.stderr.startswith("error: --keep"), refused.stderr
