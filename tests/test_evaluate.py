"""Stage evaluate: the choice of the best run and the test metrics."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import mean_squared_error, r2_score

from pipeline.errors import PipelineError
from pipeline.evaluate import champion_decision, regression_metrics, select_best
from pipeline.outcome import RunSummary, Status
from tests.helpers import project_cfg, trained


def run_record(job_key: str, status: Status, train_mse: float) -> RunSummary:
    return RunSummary(
        job_key=job_key, overrides=[], run_name=job_key, status=status, message="", train_mse=train_mse,
        theta=[1.0, 2.0],
    )  # fmt: skip


def test_best_run_is_the_lowest_train_mse_that_did_not_diverge() -> None:
    runs = [
        run_record("slow", "max_iter", 9.0),
        run_record("good", "converged", 4.0),
        run_record("wild", "diverged", 1.0),  # lower, but its θ is meaningless
        run_record("swing", "oscillating", 2.0),  # neither: it never settled
        RunSummary.failed("bad", ["optimizer.lr=-1"], "gd lr=-1", "optimizer.lr must be > 0"),
        run_record("tie", "converged", 4.0),
    ]
    assert select_best(runs).job_key == "good"


def test_no_usable_run_is_an_error() -> None:
    with pytest.raises(PipelineError, match="every run diverged or failed"):
        select_best([run_record("wild", "diverged", 1.0)])


def test_a_run_with_non_finite_theta_is_not_usable() -> None:
    broken = replace(run_record("nan", "converged", 1.0), theta=[float("nan"), 2.0])
    assert not broken.usable and select_best([broken, run_record("ok", "max_iter", 5.0)]).job_key == "ok"
    assert broken.to_json()["theta"] == [None, 2.0]  # valid JSON: no NaN


@pytest.mark.parametrize(
    ("policy", "in_workspace", "new", "current", "moves"),
    [
        ("auto", True, 1.0, 2.0, True),
        ("auto", True, 2.0, 2.0, True),  # not worse
        ("auto", True, 3.0, 2.0, False),  # worse on the test split: the champion stays
        ("auto", True, 3.0, None, True),  # no champion yet
        ("auto", False, 1.0, 2.0, False),  # inside dvc exp run
        ("force", False, 3.0, 2.0, True),
        ("never", True, 1.0, None, False),
    ],
)
def test_champion_policy(
    policy: str, in_workspace: bool, new: float, current: float | None, moves: bool
) -> None:
    assert bool(champion_decision(policy, in_workspace, new, current, "test_mse")) is moves


def test_champion_policy_on_r2_prefers_higher() -> None:
    # A model with R² 0.0002 must not replace one with 0.48 (Hardening).
    assert not champion_decision("auto", True, 0.0002, 0.48, "test_r2")
    assert champion_decision("auto", True, 0.5, 0.48, "test_r2")


def test_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y_true = rng.normal(500_000, 100_000, 200)
    y_pred = y_true + rng.normal(0, 30_000, 200)
    metrics = regression_metrics(y_true, y_pred)
    assert metrics["test_mse"] == pytest.approx(mean_squared_error(y_true, y_pred), rel=1e-12)
    assert metrics["test_rmse"] == pytest.approx(np.sqrt(mean_squared_error(y_true, y_pred)), rel=1e-12)
    assert metrics["test_r2"] == pytest.approx(r2_score(y_true, y_pred), rel=1e-12)


@pytest.mark.integration
def test_evaluating_the_same_sweep_again_registers_nothing_new(tmp_path: Path) -> None:
    from pipeline import evaluate
    from pipeline.settings import read_model_name
    from pipeline.tracking import open_store

    trained(tmp_path)  # one run, evaluated once: version 1, the champion
    cfg = project_cfg(tmp_path)
    again = [evaluate.run(cfg) for _ in range(2)]
    client = open_store(str(cfg.mlflow.tracking_uri)).client
    name = read_model_name(cfg)
    versions = client.search_model_versions(f"name = '{name}'")
    assert [str(version.version) for version in versions] == ["1"]
    assert [(chosen["model_version"], chosen["champion"]) for chosen in again] == [("1", True), ("1", True)]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert versions[0].tags["test_rmse"] == f"{again[-1]['test_rmse']:.8g}"


@pytest.mark.integration
def test_the_test_metrics_are_shown_with_the_logged_model_and_the_test_split(tmp_path: Path) -> None:
    from pipeline.tracking import logged_model_id, open_store

    trained(tmp_path)
    cfg = project_cfg(tmp_path)
    client = open_store(str(cfg.mlflow.tracking_uri)).client
    (best,) = client.search_runs(
        [client.get_experiment_by_name("downhill").experiment_id],  # type: ignore[union-attr]
        filter_string="tags.best_of_sweep = 'true'",
    )
    model = client.get_logged_model(str(logged_model_id(best)))
    shown = {metric.key: metric for metric in model.metrics or []}
    assert {"test_mse", "test_rmse", "test_r2"} <= set(shown)
    assert shown["test_rmse"].value == best.data.metrics["test_rmse"]
    assert shown["test_rmse"].dataset_name == "test" and shown["test_rmse"].dataset_digest
