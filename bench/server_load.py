"""Four sweeps of 25 runs at once: on the team server (PostgreSQL + MLflow server) and,
as the baseline measured in the same run, on the embedded SQLite store.

Run with ``.venv/bin/python bench/server_load.py`` (PostgreSQL must be installed:
``make postgres``). Each sweep is a different grid (5 starting θ0 × 5 starting θ1, its
own learning rate), started together as four processes, as four team members would.
For each store it prints the wall time, the runs recorded (every child FINISHED under
its parent), the sweeps that failed, and runs per second.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

SWEEPS = 4
RATES = ("0.01", "0.03", "0.1", "0.3")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prepared(folder: Path) -> Path:
    from hydra import compose, initialize_config_dir

    from pipeline import ingest, split

    folder.mkdir(parents=True)
    overrides = [f"paths.root={folder}", f"paths.raw_dir={REPO_ROOT / 'data' / 'raw'}"]
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO_ROOT / "conf")):
        cfg = compose("config", overrides=overrides)
    ingest.run(cfg)
    split.run(cfg)
    return folder


def four_sweeps(folders: list[Path], store: str) -> tuple[float, int]:
    """Start the four sweeps together; the seconds until the last ends, and how many failed."""
    env = os.environ | {"MLFLOW_TRACKING_URI": store}
    processes = []
    start = time.perf_counter()
    for folder, rate in zip(folders, RATES, strict=True):
        command = [
            sys.executable,
            "-m",
            "pipeline.train",
            "--multirun",
            f"paths.root={folder}",
            f"paths.raw_dir={REPO_ROOT / 'data' / 'raw'}",
            f"hydra.sweep.dir={folder / 'logs'}",
            "model.init.theta0=-500000,-250000,0,250000,500000",
            "model.init.theta1=0,150,300,450,600",
            f"optimizer.lr={rate}",
            "optimizer.max_iter=1000",
        ]
        log = (folder / f"sweep-{abs(hash(store))}.log").open("w")
        processes.append(
            subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        )
    failed = sum(process.wait() != 0 for process in processes)
    return time.perf_counter() - start, failed


def recorded(store: str) -> tuple[int, int]:
    """FINISHED children and parents in the store's ``downhill`` experiment."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("downhill")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags and r.info.status == "FINISHED"]
    return len(children), len(runs) - len(children)


def main() -> None:
    import pipeline  # noqa: F401  (the offline defaults of offline.env)

    server = Path(tempfile.mkdtemp(prefix="downhill-bench-server-", dir="/tmp"))
    server.chmod(0o755)
    port, pg_port = free_port(), free_port()
    where = [f"--folder={server}", f"--port={port}", f"--pg-port={pg_port}"]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        print(f"{'store':<44}{'seconds':>9}{'runs':>7}{'failed':>8}{'runs/s':>8}  ratio")
        rows = {}
        try:
            subprocess.run(
                [sys.executable, "-m", "pipeline.server", "start", *where], check=True, capture_output=True
            )
            for name, store in (
                ("SQLite file (baseline)", f"sqlite:///{root / 'mlflow.db'}"),
                ("team server: PostgreSQL + MLflow, 1 worker", f"http://127.0.0.1:{port}"),
            ):
                folders = [prepared(root / name.split()[0] / str(i)) for i in range(SWEEPS)]
                seconds, failed = four_sweeps(folders, store)
                children, parents = recorded(store)
                rows[name] = seconds
                ratio = f"{seconds / rows['SQLite file (baseline)']:.2f} x SQLite's time"
                print(
                    f"{name:<44}{seconds:9.1f}{children:7d}{failed:8d}{children / seconds:8.2f}  {ratio}",
                    flush=True,
                )
                if children != 25 * SWEEPS or parents != SWEEPS or failed:
                    print(f"  expected {25 * SWEEPS} finished runs under {SWEEPS} parents: see {folders[0]}")
        finally:
            subprocess.run([sys.executable, "-m", "pipeline.server", "stop", *where], capture_output=True)
            shutil.rmtree(server, ignore_errors=True)


if __name__ == "__main__":
    main()
