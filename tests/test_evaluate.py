"""Stage evaluate: the choice of the best run and the test metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.metrics import mean_squared_error, r2_score

from pipeline.errors import PipelineError
from pipeline.evaluate import regression_metrics, select_best


def run_record(run_id: str, status: str, train_mse: float) -> dict[str, Any]:
    return {"run_id": run_id, "status": status, "train_mse": train_mse, "theta": [1.0, 2.0]}


def test_best_run_is_the_lowest_train_mse_that_did_not_diverge() -> None:
    runs = [
        run_record("slow", "max_iter", 9.0),
        run_record("good", "converged", 4.0),
        run_record("wild", "diverged", 1.0),  # lower, but its θ is meaningless
        {"status": "failed", "message": "optimizer.lr must be > 0"},
        run_record("tie", "converged", 4.0),
    ]
    assert select_best(runs)["run_id"] == "good"


def test_no_usable_run_is_an_error() -> None:
    with pytest.raises(PipelineError, match="every run diverged or failed"):
        select_best([run_record("wild", "diverged", 1.0)])


def test_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y_true = rng.normal(500_000, 100_000, 200)
    y_pred = y_true + rng.normal(0, 30_000, 200)
    metrics = regression_metrics(y_true, y_pred)
    assert metrics["test_mse"] == pytest.approx(mean_squared_error(y_true, y_pred), rel=1e-12)
    assert metrics["test_rmse"] == pytest.approx(np.sqrt(mean_squared_error(y_true, y_pred)), rel=1e-12)
    assert metrics["test_r2"] == pytest.approx(r2_score(y_true, y_pred), rel=1e-12)
