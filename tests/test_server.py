"""The team tracking server, for real: Debian's PostgreSQL and ``mlflow server`` on
127.0.0.1, started and stopped by ``python -m pipeline.server`` as a user does.

PostgreSQL runs as the ``postgres`` user, and pytest's temporary folders are private to
root, so the server's folder is made under /tmp, where anyone may pass, and removed
afterwards. Set-up where PostgreSQL is missing: ``make postgres`` (``apt-get install
postgresql``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import REPO_ROOT, isolating_overrides, prepare_data, run_stage, user_env

GRID = ["model.init.theta0=0,100000", "model.init.theta1=100", "optimizer.lr=0.01,0.1"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_command(action: str, folder: Path, port: int, pg_port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.server",
            action,
            f"--folder={folder}",
            f"--port={port}",
            f"--pg-port={pg_port}",
        ],
        cwd=REPO_ROOT,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def team_server() -> Iterator[tuple[str, Path]]:
    """A running team server (its URI and folder); stopped and removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="downhill-server-", dir="/tmp"))
    folder.chmod(0o755)
    port, pg_port = free_port(), free_port()
    try:
        started = server_command("start", folder, port, pg_port)
        assert started.returncode == 0, started.stderr
        uri = f"http://127.0.0.1:{port}"
        assert f"export MLFLOW_TRACKING_URI={uri}" in started.stdout
        yield uri, folder
    finally:
        stopped = server_command("stop", folder, port, pg_port)
        shutil.rmtree(folder, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    assert "PostgreSQL: stopped" in stopped.stdout and "MLflow server: stopped" in stopped.stdout
    # No process of the server's is left: none holds a port or names its folder.
    left = subprocess.run(["pgrep", "-f", str(folder)], capture_output=True, text=True).stdout.split()
    assert left == []
    for used in (port, pg_port):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", used)) != 0


def test_a_sweep_on_the_team_server_matches_sqlite_and_serves_its_champion(
    team_server: tuple[str, Path], tmp_path: Path
) -> None:
    uri, folder = team_server
    again = server_command("start", folder, int(uri.rsplit(":", 1)[1]), 0)  # safe to run twice
    assert again.returncode == 0 and "MLflow server: running" in again.stdout, again.stderr

    records = []
    for name, store in (("server", [f"mlflow.tracking_uri={uri}"]), ("sqlite", [])):
        project = prepare_data(tmp_path / name)
        swept = run_stage(
            "train", project, *GRID, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *store, multirun=True
        )
        assert swept.returncode == 0, swept.stderr
        records.append((project / "reports" / "sweep.json").read_text())
        evaluated = run_stage("evaluate", project, *store)
        assert evaluated.returncode == 0, evaluated.stderr
    assert records[0] == records[1]  # the same runs, θ to the last bit, the same best run

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("downhill")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(children) == 4 and all(run.info.status == "FINISHED" for run in children)
    champion = client.get_model_version_by_alias("house-price", "champion")
    chosen = json.loads((tmp_path / "server" / "reports" / "best_run.json").read_text())
    assert champion.run_id == chosen["run_id"]

    # The champion loads from the server and predicts what predict prints.
    env = user_env() | {"MLFLOW_TRACKING_URI": uri}
    predicted = subprocess.run(
        [sys.executable, "-m", "pipeline.predict", "1500"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert predicted.returncode == 0, predicted.stderr
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import mlflow, pandas as pd; "
            "m = mlflow.pyfunc.load_model('models:/house-price@champion'); "
            "print(f\"{float(m.predict(pd.DataFrame({'sqft_living': [1500.0]}))[0]):,.2f}\")",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert f"predicted price {loaded.stdout.strip()}" in predicted.stdout
    # Nothing of the project's own store was used by the server's sweep.
    assert not (tmp_path / "server" / "mlflow.db").exists()
    assert os.listdir(folder / "artifacts")


@pytest.mark.slow
def test_a_server_with_logins_refuses_strangers_and_no_password_is_written(tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="downhill-server-", dir="/tmp"))
    folder.chmod(0o755)
    port, pg_port = free_port(), free_port()
    password = "Adm1n-" + os.urandom(6).hex()
    login = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}
    uri = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "pipeline.server"]
    where = [f"--folder={folder}", f"--port={port}", f"--pg-port={pg_port}"]
    try:
        started = subprocess.run(
            [*command, "start", "--auth", *where],
            cwd=REPO_ROOT,
            env=user_env() | login,
            capture_output=True,
            text=True,
        )
        assert started.returncode == 0, started.stderr
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30)
        assert refused.value.code == 401

        project = prepare_data(tmp_path / "project")
        env = user_env() | login | {"MLFLOW_TRACKING_URI": uri}
        swept = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.train",
                "--multirun",
                *isolating_overrides(project),
                f"hydra.sweep.dir={project / 'logs'}",
                "model.init.theta0=0,100000",
                "optimizer.lr=0.1",
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert swept.returncode == 0, swept.stderr
        written = [swept.stdout, swept.stderr] + [
            path.read_text(errors="replace")
            for path in project.rglob("*")
            if path.is_file() and path.suffix != ".parquet"
        ]
        assert all(password not in text for text in written)
        client = MlflowClient(tracking_uri=uri)
        os.environ.update(login)
        try:
            runs = client.search_runs([client.get_experiment_by_name("downhill").experiment_id])  # type: ignore[union-attr]
        finally:
            for name in login:
                os.environ.pop(name)
        assert len(runs) == 5 and all(
            password not in json.dumps(run.data.params) for run in runs
        )  # parent + 2 × 2
    finally:
        stopped = subprocess.run(
            [*command, "stop", *where], cwd=REPO_ROOT, env=user_env(), capture_output=True, text=True
        )
        shutil.rmtree(folder, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
