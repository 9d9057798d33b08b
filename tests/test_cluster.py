"""A sweep on a Ray cluster, for real: inside a loopback-only network namespace
(``unshare -n``: Ray listens on the machine's outward interface whatever address it is
given, and a new namespace has nothing but its own 127.0.0.1), PostgreSQL, the MLflow
server and a Ray head are started; the default sweep runs on the cluster with
``hydra.launcher.ray.init.address`` set and Ray's token authentication, then everything
is stopped. Nothing can leave 127.0.0.0/8.

Set-up: ``make cluster`` (the Ray launcher's environment, ``.venv-cluster``) and
``make postgres``; ``make test-slow`` does both.
"""

from __future__ import annotations

import json
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, isolating_overrides, postgres_folder, prepare_data, run_stage, user_env

CLUSTER_PYTHON = REPO_ROOT / ".venv-cluster" / "bin" / "python"
RAY_PORT, SERVER_PORT, PG_PORT = 6390, 5077, 55477


@pytest.mark.slow
def test_the_default_sweep_on_a_ray_cluster_matches_the_basic_launcher(tmp_path: Path) -> None:
    assert CLUSTER_PYTHON.is_file(), "the Ray launcher's environment is missing: run `make cluster`"
    basic = prepare_data(tmp_path / "basic")
    swept = run_stage("train", basic, multirun=True)
    assert swept.returncode == 0, swept.stderr

    project = prepare_data(tmp_path / "cluster")
    server = postgres_folder()
    uri = f"http://127.0.0.1:{SERVER_PORT}"
    token = secrets.token_hex(32)
    where = f"--folder={server} --port={SERVER_PORT} --pg-port={PG_PORT}"
    sweep = [
        str(CLUSTER_PYTHON),
        "-m",
        "pipeline.train",
        "--multirun",
        *isolating_overrides(project)[:2],  # the store is the server's: MLFLOW_TRACKING_URI
        f"hydra.sweep.dir={project / 'logs'}",
        "hydra/launcher=ray",
        f"hydra.launcher.ray.init.address=127.0.0.1:{RAY_PORT}",
        "+hydra.launcher.ray.init.object_store_memory=null",  # 1.2.2's default: refused by a running cluster
    ]
    count = (
        "import mlflow; c = mlflow.MlflowClient(); e = c.get_experiment_by_name('downhill'); "
        "runs = c.search_runs([e.experiment_id]); "
        "print('FINISHED RUNS', sum(r.info.status == 'FINISHED' for r in runs), len(runs)); "
        "print([(r.info.run_name, r.info.status) for r in runs if r.info.status != 'FINISHED'])"
    )
    ray = CLUSTER_PYTHON.parent / "ray"
    script = f"""
set -eu
ip link set lo up
export MLFLOW_TRACKING_URI={uri} RAY_AUTH_MODE=token RAY_AUTH_TOKEN={token} RAY_USAGE_STATS_ENABLED=0
export PYTHONPATH={REPO_ROOT}   # the code, on a filesystem the workers share
cleanup() {{
  {ray} stop --force >/dev/null 2>&1 || true
  rm -f /tmp/ray/ray_current_cluster   # Ray's record of the stopped cluster
  {sys.executable} -m pipeline.server stop {where}
}}
trap cleanup EXIT
{sys.executable} -m pipeline.server start {where}
{ray} start --head --node-ip-address=127.0.0.1 --port={RAY_PORT} --num-cpus=2 \\
  --include-dashboard=false --disable-usage-stats
{shlex.join(sweep)}
{CLUSTER_PYTHON} -c {shlex.quote(count)}
"""
    try:
        done = subprocess.run(
            ["unshare", "-n", "bash", "-c", script],
            cwd=REPO_ROOT,
            env=user_env(),
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        shutil.rmtree(server, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert token not in done.stdout + done.stderr
    # The same record, θ to the last bit, the same best run; every run finished.
    assert (project / "reports" / "sweep.json").read_text() == (basic / "reports" / "sweep.json").read_text()
    assert "FINISHED RUNS 17 17" in done.stdout  # the parent and its 16 children
    assert len(json.loads((project / "reports" / "sweep.json").read_text())["runs"]) == 16
    assert "MLflow server: stopped" in done.stdout and "PostgreSQL: stopped" in done.stdout
