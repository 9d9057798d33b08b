"""Slow checks (minutes): serving the champion over HTTP, and DVC experiments.

Not part of `make test`; run them with `make test-slow`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline import evaluate
from tests.helpers import (
    VENV_BIN,
    ComposeFn,
    copy_project,
    free_port,
    run_stage,
    two_sweeps_at_once,
    user_env,
)
from tools.browser import CHROMIUM, FLAGS

pytestmark = pytest.mark.slow


def wait_for_answer(server: subprocess.Popen[str], url: str, seconds: float) -> None:
    """Wait until ``url`` answers 200, failing if ``server`` exits or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        assert server.poll() is None, server.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{url} did not answer in time"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)


def test_mlflow_serves_the_champion_on_loopback(prepared: Path, compose_cfg: ComposeFn) -> None:
    result = run_stage(
        "train", prepared, "optimizer.lr=0.1", "model.init.theta0=0", "model.init.theta1=100", multirun=True
    )
    assert result.returncode == 0, result.stderr
    report = evaluate.run(compose_cfg())
    theta0, theta1 = report["theta"]
    port = free_port()
    env = user_env() | {"MLFLOW_TRACKING_URI": f"sqlite:///{prepared / 'mlflow.db'}"}
    command = [str(VENV_BIN / "mlflow"), "models", "serve", "-m", "models:/house-price@champion"]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_answer(server, f"http://127.0.0.1:{port}/ping", 180)
        body = json.dumps({"dataframe_split": {"columns": ["sqft_living"], "data": [[1500.0], [2500.0]]}})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            predictions = json.loads(answer.read())["predictions"]
        assert predictions == pytest.approx([theta0 + 1500 * theta1, theta0 + 2500 * theta1], rel=1e-12)
        # Inputs outside the data's domain get 400 and a message, never NaN or Infinity with 200;
        # nor a price for `true`, nor a negative price (the target is in data.positive).
        for bad, said in [
            (None, "column 'sqft_living'"),
            (1e308, "column 'sqft_living'"),
            (-5.0, "column 'sqft_living'"),
            (True, "sqft_living"),
            (10.0, "is not > 0, as the target must be (data.positive)"),
        ]:
            body = json.dumps({"dataframe_records": [{"sqft_living": bad}]})
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations",
                data=body.encode(),
                headers={"Content-Type": "application/json"},
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)
            assert refused.value.code == 400, bad
            answer = json.loads(refused.value.read().decode())
            assert answer["error_code"] == "INVALID_PARAMETER_VALUE" and said in answer["message"], answer
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_dvc_experiments_log_to_the_repository_store(tmp_path: Path) -> None:
    project = copy_project(tmp_path)
    dvc = str(VENV_BIN / "dvc")

    def run(*arguments: str) -> str:
        done = subprocess.run(
            [dvc, *arguments], cwd=project, env=user_env(), capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run("exp", "run", "-S", "conf/config.yaml:split.seed=7")
    # --temp works in a copy under .dvc/tmp/exps; its runs must still land in the project's store.
    run("exp", "run", "--temp", "-S", "conf/config.yaml:split.test_fraction=0.3")
    assert not list((project / ".dvc" / "tmp").rglob("mlflow.db"))
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("downhill")
    assert experiment is not None
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`downhill.role` = 'sweep'")
    assert len(parents) == 2
    # Each sweep names the DVC experiment it belongs to (DVC_EXP_NAME, set by dvc exp run).
    assert all(parent.data.tags.get("dvc.experiment") for parent in parents)
    assert len({parent.data.tags["dvc.experiment"] for parent in parents}) == 2
    # Experiments register their models but never move the champion (registry.promote=auto).
    assert len(client.search_model_versions("name = 'house-price'")) == 2
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("house-price", "champion")

    shown = json.loads(run("exp", "show", "--json"))
    test_mse = []
    for commit in shown:
        for experiment_run in commit.get("experiments") or []:
            for revision in experiment_run.get("revs", []):
                metrics = (
                    revision.get("data", {})
                    .get("metrics", {})
                    .get("reports/metrics.json", {})
                    .get("data", {})
                )
                if "test_mse" in metrics:
                    test_mse.append(metrics["test_mse"])
    assert len(test_mse) == 2 and len(set(test_mse)) == 2


def test_a_fresh_clone_runs_with_make_run_and_stays_clean(tmp_path: Path) -> None:
    """The README's run command in a new clone: the whole pipeline, then `git status` is clean.

    It installs .venv from requirements.lock (about a minute and a half) and checks that
    the committed dvc.lock, metrics and store marks are what a fresh run produces.
    """
    project = copy_project(tmp_path / "clone")
    env = {key: value for key, value in user_env().items() if not key.startswith("VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != str(VENV_BIN))
    done = subprocess.run(["make", "run"], cwd=project, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True, check=True
    )
    assert status.stdout == "", status.stdout


#: Debian's Chromium (`make browser`), with tools/browser.py's flags, and for --dump-dom
#: and --screenshot a virtual time budget and the page's console on stderr.
CHROMIUM_FLAGS = [*FLAGS, "--virtual-time-budget=8000", "--enable-logging=stderr", "--v=0"]


def test_the_landscape_page_renders_in_headless_chromium(prepared: Path) -> None:
    assert CHROMIUM.is_file(), "no /usr/bin/chromium: `make browser` installs Debian's package"
    done = run_stage("train", prepared, "model.init.theta0=0", "model.init.theta1=0,600", multirun=True)
    assert done.returncode == 0, done.stderr
    page = (prepared / "reports" / "landscape.html").as_uri()

    def chromium(*arguments: str) -> subprocess.CompletedProcess[str]:
        profile = f"--user-data-dir={prepared / 'chromium-profile'}"
        return subprocess.run(
            [str(CHROMIUM), *CHROMIUM_FLAGS, profile, *arguments, page],
            capture_output=True,
            text=True,
            timeout=120,
        )

    dom = chromium("--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'class="main-svg"' in dom.stdout  # the map was drawn ...
    assert "gl-container" in dom.stdout  # ... and the 3-D view
    assert "slider-container" in dom.stdout
    assert "updatemenu-container" in dom.stdout and "▶ play" in dom.stdout  # the play buttons
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    errors = [line for line in console if "Uncaught" in line or "Error:" in line]
    assert not errors, errors
    screenshot = prepared / "landscape-page.png"
    shot = chromium(f"--screenshot={screenshot}")
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 50_000


def test_two_sweeps_at_once_twenty_times_under_load(tmp_path: Path) -> None:
    """The race of two sweeps on a new store (a converged run once ended FAILED), tried
    20 times while two processes keep both cores busy (as `stress-ng --cpu 2` does)."""
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for attempt in range(20):
            two_sweeps_at_once(tmp_path / str(attempt))
    finally:
        for process in load:
            process.kill()
            process.wait()


def test_the_sweeps_link_opens_its_runs_in_mlflows_ui(prepared: Path) -> None:
    """The link printed at the end of a sweep opens MLflow's UI (the real server, on
    loopback) on that sweep's runs, with the columns that compare them."""
    assert CHROMIUM.is_file(), "no /usr/bin/chromium: `make browser` installs Debian's package"
    first = run_stage("train", prepared, "model.init.theta0=0", "model.init.theta1=0", multirun=True)
    assert first.returncode == 0, first.stderr  # another sweep, whose run must not be shown
    done = run_stage(
        "train",
        prepared,
        "model.init.theta0=0",
        "model.init.theta1=0,100",
        "optimizer.lr=0.1,1.5",
        multirun=True,
    )
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if "the sweep's runs in MLflow's UI" in line]
    link = line.rsplit(" ", 1)[1]
    assert link.startswith("http://127.0.0.1:5000/#/experiments/") and "workflowType=machine_learning" in link
    port = free_port()
    store = f"sqlite:///{prepared / 'mlflow.db'}"
    command = [str(VENV_BIN / "mlflow"), "ui", "--backend-store-uri", store]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = subprocess.Popen(
        command, env=user_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_answer(server, f"http://127.0.0.1:{port}/health", 120)
        here = link.replace("127.0.0.1:5000", f"127.0.0.1:{port}")
        profile = f"--user-data-dir={prepared / 'chromium-profile'}"
        # Wide, so that the grid draws every column (it draws only those in view).
        flags = [flag for flag in CHROMIUM_FLAGS if not flag.startswith(("--virtual-time", "--window"))]
        flags += ["--window-size=3000,1000"]
        dom = subprocess.run(
            [str(CHROMIUM), *flags, "--virtual-time-budget=20000", profile, "--dump-dom", here],
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert "<strong>4</strong> matching runs" in page  # this sweep's four, not the other's
    for column in (
        "metrics.`train_mse`",
        "metrics.`log10_optimality_gap`",
        "metrics.`n_iter`",
        "tags.`status`",
    ):
        assert f'col-id="{column}"' in page, column
    assert page.count("converged · gd lr=0.1") == 2 and page.count("diverged · gd lr=1.5") == 2
