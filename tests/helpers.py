"""Helpers for the tests (fixtures live in conftest.py): stages run as a user runs them,
outputs under a test's own folder, one-line errors checked."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from pipeline.costs import Cost
from tools.workspace import REPO_ROOT, VENV_BIN, copy_project, user_env

if TYPE_CHECKING:
    from pipeline.outcome import RunSummary

CONF_DIR = REPO_ROOT / "conf"
RAW_DIR = REPO_ROOT / "data" / "raw"
BAD_DIR = Path(__file__).resolve().parent / "data"
#: The ``compose_cfg`` fixture: compose ``config`` (or ``config_name=...``) with overrides.
ComposeFn = Callable[..., DictConfig]

__all__ = [
    "BAD_DIR",
    "CONF_DIR",
    "LIVE_SCRIPT",
    "RAW_DIR",
    "REPO_ROOT",
    "START_ONE_RUN",
    "VENV_BIN",
    "ComposeFn",
    "assert_one_line_error",
    "copy_project",
    "free_port",
    "fused_jobs",
    "gd_run",
    "isolating_overrides",
    "killed_mid_write",
    "log_split_at_once",
    "node_command",
    "node_runs",
    "node_step_parts",
    "page_drawn_by_a_fork",
    "postgres_folder",
    "prepare_data",
    "project_cfg",
    "run_stage",
    "scipy_minima",
    "seed_store",
    "sweep_cfg",
    "sweep_on_a_disk_that_fills",
    "trained",
    "two_sweeps_at_once",
    "user_env",
    "write_job_record",
]


def isolating_overrides(tmp_path: Path) -> list[str]:
    """Point every output (data, reports, MLflow store, Hydra logs) into tmp_path."""
    return [
        f"paths.root={tmp_path}",
        f"paths.raw_dir={RAW_DIR}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]


#: The folder of the project's empty-store template in a test process (set by conftest's
#: session fixture; empty in a helper run as a subprocess of its own).
STORE_TEMPLATE: list[Path] = []


def seed_store(folder: Path) -> Path:
    """Lay an empty MLflow store at ``folder/mlflow.db`` as the project makes one (a copy
    of its empty-store template, :func:`pipeline.tracking.new_sqlite_store`, kept for the
    session under its tmp folder); return the database's path."""
    from pipeline.tracking import new_sqlite_store

    database = folder / "mlflow.db"
    folder.mkdir(parents=True, exist_ok=True)
    new_sqlite_store(database)
    return database


