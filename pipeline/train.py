"""Stage ``train``: gradient descent on the training split, every run tracked in MLflow.

``python -m pipeline.train`` trains once with the composed config;
``python -m pipeline.train --multirun`` runs the sweep declared in ``conf/train.yaml``
(initial θ0, initial θ1 and learning rate), each job a child run of one parent run.
Each run logs its parameters, its loss curve (metric ``train_mse``, step = iteration),
the least-squares reference, and the fitted line as an MLflow pyfunc model.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import time
import warnings
from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline.columns import model_columns, training_split
from pipeline.costs import LOSSES, Cost, auto_scale
from pipeline.errors import PipelineError, Terminated, exit_on_error, first_line
from pipeline.files import file_md5, resolve
from pipeline.keys import in_result, job_key
from pipeline.landscape import PADDING
from pipeline.methods import METHODS, Method
from pipeline.model import ModelSpec
from pipeline.objective import residual_blocks
from pipeline.optimize import ConvergenceWarning, FitResult, RowSource, Start, fit, fit_many
from pipeline.outcome import RunSummary
from pipeline.passes import one_blas_thread
from pipeline.progress import ProgressLine, record_best
from pipeline.rules import DIVERGENCE_RATIO, EXACT_ROWS, LOSS_SCALE, MAX_ITER, TOLERANCE
from pipeline.runlog import (
    SOURCE_NAME,
    FittedRun,
    RunPlace,
    RunRecord,
    flat_params,
    global_reference,
    log_result,
    outcome_tags,
    reference_optimum,
    summarize,
    theta_unit,
)
from pipeline.settings import (
    CONF_DIR,
    MISSING_KEY,
    check_overrides,
    read_choice,
    read_flag,
    read_names,
    read_number,
)
from pipeline.tracking import (
    COMMIT_KEY,
    JOB_KEY_TAG,
    JOB_OVERRIDES_TAG,
    OUTCOME,
    PARENT_KEY,
    PARENT_RUN_TAG,
    PLANNED_KEY,
    ROLE_TAG,
    SPLIT_KEY,
    OpenStore,
    context_tags,
    dataset_input,
    git_commit,
    lease,
    log_dataset_input,
    open_store,
    process_tags,
    redact,
    tracking_uri,
    ui_link,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger("pipeline.train")  # not __main__ under `python -m`
#: MLflow's tag for a run's display name.
RUN_NAME_TAG = "mlflow.runName"
#: What a job on another machine needs, said where it is missing.
SHARED_FOLDER = "a sweep's jobs on other machines read the project from a filesystem shared at the same path"


@dataclass(frozen=True)
class TrainSettings:
    """The settings a training run reads, checked, with the keys they come from."""

    method: Method  # optimizer.name, optimizer.lr and the method's own keys (its constructor's arguments)
    theta_init: np.ndarray  # model.init: theta0, theta1 (further slopes start at 0), or random
    max_iter: int  # optimizer.max_iter
    tol: float  # optimizer.tol
    divergence_ratio: float  # optimizer.divergence_ratio
    model: ModelSpec  # data.features, model.degree, model.fit_intercept
    statistics: bool  # optimizer.statistics
    loss: str  # model.loss
    loss_scale: float | str  # model.loss_scale: c in the target's units, or "auto"
    exact_rows: int  # model.exact_rows: above, a robust certificate runs on a summary of the rows

    @property
    def fitted_in_a_moment(self) -> bool:
        """Whether the fit takes a moment whatever the number of rows: the MSE on the
        rows' statistics, by a method whose iteration is not a pass over the rows (an
        epoch), within :data:`MOMENT_BUDGET` iterations."""
        return (
            self.loss == "mse"
            and self.statistics
            and not self.method.iterates_epochs
            and self.max_iter <= MOMENT_BUDGET
        )


#: The most iterations of a fit that takes a moment (:attr:`TrainSettings.fitted_in_a_moment`):
#: on the rows' statistics an iteration is some 20–40 µs, so under half a second.
MOMENT_BUDGET = 10_000


def read_initial_theta(cfg: DictConfig, n_columns: int) -> np.ndarray:
    """θ to start from, shape (n_columns + 1,): given, or uniform in ``model.init.box``."""
    theta = np.zeros(n_columns + 1)
    if read_flag(cfg, "model.init.random"):
        rng = np.random.default_rng(int(read_number(cfg, "model.init.seed", at_least=0, integer=True)))
        for index, key in enumerate(("theta0", "theta1")):
            low = read_number(cfg, f"model.init.box.{key}.0")
            high = read_number(cfg, f"model.init.box.{key}.1")
            if not low <= high:
                raise PipelineError(
                    f"model.init.box.{key}: expected [low, high] with low <= high, got {[low, high]}"
                )
            theta[index] = rng.uniform(low, high)
    else:
        theta[0] = read_number(cfg, "model.init.theta0")
        theta[1] = read_number(cfg, "model.init.theta1")
    return theta


def read_model(cfg: DictConfig) -> ModelSpec:
    """The model of ``data.features``, ``model.degree`` and ``model.fit_intercept``, checked."""
    features = tuple(read_names(cfg, "data.features"))
    degree = int(read_number(cfg, "model.degree", at_least=1, integer=True))
    positive = read_names(cfg, "data.positive", allow_empty=True)
    try:
        return ModelSpec(
            features,
            degree,
            read_flag(cfg, "model.fit_intercept"),
            positive=tuple(name for name in features if name in positive),
            target_positive=read_names(cfg, "data.target")[0] in positive,
        )
    except ValueError as error:
        raise PipelineError(f"model.degree: {error}") from None


def read_method(cfg: DictConfig) -> Method:
    """The method of ``optimizer.name``, built from the ``optimizer.*`` keys its constructor
    takes (:mod:`pipeline.methods`); the constructor checks them, the message names the key."""
    name = read_choice(cfg, "optimizer.name", tuple(METHODS))
    constructor = METHODS[name]
    arguments = {
        parameter: OmegaConf.select(cfg, f"optimizer.{parameter}")
        for parameter in inspect.signature(constructor).parameters
        if OmegaConf.select(cfg, f"optimizer.{parameter}", default=MISSING_KEY) is not MISSING_KEY
    }
    try:
        return constructor(**arguments)
    except ValueError as error:  # "beta must be a number < 1, got 2" → "optimizer.beta: expected a …"
        name, _, rule = str(error).partition(" must be ")
        raise PipelineError(f"optimizer.{name}: expected {rule}" if rule else f"optimizer.{error}") from None


def read_settings(cfg: DictConfig) -> TrainSettings:
    """Read and check ``data.features``, ``model`` and ``optimizer``; a bad value names its key."""
    model = read_model(cfg)
    loss = read_choice(cfg, "model.loss", LOSSES)
    scale_value = OmegaConf.select(cfg, "model.loss_scale", default="auto")
    loss_scale: float | str = (
        "auto" if scale_value == "auto" else read_number(cfg, "model.loss_scale", LOSS_SCALE)
    )
    return TrainSettings(
        loss=loss,
        loss_scale=loss_scale,
        method=read_method(cfg),
        theta_init=read_initial_theta(cfg, model.n_params - 1),
        max_iter=int(read_number(cfg, "optimizer.max_iter", MAX_ITER)),
        tol=read_number(cfg, "optimizer.tol", TOLERANCE),
        divergence_ratio=read_number(cfg, "optimizer.divergence_ratio", DIVERGENCE_RATIO),
        model=model,
        statistics=read_flag(cfg, "optimizer.statistics"),
        exact_rows=int(read_number(cfg, "model.exact_rows", EXACT_ROWS)),
    )


def fit_key(train_md5: str, model: ModelSpec) -> str:
    """What a training set's least-squares reference, θ unit and auto loss scale are
    remembered by in a process: the split's MD5 and the model's degree and intercept."""
    return f"{train_md5}:{model.degree}:{model.fit_intercept}"


def resolve_cost(settings: TrainSettings, X: np.ndarray, y: np.ndarray, key: str) -> Cost:
    """The cost of ``model.loss``, its ``auto`` scale taken from the least-squares residuals."""
    if settings.loss == "mse":
        return Cost()
    if settings.loss_scale != "auto":
        return Cost(settings.loss, float(settings.loss_scale))
    if (key, settings.loss) not in _auto_scales:  # passes over the rows: once per process
        theta, _ = reference_optimum(X, y, key, settings.model.fit_intercept)
        try:
            residuals = functools.partial(residual_blocks, X, y, theta)
            _auto_scales[key, settings.loss] = auto_scale(settings.loss, residuals, len(y))
        except ValueError as error:
            raise PipelineError(f"model.{error}") from None
    return Cost(settings.loss, _auto_scales[key, settings.loss])


_auto_scales: dict[tuple[str, str], float] = {}


def certificate_frame(
    cfg: DictConfig, optimum: np.ndarray
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where a robust cost's global minimum is searched: ``model.init.box`` and the
    least-squares θ, with the landscape's margin on every side."""
    limits = []
    for index, key in enumerate(("theta0", "theta1")):
        low = min(read_number(cfg, f"model.init.box.{key}.0"), float(optimum[index]))
        high = max(read_number(cfg, f"model.init.box.{key}.1"), float(optimum[index]))
        margin = PADDING * (high - low if high > low else max(abs(high), 1.0))
        limits.append((low - margin, high + margin))
    return limits[0], limits[1]


