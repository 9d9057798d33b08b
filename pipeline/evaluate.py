"""Stage ``evaluate``: score the sweep's best run on the test split, register its model.

The best run is the usable one (converged, or stopped at the budget, with finite θ)
with the lowest training MSE; it is found in MLflow by its job key. Its test MSE, RMSE
and R² go to ``paths.metrics`` (DVC metrics: numbers only) and to its MLflow run, which
is tagged ``best_of_sweep``. Its model is registered under ``data.model_name``, and the
alias ``champion`` moves to it as ``registry.promote`` says. The run id and model
version go to ``paths.best_run`` (git-ignored, not tracked by DVC). Run it as
``python -m pipeline.evaluate [overrides]``.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from pipeline.columns import SplitFile
from pipeline.errors import PipelineError, exit_on_error
from pipeline.files import file_md5, resolve, write_atomic, write_json
from pipeline.model import ModelSpec
from pipeline.outcome import RunSummary, best_run, relative_gap, status_counts
from pipeline.passes import median, one_blas_thread
from pipeline.record import read_sweep_record
from pipeline.settings import check_overrides, read_choice, read_model_name, read_names
from pipeline.tracking import (
    CHAMPION,
    CURVE,
    dataset_input,
    finished_run,
    log_dataset_input,
    logged_model_id,
    open_store,
    read_outcome,
    redact,
    sweep_parents,
    tracking_uri,
    write_store_mark,
)

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

log = logging.getLogger("pipeline.evaluate")  # not __main__ under `python -m`

#: ``registry.promote``: when ``evaluate`` moves the champion alias to the new model.
PROMOTE = ("auto", "never", "force")
#: Metrics where a larger value is better (the others are errors).
HIGHER_IS_BETTER = frozenset({"test_r2"})


def select_best(runs: list[RunSummary]) -> RunSummary:
    """The usable run with the lowest training cost (see :func:`pipeline.outcome.best_run`)."""
    best = best_run(runs)
    if best is None:
        statuses = status_counts(runs) or "none"
        raise PipelineError(f"evaluate: no run to choose from: every run diverged or failed ({statuses})")
    return best


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Test MSE, RMSE, R², mean and median absolute error of predictions.

    Parameters
    ----------
    y_true, y_pred : ndarray, shape (n,)

    Returns
    -------
    dict
        ``test_mse``, ``test_rmse``, ``test_r2`` (NaN for a constant ``y_true``),
        ``test_mae`` and ``test_median_ae``: the last two judge a robust fit, which
        gives up a little MSE to ignore outliers.
    """
    return streamed_metrics(lambda: [(y_true, y_pred)])


#: Something that yields (y_true, y_pred) blocks, shape (m,) each, again at every call.
Pairs = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


def streamed_metrics(pairs: Pairs) -> dict[str, float]:
    """:func:`regression_metrics` of predictions that come block by block (a split larger
    than memory): two passes for the sums, a few more for the exact median. Each block's
    sums are numpy's and the blocks' are added exactly (``fsum``), so one block gives the
    figures of whole arrays to the bit."""
    count, squares, absolute, sum_y = 0, [], [], []
    with one_blas_thread():  # the same figures whatever the thread count
        for y_true, y_pred in pairs():
            residual = y_true - y_pred
            count += residual.size
            squares.append(float(residual @ residual))
            absolute.append(float(np.sum(np.abs(residual))))
            sum_y.append(float(np.sum(y_true)))
    if not count:
        raise ValueError("no rows to score")
    mean_y = math.fsum(sum_y) / count
    spread = math.fsum(float(np.sum((y_true - mean_y) ** 2)) for y_true, _ in pairs()) / count
    mse = math.fsum(squares) / count

    def errors() -> Iterator[np.ndarray]:
        return (np.abs(y_true - y_pred) for y_true, y_pred in pairs())

    return {
        "test_mse": mse,
        "test_rmse": math.sqrt(mse),
        "test_r2": 1.0 - mse / spread if spread > 0 else math.nan,
        "test_mae": math.fsum(absolute) / count,
        "test_median_ae": median(errors, count) if math.isfinite(mse) else math.nan,
    }


def predictions(test: SplitFile, model: ModelSpec, theta: Sequence[float], target: str) -> Pairs:
    """The test split's (y, model's prediction) pairs, a batch of rows at a time."""
    names = [*model.features, target]

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for block in test.blocks(names):
            yield block[:, -1], model.predict(theta, block[:, :-1])

    return pairs


def champion_decision(policy: str, in_workspace: bool, new: float, current: float | None, metric: str) -> str:
    """Why the alias moves (a sentence), or "" if it stays.

    ``auto`` moves it in the project's own workspace (not in ``dvc exp run``) when the new
    model is not worse than the current champion on ``metric`` over the same test
    split; ``force`` always; ``never`` never.
    """
    if policy == "never":
        return ""
    if policy == "force":
        return "registry.promote=force"
    if not in_workspace:
        return ""  # an experiment's model is registered, the champion stays
    if current is None:
        return "there was no champion to compare with"
    better = new >= current if metric in HIGHER_IS_BETTER else new <= current
    return f"{metric} {new:.6g} is not worse than the champion's {current:.6g}" if better else ""