def killed_mid_write(program: str, database: Path) -> None:
    """Run ``program`` (Python) on ``database`` until it prints ``writing``, then kill it
    with SIGKILL, as ``kill -9`` leaves a store in the middle of a write."""
    import signal

    writer = subprocess.Popen(
        [sys.executable, "-c", program, str(database)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()


def prepare_data(folder: Path, *overrides: str, store: bool = True) -> Path:
    """``folder`` with the King County data (or as overridden) ingested and split, ready to
    train, and (``store``) an empty MLflow store (:func:`seed_store`) where it has none, in a
    test process (a helper run in a subprocess of its own leaves the store to the stages)."""
    from pipeline import ingest, split

    folder.mkdir(parents=True, exist_ok=True)
    if store and STORE_TEMPLATE and not (folder / "mlflow.db").exists():
        seed_store(folder)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="config", overrides=[*isolating_overrides(folder), *overrides])
    ingest.run(cfg)
    split.run(cfg)
    return folder


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    """stderr is exactly one line, ``error: ...``, with each fragment and no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def run_stage(
    module: str, tmp_path: Path, *overrides: str, multirun: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pipeline.<module>`` as a user would, outputs under tmp_path."""
    hydra_dirs = [
        f"hydra.run.dir={tmp_path / 'logs' / 'run'}",
        f"hydra.sweep.dir={tmp_path / 'logs' / 'sweep'}",
    ]
    command = [sys.executable, "-m", f"pipeline.{module}", *(["--multirun"] if multirun else [])]
    return subprocess.run(
        [*command, *isolating_overrides(tmp_path), *hydra_dirs, *overrides],
        cwd=REPO_ROOT,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


#: One training run that converges: a start and a rate.
START_ONE_RUN = ["model.init.theta0=0", "model.init.theta1=100", "optimizer.lr=0.1"]


def project_cfg(folder: Path, config_name: str = "config", *extra: str) -> DictConfig:
    """The config of a project in ``folder`` whose store is its own ``mlflow.db`` (one run,
    and ``extra`` overrides)."""
    overrides = [
        f"paths.root={folder}",
        f"paths.raw_dir={RAW_DIR}",
        f"mlflow.tracking_uri=sqlite:///{folder}/mlflow.db",
    ]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name=config_name, overrides=[*overrides, *START_ONE_RUN, *extra])


def sweep_cfg(folder: Path, *extra: str) -> DictConfig:
    """The config a sweep of a project in ``folder`` starts from (``train``, its outputs
    and store in ``folder``, and ``extra`` overrides)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name="train", overrides=[*isolating_overrides(folder), *extra])


def trained(folder: Path) -> Path:
    """A project with data, one training run (its sweep record) and a champion."""
    from pipeline import evaluate, train
    from pipeline.keys import sweep_key
    from pipeline.pictures import write_sweep_outputs

    prepare_data(folder)
    summary = train.run(project_cfg(folder, "train"))

    write_sweep_outputs(project_cfg(folder, "train"), sweep_key([summary.job_key]), [summary])
    evaluate.run(project_cfg(folder))
    return folder


def scipy_minima(
    x: np.ndarray, y: np.ndarray, cost: Cost, starts: list[tuple[float, float]]
) -> list[np.ndarray]:
    """The distinct minima of ``cost`` for the line ``θ0 + θ1·x`` that scipy's BFGS finds
    from ``starts``: an independent reference (numpy gradient, no pipeline kernel).

    Each is ``[θ0, θ1, J]``; only points with a gradient near 0 and a positive-definite
    Hessian count. θ is
    scaled by the data's spreads so that BFGS sees a well-conditioned problem.
    """
    from scipy.optimize import minimize

    unit = np.array([float(np.std(y)), float(np.std(y) / np.std(x))])

    def cost_and_gradient(u: np.ndarray) -> tuple[float, np.ndarray]:
        theta = u * unit
        r = theta[0] + theta[1] * x - y
        psi = cost.psi(r)
        return cost.value(r), np.array([psi.mean(), (psi * x).mean()]) * unit

    found: list[np.ndarray] = []
    for start in starts:
        result = minimize(
            cost_and_gradient, np.array(start) / unit, jac=True, method="BFGS", options={"gtol": 1e-12}
        )
        theta = result.x * unit
        r = theta[0] + theta[1] * x - y
        curvature = cost.curvature(r)
        design = np.column_stack([np.ones_like(x), x]) * unit
        hessian = (design * curvature[:, np.newaxis]).T @ design / x.size
        if np.linalg.norm(result.jac) > 1e-6 or np.linalg.eigvalsh(hessian).min() <= 1e-9:
            continue  # stopped short (BFGS's precision loss), a plateau or a saddle
        if not any(np.allclose(theta, other[:2], rtol=1e-5) for other in found):
            found.append(np.array([theta[0], theta[1], cost.value(r)]))
    return sorted(found, key=lambda minimum: minimum[2])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def postgres_folder() -> Path:
    """A new folder for a team server under /tmp: PostgreSQL runs as ``postgres``, which
    cannot pass pytest's folders (private to root). The caller removes it."""
    folder = Path(tempfile.mkdtemp(prefix="downhill-server-", dir="/tmp"))
    folder.chmod(0o755)
    return folder


def process_id_after(seconds: float) -> int:
    """This process's id, after a pause (a task long enough for every worker to get one)."""
    import os
    import time

    time.sleep(seconds)
    return os.getpid()


def log_split_at_once(uri: str, experiment_id: str, start: Any) -> str:
    """In a process of its own: create a run, wait for ``start`` (a barrier), log the same
    training split as every other such process; return "ok" or the error's first line."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from pipeline.errors import first_line
    from pipeline.tracking import client_for, log_dataset_input

    client = client_for(uri)
    run_id = client.create_run(experiment_id).info.run_id
    dataset = Dataset(name="train", digest="0123456789abcdef", source_type="local", source="train.parquet")
    start.wait()
    try:
        log_dataset_input(
            client, run_id, DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])
        )
    except Exception as error:
        return first_line(error)
    return "ok"


def two_sweeps_at_once(folder: Path) -> None:
    """Two projects in ``folder`` sweep at once into one new shared store: both finish,
    and every run's MLflow status, tags and sweep record agree."""
    import json

    from mlflow.tracking import MlflowClient

    shared = f"sqlite:///{folder / 'shared.db'}"
    processes = []
    for name in ("a", "b"):
        root = prepare_data(folder / name, "data=seed_example")
        command = [sys.executable, "-m", "pipeline.train", "--multirun", *isolating_overrides(root)]
        command += [f"mlflow.tracking_uri={shared}", "data=seed_example", *START_ONE_RUN[:2]]
        command += ["optimizer.lr=0.01,0.1,0.3", f"hydra.sweep.dir={root}/logs"]
        processes.append(
            subprocess.Popen(command, cwd=REPO_ROOT, env=user_env(), stderr=subprocess.PIPE, text=True)
        )
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    client = MlflowClient(tracking_uri=shared)
    experiment = client.get_experiment_by_name("downhill")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert sorted(run.data.tags["downhill.role"] for run in runs) == ["sweep"] * 2 + ["train"] * 6
    assert all(run.info.status == "FINISHED" for run in runs)
    assert all(run.data.tags["status"] == "converged" for run in runs if "status" in run.data.tags)
    assert all(run.info.run_name.startswith("converged · ") for run in runs if "status" in run.data.tags)
    for name in ("a", "b"):
        record = json.loads((folder / name / "reports" / "sweep.json").read_text())
        assert {run["status"] for run in record["runs"]} == {"converged"}


def sweep_on_a_disk_that_fills(folder: Path) -> dict[str, Any]:
    """Run inside ``unshare -m`` (a mount namespace of its own): a 40 MB disk at ``folder``,
    filled once the sweep's first run has finished; the same sweep again once the space
    is freed. Returns what a user would look at, as JSON-able values."""
    import json
    import threading
    import time

    from mlflow.tracking import MlflowClient

    from pipeline.tracking import open_store, quick_check

    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(folder)], check=True)
    prepare_data(folder)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    open_store(uri, "downhill")
    filler = folder / "filler"

    def fill_after_the_first_run() -> None:
        while not list(folder.glob("mlartifacts/*/artifacts/outcome.json")):
            time.sleep(0.05)
        with filler.open("wb") as handle, contextlib.suppress(OSError):
            while True:
                handle.write(bytes(1 << 20))

    def sweep() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "pipeline.train", "--multirun", *isolating_overrides(folder)]
        command += [*START_ONE_RUN[:2], "optimizer.lr=0.1,0.3,0.5,0.01", f"hydra.sweep.dir={folder}/logs"]
        return subprocess.run(command, cwd=REPO_ROOT, env=user_env(), capture_output=True, text=True)

    def statuses() -> list[list[str]]:
        client = MlflowClient(uri)
        runs = client.search_runs([open_store(uri, "downhill").experiment])
        return sorted([run.data.tags.get("downhill.role", ""), run.info.status] for run in runs)

    thread = threading.Thread(target=fill_after_the_first_run, daemon=True)
    thread.start()
    full = sweep()
    thread.join()
    quick_check(folder / "mlflow.db")  # raises if the store was damaged
    after_full = statuses()
    filler.unlink()
    resumed = sweep()
    record = json.loads((folder / "reports" / "sweep.json").read_text()) if resumed.returncode == 0 else {}
    return {
        "full": [full.returncode, full.stderr],
        "after_full": after_full,
        "resumed": [resumed.returncode, resumed.stderr],
        "after_resume": statuses(),
        "record": [run["status"] for run in record.get("runs", [])],
    }