def rows_elsewhere(cfg: DictConfig, settings: TrainSettings, cost: Cost, copy: Path) -> RowSource | None:
    """Where the fit's passes over the rows run: here (None), or spread over the Ray
    cluster at ``rows.ray_address`` (one :class:`~pipeline.ray_rows.RayRows` per process
    and column copy ``copy``). Only fits that pass over the rows use it."""
    address = OmegaConf.select(cfg, "rows.ray_address", default=None)
    if not address or (cost.is_mse and settings.statistics):
        return None
    if settings.model.degree != 1:
        raise PipelineError("rows.ray_address: the rows are spread as they are; model.degree must be 1")
    actors = int(read_number(cfg, "rows.actors", at_least=1, integer=True))
    key = (str(address), str(copy), actors)
    if key not in _spread_rows:
        from pipeline.ray_rows import RayRows

        _spread_rows[key] = RayRows.connect(str(address), copy, actors)
    return _spread_rows[key]


_spread_rows: dict[tuple[str, str, int], RowSource] = {}


def fit_with_settings(
    X: np.ndarray, y: np.ndarray, settings: TrainSettings, cost: Cost, rows: RowSource | None = None
) -> FitResult:
    """Run :func:`fit`; what the data make impossible becomes a :class:`PipelineError`."""
    progress = ProgressLine(settings.max_iter, what="train MSE" if cost.is_mse else f"train {cost.name} cost")
    try:
        with warnings.catch_warnings():
            # The runner logs a stopped run itself; one warning per run, not per module.
            warnings.simplefilter("ignore", ConvergenceWarning)
            return fit(
                X,
                y,
                theta_init=settings.theta_init,
                method=settings.method,
                max_iter=settings.max_iter,
                tol=settings.tol,
                fit_intercept=settings.model.fit_intercept,
                divergence_ratio=settings.divergence_ratio,
                statistics=settings.statistics,
                callback=progress,
                cost=cost,
                rows=rows,
            )
    except ValueError as error:
        raise PipelineError(f"train: {error}") from None
    finally:
        progress.close()


