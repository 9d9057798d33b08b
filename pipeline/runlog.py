"""How a training run is recorded in MLflow: its params, loss curve, certificate, model, outcome.

Called by ``train`` inside an active MLflow run; the numbers come from the optimizer
(:class:`pipeline.optimize.FitResult`) and the least-squares reference, the record is
a :class:`pipeline.outcome.RunSummary`.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf

from pipeline.costs import Cost
from pipeline.minima import GlobalMinimum, certify_global_minimum, end_point
from pipeline.model import ModelSpec
from pipeline.objective import least_squares, mean_squared_error, residual_blocks, standardize
from pipeline.optimize import FitResult
from pipeline.outcome import RunSummary, relative_gap
from pipeline.passes import row_blocks
from pipeline.summary import CERTIFICATE_BINS_PER_SCALE, bin_rows
from pipeline.tracking import CURVE, artifact_store, cache_folder, context_tags, made_whole

if TYPE_CHECKING:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

PYFUNC_MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
#: The source of a run and of its model in MLflow: the project's path of the script, not
#: the machine's absolute one (MLflow's default), so that a moved project says the same.
SOURCE_NAME = "pipeline/train.py"
#: Points of each curve in MLflow's charts (the whole curve is the run's loss_curve.csv).
CHART_POINTS = 100
#: The final optimality gap's floor on a log axis: float64's relative precision.
GAP_FLOOR = float(np.finfo(np.float64).eps)
#: The outcome as a number, for the runs table and parallel coordinates (metric ``outcome``).
OUTCOME_CODES = {"converged": 0, "max_iter": 1, "oscillating": 2, "diverged": 3}
_optimum_cache: dict[str, tuple[np.ndarray, float]] = {}
_global_cache: dict[tuple[str, Cost, Any, bool], GlobalMinimum] = {}


def reference_optimum(
    X: np.ndarray, y: np.ndarray, key: str, fit_intercept: bool = True
) -> tuple[np.ndarray, float]:
    """Least-squares θ and its MSE, computed once per training set and model (``key``)."""
    if key not in _optimum_cache:
        theta = least_squares(X, y, fit_intercept=fit_intercept)
        _optimum_cache[key] = (theta, mean_squared_error(X, y, theta))
    return _optimum_cache[key]


def theta_unit(X: np.ndarray, y: np.ndarray, key: str) -> np.ndarray:
    """How much a unit of each θ component is: σ_y, then σ_y/σ_j per column (shape (p,)),
    from one pass over the rows, once per training set and model (``key``)."""
    if key not in _unit_cache:
        scaler, _ = standardize(X, y)
        x_scale = np.where(scaler.x_scale > 0, scaler.x_scale, 1.0)
        y_scale = scaler.y_scale or 1.0
        _unit_cache[key] = np.concatenate(([y_scale], y_scale / x_scale))
    return _unit_cache[key]


_unit_cache: dict[str, np.ndarray] = {}


def global_reference(
    X: np.ndarray,
    y: np.ndarray,
    model: ModelSpec,
    cost: Cost,
    key: str,
    frame_of: Callable[[np.ndarray], tuple[tuple[float, float], tuple[float, float]]],
    exact_rows: int,
) -> GlobalMinimum:
    """The global minimum of ``cost``: least squares for the MSE; for a line
    ``θ0 + θ1·x`` and another cost, certified by branch and bound over the frame that
    ``frame_of(least-squares θ)`` gives, on a summary of the rows above ``exact_rows``
    of them; unknown otherwise. Once per process and problem."""
    theta, mse = reference_optimum(X, y, key, model.fit_intercept)
    if cost.is_mse:
        return GlobalMinimum(theta, mse, "least squares")
    if X.shape[1] != 1 or not model.fit_intercept:
        return GlobalMinimum(None, None, "unknown")
    frame = frame_of(theta)
    summarized = len(y) > exact_rows
    cache_key = (key, cost, frame, summarized)
    if cache_key not in _global_cache:
        summary = bin_rows(X[:, 0], y, cost, CERTIFICATE_BINS_PER_SCALE) if summarized else None
        certificate = certify_global_minimum(X[:, 0], y, cost, frame, summary=summary)
        how = "branch and bound" if certificate.certified else "best found"
        _global_cache[cache_key] = GlobalMinimum(certificate.theta, certificate.cost, how)
    return _global_cache[cache_key]


def flat_params(cfg: DictConfig) -> dict[str, Any]:
    """Every setting that shapes a run, as dotted scalar params for MLflow."""
    container = {
        key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("data", "split", "model", "optimizer")
    }
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(node, list):
            flat[prefix] = ",".join(str(item) for item in node)
        else:
            flat[prefix] = node

    walk("", container)
    return flat


@dataclass(frozen=True)
class RunPlace:
    """Where a run is recorded: the store's client, the run, its experiment and where its
    files go (``artifact_uri``, as ``create_run`` returns it)."""

    client: MlflowClient
    run_id: str
    experiment_id: str
    artifact_uri: str


class ModelStamps:
    """Models written the fast way: saved once per process and kind by MLflow, stamped per run.

    ``mlflow.pyfunc.log_model`` saves, validates and predicts the input example for every
    run (about 200 ms). The model folder differs between the runs of a sweep only in
    ``MLmodel``'s ids, time and config (θ), so it is saved once by
    ``mlflow.pyfunc.save_model`` (a template, validated once) for each kind (features,
    degree, positivity, example rows), and each run gets a copy with its own ``MLmodel``,
    then MLflow's client calls that create, fill and finalize a logged model. What is
    written equals what ``log_model`` writes, but for the ids, the time, and two paths
    that are relative here (``artifact_path``, ``model_code_path``), where MLflow writes
    the machine's absolute ones; a test compares them.

    A template is kept in the user's cache (:func:`pipeline.tracking.cache_folder`),
    named by its kind and all of this machine that ``save_model`` writes into it (the
    versions of Python, MLflow, cloudpickle and the build tools, the pinned
    requirements, the model's code): saving one checks the pinned requirements against
    every installed package's files, 0.5 s that each process of each sweep paid.
    """

    def __init__(self) -> None:
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._templates: dict[str, Path] = {}
        self._mlmodels: dict[Path, dict[str, Any]] = {}

    def template(self, config: dict[str, Any], example: pd.DataFrame | None, signature: Any) -> Path:
        """The saved model folder for ``config``'s kind (from the cache, else made)."""
        kind = json.dumps(
            [{k: v for k, v in config.items() if k not in ("theta", "training_range")}, str(signature)]
            + ([] if example is None else example.to_numpy().tolist()),
            sort_keys=True,
        )
        if kind not in self._templates:
            save = functools.partial(_save_template, config=config, example=example, signature=signature)
            path = _kept_template(kind, save)
            if path is None:  # a cache that cannot be written: this process's own
                if self._folder is None:
                    self._folder = tempfile.TemporaryDirectory(prefix="downhill-models-")
                path = Path(self._folder.name) / str(len(self._templates))
                save(path)
            self._templates[kind] = path
            # MLmodel as MLflow wrote it, parsed once: each run's is this with its own fields.
            self._mlmodels[path] = yaml.load((path / "MLmodel").read_text(), Loader=_YAML_LOADER)
        return self._templates[kind]

    def context_tags(self, source: str) -> dict[str, str]:
        """The tags MLflow gives a logged model (user, source, git commit)."""
        return context_tags() | {"mlflow.source.name": source}

    def log(self, place: RunPlace, template: Path, config: dict[str, Any], source: str) -> str:
        """Log a copy of ``template`` with ``config`` as the run's model; its URI."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        client = place.client
        logged = client.create_logged_model(
            place.experiment_id, name="model", source_run_id=place.run_id, tags=self.context_tags(source)
        )
        client.log_outputs(place.run_id, [LoggedModelOutput(logged.model_id, step=0)])
        try:
            with tempfile.TemporaryDirectory(prefix="downhill-model-") as scratch:
                folder = Path(scratch)
                for file in template.iterdir():  # the files as saved, linked (no copy)
                    if file.name != "MLmodel":
                        _link_or_copy(file, folder / file.name)
                stamped = copy.deepcopy(self._mlmodels[template])
                stamped |= {
                    "run_id": place.run_id,
                    "model_id": logged.model_id,
                    "model_uuid": logged.model_id,
                    "artifact_path": "model",  # relative: MLflow writes the store's absolute path
                    "utc_time_created": str(datetime.now(UTC).replace(tzinfo=None)),
                }
                flavor = stamped["flavors"]["python_function"]
                flavor["config"] = config
                flavor["model_code_path"] = PYFUNC_MODEL_CODE.name  # MLflow loads it by base name
                # As MLflow's Model.save writes it (yaml.safe_dump), with libyaml's dumper.
                (folder / "MLmodel").write_text(
                    yaml.dump(stamped, Dumper=_YAML_DUMPER, default_flow_style=False)
                )
                artifact_store(client, logged.artifact_location).log_artifacts(str(folder))  # type: ignore[no-untyped-call]
        except BaseException:
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        return f"models:/{logged.model_id}"


MODEL_STAMPS = ModelStamps()


def _save_template(path: Path, config: dict[str, Any], example: pd.DataFrame | None, signature: Any) -> None:
    """Save the model of ``config`` in the new folder ``path``, as ``log_model`` saves it."""
    import mlflow

    with warnings.catch_warnings():  # "An input example was not provided": on purpose
        warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
        mlflow.pyfunc.save_model(
            path,
            python_model=str(PYFUNC_MODEL_CODE),
            model_config=config,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
        )
    for cache in path.rglob("__pycache__"):  # save_model loads the code once
        shutil.rmtree(cache, ignore_errors=True)


def _kept_template(kind: str, save: Callable[[Path], None]) -> Path | None:
    """The cached template of ``kind`` on this machine, saved by ``save`` on first use;
    None where the cache cannot be written."""
    key = hashlib.sha256(json.dumps([kind, _saved_environment()]).encode()).hexdigest()[:32]
    kept = cache_folder() / "models" / key
    if not (kept / "MLmodel").is_file():
        try:
            kept.parent.mkdir(parents=True, exist_ok=True)
            made_whole(kept, save)  # whole or not at all, the first of two processes kept
        except OSError:  # a read-only or full cache folder
            return None
    return kept if (kept / "MLmodel").is_file() else None  # None: a folder someone emptied


@functools.cache
def _saved_environment() -> tuple[str, ...]:
    """What ``save_model`` writes of this machine into a model: the versions of Python,
    MLflow, cloudpickle and the build tools (``python_env.yaml``), the pinned
    requirements, and the model's code (looked up once a process, for every kind)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return f"{name}=={version(name)}"
        except PackageNotFoundError:
            return name

    return (
        sys.version,
        *(installed(name) for name in ("mlflow", "cloudpickle", "pip", "setuptools", "wheel")),
        *pip_requirements(),
        hashlib.sha256(PYFUNC_MODEL_CODE.read_bytes()).hexdigest(),
    )


def pip_requirements() -> list[str]:
    """What a logged model needs: all it imports, pinned (inferring them costs over a second)."""
    import mlflow

    return [f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]


#: libyaml's safe loader and dumper where PyYAML has them (several times faster).
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _link_or_copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target)
        return
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def model_parts(
    model: ModelSpec, theta: np.ndarray, inputs: np.ndarray
) -> tuple[dict[str, Any], pd.DataFrame | None, Any]:
    """A run's model config, input example (None where it answers no row) and signature.

    ``inputs`` (n, len(features)) are the training rows' features as a user passes
    them: the model builds the polynomial columns itself. Their range goes into the
    model's config, for ``predict``'s warning about extrapolation.
    """
    from mlflow.models import infer_signature

    # The input example is three training rows the model answers: MLflow predicts it when
    # it saves the model, and a model whose target must be > 0 refuses rows where its line
    # is not (a run stranded on a plateau answers none: it gets a signature, no example).
    rows = inputs[:3]
    if model.target_positive:
        rows = _first_answered(model, theta, inputs, 3)
    example = pd.DataFrame(rows if len(rows) else inputs[:3], columns=list(model.features))
    prediction = model.predict(theta, example.to_numpy(np.float64))
    config = {
        "features": list(model.features),
        "theta": [float(value) for value in theta],
        "degree": model.degree,
        "positive": list(model.positive),
        "target_positive": model.target_positive,
        "training_range": {
            name: [float(inputs[:, j].min()), float(inputs[:, j].max())]
            for j, name in enumerate(model.features)
        },
    }
    return config, example if len(rows) else None, infer_signature(example, prediction)


