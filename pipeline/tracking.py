"""MLflow bookkeeping: where runs are stored, the experiment, and a sweep's parent run.

The default store is a SQLite file at the repository root (``mlflow.db``) with the
artifacts beside it (``mlartifacts/``); ``mlflow.tracking_uri`` in the config, or the
``MLFLOW_TRACKING_URI`` environment variable (which wins), points elsewhere.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from pipeline import errors
from pipeline.errors import fail
from pipeline.files import resolve, write_atomic, write_json

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

# Nothing here may wait on the network: no usage reports, no progress bars.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

#: Set by :class:`SweepCallback` for the jobs of a sweep: the parent run's id.
PARENT_RUN_ENV = "DOWNHILL_PARENT_RUN_ID"
#: Also for the jobs' progress line: how many jobs, and the best training MSE so far.
SWEEP_SIZE_ENV = "DOWNHILL_SWEEP_SIZE"
BEST_MSE_ENV = "DOWNHILL_BEST_TRAIN_MSE"
SQLITE_PREFIX = "sqlite:///"
#: The registry alias that names the model to use (moved by ``evaluate``).
CHAMPION = "champion"


def repository_root() -> Path:
    """The project folder, also when DVC runs an experiment in a temporary copy.

    ``dvc exp run --temp`` and ``dvc queue`` work in ``<repo>/.dvc/tmp/exps/<name>``;
    their runs belong in the repository's own store, not in the throw-away copy.
    """
    here = Path(__file__).resolve().parents[1]
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return here


def tracking_uri(configured: str | None) -> str:
    """``MLFLOW_TRACKING_URI``, else the configured URI, else SQLite at the root."""
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    if configured:
        return configured
    return SQLITE_PREFIX + str(repository_root() / "mlflow.db")


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri[len(SQLITE_PREFIX) :]) if uri.startswith(SQLITE_PREFIX) else None


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialize store creation: two processes creating one SQLite file can corrupt it."""
    database = _sqlite_file(uri)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def client_for(uri: str) -> MlflowClient:
    """An MLflow client for the store at ``uri`` (imports MLflow, about a second)."""
    from mlflow.tracking import MlflowClient

    # MLflow announces store creation and its input-example check at INFO on every
    # run: noise in a sweep and between a mistake and its one-line message.
    for name in ("mlflow.store.db.utils", "mlflow.pyfunc", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def prepare_experiment(uri: str, name: str) -> str:
    """Create the store and the experiment if they do not exist; return its id.

    A SQLite store keeps its artifacts in ``mlartifacts/`` beside the database file.
    """
    with _store_lock(uri):
        client = client_for(uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        database = _sqlite_file(uri)
        location = (database.parent / "mlartifacts").as_uri() if database else None
        return str(client.create_experiment(name, artifact_location=location))


def git_commit() -> str:
    """The checked-out commit, or ``unknown`` outside git (plus ``-dirty`` if edited)."""
    root = repository_root()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def process_tags() -> dict[str, str]:
    """Which process on which machine runs this, so that its runs can be closed if it dies."""
    return {"downhill.host": socket.gethostname(), "downhill.pid": str(os.getpid())}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_orphaned_runs(client: MlflowClient, experiment_id: str) -> int:
    """Mark KILLED the runs left RUNNING by a process of this machine that is gone.

    A ``kill -9`` leaves its run RUNNING forever; the next sweep tidies up after it.
    Runs of live processes, and of other machines, are left alone.
    """
    host = socket.gethostname()
    closed = 0
    running = client.search_runs(
        [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    for run in running:
        pid = run.data.tags.get("downhill.pid", "")
        if run.data.tags.get("downhill.host") == host and pid.isdigit() and not _process_alive(int(pid)):
            client.set_terminated(run.info.run_id, status="KILLED")
            closed += 1
    return closed


def _close_parent(client: MlflowClient, run_id: str) -> None:
    """At exit: a parent still RUNNING means the sweep did not finish."""
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, status="KILLED" if errors.stopped_by_signal else "FAILED")


def sweep_grid(config: DictConfig) -> dict[str, str]:
    """The sweep declared in the config (``hydra.sweeper.params``): key → "a,b,c"."""
    return {str(key): str(value) for key, value in (config.hydra.sweeper.params or {}).items()}


def sweep_size(config: DictConfig) -> int | None:
    """How many jobs the sweep will run: the grid in the config, command line applied."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    words = [f"{key}={value}" for key, value in sweep_grid(config).items()]
    try:
        overrides = OverridesParser.create().parse_overrides([*words, *config.hydra.overrides.task])
        choices = {o.key_or_group: o for o in overrides}  # the command line comes last and wins
        size = 1
        for override in choices.values():
            if override.is_sweep_override():
                size *= len(list(override.sweep_string_iterator()))
    except Exception:  # a sweep kind we cannot count (glob, interval): just do not show N
        return None
    return size


def axis_labels(config: DictConfig) -> tuple[str, str]:
    """Labels for θ0 and θ1 with units, from ``data.units``."""
    target_unit = config.data.units.target
    feature, feature_unit = config.data.features[0], config.data.units.features[0]
    return (
        f"θ0, intercept ({target_unit})",
        f"θ1, coefficient of {feature} ({target_unit} per {feature_unit})",
    )


def sweep_figures(config: DictConfig, results: list[dict[str, Any]]) -> dict[str, Figure]:
    """The landscape, valley and loss-curve pictures of a sweep, keyed by their path key."""
    import pandas as pd

    from pipeline.landscape import landscape_figure, loss_curves_figure, valley_figure
    from pipeline.model import polynomial_columns

    runs = [run for run in results if run["status"] != "failed"]
    if not runs:
        return {}
    table = pd.read_parquet(resolve(config, config.paths.train))
    X = polynomial_columns(table[list(config.data.features)].to_numpy(np.float64), int(runs[0]["degree"]))
    y = table[config.data.target].to_numpy(np.float64)
    optimum = np.asarray(runs[0]["optimum_theta"])
    labels = axis_labels(config)
    return {
        "landscape": landscape_figure(runs, X, y, optimum, labels),
        "valley": valley_figure(runs, X, y, optimum, labels),
        "loss_curves": loss_curves_figure(runs),
    }


def summary_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per job of a sweep: its settings, outcome and final numbers."""
    import pandas as pd

    rows = []
    for result in results:
        row = {key: result.get(key) for key in ("run_id", "run_name", "method", "lr", "status", "n_iter")}
        init, theta = result.get("theta_init") or [None, None], result.get("theta") or [None, None]
        row |= {"theta0_init": init[0], "theta1_init": init[1], "theta0": theta[0], "theta1": theta[1]}
        row |= {key: result.get(key) for key in ("train_mse", "optimality_gap", "message")}
        rows.append(row)
    return pd.DataFrame(rows)


class SweepCallback(Callback):
    """Hydra callback that brackets training jobs with MLflow bookkeeping.

    * Before any job: the store and experiment are created, once.
    * A ``--multirun`` sweep gets a parent run; each job logs a child run under it.
    * After the last job: ``paths.sweep`` lists every job's outcome (run id, θ, status)
      for ``evaluate``, and the parent run is closed.
    """

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.parent_run_id: str | None = None
        self.uri = ""
        self.experiment_id = ""

    def _start(self, config: DictConfig) -> None:
        self.results = []
        self.uri = tracking_uri(config.mlflow.tracking_uri)
        self.experiment_id = prepare_experiment(self.uri, config.mlflow.experiment)
        closed = close_orphaned_runs(client_for(self.uri), self.experiment_id)
        if closed:
            log.warning("marked %d runs KILLED: their processes had ended without closing them", closed)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._start(config)
        client = client_for(self.uri)
        overrides = list(config.hydra.overrides.task)
        run = client.create_run(
            self.experiment_id,
            run_name=f"sweep {time.strftime('%Y-%m-%d %H:%M:%S')}",
            tags=process_tags() | {"downhill.role": "sweep", "git_commit": git_commit()},
        )
        self.parent_run_id = run.info.run_id
        for key, values in sweep_grid(config).items():
            client.log_param(self.parent_run_id, f"sweep.{key}", str(values))
        if overrides:
            client.log_param(self.parent_run_id, "sweep.overrides", " ".join(overrides))
        os.environ[PARENT_RUN_ENV] = self.parent_run_id
        size = sweep_size(config)
        if size:
            os.environ[SWEEP_SIZE_ENV] = str(size)
        # Should a job crash the sweep, the parent must not stay RUNNING forever.
        atexit.register(_close_parent, client, self.parent_run_id)
        log.info("sweep parent run %s in %s", self.parent_run_id, self.uri)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, dict):
            self.results.append(job_return.return_value)
            finished = [r["train_mse"] for r in self.results if r["status"] in {"converged", "max_iter"}]
            if finished:
                os.environ[BEST_MSE_ENV] = repr(min(finished))
        else:
            self.results.append(
                {
                    "status": "failed",
                    "overrides": list(job_return.overrides or []),
                    "message": str(job_return._return_value),
                }
            )

    def _finish(self, config: DictConfig) -> dict[str, Figure]:
        """Write the sweep record and its pictures; return the pictures."""
        record = {
            "tracking_uri": self.uri,
            "experiment_id": self.experiment_id,
            "parent_run_id": self.parent_run_id,
            "runs": self.results,
        }
        write_json(resolve(config, config.paths.sweep), record)
        figures = sweep_figures(config, self.results)
        for name, figure in figures.items():
            write_atomic(resolve(config, config.paths[name]), partial(figure.savefig, format="png", dpi=110))
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result["status"]] = counts.get(result["status"], 0) + 1
        log.info("%d runs: %s", len(self.results), ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        return figures

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.results and self.results[0]["status"] != "failed":  # else Hydra reports it
            self._finish(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        figures = self._finish(config)
        if self.parent_run_id is None:
            return
        client = client_for(self.uri)
        client.log_text(self.parent_run_id, json.dumps(self.results, indent=2), "sweep.json")
        for name, figure in figures.items():
            client.log_figure(self.parent_run_id, figure, f"{name}.png")
        summary = summary_table(self.results)
        client.log_table(self.parent_run_id, data=summary, artifact_file="sweep_summary.json")
        client.log_text(self.parent_run_id, summary.to_csv(index=False), "sweep_summary.csv")
        client.set_terminated(self.parent_run_id, status="FINISHED")
        for name in (PARENT_RUN_ENV, SWEEP_SIZE_ENV, BEST_MSE_ENV):
            os.environ.pop(name, None)
        failed = [result for result in self.results if result["status"] == "failed"]
        if failed:
            fail(f"{len(failed)} of {len(self.results)} runs failed; the first: {failed[0]['message']}")
