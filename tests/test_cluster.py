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


ROWS_ON_TWO_NODES = """
import sys, warnings
from pathlib import Path
import numpy as np, ray
from ray.cluster_utils import Cluster
from pipeline.costs import Cost
from pipeline.methods import nesterov
from pipeline.optimize import fit
from pipeline.ray_rows import RayRows

folder = Path(sys.argv[1])
X, y = np.load(folder / "X.npy", mmap_mode="r"), np.load(folder / "y.npy", mmap_mode="r")
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)  # a second node: a raylet of its own
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)
rows = RayRows(folder, len(y), actors=2)
print("NODES", len(set(rows.nodes())))
warnings.simplefilter("ignore")
for cost in (Cost("welsch", 75_000.0), Cost("huber", 150_000.0)):
    settings = dict(theta_init=[1e5, 50.0], method=nesterov(0.2), max_iter=60, cost=cost)
    here, spread = fit(X, y, **settings), fit(X, y, rows=rows, **settings)
    print(cost.name, "SAME" if spread.theta.tobytes() == here.theta.tobytes()
          and spread.loss_history.tobytes() == here.loss_history.tobytes() else "DIFFERENT",
          here.theta.tolist(), spread.theta.tolist())
rows.close()  # the command below places actors of its own on the same two CPUs
# The same through the command a user runs: a Huber run with its rows on the cluster,
# and the run made here, both recorded in MLflow; their outcomes' θ compared.
import json, subprocess, mlflow
project, train = sys.argv[2], [sys.executable, "-m", "pipeline.train", *sys.argv[3:]]
robust = ["model.loss=huber", "model.loss_scale=150000", "optimizer.lr=0.5", "optimizer.max_iter=100"]
for where in ([f"rows.ray_address={cluster.address}"], []):
    subprocess.run([*train, *robust, *where], check=True, capture_output=True)
mlflow.set_tracking_uri(f"sqlite:///{project}/mlflow.db")
runs = mlflow.search_runs(experiment_names=["downhill"], output_format="list")
outcomes = [mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/outcome.json")["theta"] for run in runs]
print("COMMAND", "SAME" if len(outcomes) == 2 and outcomes[0] == outcomes[1] else "DIFFERENT", outcomes)
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.slow
def test_rows_spread_over_two_ray_nodes_give_the_one_machine_fit_to_the_bit(tmp_path: Path) -> None:
    """A real Ray cluster of two nodes (two raylets) on 127.0.0.1 inside ``unshare -n``:
    the rows on two actors, one per node, and θ equal to the one-machine fit's; then
    ``python -m pipeline.train rows.ray_address=…`` records the θ of the run made here."""
    import numpy as np

    assert CLUSTER_PYTHON.is_file(), "the Ray launcher's environment is missing: run `make cluster`"
    rng = np.random.default_rng(9)
    n = 300_007
    X = rng.lognormal(7.5, 0.4, (n, 1))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", 50_000 + 250 * X[:, 0] + rng.standard_t(2, n) * 1e5)
    project = prepare_data(tmp_path / "project")
    train = [*isolating_overrides(project), f"hydra.run.dir={project / 'logs'}"]
    arguments = shlex.join([str(tmp_path), str(project), *train])
    script = f"ip link set lo up\n{CLUSTER_PYTHON} -c {shlex.quote(ROWS_ON_TWO_NODES)} {arguments}\n"
    env = user_env() | {"PYTHONPATH": str(REPO_ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(
        ["unshare", "-n", "bash", "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "NODES 2" in done.stdout
    assert "welsch SAME" in done.stdout and "huber SAME" in done.stdout, done.stdout
    assert "COMMAND SAME" in done.stdout, done.stdout