#: Fits made ahead by :func:`prefit` (the fused launcher), by job key: each taken by its job.
_prefitted: dict[str, FitResult] = {}


@dataclass
class FitGroup:
    """Jobs of a sweep that share the rows, the model, the cost and the budget: fitted
    together (:func:`pipeline.optimize.fit_many`), each run's θ the one it gets alone."""

    model_key: str
    cost: Cost
    X: np.ndarray
    y: np.ndarray
    cfg: DictConfig
    copy: Path
    members: list[tuple[int, str, TrainSettings]]  # the job's index in the sweep, its key, settings

    @property
    def from_statistics(self) -> bool:
        """Whether its runs iterate on the rows' statistics (the MSE), not a pass over
        the rows each round: then nothing is shared but those, made once, and each run's
        rounds are its own Python."""
        return self.cost.is_mse and self.members[0][2].statistics

    def fit(self, indices: Container[int] | None = None) -> float:
        """Fit the members (those whose job index is in ``indices``) into the fits taken
        by their jobs; return the seconds the fits took. A problem is each job's own, met
        when it runs alone: nothing is fitted. Members fitted already (ahead, by
        :func:`fits_ahead`) are not fitted again."""
        members = [
            member
            for member in self.members
            if (indices is None or member[0] in indices) and member[1] not in _prefitted
        ]
        if not members:
            return 0.0
        first = members[0][2]
        started = time.perf_counter()
        try:
            with warnings.catch_warnings(), one_blas_thread():
                warnings.simplefilter("ignore", ConvergenceWarning)  # each job reports its own stop
                results = fit_many(
                    self.X,
                    self.y,
                    [Start(settings.theta_init, settings.method) for _, _, settings in members],
                    max_iter=first.max_iter,
                    tol=first.tol,
                    fit_intercept=first.model.fit_intercept,
                    divergence_ratio=first.divergence_ratio,
                    statistics=first.statistics,
                    cost=self.cost,
                    rows=rows_elsewhere(self.cfg, first, self.cost, self.copy),
                )
        except (ValueError, PipelineError):
            return 0.0
        _prefitted.update((key, result) for (_, key, _), result in zip(members, results, strict=True))
        return time.perf_counter() - started


