"""Stage ``evaluate``: score the sweep's best run on the test split.

The best run is the one with the lowest training MSE among the runs that did not
diverge (nor fail). Its test MSE, RMSE and R² go to ``paths.metrics`` (DVC metrics) and
to its MLflow run, which is tagged ``best_of_sweep``. Run it as
``python -m pipeline.evaluate [overrides]``.
"""

from __future__ import annotations

import json
import logging
import math
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from pipeline.errors import PipelineError, exit_on_error
from pipeline.files import resolve, write_atomic, write_json
from pipeline.model import ModelSpec
from pipeline.settings import check_overrides, read_names
from pipeline.tables import require_columns
from pipeline.tracking import CHAMPION, client_for

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger("pipeline.evaluate")  # not __main__ under `python -m`


def select_best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the lowest finite ``train_mse`` among those that did not diverge.

    Ties go to the earlier run, so the choice does not depend on rounding noise order.
    """
    usable = [
        run
        for run in runs
        if run.get("status") in {"converged", "max_iter"}
        and math.isfinite(run.get("train_mse", math.inf))
        and all(math.isfinite(value) for value in run["theta"])
    ]
    if not usable:
        statuses = ", ".join(str(run.get("status")) for run in runs) or "none"
        raise PipelineError(f"evaluate: no run to choose from: every run diverged or failed ({statuses})")
    return min(usable, key=lambda run: run["train_mse"])


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Test MSE, RMSE and R² of predictions.

    Parameters
    ----------
    y_true, y_pred : ndarray, shape (n,)

    Returns
    -------
    dict
        ``test_mse``, ``test_rmse`` and ``test_r2`` (R² is NaN for a constant ``y_true``).
    """
    residual = y_true - y_pred
    mse = float(residual @ residual / residual.size)
    spread = float(((y_true - y_true.mean()) ** 2).mean())
    return {
        "test_mse": mse,
        "test_rmse": math.sqrt(mse),
        "test_r2": 1.0 - mse / spread if spread > 0 else math.nan,
    }


def read_sweep(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise PipelineError(f"{path}: no sweep record; run `dvc repro train` first")
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def log_to_mlflow(record: dict[str, Any], best: dict[str, Any], metrics: dict[str, float]) -> MlflowClient:
    """Put the test metrics on the best run and mark it; mark the sweep's parent too."""
    client = client_for(record["tracking_uri"])
    finite = {key: value for key, value in metrics.items() if math.isfinite(value)}
    for key, value in finite.items():
        client.log_metric(best["run_id"], key, value)
    client.set_tag(best["run_id"], "best_of_sweep", "true")
    parent = record.get("parent_run_id")
    if parent:
        client.set_tag(parent, "best_run_id", best["run_id"])
        client.log_metric(parent, "best_train_mse", best["train_mse"])
        if "test_mse" in finite:
            client.log_metric(parent, "best_test_mse", finite["test_mse"])
    return client


def register_champion(
    client: MlflowClient, best: dict[str, Any], metrics: dict[str, float], name: str
) -> int:
    """Register the best run's model under ``name`` and point the alias ``champion`` at it."""
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    version = mlflow.register_model(best["model_uri"], name, tags={"run_id": best["run_id"]})
    client.set_registered_model_alias(name, CHAMPION, version.version)
    for key, value in metrics.items():
        client.set_model_version_tag(name, version.version, key, f"{value:.8g}")
    return int(version.version)


def best_loss_curve(client: MlflowClient, run_id: str) -> pd.DataFrame:
    """The chosen run's loss curve, every logged step, as a table (step, train_mse)."""
    history = sorted(client.get_metric_history(run_id, "train_mse"), key=lambda metric: metric.step)
    return pd.DataFrame({"step": [m.step for m in history], "train_mse": [m.value for m in history]})


def run(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate the best run of ``paths.sweep`` on ``paths.test``; write ``paths.metrics``."""
    record = read_sweep(resolve(cfg, cfg.paths.sweep))
    best = select_best(record["runs"])
    test = pd.read_parquet(resolve(cfg, cfg.paths.test))
    require_columns(
        test.columns, [*best["features"], best["target"]], source=f"{cfg.paths.test} (run `dvc repro`)"
    )
    model = ModelSpec(tuple(best["features"]), int(best["degree"]), bool(best["fit_intercept"]))
    y_pred = model.predict(best["theta"], test[list(model.features)].to_numpy(np.float64))
    metrics = regression_metrics(test[best["target"]].to_numpy(np.float64), y_pred)
    client = log_to_mlflow(record, best, metrics)
    name = read_names(cfg, "registry.model_name")[0]
    version = register_champion(client, best, metrics, name)
    curve = best_loss_curve(client, best["run_id"])
    write_atomic(resolve(cfg, cfg.paths.best_loss_curve), partial(curve.to_csv, index=False))
    report = metrics | {
        "train_mse": best["train_mse"],
        "theta": best["theta"],
        "features": best["features"],
        "run_id": best["run_id"],
        "run_name": best["run_name"],
        "model": f"models:/{name}@{CHAMPION}",
        "model_version": version,
    }
    write_json(resolve(cfg, cfg.paths.metrics), report)
    log.info("registered %s version %d as %s@%s", best["model_uri"], version, name, CHAMPION)
    log.info(
        "best run %s (%s): test RMSE %.6g, R² %.4f",
        best["run_id"],
        best["run_name"],
        metrics["test_rmse"],
        metrics["test_r2"],
    )
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@exit_on_error
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    check_overrides("config")
    main()