def in_dvc_experiment() -> bool:
    """True inside ``dvc exp run`` (also ``--temp`` and queued runs), which sets this variable."""
    return "DVC_EXP_BASELINE_REV" in os.environ


def champion_score(
    client: MlflowClient, name: str, test: SplitFile, target: str, metric: str
) -> tuple[str | None, float | None]:
    """The current champion's version and its ``metric`` re-scored on this test split."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None, None
    try:
        outcome = read_outcome(client, client.get_run(version.run_id).info) if version.run_id else None
    except MlflowException:  # the champion's run was deleted
        outcome = None
    if outcome is None or outcome.theta is None or not set(outcome.features) <= set(test.names):
        return str(version.version), None  # made before outcomes were logged: not comparable
    model = ModelSpec(tuple(outcome.features), outcome.degree, outcome.fit_intercept)
    return str(version.version), streamed_metrics(predictions(test, model, outcome.theta, target))[metric]


def register_model(
    client: MlflowClient,
    run_id: str,
    model_uri: str,
    metrics: dict[str, float],
    name: str,
    features: list[str],
    data: str,
) -> str:
    """Register the run's model under ``name``, tagged with its data and test metrics; its version.

    A run already registered under ``name`` keeps its version (evaluating the same sweep
    again registers nothing new); its tags are brought up to date.
    """
    import mlflow

    tags = {"run_id": run_id, "data": data, "features": ",".join(features)}
    number = registered_version(client, name, run_id)
    if number is None:
        mlflow.set_tracking_uri(client.tracking_uri)
        number = str(mlflow.register_model(model_uri, name, tags=tags).version)
    else:
        for key, value in tags.items():
            client.set_model_version_tag(name, number, key, value)
    for metric, score in metrics.items():
        client.set_model_version_tag(name, number, metric, f"{score:.8g}")
    return number


def registered_version(client: MlflowClient, name: str, run_id: str) -> str | None:
    """The lowest version of ``name`` made from run ``run_id``'s model, or None."""
    found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    versions = sorted(int(version.version) for version in found)
    return str(versions[0]) if versions else None


#: The smallest relative gap float64 can show: below it, the cost and the optimum agree to the last bit.
ROUND_OFF = float(np.finfo(np.float64).eps)


def best_loss_curve(client: MlflowClient, run_id: str, loss: str, optimum: float | None) -> pd.DataFrame:
    """The chosen run's whole cost curve: ``step``, ``train_<loss>`` and ``optimality_gap``
    (relative to ``optimum``, or to the lowest cost of the curve where the global minimum
    is unknown), held at :data:`ROUND_OFF` from below, for a log axis.

    The curve is the run's ``loss_curve.csv``; a run logged before runs had one gives the
    points of its metric history.
    """
    from mlflow.exceptions import MlflowException

    name = f"train_{loss}"
    with tempfile.TemporaryDirectory() as folder:
        try:
            curve = pd.read_csv(client.download_artifacts(run_id, CURVE, folder))
            steps, values = curve["step"].to_numpy(), curve[name].to_numpy(np.float64)
        except (OSError, MlflowException):
            history = sorted(client.get_metric_history(run_id, name), key=lambda metric: metric.step)
            steps = np.array([m.step for m in history], dtype=np.int64)
            values = np.array([m.value for m in history], dtype=np.float64)
    reference = optimum if optimum is not None else float(values.min(initial=np.inf))
    gap = relative_gap(values, reference)
    return pd.DataFrame({"step": steps, name: values, "optimality_gap": np.maximum(gap, ROUND_OFF)})


@dataclass(frozen=True)
class Scores:
    """The best run's model on the test split: its columns, predictions' metrics."""

    test: SplitFile  # the test split, read a batch at a time
    target: str
    model: ModelSpec
    metrics: dict[str, float]  # test_mse, test_rmse, test_r2, test_mae, test_median_ae


def score(cfg: DictConfig, best: RunSummary) -> Scores:
    """The best run's θ scored on ``paths.test``."""
    target = str(best.target or read_names(cfg, "data.target")[0])
    test = SplitFile.open(
        resolve(cfg, cfg.paths.test), [*best.features, target], source=f"{cfg.paths.test} (run `dvc repro`)"
    )
    model = ModelSpec(tuple(best.features), best.degree, best.fit_intercept)
    return Scores(test, target, model, streamed_metrics(predictions(test, model, best.theta or [], target)))