def fit_groups(
    configs: Sequence[DictConfig], statistics_only: bool = False, keys: Sequence[str] | None = None
) -> list[FitGroup]:
    """A sweep's jobs (``configs``, the task's part of each) in groups that share the
    rows, the model, the cost and the budget, unfitted; a job whose settings or data are
    wrong is left out (it fails on its own, with its own message). ``statistics_only``:
    only the jobs fitted from the rows' statistics (the MSE), whose costs need no pass
    over the rows to be made. ``keys``: the jobs' keys, where they are known already."""
    groups: dict[tuple[Any, ...], FitGroup] = {}
    for index, cfg in enumerate(configs):
        try:
            split = training_split(cfg)
            settings = read_settings(cfg)
            if statistics_only and not (settings.loss == "mse" and settings.statistics):
                continue
            X = model_columns(split.columns.X, settings.model.degree, split.copy)
            model_key = fit_key(split.md5, settings.model)
            with one_blas_thread():
                cost = resolve_cost(settings, X, split.columns.y, model_key)
        except (PipelineError, OSError):
            continue
        budget = (settings.max_iter, settings.tol, settings.divergence_ratio, settings.statistics)
        key = (model_key, tuple(split.features), split.target, settings.model, cost, *budget)
        group = groups.setdefault(key, FitGroup(model_key, cost, X, split.columns.y, cfg, split.copy, []))
        group.members.append((index, keys[index] if keys else key_of(cfg, split.md5), settings))
    return list(groups.values())


#: Jobs fitted ahead together, a piece sent back at a time (:func:`fits_ahead`): some
#: 0.2 s of fits, so that little is lost of a piece cut short when the sweep launches.
AHEAD_PIECE = 16


def fits_ahead(configs: Sequence[DictConfig], keys: Sequence[str]) -> Iterator[dict[str, FitResult]]:
    """The fits of a sweep's jobs that iterate on the rows' statistics, made before the
    sweep launches them (:class:`pipeline.fused.WorkAhead`, while the store opens), by
    job key (``keys``, those of ``configs``), :data:`AHEAD_PIECE` jobs at a time in the
    sweep's order, each piece as soon as it is made: what is finished when the jobs are
    launched is used, the rest is fitted by the processes that record them. Each fit is,
    to the bit, the job's own."""
    groups = fit_groups(configs, statistics_only=True, keys=keys)
    for first in range(0, len(configs), AHEAD_PIECE):
        for group in groups:
            group.fit(range(first, first + AHEAD_PIECE))
        if _prefitted:
            yield dict(_prefitted)
            _prefitted.clear()


