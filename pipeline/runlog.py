"""How a training run is recorded in MLflow: its params, loss curve, certificate, model, outcome.

Called by ``train`` inside an active MLflow run; the numbers come from the optimizer
(:class:`pipeline.optimize.FitResult`) and the least-squares reference, the record is
a :class:`pipeline.outcome.RunSummary`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pipeline.model import ModelSpec
from pipeline.optimize import FitResult, least_squares, mean_squared_error
from pipeline.outcome import EndPoint, RunSummary
from pipeline.tracking import MODEL_URI_TAG

PYFUNC_MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
_optimum_cache: dict[str, tuple[np.ndarray, float]] = {}


def reference_optimum(
    X: np.ndarray, y: np.ndarray, key: str, fit_intercept: bool = True
) -> tuple[np.ndarray, float]:
    """Least-squares θ and its MSE, computed once per training set and model (``key``)."""
    if key not in _optimum_cache:
        theta = least_squares(X, y, fit_intercept=fit_intercept)
        _optimum_cache[key] = (theta, mean_squared_error(X, y, theta))
    return _optimum_cache[key]


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


def log_model(model: ModelSpec, theta: np.ndarray, inputs: np.ndarray) -> str:
    """Log θ as a pyfunc model from code (no pickle) to the active run; return its URI.

    ``inputs`` (n, len(features)) are the training rows' features as a user passes
    them: the model builds the polynomial columns itself. Their range goes into the
    model's config, for ``predict``'s warning about extrapolation.
    """
    import mlflow
    from mlflow.models import infer_signature

    example = pd.DataFrame(inputs[:3], columns=list(model.features))
    prediction = model.predict(theta, inputs[:3])
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(PYFUNC_MODEL_CODE),
        model_config={
            "features": list(model.features),
            "theta": [float(value) for value in theta],
            "degree": model.degree,
            "positive": list(model.positive),
            "training_range": {
                name: [float(inputs[:, j].min()), float(inputs[:, j].max())]
                for j, name in enumerate(model.features)
            },
        },
        signature=infer_signature(example, prediction),
        input_example=example,
        # Inferring requirements costs over a second a run; these are all it imports.
        pip_requirements=[
            f"mlflow=={mlflow.__version__}",
            f"numpy=={np.__version__}",
            f"pandas=={pd.__version__}",
        ],
    )
    return str(info.model_uri)


def plot_indices(length: int, count: int = 300) -> np.ndarray:
    """About ``count`` indices into a history of ``length``, log-spaced, first and last kept."""
    spaced = np.geomspace(1, length, num=min(count, length)).round().astype(int) - 1
    return np.unique(np.concatenate(([0], spaced, [length - 1])))


def relative_gap(loss: float, optimum: float) -> float:
    """(loss − optimum) / optimum, or the plain difference when the optimum is 0."""
    return (loss - optimum) / optimum if optimum > 0 else loss - optimum


def log_result(
    run_id: str,
    uri: str,
    inputs: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    model: ModelSpec,
    method: str,
    theta_init: np.ndarray,
    result: FitResult,
    train_md5: str,
    job: str,
    name: str,
) -> RunSummary:
    """Log a finished fit to the active run: loss curve, certificate, status, model.

    ``inputs`` (n, len(features)) are the feature columns a user passes to the model;
    ``X`` (n, len(model.columns)) the columns it was fitted on (powers, for a polynomial).
    ``job`` and ``name`` are the run's job key and name, for its outcome record.
    """
    import mlflow
    from mlflow.entities import Metric

    cache_key = f"{train_md5}:{model.degree}:{model.fit_intercept}"
    optimum_theta, optimum_mse = reference_optimum(X, y, cache_key, model.fit_intercept)
    train_mse = mean_squared_error(X, y, result.theta)
    # The curve as computed by the loop, ending at the MSE recomputed from residuals.
    curve = [*result.loss_history[:-1], train_mse]
    now = int(1000 * time.time())
    metrics = [
        Metric("train_mse", float(v), now, int(step))
        for step, v in zip(result.history_steps, curve, strict=True)
    ]
    gap = relative_gap(train_mse, optimum_mse)
    # The gap on a log axis shows how fast each run converges, where the MSE curves of
    # a sweep are flattened by the diverged ones: a few hundred log-spaced points, the
    # last one the final gap. A diverged run's points past the divergence are left out.
    shown = plot_indices(len(result.history_steps))  # also the path kept for the pictures
    gap_points = shown[:-1] if result.diverged and shown.size > 1 else shown
    metrics += [
        Metric(
            "optimality_gap", relative_gap(float(curve[i]), optimum_mse), now, int(result.history_steps[i])
        )
        for i in gap_points
    ]
    mlflow.MlflowClient(tracking_uri=uri).log_batch(run_id, metrics=metrics)
    nonzero = np.abs(optimum_theta) > 0
    theta_rel_error = float(
        np.max(np.abs(result.theta - optimum_theta)[nonzero] / np.abs(optimum_theta[nonzero]), initial=0.0)
    )
    finals = {
        "n_iter": result.n_iter,
        "grad_norm": result.grad_norm,
        "lr_used": result.lr,
        "condition_number": result.condition_number,
        "optimum_mse": optimum_mse,
        "theta_rel_error": theta_rel_error,
        # For the runs table and parallel coordinates: the outcome as numbers, and a
        # learning-rate axis on which 0.001, 0.01 and 0.1 are evenly apart.
        "converged": float(result.converged),
        "diverged": float(result.diverged),
        "log10_lr": math.log10(result.lr) if result.lr > 0 else math.nan,
    } | {f"theta{j}": float(value) for j, value in enumerate(result.theta)}
    mlflow.log_metrics({key: float(value) for key, value in finals.items() if np.isfinite(value)})
    mlflow.set_tags(
        {
            "status": result.status,
            "converged": str(result.converged).lower(),
            "diverged": str(result.diverged).lower(),
            "message": result.message,
        }
    )
    # A diverged run's θ is not a model anyone should use: only its curve is kept.
    if not result.diverged:
        mlflow.set_tag(MODEL_URI_TAG, log_model(model, result.theta, inputs))
    # The MSE of a linear model has one minimum: a converged run is at the global one.
    end_point: EndPoint = "global minimum" if result.converged else "none"
    return RunSummary(
        job_key=job,
        overrides=[],
        run_name=name,
        status=result.status,  # type: ignore[arg-type]
        message=result.message,
        end_point=end_point,
        method=method,
        lr=float(result.lr),
        features=list(model.features),
        columns=model.columns,
        degree=model.degree,
        fit_intercept=model.fit_intercept,
        theta_init=[float(v) for v in theta_init],
        theta=[float(v) for v in result.theta],
        n_iter=result.n_iter,
        train_mse=train_mse,
        optimum_mse=optimum_mse,
        optimality_gap=gap,
        theta_rel_error=theta_rel_error,
        condition_number=float(result.condition_number),
        optimum_theta=[float(v) for v in optimum_theta],
        # A few hundred iterates, dense early where the path turns: enough to draw it.
        path_steps=result.history_steps[shown].tolist(),
        path_theta=result.theta_history[shown].tolist(),
        path_loss=result.loss_history[shown].tolist(),
    )