def page_drawn_by_a_fork(folder: Path) -> None:
    """Checks, meant for a fresh interpreter: a forked copy reports how its action ended;
    the page it draws is the page; where the copy fails, the process draws the same page."""
    from pipeline import pictures, train
    from pipeline.keys import sweep_key

    def fails() -> bool:
        raise RuntimeError("a page that cannot be drawn")

    def exit_code(process: Any) -> int:
        process.join()
        return int(process.exitcode)

    outcomes = {"done": lambda: True, "nothing": lambda: False, "error": fails}
    exits = {name: exit_code(pictures._forked(action)) for name, action in outcomes.items()}
    assert exits == {"done": 0, "nothing": 1, "error": 1}, exits
    config = project_cfg(folder, "train")
    runs = [train.run(config)]
    page = folder / "reports" / "landscape.html"
    assert page in pictures.write_sweep_outputs(config, sweep_key([runs[0].job_key]), runs)
    assert page.read_text() == pictures.sweep_page(config, runs)
    page.unlink()
    copies: list[Any] = []
    fork = pictures._forked

    def failing_copy(action: Any) -> Any:
        copies.append(fork(fails))
        return copies[-1]

    curves = folder / "reports" / "loss_curves.png"  # drawn by the copy beside the page
    assert curves.stat().st_size > 0
    curves.unlink()
    pictures._forked = failing_copy
    try:
        written = pictures.write_sweep_outputs(config, sweep_key([runs[0].job_key]), runs)
    finally:
        pictures._forked = fork
    assert [copy.exitcode for copy in copies] == [1]
    assert page in written and curves in written and curves.stat().st_size > 0
    assert page.read_text() == pictures.sweep_page(config, runs)