def prefit(
    configs: Sequence[DictConfig], workers: int = 1, ahead: Mapping[str, FitResult] | None = None
) -> list[FitGroup]:
    """Fit a sweep's jobs ahead, in groups that share the rows, the model, the cost and
    the budget: a group advances together (:func:`pipeline.optimize.fit_many`: one pass
    over the rows per round serves all its runs), each run's θ the one it gets alone.
    The jobs then run as usual, each taking its fit from here and recording it through
    the one logging path. A job whose settings or data are wrong is left out: it fails
    on its own, with its own message. ``hydra/launcher=fused`` calls this.

    ``ahead`` holds fits made before, by job key (:func:`fits_ahead`): the jobs among
    ``configs`` take theirs from there. With ``workers`` > 1 processes to record the
    jobs, the groups fitted from the rows' statistics (:attr:`FitGroup.from_statistics`)
    that ``ahead`` does not cover are returned unfitted: each worker fits its own jobs of
    them (:meth:`FitGroup.fit`), the two halves side by side, where here they would be
    fitted one after the other. What the runs are measured against (the least-squares
    optimum, a robust cost's certificate) is made here for all of them.
    """
    groups = fit_groups(configs)
    made = ahead or {}
    taken = {key: made[key] for group in groups for _, key, _ in group.members if key in made}
    _prefitted.update(taken)
    fitting, left = 0.0, []  # the fits' own time, said apart from the references'
    for group in groups:
        if workers > 1 and group.from_statistics:
            if any(key not in taken for _, key, _ in group.members):
                left.append(group)
        else:
            fitting += group.fit()
        first = group.members[0][2]
        # What the runs are measured against (a robust cost's certificate), made once
        # here: the processes that record the jobs (pipeline.fused) find it made. A
        # problem is each job's own, met with its own message.
        frame = functools.partial(certificate_frame, group.cfg)
        with contextlib.suppress(ValueError, PipelineError):
            global_reference(
                group.X, group.y, first.model, group.cost, group.model_key, frame, first.exact_rows
            )
    count = sum(len(group.members) for group in groups)
    later = sum(1 for group in left for _, key, _ in group.members if key not in taken)
    log.info(
        "fused: %d of %d runs fitted together in %d group(s) in %.2f s%s%s; now recording each",
        *(count, len(configs), len(groups), fitting),
        f" ({len(taken)} fitted ahead, while the store opened)" if taken else "",
        f" ({later} from the rows' statistics, each by the process that records it)" if later else "",
    )
    return left


def unclaimed_prefits() -> int:
    """How many fits :func:`prefit` made that no job took (forgotten now): 0 when every job
    found its own, as it should."""
    count = len(_prefitted)
    _prefitted.clear()
    return count


def run_name(cfg: DictConfig) -> str:
    """What tells the runs of a sweep apart: method, learning rate, start. In MLflow the
    name gains the outcome in front once it is known (``converged · …``, :func:`shown_name`)."""
    init = cfg.model.init
    start = f"random start {init.seed}" if init.random is True else f"θ0={init.theta0} θ1={init.theta1}"
    degree = f" degree {cfg.model.degree}" if cfg.model.degree != 1 else ""
    return f"{cfg.optimizer.name} lr={cfg.optimizer.lr} {start}{degree}"


def shown_name(status: str, name: str) -> str:
    """A finished run's name in MLflow: the outcome first, so that a narrow column shows it."""
    return f"{status} · {name}"


def failed_tags(name: str, message: str) -> dict[str, str]:
    """The tags of the run ``name`` that failed: its status, why, and its name saying so."""
    return {"status": "failed", "error": message, RUN_NAME_TAG: shown_name("failed", name)}


def ingest_counts(cfg: DictConfig) -> dict[str, float]:
    """Rows read and dropped by ingest, from its report (empty if there is none)."""
    path = resolve(cfg, cfg.paths.ingest_report)
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    return {"ingest_rows_read": report["rows_read"], "ingest_rows_dropped": report["rows_dropped"]}


def job_overrides() -> list[str]:
    """This job's overrides that can change its result (its place in the grid)."""
    if not HydraConfig.initialized():
        return []
    return [item for item in HydraConfig.get().overrides.task if in_result(item)]


@dataclass(frozen=True)
class TrainingJob:
    """What one training run is given, read once from its config: its name and job key,
    the training split's columns (as arrays) and where it came from."""

    name: str  # run_name(cfg): method, learning rate, start
    key: str  # job key: the settings, the split and the code, hashed
    overrides: list[str]  # the job's overrides that can change its result
    features: list[str]  # data.features
    target: str  # data.target
    source: str  # paths.train as configured (the dataset's source in MLflow)
    train_md5: str
    copy: Path  # the split's column copy (pipeline.columns)
    inputs: np.ndarray  # (n, len(features)): the feature columns, memory-mapped (pipeline.columns)
    y: np.ndarray  # (n,): the target, memory-mapped


def key_of(cfg: DictConfig, train_md5: str) -> str:
    """The key of the job ``cfg`` on the training split ``train_md5``: as its sweep worked
    it out (``mlflow.job_key``, where the sweep planned that split), else made here."""
    planned = OmegaConf.select(cfg, PLANNED_KEY, default=None)
    if planned and OmegaConf.select(cfg, SPLIT_KEY, default=None) == train_md5:
        return str(planned)
    return job_key(cfg, train_md5)


