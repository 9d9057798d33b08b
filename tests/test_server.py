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
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tests.helpers import (
    REPO_ROOT,
    VENV_BIN,
    copy_project,
    free_port,
    postgres_folder,
    prepare_data,
    run_stage,
    user_env,
)

pytestmark = pytest.mark.e2e  # the project's commands as a user runs them

GRID = ["model.init.theta0=0,100000", "model.init.theta1=100", "optimizer.lr=0.01,0.1"]


def python(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python <arguments>`` in the project, as a user runs it."""
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=REPO_ROOT,
        env=env or user_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def server_command(
    action: str, folder: Path, port: int, pg_port: int, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    where = [f"--folder={folder}", f"--port={port}", f"--pg-port={pg_port}"]
    return python("-m", "pipeline.server", action, *options, *where, env=env)


@pytest.fixture
def team_server() -> Iterator[tuple[str, Path]]:
    """A running team server (its URI and folder); stopped and removed afterwards."""
    folder = postgres_folder()
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
        project = prepare_data(tmp_path / name, store=name == "sqlite")
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
    predicted = python("-m", "pipeline.predict", "1500", env=env)
    assert predicted.returncode == 0, predicted.stderr
    loaded = python(
        "-c",
        "import mlflow, pandas as pd; "
        "m = mlflow.pyfunc.load_model('models:/house-price@champion'); "
        "print(f\"{float(m.predict(pd.DataFrame({'sqft_living': [1500.0]}))[0]):,.2f}\")",
        env=env,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert f"predicted price {loaded.stdout.strip()}" in predicted.stdout
    # Nothing of the project's own store was used by the server's sweep.
    assert not (tmp_path / "server" / "mlflow.db").exists()
    assert os.listdir(folder / "artifacts")

    # A moved project on a team server: the store check relocates nothing on the server.
    def locations() -> list[str]:
        return sorted(
            [str(e.artifact_location) for e in client.search_experiments()]
            + [r.info.artifact_uri for r in runs]
        )

    before = locations()
    moved = tmp_path / "server-moved"
    shutil.move(tmp_path / "server", moved)
    checked = run_stage("store", moved, f"mlflow.tracking_uri={uri}")
    assert checked.returncode == 0, checked.stderr
    assert locations() == before
    assert not (moved / "mlflow.db").exists()


def test_a_second_start_with_other_settings_is_refused_and_status_says_so(
    team_server: tuple[str, Path],
) -> None:
    uri, folder = team_server
    logins = user_env() | {
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": "a-long-password-1",
    }
    port = int(uri.rsplit(":", 1)[1])
    again = python("-m", "pipeline.server", "start", "--auth", f"--folder={folder}", env=logins)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.strip() == (
        f"error: the team server at {uri} is running with logins off; stop it first "
        "(`python -m pipeline.server stop`) to start it with logins on"
    )
    with urllib.request.urlopen(
        f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10
    ) as answer:
        assert answer.status == 200  # still open, as status says
    shown = python("-m", "pipeline.server", "status", f"--folder={folder}")  # the folder's own ports
    assert shown.returncode == 0, shown.stderr
    assert (
        f"MLflow server: running at http://127.0.0.1:{port}" in shown.stdout and "logins off" in shown.stdout
    )
    assert "PostgreSQL: running on 127.0.0.1:" in shown.stdout


def test_a_taken_port_is_named_and_nothing_is_left_running() -> None:
    folder = postgres_folder()
    port, pg_port = free_port(), free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        try:
            started = server_command("start", folder, port, pg_port)
            assert started.returncode == 2
            assert started.stderr.strip() == (
                f"error: port {port} on 127.0.0.1 is taken (python, process {os.getpid()}): "
                "stop it, or give another with --port"
            )
            left = subprocess.run(["pgrep", "-f", str(folder)], capture_output=True, text=True).stdout.split()
            assert left == []  # PostgreSQL, started first, was stopped again
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", pg_port)) != 0
        finally:
            server_command("stop", folder, port, pg_port)
            shutil.rmtree(folder, ignore_errors=True)


def test_a_folder_postgres_cannot_reach_is_refused_in_one_line(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("PostgreSQL runs as the user running the command: any folder of theirs will do")
    tmp_path.chmod(0o700)  # as a home folder, or pytest's own
    folder = tmp_path / "project" / ".server"
    started = server_command("start", folder, free_port(), free_port())
    assert started.returncode == 2
    assert started.stderr.strip().startswith(
        f"error: --folder {folder}: PostgreSQL runs as the user postgres, which cannot reach {tmp_path}; "
    )
    assert not folder.exists()  # nothing made


@pytest.mark.slow
def test_with_logins_dvc_repro_predict_and_serve_work_on_the_server_and_no_password_is_written(
    tmp_path: Path,
) -> None:
    """The whole pipeline (`dvc repro` in a fresh copy), `predict` and `mlflow models
    serve` against a server that requires a login; strangers get 401."""
    folder = postgres_folder()
    port, pg_port, serve_port = free_port(), free_port(), free_port()
    password = "Adm1n-" + os.urandom(6).hex()
    login = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}
    uri = f"http://127.0.0.1:{port}"
    serving: subprocess.Popen[str] | None = None
    try:
        started = server_command("start", folder, port, pg_port, "--auth", env=user_env() | login)
        assert started.returncode == 0, started.stderr
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30)
        assert refused.value.code == 401

        project = copy_project(tmp_path / "project")
        env = user_env() | login | {"MLFLOW_TRACKING_URI": uri}
        dvc = str(VENV_BIN / "dvc")

        def in_project(*command: str) -> subprocess.CompletedProcess[str]:
            done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            return done

        # An older sweep by hand, then the pipeline: the older one is what prune removes.
        in_project(dvc, "repro", "split")
        in_project(
            sys.executable, "-m", "pipeline.train", "--multirun", "optimizer.lr=0.5", "model.init.theta1=0"
        )
        repro = in_project(dvc, "repro")
        assert not (project / "mlflow.db").exists()  # everything went to the server
        chosen = json.loads((project / "reports" / "best_run.json").read_text())
        theta0, theta1 = chosen["theta"]
        predicted = python("-m", "pipeline.predict", "1500", env=env)
        assert predicted.returncode == 0, predicted.stderr
        assert f"predicted price {theta0 + 1500 * theta1:,.2f}" in predicted.stdout

        command = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", "models:/house-price@champion"]
        command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(serve_port)]
        serving = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        body = json.dumps({"dataframe_split": {"columns": ["sqft_living"], "data": [[1500.0]]}}).encode()
        invocations = f"http://127.0.0.1:{serve_port}/invocations"
        request = urllib.request.Request(invocations, data=body, headers={"Content-Type": "application/json"})
        deadline = time.monotonic() + 180
        while True:
            assert serving.poll() is None, serving.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "mlflow models serve did not answer in time"
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    predictions = json.loads(answer.read())["predictions"]
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        assert predictions == pytest.approx([theta0 + 1500 * theta1], rel=1e-12)

        outputs = [repro.stdout, repro.stderr, predicted.stdout, predicted.stderr] + [
            path.read_text(errors="replace") for path in project.rglob("*") if path.is_file()
        ]
        assert all(password not in text for text in outputs)
        client = MlflowClient(tracking_uri=uri)
        os.environ.update(login)
        try:
            experiment = client.get_experiment_by_name("downhill")
            assert experiment is not None
            runs = client.search_runs([experiment.experiment_id])
        finally:
            for name in login:
                os.environ.pop(name)
        assert len(runs) == 17 + 3  # the default sweep: a parent and 16 runs; the older: 1 and 2
        assert all(password not in json.dumps(run.data.params | run.data.tags) for run in runs)

        # Prune through the server, purging its database and files: the older sweep goes.
        older = [run for run in runs if run.data.params.get("optimizer.lr") == "0.5"]
        assert len(older) == 2 and all(
            (folder / "artifacts" / experiment.experiment_id / r.info.run_id).is_dir() for r in older
        )
        pruned = in_project(sys.executable, "-m", "pipeline.prune", "--keep=1", f"--server-folder={folder}")
        assert "deleted 1 sweeps (3 runs, 0 model versions, 2 logged models); kept 1 sweeps" in pruned.stdout
        # MLflow's gc through the server removes the files (it leaves the empty folders).
        for run in older:
            files = (folder / "artifacts" / experiment.experiment_id / run.info.run_id).rglob("*")
            assert not [path for path in files if path.is_file()]
        os.environ.update(login)
        try:
            with pytest.raises(MlflowException):
                client.get_run(older[0].info.run_id)
        finally:
            for name in login:
                os.environ.pop(name)
    finally:
        if serving is not None:
            serving.terminate()
            serving.wait(timeout=30)
        stopped = server_command("stop", folder, port, pg_port)
        shutil.rmtree(folder, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