def record_scores(
    cfg: DictConfig,
    client: MlflowClient,
    experiment_id: str,
    key: str,
    found: Run,
    best: RunSummary,
    scores: Scores,
) -> None:
    """The test metrics and the test split on the best run, its id on the sweep's parent.

    Each test metric names the run's logged model and the test dataset, so that MLflow's
    Models tab shows it beside the model."""
    run_id = found.info.run_id
    model_id = logged_model_id(found)
    names = [*scores.model.features, scores.target]
    head = next(scores.test.blocks(names))
    columns = {name: head[:, j] for j, name in enumerate(names)}
    test_md5 = file_md5(resolve(cfg, cfg.paths.test))
    test_input = dataset_input(
        columns, scores.test.n_rows, str(cfg.paths.test), "test", scores.target, test_md5, "testing"
    )
    log_dataset_input(client, run_id, test_input)
    dataset = test_input.dataset
    for metric_name, value in scores.metrics.items():
        if math.isfinite(value):
            client.log_metric(
                run_id,
                metric_name,
                value,
                dataset_name=dataset.name,
                dataset_digest=dataset.digest,
                model_id=model_id,
            )
    client.set_tag(run_id, "best_of_sweep", "true")
    parents = sweep_parents(client, experiment_id, key)
    if parents:
        client.set_tag(parents[0].info.run_id, "best_run_id", run_id)
        client.log_metric(parents[0].info.run_id, "best_train_mse", float(best.train_mse or math.nan))
        if math.isfinite(scores.metrics["test_mse"]):
            client.log_metric(parents[0].info.run_id, "best_test_mse", scores.metrics["test_mse"])


def register(cfg: DictConfig, client: MlflowClient, found: Run, scores: Scores, name: str) -> tuple[str, str]:
    """Register the run's model as ``name``; move the champion alias as ``registry.promote``
    says. Returns the new version and why it became the champion ("" where it did not)."""
    policy = read_choice(cfg, "registry.promote", PROMOTE)
    metric = read_choice(cfg, "registry.metric", tuple(scores.metrics))
    run_id = found.info.run_id
    current_version, current = champion_score(client, name, scores.test, scores.target, metric)
    model_id = logged_model_id(found)
    model_uri = f"models:/{model_id}" if model_id else f"runs:/{run_id}/model"
    features = list(scores.model.features)
    version = register_model(client, run_id, model_uri, scores.metrics, name, features, str(cfg.data.path))
    reason = champion_decision(policy, not in_dvc_experiment(), scores.metrics[metric], current, metric)
    if version == current_version:  # the same run evaluated again: nothing moves
        reason = f"the {CHAMPION} already"
        log.info("%s version %s is the %s already", name, version, CHAMPION)
    elif reason:
        client.set_registered_model_alias(name, CHAMPION, version)
        log.info("%s version %s is the new %s: %s", name, version, CHAMPION, reason)
    else:
        inside = ", inside dvc exp run" if in_dvc_experiment() else ""
        log.info(
            "%s version %s registered; %s stays on version %s (registry.promote=%s%s)",
            *(name, version, CHAMPION, current_version, policy, inside),
        )
    return version, reason


def run(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate the best run of ``paths.sweep`` on ``paths.test``; write ``paths.metrics``.

    Returns what it wrote to ``paths.best_run`` (the run, the model version, whether it
    became the champion) and the test metrics.
    """
    key, runs = read_sweep_record(resolve(cfg, cfg.paths.sweep))
    best = select_best(runs)
    scores = score(cfg, best)
    uri = tracking_uri(cfg.mlflow.tracking_uri)
    store = open_store(uri, cfg.mlflow.experiment)
    client, experiment_id = store.client, store.experiment
    found = finished_run(client, experiment_id, best.job_key)
    if found is None:
        raise PipelineError(
            f"evaluate: the store {redact(uri)} has no finished run with job key {best.job_key} "
            "(deleted, or another store); run `dvc repro` to train it again"
        )
    run_id = found.info.run_id
    record_scores(cfg, client, experiment_id, key, found, best, scores)
    name = read_model_name(cfg)
    version, reason = register(cfg, client, found, scores, name)
    curve = best_loss_curve(client, run_id, best.loss, best.optimum_cost)
    write_atomic(resolve(cfg, cfg.paths.best_loss_curve), partial(curve.to_csv, index=False))
    # DVC metrics: numbers that follow from data, config and code only (no ids, no versions).
    numbers = scores.metrics | {"train_mse": float(best.train_mse or math.nan)}
    if best.loss != "mse":
        numbers[f"train_{best.loss}"] = best.cost
    write_json(
        resolve(cfg, cfg.paths.metrics), {k: (v if math.isfinite(v) else None) for k, v in numbers.items()}
    )
    chosen = {
        "run_id": run_id,
        "run_name": best.run_name,
        "job_key": best.job_key,
        "theta": best.theta,
        "features": best.features,
        "model": f"models:/{name}@{CHAMPION}",
        "model_version": version,
        "champion": bool(reason),
    }
    write_json(resolve(cfg, cfg.paths.best_run), chosen)  # git-ignored, not a DVC output
    write_store_mark(resolve(cfg, cfg.paths.store_evaluate), [])  # the model and champion exist now
    rmse, r2 = scores.metrics["test_rmse"], scores.metrics["test_r2"]
    log.info("best run %s (%s): test RMSE %.6g, R² %.4f", run_id, best.run_name, rmse, r2)
    return numbers | chosen


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@exit_on_error
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    check_overrides("config")
    main()
