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

from pipeline.tracking import close_stores
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
    # A project is copied when nothing holds its store open: reading and closing its
    # files here would drop this process's locks on them (POSIX locks are per process),
    # and the next process to close the store would take itself for the last one.
    close_stores()
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


@pytest.mark.e2e  # mlflow gc runs as a subprocess
def test_prune_versions_keeps_what_an_alias_the_workspace_or_a_commit_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import mlflow

    from pipeline import prune
    from pipeline.settings import read_model_name
    from tests.helpers import project_cfg, run_command, trained

    trained(tmp_path)  # version 1, the champion
    cfg = project_cfg(tmp_path)
    uri, name = str(cfg.mlflow.tracking_uri), read_model_name(cfg)
    client = MlflowClient(tracking_uri=uri)
    best = tmp_path / "reports" / "best_run.json"
    source = client.get_model_version(name, "1").source
    mlflow.set_tracking_uri(uri)
    for _ in range(4):  # versions 2 to 5 of the same model, as older evaluations made them
        mlflow.register_model(source, name)
    chosen = json.loads(best.read_text())
    # A commit on a branch names version 3; the workspace's file names version 4.
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    best.write_text(json.dumps(chosen | {"model_version": "3"}))
    subprocess.run([*git, "add", "-f", str(best)], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "an experiment's choice"], check=True)
    best.write_text(json.dumps(chosen | {"model_version": "4"}))
    argv = ["--tracking-uri", uri, f"paths.root={tmp_path}"]
    status, out, err = run_command(prune.main, capsys, "--versions", "--dry-run", *argv)
    assert status == 0, err
    assert "2 model versions" in out
    assert sorted(str(v.version) for v in client.search_model_versions(f"name = '{name}'")) == [
        "1",
        "2",
        "3",
        "4",
        "5",
    ]
    status, out, err = run_command(prune.main, capsys, "--versions", *argv)
    assert status == 0, err
    assert sorted(str(v.version) for v in client.search_model_versions(f"name = '{name}'")) == ["1", "3", "4"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