def read_job(cfg: DictConfig) -> TrainingJob:
    """The training split this job reads, checked against the one its sweep planned."""
    train_path = resolve(cfg, cfg.paths.train)
    planned = OmegaConf.select(cfg, SPLIT_KEY, default=None)
    if planned and not train_path.is_file():
        raise PipelineError(f"{train_path}: no training split here; {SHARED_FOLDER}")
    split = training_split(cfg)
    if planned and planned != split.md5:
        raise PipelineError(
            f"{train_path}: not the training split the sweep was planned with (MD5 {split.md5}, "
            f"expected {planned}); {SHARED_FOLDER}"
        )
    return TrainingJob(
        run_name(cfg),
        key_of(cfg, split.md5),
        job_overrides(),
        split.features,
        split.target,
        str(cfg.paths.train),
        split.md5,
        split.copy,
        split.columns.X,
        split.columns.y,
    )


def run_tags(cfg: DictConfig, job: TrainingJob) -> dict[str, str]:
    """The tags a training run starts with: who runs it where, its job, its data and code."""
    raw_path = resolve(cfg, cfg.data.path)
    return process_tags() | {
        ROLE_TAG: "train",
        JOB_KEY_TAG: job.key,
        JOB_OVERRIDES_TAG: " ".join(job.overrides),
        # The sweep's commit, worked out once by the sweeper (two git commands a job).
        "git_commit": OmegaConf.select(cfg, COMMIT_KEY, default=None) or git_commit(),
        "data_md5": file_md5(raw_path) if raw_path.is_file() else "missing",
        "train_md5": job.train_md5,
        # Not the machine's absolute path of the script (MLflow's default): the project's.
        "mlflow.source.name": SOURCE_NAME,
    }


def log_training_split(client: MlflowClient, run_id: str, job: TrainingJob) -> None:
    """The training split as the run's dataset input (context ``training``)."""
    columns = {name: job.inputs[:, j] for j, name in enumerate(job.features)} | {job.target: job.y}
    split = dataset_input(columns, len(job.y), job.source, "train", job.target, job.train_md5, "training")
    log_dataset_input(client, run_id, split)


def fitted_run(
    cfg: DictConfig, job: TrainingJob, result: FitResult | None = None, settings: TrainSettings | None = None
) -> FittedRun:
    """``job``'s fit as configured (``result`` where it was made already, else made here)
    with what it is measured against: the global minimum, the least-squares MSE, θ's unit.
    ``settings``: ``cfg``'s, where they were read already. A problem with the settings or
    the data is a :class:`PipelineError`."""
    settings = settings or read_settings(cfg)
    X = model_columns(job.inputs, settings.model.degree, job.copy)
    model_key = fit_key(job.train_md5, settings.model)
    with one_blas_thread():  # θ must not depend on how many cores the launcher gave
        cost = resolve_cost(settings, X, job.y, model_key)
        if result is None:
            result = fit_with_settings(
                X, job.y, settings, cost, rows_elsewhere(cfg, settings, cost, job.copy)
            )
        reference = global_reference(
            X,
            job.y,
            settings.model,
            cost,
            model_key,
            lambda optimum: certificate_frame(cfg, optimum),
            settings.exact_rows,
        )
    return FittedRun(
        X,
        job.y,
        settings.model,
        settings.method.name,
        settings.theta_init,
        result,
        cost,
        reference,
        reference_optimum(X, job.y, model_key, settings.model.fit_intercept)[1],
        theta_unit(X, job.y, model_key),
    )


def fitted_first(cfg: DictConfig, job: TrainingJob) -> tuple[FittedRun, RunSummary] | None:
    """``job``'s fit and its outcome, where they take a moment to make before its run is
    created: fitted ahead by the fused launcher, or
    :attr:`~TrainSettings.fitted_in_a_moment`. Its run is then created with its outcome
    in its name and tags: a name given afterwards is one more write of the run to the
    store, some 10 ms of a run's 100. None where the fit may be long (it is made inside
    its run, seen running meanwhile and ended KILLED if stopped) or fails (it fails
    again inside its run, which records why)."""
    prefitted = _prefitted.get(job.key)
    try:
        settings = read_settings(cfg)
        if prefitted is None and not settings.fitted_in_a_moment:
            return None
        fitted = fitted_run(cfg, job, prefitted, settings)
    except PipelineError:
        return None
    _prefitted.pop(job.key, None)
    return fitted, summarize(fitted, job.key, job.name)