def _first_answered(model: ModelSpec, theta: np.ndarray, inputs: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` rows (or fewer) where the model predicts a target > 0, a block at a time."""
    found: list[np.ndarray] = []
    for rows in row_blocks(len(inputs)):
        block = np.asarray(inputs[rows])
        found.append(block[model.predict(theta, block) > 0][: count - sum(map(len, found))])
        if sum(map(len, found)) >= count:
            break
    return np.concatenate(found) if found else inputs[:0]


def log_model(model: ModelSpec, theta: np.ndarray, inputs: np.ndarray, place: RunPlace) -> str:
    """Log θ as a pyfunc model from code (no pickle) to run ``place``; return its URI."""
    config, example, signature = model_parts(model, theta, inputs)
    template = MODEL_STAMPS.template(config, example, signature)
    return MODEL_STAMPS.log(place, template, config, SOURCE_NAME)


def plot_indices(length: int, count: int = 300) -> np.ndarray:
    """About ``count`` indices into a history of ``length``, log-spaced, first and last kept."""
    spaced = np.geomspace(1, length, num=min(count, length)).round().astype(int) - 1
    return np.unique(np.concatenate(([0], spaced, [length - 1])))


@dataclass
class RunRecord:
    """What a run logs once its fit is done, gathered to be sent in one batch and one upload.

    A call to the store costs milliseconds (a transaction on SQLite, a request to a
    server), more than the fit of a 1,000-iteration run: each run's record is one
    :meth:`send`, not a call per item.
    """

    metrics: list[Metric] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # artifact name: its text

    def add_metrics(self, values: Mapping[str, float | None]) -> None:
        """Add one-off metrics (step 0); values that are None or not finite are left out."""
        from mlflow.entities import Metric

        now = int(1000 * time.time())
        self.metrics += [
            Metric(key, float(value), now, 0)
            for key, value in values.items()
            if value is not None and np.isfinite(value)
        ]

    def send(self, place: RunPlace) -> None:
        """Log everything gathered to the run at ``place``."""
        from mlflow.entities import Param, RunTag

        place.client.log_batch(
            place.run_id,
            metrics=self.metrics,
            params=[Param(key, str(value)) for key, value in self.params.items()],
            tags=[RunTag(key, str(value)) for key, value in self.tags.items()],
        )
        if self.files:
            with tempfile.TemporaryDirectory() as folder:
                for name, text in self.files.items():
                    (Path(folder) / name).write_text(text)
                artifact_store(place.client, place.artifact_uri).log_artifacts(folder)  # type: ignore[no-untyped-call]


def curve_csv(steps: np.ndarray, values: Sequence[float] | np.ndarray, name: str) -> str:
    """A whole cost curve as CSV (``step,<name>``), every value to the last bit."""
    rows = (f"{int(step)},{float(value)!r}" for step, value in zip(steps, values, strict=True))
    return "\n".join([f"step,{name}", *rows]) + "\n"


@dataclass(frozen=True)
class FittedRun:
    """A finished fit and what it is measured against: what a run's outcome is made of.

    ``X`` (n, len(model.columns)) and ``y`` (n,) are the training split as fitted
    (powers, for a polynomial); ``reference`` the global minimum the optimality gap is
    measured against; ``least_squares_mse`` the lowest MSE, for comparison.
    """

    X: np.ndarray
    y: np.ndarray
    model: ModelSpec
    method: str
    theta_init: np.ndarray
    result: FitResult
    cost: Cost
    reference: GlobalMinimum
    least_squares_mse: float
    theta_unit: np.ndarray  # (p,): θ's unit per component (theta_unit())

    @cached_property
    def train_mse(self) -> float:
        return mean_squared_error(self.X, self.y, self.result.theta)

    @cached_property
    def train_cost(self) -> float:
        """The cost minimized at the final θ, recomputed from the residuals."""
        if self.cost.is_mse:
            return self.train_mse
        blocks = residual_blocks(self.X, self.y, self.result.theta)
        return math.fsum(float(self.cost.rho(r).sum()) for r in blocks) / len(self.y)

    @property
    def shown(self) -> np.ndarray:
        """Indices of the iterates kept for charts and pictures: log-spaced, first and last."""
        return plot_indices(len(self.result.history_steps))


def summarize(fitted: FittedRun, job: str, name: str) -> RunSummary:
    """The outcome of a finished fit (pure: no MLflow). ``job`` and ``name`` are the
    run's job key and name."""
    result, cost, reference, model = fitted.result, fitted.cost, fitted.reference, fitted.model
    train_cost, optimum_cost = fitted.train_cost, reference.cost
    theta_rel_error = None
    if reference.theta is not None:
        nonzero = np.abs(reference.theta) > 0
        theta_rel_error = float(
            np.max(
                np.abs(result.theta - reference.theta)[nonzero] / np.abs(reference.theta[nonzero]),
                initial=0.0,
            )
        )
    theta_unit = fitted.theta_unit
    shown = fitted.shown
    return RunSummary(
        job_key=job,
        overrides=[],
        run_name=name,
        status=result.status,  # type: ignore[arg-type]
        message=result.message,
        end_point=end_point(result.status, result.hessian_eigenvalues, train_cost, optimum_cost, cost.convex),
        method=fitted.method,
        lr=float(result.lr),
        loss=cost.name,
        loss_scale=None if cost.is_mse else cost.scale,
        features=list(model.features),
        columns=model.columns,
        degree=model.degree,
        fit_intercept=model.fit_intercept,
        theta_init=[float(v) for v in fitted.theta_init],
        theta=[float(v) for v in result.theta],
        theta_unit=[float(v) for v in theta_unit],
        n_iter=result.n_iter,
        train_mse=fitted.train_mse,
        optimum_mse=fitted.least_squares_mse,
        train_cost=train_cost,
        optimum_cost=optimum_cost,
        optimum_how=reference.how,
        optimality_gap=None if optimum_cost is None else relative_gap(train_cost, optimum_cost),
        theta_rel_error=theta_rel_error,
        condition_number=float(result.condition_number),
        optimum_theta=None if reference.theta is None else [float(v) for v in reference.theta],
        # A few hundred iterates, dense early where the path turns: enough to draw it.
        path_steps=result.history_steps[shown].tolist(),
        path_theta=result.theta_history[shown].tolist(),
        path_loss=result.loss_history[shown].tolist(),
    )


def log_result(
    record: RunRecord, fitted: FittedRun, summary: RunSummary, inputs: np.ndarray, place: RunPlace
) -> None:
    """Log a finished fit's model to the active run; add its cost curve and certificate
    to ``record`` (for the caller to send; how it ended is :func:`outcome_tags`).

    ``inputs`` (n, len(features)) are the feature columns a user passes to the model;
    ``summary`` is :func:`summarize` of ``fitted``.
    """
    from mlflow.entities import Metric

    result, cost = fitted.result, fitted.cost
    # The model first, while the run has no metrics nor params: MLflow copies every
    # metric and param a run already holds onto a model it logs. A diverged run's θ is
    # not a model anyone should use: only its curve is kept.
    if not result.diverged:
        log_model(fitted.model, result.theta, inputs, place)  # linked as the run's output
    optimum_cost = summary.optimum_cost
    # The curve as computed by the loop, ending at the cost recomputed from residuals:
    # whole as the run's artifact, in MLflow's charts CHART_POINTS of its points,
    # log-spaced (dense early, where it falls), the first and last kept: a point costs
    # the store about 0.08 ms, the most of a run's logging time at a few hundred.
    curve = [*result.loss_history[:-1], summary.train_cost]
    record.files[CURVE] = curve_csv(result.history_steps, curve, f"train_{cost.name}")
    shown = plot_indices(len(result.history_steps), CHART_POINTS)
    now = int(1000 * time.time())
    record.metrics += [
        Metric(f"train_{cost.name}", float(curve[i]), now, int(result.history_steps[i])) for i in shown
    ]
    # The gap on a log axis shows how fast each run converges, where the cost curves of
    # a sweep are flattened by the diverged ones; the last point is the final gap, that
    # of the final θ (for a diverged run, its last finite iterate, as its train_mse). A
    # run in a local minimum flattens at its own gap above 0.
    if optimum_cost is not None:
        record.metrics += [
            Metric(
                "optimality_gap",
                relative_gap(float(curve[i]), optimum_cost),
                now,
                int(result.history_steps[i]),
            )
            for i in shown
        ]
    record.add_metrics(_final_metrics(fitted, summary))


def outcome_tags(fitted: FittedRun, summary: RunSummary) -> dict[str, str]:
    """How a finished fit ended, as the run's tags (``summary`` is :func:`summarize` of
    ``fitted``): what the runs table filters on."""
    result = fitted.result
    tags = {
        "status": result.status,
        "end_point": summary.end_point,
        "converged": str(result.converged).lower(),
        "diverged": str(result.diverged).lower(),
        "message": result.message,
    }
    if summary.optimality_gap is not None and summary.optimality_gap < GAP_FLOOR:
        tags["gap_clamped"] = "true"
    return tags


def _final_metrics(fitted: FittedRun, summary: RunSummary) -> dict[str, Any]:
    result, cost = fitted.result, fitted.cost
    finals: dict[str, Any] = {
        "n_iter": result.n_iter,
        "grad_norm": result.grad_norm,
        "lr_used": result.lr,
        "condition_number": result.condition_number,
        # For the runs table and parallel coordinates: the outcome as numbers, and a
        # learning-rate axis on which 0.001, 0.01 and 0.1 are evenly apart.
        "converged": float(result.converged),
        "diverged": float(result.diverged),
        "log10_lr": math.log10(result.lr) if result.lr > 0 else math.nan,
        "global_minimum": float(summary.end_point == "global minimum"),
        "outcome": float(OUTCOME_CODES[result.status]),
    } | {f"theta{j}": float(value) for j, value in enumerate(result.theta)}
    if summary.optimality_gap is not None:
        # Compares well on a log axis: a gap of exactly 0 (or below what float64 tells
        # apart) is held at GAP_FLOOR, and the run is tagged gap_clamped.
        finals["log10_optimality_gap"] = math.log10(max(summary.optimality_gap, GAP_FLOOR))
    if cost.is_mse:
        return finals | {"optimum_mse": summary.optimum_cost, "theta_rel_error": summary.theta_rel_error}
    return finals | {
        "train_mse": summary.train_mse,  # the robust fit's MSE, beside the cost it minimized
        f"optimum_{cost.name}": summary.optimum_cost,
        "theta_rel_error": summary.theta_rel_error,
        "loss_scale": cost.scale,
    }
