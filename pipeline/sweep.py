"""A sweep, recorded in MLflow: claimed or started, launched, read back, written out.

The project's Hydra sweeper (``hydra_plugins/downhill_sweeper``) calls :func:`run_sweep`
in the process that started the sweep, whatever launcher runs the jobs (in this
process, in joblib's workers, on a Ray cluster):

1. the grid becomes a list of jobs, each with a job key (:mod:`pipeline.keys`), made by
   a forked copy of this process while this one opens the store (with the fused
   launcher, the copy goes on to fit the jobs); the sweep's key hashes them;
2. a parent run with that key that did not finish (killed, crashed, failed) is claimed
   under the store lock and resumed: its FINISHED children are kept, the rest are
   deleted and run again; otherwise a new parent run is started;
3. the pending jobs are launched with ``mlflow.parent_run_id`` in their config;
4. the children's outcomes are read back from MLflow (not from the launcher's memory)
   and written, in job order, to ``paths.sweep`` with the pictures; where each job's
   outcome is quick to know before it runs (the MSE), the forked copy has drawn the
   pictures meanwhile, from the outcomes the runs were to record, and they are moved
   into place if the runs read back are those.

Anything that goes wrong on the way ends in one ``error:`` line and a non-zero exit;
the parent run then ends FAILED (or KILLED on a signal), and the next identical sweep
resumes it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from omegaconf import DictConfig, OmegaConf

from pipeline import errors
from pipeline.compose import QuickComposer
from pipeline.errors import PipelineError, exit_on_error, first_line
from pipeline.files import file_md5, resolve
from pipeline.fused import WorkAhead
from pipeline.keys import in_result, job_key, sweep_key
from pipeline.launchers import launcher_of, traits, worker_count
from pipeline.outcome import RunSummary, best_run
from pipeline.pictures import (
    DrawnAhead,
    discard_drawn,
    draw_ahead,
    sweep_figures,
    sweep_page,
    write_sweep_outputs,
)
from pipeline.progress import SweepWatch
from pipeline.record import FULL_RECORD_RUNS, group_minima, read_sweep_record, summary_table, sweep_record
from pipeline.rules import LAUNCH_BATCH
from pipeline.settings import read_number
from pipeline.tracking import (
    BEST_MSE_ENV,
    COMMIT_KEY,
    DVC_EXPERIMENT_ENV,
    JOB_KEY_TAG,
    LAUNCHER_PID_ENV,
    PARENT_KEY,
    PLANNED_KEY,
    ROLE_TAG,
    SPLIT_KEY,
    SWEEP_KEY_TAG,
    SWEEP_SIZE_ENV,
    OpenStore,
    children,
    close_orphaned_runs,
    each_child,
    git_commit,
    lease,
    open_store,
    process_tags,
    read_outcome,
    sqlite_file,
    store_lock,
    sweep_link,
    sweep_parents,
    tracking_uri,
    write_store_mark,
)

if TYPE_CHECKING:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.config_loader import ConfigLoader
    from mlflow.entities import RunInfo
    from mlflow.tracking import MlflowClient

log = logging.getLogger("pipeline.sweep")

# Names that lived here before the record, the pictures and the read-back got homes of
# their own: still importable from this module.
__all__ = [
    "WorkerWarmUp",
    "job_configs",
    "plan_jobs",
    "read_back",
    "read_outcome",
    "read_sweep_record",
    "run_sweep",
    "summary_table",
    "sweep_figures",
    "sweep_page",
    "sweep_record",
    "task_configs",
    "write_sweep_outputs",
]

#: Settings a sweep may not vary.
ONE_PER_SWEEP = ("model.loss", "model.loss_scale")


def sweep_grid(config: DictConfig) -> dict[str, str]:
    """The sweep declared in the config (``hydra.sweeper.params``): key → "a,b,c"."""
    return {str(key): str(value) for key, value in (config.hydra.sweeper.params or {}).items()}


def warm_up_imports(module: str) -> int:
    """Import what a job imports (the task's module, MLflow's store and model logging);
    return this process's id. Run in a launcher's worker before the jobs come."""
    import importlib

    import mlflow.pyfunc
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    if module:
        importlib.import_module(module)
    return os.getpid()


def as_launched(settings: dict[str, Any]) -> dict[str, Any]:
    """joblib's settings as Hydra's joblib launcher passes them to ``Parallel``: the loky
    backend, and numbers given as text (``pre_dispatch: "4"``) as numbers."""
    launched = settings | {"backend": "loky"}
    for key in ("pre_dispatch", "batch_size", "max_nbytes"):
        value = launched.get(key)
        if isinstance(value, str) and value.isdigit():
            launched[key] = int(value)
    return launched


class WorkerWarmUp:
    """Start joblib's workers and their imports (some 3 s each) while the sweep is being
    planned, instead of once the jobs are launched.

    joblib keeps its worker processes for the next call with the same settings: the
    launcher's call then finds them started. A no-op for other launchers.
    """

    def __init__(self, launcher: Any, job_count: int) -> None:
        self.task_module = str(getattr(getattr(launcher, "task_function", None), "__module__", ""))
        self.settings: dict[str, Any] | None = None
        self.count = 0
        if traits(launcher).warm_up:
            # At most a worker per job: loky starts every worker it is allowed, each some
            # 150 MB, whether a job comes or not. The launcher gets the same count, so
            # that joblib hands it the workers warmed up here.
            self.count = worker_count(launcher.joblib.get("n_jobs"), job_count)
            launcher.joblib["n_jobs"] = self.count
            self.settings = as_launched(dict(launcher.joblib))
        self.thread = threading.Thread(target=self._run, name="worker-warm-up", daemon=True)
        self.workers: set[int] = set()  # the process ids of the workers warmed up

    def _run(self) -> None:
        from joblib import Parallel, delayed

        assert self.settings is not None
        with contextlib.suppress(Exception):  # the launch itself will say what is wrong
            self.workers = set(
                Parallel(**self.settings)(
                    delayed(warm_up_imports)(self.task_module) for _ in range(self.count)
                )
            )

    def start(self) -> None:
        # One worker is this process itself (joblib runs the jobs in it one by one): what
        # it imports it imports in its own time; a thread importing the same modules at
        # the same moment finds them half-initialized.
        if self.settings is not None and self.count > 1:
            self.thread.start()

    def join(self) -> None:
        """Wait for the workers to be ready (before the launcher uses them)."""
        if self.thread.is_alive():
            self.thread.join()


def launch_batch(config: DictConfig) -> int | None:
    """``hydra.sweeper.max_batch_size``, Hydra's own setting: the jobs handed to the
    launcher at once (None: all)."""
    if OmegaConf.select(config, BATCH_KEY, default=None) is None:
        return None
    return int(read_number(config, BATCH_KEY, LAUNCH_BATCH))


def plan_jobs(
    config: DictConfig, arguments: list[str], loader: ConfigLoader | None = None
) -> list[list[str]]:
    """Every job's overrides, in Hydra's order: the grid in the config, the command line applied.

    ``loader`` (Hydra's config loader) is needed only for sweeps over ``glob(...)`` choices.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    words = [f"{key}={value}" for key, value in sweep_grid(config).items()] + list(arguments)
    parser = OverridesParser.create(config_loader=loader)
    overrides = parser.parse_overrides(words)
    for override in overrides:
        # The best run is the one with the lowest cost minimized: comparable within one cost only.
        if override.key_or_group in ONE_PER_SWEEP and override.is_sweep_override():
            raise PipelineError(
                f"{override.key_or_group}: one sweep minimizes one cost (its best run is the one with "
                "the lowest cost); run one sweep per value instead"
            )
    batches = BasicSweeper.split_arguments(overrides, None)
    return [list(job) for batch in batches for job in batch]


def job_configs(config: DictConfig, jobs: list[list[str]], loader: ConfigLoader) -> Iterator[DictConfig]:
    """Each job's composed config, as Hydra composes it (the quick way: :mod:`pipeline.compose`),
    one at a time: 10,000 of them held at once are some 1.5 GB."""
    composer = loader if isinstance(loader, QuickComposer) else QuickComposer(loader)
    return (composer.load_sweep_config(config, job) for job in jobs)


def task_configs(config: DictConfig, jobs: list[list[str]], loader: ConfigLoader) -> Iterator[DictConfig]:
    """Each job's config as its task gets it (without the hydra node), the quick way,
    one at a time: what the jobs' keys are computed from."""
    composer = loader if isinstance(loader, QuickComposer) else QuickComposer(loader)
    return (composer.load_task_config(config, job) for job in jobs)


def read_back(
    client: MlflowClient, experiment_id: str, parent_id: str, jobs: list[list[str]], keys: list[str]
) -> tuple[list[RunSummary], list[str | None]]:
    """Each job's outcome and run id, read from the parent's children in MLflow, in job order.

    Called once the launcher has returned every job: a child still RUNNING lost its end
    (its process died, or its last call to the store failed). With its outcome logged,
    its record is whole, and it is closed FINISHED; without, KILLED, to be run again.
    A child that ended FAILED failed, whatever outcome it logged before it broke off:
    its status, its tags and the sweep record agree.
    """
    # Of each run only what is needed here (not its params and metrics): 10,000 runs' records
    # read whole are some 500 MB.
    by_key: dict[str, tuple[RunInfo, str | None]] = {}
    for run in each_child(client, experiment_id, parent_id):
        key = run.data.tags.get(JOB_KEY_TAG)
        held = by_key.get(key) if key else None
        if key and (held is None or (run.info.status == "FINISHED") >= (held[0].status == "FINISHED")):
            by_key[key] = (run.info, run.data.tags.get("error"))
    runs: list[RunSummary] = []
    run_ids: list[str | None] = []
    for job, key in zip(jobs, keys, strict=True):
        found, error = by_key.get(key, (None, None))
        outcome = read_outcome(client, found) if found is not None else None
        if found is not None and found.status == "FAILED" and outcome is not None:
            outcome = None  # its record broke off after the outcome was logged: it failed
        if found is not None and found.status == "RUNNING":
            ended = "FINISHED" if outcome is not None else "KILLED"
            log.warning("job %s left its run %s RUNNING: closed %s", key, found.run_id, ended)
            client.set_terminated(found.run_id, status=ended)
        if found is None:
            outcome = RunSummary.failed(key, job, "", "the job recorded no run (it did not start)")
        elif outcome is None:
            error = error or f"the job ended {found.status} without an outcome"
            outcome = RunSummary.failed(key, job, found.run_name or "", error)
        runs.append(replace(outcome, overrides=[item for item in job if in_result(item)]))
        run_ids.append(found.run_id if found is not None else None)
    return runs, run_ids


#: Where the config says how many jobs a launcher is handed at once (Hydra's basic
#: sweeper's own setting; ``conf/train.yaml`` sets it).
BATCH_KEY = "hydra.sweeper.max_batch_size"

#: Seconds between two samples of the machine's CPU and memory on the sweep's parent run.
SYSTEM_METRICS_SECONDS = 2.0


@contextmanager
def system_metrics(uri: str, parent_id: str) -> Iterator[None]:
    """MLflow's system metrics (CPU, memory, disk, network of this machine) on the
    sweep's parent run, sampled every :data:`SYSTEM_METRICS_SECONDS` while its jobs
    run. The children get none: a monitor per child would cost each run time."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no start/stop lines
    monitor = SystemMetricsMonitor(  # type: ignore[no-untyped-call]
        parent_id, sampling_interval=SYSTEM_METRICS_SECONDS, tracking_uri=uri
    )
    monitor.start()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        monitor.finish()  # type: ignore[no-untyped-call]


def sweep_title(config: DictConfig, jobs: list[list[str]]) -> str:
    """The parent run's name: what the sweep is, so that two sweeps can be told apart.

    ``mse sweep · 16 runs · kc_house_data.csv · 2026-12-02 13:40``: the cost (each one
    swept), the number of runs, the data file, and the DVC experiment's name inside
    ``dvc exp run``, else the time it started.
    """
    swept = sorted({item.split("=", 1)[1] for job in jobs for item in job if item.startswith("model.loss=")})
    costs = "/".join(swept) or str(OmegaConf.select(config, "model.loss", default="mse"))
    data = Path(str(config.data.path)).name
    when = os.environ.get(DVC_EXPERIMENT_ENV) or time.strftime("%Y-%m-%d %H:%M")
    return f"{costs} sweep · {len(jobs)} run{'s' if len(jobs) != 1 else ''} · {data} · {when}"


def claim_parent(
    client: MlflowClient, uri: str, experiment_id: str, key: str, resume: bool, title: str, commit: str
) -> tuple[str, set[str]]:
    """The parent run to record the sweep under, and the job keys it already holds.

    Under the store lock, so that two identical sweeps started together do not both
    take the same parent: a parent with this key that did not finish is taken over
    (its FINISHED children kept, the others deleted); else a new one is started.
    """
    with store_lock(uri):
        parents = sweep_parents(client, experiment_id, key) if resume else []
        # A RUNNING parent belongs to a live sweep (the dead ones were closed as KILLED).
        resumable = [run for run in parents if run.info.status in ("FAILED", "KILLED")]
        if resumable:
            parent_id = resumable[0].info.run_id
            client.update_run(parent_id, status="RUNNING")
            for name, value in process_tags().items():
                client.set_tag(parent_id, name, value)
            done: set[str] = set()
            for run in children(client, experiment_id, parent_id):
                job = run.data.tags.get(JOB_KEY_TAG, "")
                if run.info.status == "FINISHED" and job and job not in done:
                    done.add(job)
                else:  # failed, killed, or a duplicate: it is run again or not needed
                    client.delete_run(run.info.run_id)
            return parent_id, done
        tags = process_tags() | {ROLE_TAG: "sweep", SWEEP_KEY_TAG: key, "git_commit": commit}
        run = client.create_run(experiment_id, run_name=title, tags=tags)
        return run.info.run_id, set()


#: What to do after a sweep stopped for want of disk space or a store.
RESUME = "once that is mended, run the same command again: it resumes the sweep"


def _close_parent(client: MlflowClient, run_id: str) -> None:
    """At exit: a parent still RUNNING means the sweep did not finish. Where the store
    cannot be written (a full disk), the next sweep closes it (its process is gone)."""
    with contextlib.suppress(Exception):
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status="KILLED" if errors.stopped_by_signal else "FAILED")


def _launched(
    job: list[str], parent_id: str, train_md5: str, commit: str, key: str | None = None
) -> list[str]:
    """A job's overrides as the launcher gets them: the sweep's parent run, the training
    split the job must find, the commit it runs and, once worked out, its key."""
    planned = [f"{PLANNED_KEY}={key}"] if key is not None else []
    return [*job, f"{PARENT_KEY}={parent_id}", f"{SPLIT_KEY}={train_md5}", f"{COMMIT_KEY}={commit}", *planned]


def _grid_params(jobs: list[list[str]]) -> dict[str, str]:
    """``sweep.<key>`` → the values that ran, in order (what ran, not the default grid)."""
    values: dict[str, list[str]] = {}
    for job in jobs:
        for item in job:
            key, _, value = item.partition("=")
            if value not in values.setdefault(key, []):
                values[key].append(value)
    return {f"sweep.{key.lstrip('+~')}": ",".join(found) for key, found in values.items() if len(found) > 1}


def _log_parent(
    client: MlflowClient,
    parent_id: str,
    runs: list[RunSummary],
    run_ids: list[str | None],
    pictures: list[Path],
    link: str,
) -> None:
    """The sweep's record, pictures, page and summary table, on its parent run
    (the pictures and the page as written: drawing them again costs a second), and
    the link to its runs in the UI as the parent's description."""
    from mlflow.entities import Metric

    summary = summary_table(runs, run_ids)
    client.log_table(parent_id, data=summary, artifact_file="sweep_summary.json")
    with tempfile.TemporaryDirectory() as folder:
        # Every run's every recorded point (sweep.json itself thins them beyond 1,000 runs).
        indent = 2 if len(runs) <= FULL_RECORD_RUNS else None
        (Path(folder) / "sweep.json").write_text(json.dumps([run.to_json() for run in runs], indent=indent))
        (Path(folder) / "sweep_summary.csv").write_text(summary.to_csv(index=False))
        for path in pictures:
            shutil.copy(path, folder)
        client.log_artifacts(parent_id, folder)
    counts = {
        "minima_found": len(group_minima(runs)),
        "runs_at_global_minimum": sum(run.end_point == "global minimum" for run in runs),
        "runs_at_local_minima": sum(run.end_point == "local minimum" for run in runs),
        "runs_on_plateau": sum(run.end_point == "plateau" for run in runs),
    }
    now = int(1000 * time.time())
    metrics = [Metric(name, float(value), now, 0) for name, value in counts.items()]
    client.log_batch(parent_id, metrics=metrics)
    # The parent's description (MLflow's note) in Markdown, shown on its page.
    client.set_tag(parent_id, "mlflow.note.content", f"{len(runs)} runs. [Its runs, best first]({link})")


def launch_pending(
    config: DictConfig,
    launcher: Any,
    loader: ConfigLoader,
    arguments: list[str],
    store: OpenStore,
    jobs: list[list[str]],
    keys: list[str],
    key: str,
    train_md5: str,
    commit: str,
    warm_up: WorkerWarmUp,
    batch: int,
) -> tuple[MlflowClient, str, str]:
    """The middle of :func:`run_sweep`: claim the sweep's parent run in ``store``
    (resumed where it finished jobs before), launch the jobs not yet finished, in
    batches of ``batch``; return the client, the experiment's id and the parent's."""
    client, experiment_id, uri = store.client, store.experiment, store.uri
    closed = close_orphaned_runs(client, experiment_id)
    if closed:
        log.warning("marked %d runs KILLED: their processes had ended without closing them", closed)
    resume = bool(OmegaConf.select(config, "mlflow.resume", default=True))
    parent_id, done = claim_parent(client, uri, experiment_id, key, resume, sweep_title(config, jobs), commit)
    atexit.register(_close_parent, client, parent_id)  # should anything below end the process
    if done:
        log.info("resuming sweep %s: %d of %d jobs already finished", parent_id, len(done), len(jobs))
    else:
        for name, value in _grid_params(jobs).items():
            client.log_param(parent_id, name, value)
        if arguments:
            client.log_param(parent_id, "sweep.overrides", " ".join(arguments))
    pending, seen = [], set(done)
    for job, job_key_ in zip(jobs, keys, strict=True):
        if job_key_ not in seen:  # each result once, also when two jobs share a key
            seen.add(job_key_)
            pending.append(_launched(job, parent_id, train_md5, commit, job_key_))
    os.environ[SWEEP_SIZE_ENV] = str(len(jobs))
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    log.info(
        "sweep %s: %d jobs to run (of %d) into %s",
        parent_id,
        len(pending),
        len(jobs),
        config.mlflow.experiment,
    )
    if pending:
        # A launcher that runs the jobs in other processes leaves the terminal to this one
        # (the fused launcher does where it records them in forked workers).
        workers = getattr(launcher, "workers", None)
        in_process = traits(launcher).in_process and (workers is None or workers(len(pending)) == 1)
        watch = nullcontext() if in_process else SweepWatch(client, experiment_id, parent_id, len(jobs))
        if isinstance(loader, QuickComposer):
            loader.prepare(config, pending)
        warm_up.join()
        with watch, lease(client, parent_id), system_metrics(uri, parent_id):  # seen alive while jobs run
            try:
                # A batch at a time: a launcher holds each job's return (with a copy of
                # Hydra's whole config, some 0.3 MB) until the last job of its call ends.
                for first in range(0, len(pending), batch):
                    launcher.launch(pending[first : first + batch], initial_job_idx=first)
            except (KeyboardInterrupt, errors.Terminated):
                # joblib kills its workers when the launch is cut short: the runs they
                # had under way cannot end themselves.
                for run in children(client, experiment_id, parent_id):
                    if run.info.status == "RUNNING":
                        client.set_terminated(run.info.run_id, status="KILLED")
                raise
            except Exception as error:  # Hydra could not write a job's folder: a full disk, say
                raise PipelineError(f"the sweep stopped: {first_line(error)}; {RESUME}") from None
    return client, experiment_id, parent_id


#: How long the sweep waits for the job keys from its forked copy before it makes them
#: itself: the copy composes some 4 ms a job, and is given some ten times that.
AHEAD_WAIT, AHEAD_WAIT_PER_JOB = 60.0, 0.05


@runtime_checkable
class FitsAhead(Protocol):
    """A launcher whose fits are made ahead, in the sweep's :class:`pipeline.fused.WorkAhead`
    (the fused launcher, ``hydra_plugins/downhill_sweeper``)."""

    def fits_ahead(self, tasks: list[DictConfig], keys: list[str]) -> Iterator[Any]:
        """In the forked copy: the fits of the jobs whose task configs are ``tasks`` (and
        keys ``keys``), in pieces."""

    def fits_from(self, ahead: WorkAhead) -> None:
        """Take the pieces of ``ahead`` after the job keys, at the launch."""


@runtime_checkable
class OutcomesAhead(Protocol):
    """A sweeper that knows the outcome each job will record before it runs, where that
    is quick (the project's, ``hydra_plugins/downhill_sweeper``)."""

    def outcomes_ahead(
        self, tasks: list[DictConfig], keys: list[str], fitted: dict[str, Any]
    ) -> list[RunSummary] | None:
        """In the forked copy: each job's outcome (``tasks``: their task configs; ``keys``:
        their keys; ``fitted``: the fits made already, by key), or None."""


def sweep_ahead(
    compose: Callable[[], Iterable[DictConfig]],
    train_md5: str,
    fits: Callable[[list[DictConfig], list[str]], Iterator[Any]] | None,
    draw: Callable[[list[DictConfig], list[str], dict[str, Any]], DrawnAhead | None] | None = None,
) -> Iterator[Any]:
    """What a sweep's :class:`pipeline.fused.WorkAhead` makes: the job keys of the task
    configs ``compose`` makes, then what ``fits`` (the fused launcher's) makes of them,
    then the pictures ``draw`` draws of them (:func:`draw_sweep_ahead`)."""
    configs = list(compose())
    keys = [job_key(task_config, train_md5) for task_config in configs]
    yield keys
    fitted: dict[str, Any] = {}
    if fits is not None:
        for piece in fits(configs, keys):
            fitted.update(piece)
            yield piece
    if draw is not None:
        drawn = draw(configs, keys, fitted)
        if drawn is not None:
            yield drawn


def draw_sweep_ahead(
    config: DictConfig,
    jobs: list[list[str]],
    outcomes: OutcomesAhead,
    configs: list[DictConfig],
    keys: list[str],
    fitted: dict[str, Any],
) -> DrawnAhead | None:
    """In the sweep's forked copy, while the runs are recorded: the sweep's pictures and
    page, drawn from the outcomes its runs will record (the sweep's ``jobs``, their task
    configs ``configs`` and keys ``keys``; ``fitted``: the fits made already), where
    those are quick to know; the sweep moves them into place if the runs it reads back
    are those (:func:`pipeline.pictures.publish_drawn`), else draws them again."""
    # At the processes' common priority: stepped back (``nice``), the copy would be left
    # the crumbs of a loaded machine while the sweep waits for it at the end, and cannot
    # step forward again without privileges.
    runs = outcomes.outcomes_ahead(configs, keys, fitted)
    if runs is None:
        return None
    # As read_back gives them: the job's place in the grid.
    runs = [
        replace(run, overrides=[item for item in job if in_result(item)])
        for run, job in zip(runs, jobs, strict=True)
    ]
    return draw_ahead(config, runs, os.getpid())


@exit_on_error
def run_sweep(sweeper: BasicSweeper, arguments: list[str]) -> list[RunSummary]:
    """Run a sweep as the module docstring says; called by the project's Hydra sweeper."""
    config, context, launcher = sweeper.config, sweeper.hydra_context, sweeper.launcher
    assert config is not None and context is not None and launcher is not None  # set up by Hydra
    loader = context.config_loader
    uri = tracking_uri(config.mlflow.tracking_uri)
    elsewhere = launcher_of(config).remote(config)
    if elsewhere and sqlite_file(uri) is not None:
        raise PipelineError(
            f"{elsewhere} runs jobs on other machines, which cannot share the SQLite store "
            f"{sqlite_file(uri)} (a file on this one): start the team server (`make server`) "
            "and export the MLFLOW_TRACKING_URI it prints"
        )
    jobs = plan_jobs(config, arguments, loader)
    if not jobs:
        raise PipelineError(
            f"the sweep has no jobs: an empty grid in {' '.join(arguments) or 'conf/train.yaml'}"
        )
    batch = launch_batch(config) or len(jobs)
    train_path = resolve(config, config.paths.train)
    if not train_path.is_file():
        raise PipelineError(f"{train_path}: no training split; run `dvc repro split` first")
    warm_up = WorkerWarmUp(launcher, len(jobs))
    train_md5 = file_md5(train_path)
    commit = git_commit()
    # Composed as the launcher will compose them, the parent run's id not known yet (no key
    # holds it). A key is of the task's part alone, made without Hydra's (1.3 ms a job, not 4).
    planned = [_launched(job, "null", train_md5, commit) for job in jobs]
    compose = functools.partial(task_configs, config, planned, loader)
    fitter = launcher if isinstance(launcher, FitsAhead) else None  # the fused launcher
    # The job keys (and the fused launcher's fits) are made by a forked copy of this
    # process while this one opens the store (MLflow's import, some 2 s on one core). It
    # is forked before any thread of the sweep starts (joblib's warm-up among them).
    fits = fitter.fits_ahead if fitter is not None else None
    # And it goes on to draw the sweep's pictures, while the runs are recorded.
    draw = (
        functools.partial(draw_sweep_ahead, config, jobs, sweeper)
        if isinstance(sweeper, OutcomesAhead)
        else None
    )
    wait = AHEAD_WAIT + AHEAD_WAIT_PER_JOB * len(jobs)
    ahead = WorkAhead(functools.partial(sweep_ahead, compose, train_md5, fits, draw))
    try:
        warm_up.start()
        store = open_store(uri, config.mlflow.experiment)
        keys = ahead.first(timeout=wait)
        if not (isinstance(keys, list) and len(keys) == len(jobs)):  # nothing forked, or the copy failed
            keys = [job_key(task_config, train_md5) for task_config in compose()]  # and says why here
        if fitter is not None:
            fitter.fits_from(ahead)
        key = sweep_key(keys)
        client, experiment_id, parent_id = launch_pending(
            config, launcher, loader, arguments, store, jobs, keys, key, train_md5, commit, warm_up, batch
        )
        for name in (SWEEP_SIZE_ENV, BEST_MSE_ENV, LAUNCHER_PID_ENV):
            os.environ.pop(name, None)
        try:
            runs, run_ids = read_back(client, experiment_id, parent_id, jobs, keys)
            drawn = ahead.last(timeout=wait)
            drawn = drawn if isinstance(drawn, DrawnAhead) else None
            pictures = write_sweep_outputs(config, key, runs, drawn)
            link = sweep_link(uri, client, experiment_id, parent_id)
            _log_parent(client, parent_id, runs, run_ids, pictures, link)
            failed = [run for run in runs if run.status == "failed"]
            client.set_terminated(parent_id, status="FAILED" if failed else "FINISHED")
        except Exception as error:  # an unwritable folder, a full disk, a store that went away
            raise PipelineError(f"finishing the sweep: {first_line(error)}; {RESUME}") from None
    finally:
        ahead.close()
        if ahead.forked is not None:  # what it drew and was not moved into place
            discard_drawn(config, ahead.forked)
    if failed:
        raise PipelineError(f"{len(failed)} of {len(runs)} runs failed; the first: {failed[0].message}")
    write_store_mark(resolve(config, config.paths.store_train), [])  # the store holds every run now
    best = best_run(runs)
    if best is not None:
        what = "train MSE" if best.loss == "mse" else f"train {best.loss} cost"
        log.info("best run: %s (%s %.6g)", best.run_name, what, best.cost)
    log.info("the sweep's runs in MLflow's UI (`make ui` serves a SQLite store): %s", link)
    return runs