def finished_tags(fitted: FittedRun, summary: RunSummary, name: str) -> dict[str, str]:
    """A finished run's tags: how it ended, and its name ``name`` with the outcome first
    (the runs table shows it without a column added)."""
    return outcome_tags(fitted, summary) | {RUN_NAME_TAG: shown_name(fitted.result.status, name)}


def train_and_record(
    cfg: DictConfig,
    job: TrainingJob,
    record: RunRecord,
    place: RunPlace,
    first: tuple[FittedRun, RunSummary] | None = None,
) -> tuple[RunSummary, FitResult, Cost]:
    """Fit as configured inside the active run, and record the fit (or why it failed).
    ``first``: the fit and outcome made before the run was created (:func:`fitted_first`),
    whose tags it was created with."""
    client, run_id = place.client, place.run_id
    if first is None:
        try:
            # Fitted ahead by the fused launcher, or here.
            fitted = fitted_run(cfg, job, _prefitted.pop(job.key, None))
        except PipelineError as error:
            record.tags |= failed_tags(job.name, str(error))
            failed = RunSummary.failed(job.key, job.overrides, job.name, str(error))
            record.files[OUTCOME] = json.dumps(failed.to_json(), indent=2)
            record.send(place)
            log_training_split(client, run_id, job)
            raise
        summary = summarize(fitted, job.key, job.name)
        record.tags |= finished_tags(fitted, summary, job.name)
    else:
        fitted, summary = first
    result, cost = fitted.result, fitted.cost
    # Params after the model (logged by log_result): MLflow copies every param and
    # metric a run already has onto a model it logs.
    log_result(record, fitted, summary, job.inputs, place)
    record.add_metrics(ingest_counts(cfg))
    summary = recorded_outcome(summary, job)
    record.files[OUTCOME] = json.dumps(summary.to_json(), indent=2)
    record.send(place)
    log_training_split(client, run_id, job)
    return summary, result, cost


def recorded_outcome(summary: RunSummary, job: TrainingJob) -> RunSummary:
    """The outcome a run records (its ``outcome.json``): :func:`summarize`'s, with the
    job's overrides and the target it predicts."""
    return replace(summary, overrides=job.overrides, target=job.target)


def expected_outcomes(
    configs: Sequence[DictConfig], keys: Sequence[str], fitted: Mapping[str, FitResult]
) -> list[RunSummary] | None:
    """The outcome each of a sweep's jobs will record (``configs``: their task configs;
    ``keys``: their keys), before they run: what lets a sweep draw its pictures while
    its runs are recorded. Only where every job iterates on the rows' statistics (the
    MSE), whose fits are quick: those in ``fitted`` (by job key) are taken, the others
    made here, together (:class:`FitGroup`). None where a job does not (a robust cost,
    whose fits pass over the rows) or cannot run (a wrong setting: it fails on its own)."""
    groups = fit_groups(configs, statistics_only=True, keys=keys)
    if sum(len(group.members) for group in groups) != len(configs):
        return None
    _prefitted.update((key, fitted[key]) for key in keys if key in fitted)
    for group in groups:
        group.fit()
    outcomes = []
    try:
        for cfg, key in zip(configs, keys, strict=True):
            job = read_job(cfg)
            result = _prefitted.get(key)
            if result is None or job.key != key:  # a fit failed: the job fails on its own
                return None
            outcomes.append(recorded_outcome(summarize(fitted_run(cfg, job, result), key, job.name), job))
    except PipelineError:
        return None
    finally:
        for key in keys:
            _prefitted.pop(key, None)
    return outcomes