def fused_jobs(folder: Path, lrs: list[str], workers: int, task: Callable[[DictConfig], Any]) -> list[int]:
    """Record one job per learning rate with :func:`pipeline.fused.record_jobs` in
    ``workers`` forked workers (meant for a fresh interpreter), logs under ``folder``;
    return the workers' exit statuses."""
    from hydra._internal.callbacks import Callbacks
    from hydra.core.utils import setup_globals
    from hydra.types import RunMode

    from pipeline.fused import record_jobs

    setup_globals()
    overrides = [f"paths.root={folder}", f"hydra.sweep.dir={folder / 'logs'}"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        configs = [
            compose("train", [*overrides, f"optimizer.lr={lr}"], return_hydra_config=True) for lr in lrs
        ]
    for config, lr in zip(configs, lrs, strict=True):  # as the sweeper sets them for each job
        config.hydra.mode = RunMode.MULTIRUN
        config.hydra.overrides.task = [f"optimizer.lr={lr}"]
    return record_jobs(task, configs.__getitem__, len(configs), 0, workers, Callbacks(configs[0]))


def work_ahead_probe(how: str) -> dict[str, Any]:
    """Meant for a fresh interpreter: a :class:`pipeline.fused.WorkAhead` whose copy sends
    a short piece, then one larger than a pipe holds, then (``how``) sleeps a minute
    before a third ("slow"), or fails ("fails"); its first piece and the rest are taken
    once the first two are in, or the copy is let go without a look ("dropped"). Or the
    copy hangs a minute before its first piece ("hangs"), waited for half a second. What
    was taken, the copy's process id, and whether a copy that failed was reaped by then."""
    import time

    from pipeline.fused import WorkAhead

    def pieces() -> Iterator[str]:
        if how == "hangs":
            time.sleep(60)
        yield "first"
        yield "x" * 1_000_000
        if how == "fails":
            raise ValueError("a copy that breaks")
        time.sleep(60)
        yield "never"

    ahead = WorkAhead(pieces)
    pid = ahead.pid
    if how == "hangs":
        return {"first": ahead.first(timeout=0.5), "taken": ahead.take(), "pid": pid}
    deadline = time.monotonic() + 60
    while len(ahead.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    if how == "dropped":
        ahead.close()
        return {"first": None, "taken": None, "pid": pid}
    while how == "fails" and ahead.pid is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # a copy that ended by itself is reaped as it ends, not left a zombie
    reaped = ahead.pid is None
    first = ahead.first()
    return {"first": first, "taken": [len(piece) for piece in ahead.take()], "pid": pid, "reaped": reaped}


def write_job_record(cfg: DictConfig) -> None:
    """A task for :func:`fused_jobs`: the job's number, process and rate in a file; a
    negative rate fails the job; a rate of 7 sleeps a minute (for a signal to find it)."""
    import os
    import time

    from hydra.core.hydra_config import HydraConfig

    if cfg.optimizer.lr < 0:
        raise ValueError("a job that fails")
    hydra = HydraConfig.get()
    number = hydra.job.num
    record = {
        "num": number,
        "pid": os.getpid(),
        "lr": cfg.optimizer.lr,
        "has_hydra": "hydra" in cfg,
        "struct": OmegaConf.is_struct(cfg),
        "folder": hydra.runtime.output_dir,
        # Hydra's config of the job, through its own interpolations and through the resolver.
        "log_file": OmegaConf.select(HydraConfig.instance().cfg, "hydra.job_logging.handlers.file.filename"),  # type: ignore[arg-type]
        "dirname": OmegaConf.create({"name": "${hydra:job.override_dirname}"}).name,
    }
    Path(cfg.paths.root, f"job{number}.json").write_text(json.dumps(record))
    if cfg.optimizer.lr == 7:
        time.sleep(60)


def run_command(
    main: Callable[[list[str]], object], capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str, str]:
    """A command's ``main(argv)`` run in this process: its exit status, stdout and stderr."""
    try:
        main(list(argv))
        status = 0
    except SystemExit as stop:
        status = int(stop.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def gd_run(X: np.ndarray, y: np.ndarray, optimum: np.ndarray, lr: float) -> RunSummary:
    """The record of a plain gradient-descent run from θ = 0 at learning rate ``lr``."""
    from pipeline.methods import gd
    from pipeline.optimize import fit, mean_squared_error
    from pipeline.outcome import RunSummary

    result = fit(X, y, theta_init=[0.0, 0.0, 0.0], method=gd(lr), max_iter=300, tol=1e-9)
    return RunSummary(
        job_key=f"job{lr}",
        overrides=[f"optimizer.lr={lr}"],
        run_name=f"gd lr={lr}",
        status=result.status,  # type: ignore[arg-type]
        message=result.message,
        method="gd",
        lr=lr,
        theta_init=[0.0, 0.0, 0.0],
        theta=result.theta.tolist(),
        optimum_mse=mean_squared_error(X, y, optimum),
        path_steps=result.history_steps.tolist(),
        path_theta=result.theta_history.tolist(),
        path_loss=result.loss_history.tolist(),
    )


#: The page's live-run script (pipeline/live.js), which Node runs as the page does.
LIVE_SCRIPT = REPO_ROOT / "pipeline" / "live.js"


def _node(program: str, given: dict[str, Any]) -> Any:
    """Run ``program`` under Node with ``live`` (the script) and ``given`` (JSON on stdin) in
    scope; what it prints, as JSON. Floats cross both ways exactly (shortest round-trip forms)."""
    script = (
        f"const live = require({json.dumps(str(LIVE_SCRIPT))});\n"
        "const given = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n" + program
    )
    done = subprocess.run(
        ["node", "-e", script],
        input=json.dumps(given),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def node_runs(data: dict[str, Any], cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each case run by the page's ``downhill.run`` on the page's numbers ``data``."""
    program = "console.log(JSON.stringify(given.cases.map((c) => live.run(given.data, c))));"
    return list(_node(program, {"data": data, "cases": cases}))


def node_command(data: dict[str, Any], options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The command the page shows beside a live run with ``options``, and the run."""
    program = (
        "const settings = live.settle(given.data, given.options);\n"
        "const run = live.run(given.data, given.options);\n"
        "console.log(JSON.stringify([live.command(given.data, settings), run]));"
    )
    command, run = _node(program, {"data": data, "options": options})
    return str(command), dict(run)


def node_step_parts(data: dict[str, Any], options: dict[str, Any], steps: list[int]) -> list[dict[str, Any]]:
    """The page's step-by-step arrows (``stepParts``) at iterates ``steps`` of a live run."""
    program = (
        "const run = live.run(given.data, given.options);\n"
        "console.log(JSON.stringify(given.steps.map((k) => live.stepParts(run, k))));"
    )
    return list(_node(program, {"data": data, "options": options, "steps": steps}))