def run(cfg: DictConfig) -> RunSummary:
    """Train one model as configured, log it to MLflow, return its outcome.

    In a sweep, ``mlflow.parent_run_id`` (set by the sweeper) names the parent run.
    The outcome is also logged as the run's ``outcome.json``: the sweep reads it back.
    The run is made and ended with the client's calls (``mlflow.start_run`` would read
    the parent run back and work out MLflow's context tags again for every run).
    """
    job = read_job(cfg)
    uri = tracking_uri(cfg.mlflow.tracking_uri)
    parent = OmegaConf.select(cfg, PARENT_KEY, default=None)
    store = sweep_store(uri, cfg.mlflow.experiment, parent)
    client = store.client
    tags = context_tags() | run_tags(cfg, job) | ({PARENT_RUN_TAG: parent} if parent else {})
    first = fitted_first(cfg, job)
    ended = {} if first is None else finished_tags(*first, job.name)
    name = ended.pop(RUN_NAME_TAG, job.name)
    info = client.create_run(store.experiment, run_name=name, tags=tags | ended).info
    run_id, place = info.run_id, RunPlace(client, info.run_id, store.experiment, info.artifact_uri)
    record = RunRecord(params=flat_params(cfg) | {"n_train": len(job.y)})
    try:
        with lease(client, run_id):  # seen alive by other machines, for a long fit
            summary, result, cost = train_and_record(cfg, job, record, place, first)
    except (KeyboardInterrupt, Terminated):
        try:  # a stopped run still says what it was given
            RunRecord(params=record.params).send(place)
            log_training_split(client, run_id, job)
        finally:
            client.set_terminated(run_id, "KILLED")  # not FAILED: nothing was wrong with the run
        raise
    except PipelineError:
        client.set_terminated(run_id, "FAILED")
        raise
    except Exception as error:  # the store failed mid-record: the run ends FAILED, and says so
        message = f"train: recording the run in {redact(uri)} failed: {first_line(error)}"
        with contextlib.suppress(Exception):  # the store may be what failed
            RunRecord(tags=failed_tags(job.name, message)).send(place)
            client.set_terminated(run_id, "FAILED")
        raise PipelineError(message) from error
    client.set_terminated(run_id, "FINISHED")
    report(job, result, summary, cost)
    if parent is None:  # a run of its own, not a sweep's: say where to find it
        link = ui_link(uri, store.experiment, run_id)
        log.info("recorded in MLflow (%s): %s; reports/ are the sweep's: left alone", redact(uri), link)
    return summary


def sweep_store(uri: str, experiment: str, parent: str | None) -> OpenStore:
    """The store, opened (and checked) by a sweep's first job in this process and kept
    for the sweep's other jobs here; a run of its own opens it afresh."""
    if parent is None:
        return open_store(uri, experiment)
    key = (uri, experiment, parent)
    if key not in _sweep_stores:
        _sweep_stores.clear()  # the previous sweep's, in a long-lived process
        _sweep_stores[key] = open_store(uri, experiment)
    return _sweep_stores[key]


_sweep_stores: dict[tuple[str, str, str], OpenStore] = {}


def report(job: TrainingJob, result: FitResult, summary: RunSummary, cost: Cost) -> None:
    """The run's one line on the console (a warning where it did not converge)."""
    what = "train MSE" if cost.is_mse else f"train {cost.name} cost"
    gap = "unknown" if summary.optimality_gap is None else f"{summary.optimality_gap:.3g}"
    line = (
        f"{job.name}: {result.message}; θ=({', '.join(f'{v:.6g}' for v in result.theta)}), "
        f"{what} {summary.train_cost:.6g}, optimality gap {gap}, end point: {summary.end_point}"
    )
    (log.warning if result.status != "converged" else log.info)(line)
    if summary.usable and summary.train_cost is not None:
        record_best(summary.train_cost)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
@exit_on_error
def main(cfg: DictConfig) -> RunSummary | None:
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        # One run is recorded in MLflow only: reports/ and the store mark are the sweep's
        # (DVC outputs), and one run must not pass for the sweep that made them.
        return run(cfg)
    # One bad job must not stop the sweep: it is recorded as failed (its MLflow run and
    # outcome say why), the others go on, and the sweeper fails at the end.
    try:
        return run(cfg)
    except PipelineError as error:
        log.error("%s", error)
        return None


if __name__ == "__main__":
    check_overrides("train")
    # Hydra's task is this module's ``main`` as ``pipeline.train``, not ``__main__``: a
    # launcher that sends it to worker processes (joblib, Ray) then sends a reference,
    # where a function of ``__main__`` goes pickled by value, with everything it uses,
    # for every job (and runs in the worker as code apart from the imported module).
    from pipeline.train import main as task

    task()
