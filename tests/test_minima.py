"""Local minima on the real data: the global minimum certified, a Welsch sweep that finds
both valleys and the plateau, each checked against scipy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image, ImageSequence

from pipeline.costs import Cost
from pipeline.minima import CERTIFICATE_EPSILON, certify_global_minimum, end_point
from pipeline.outcome import RunSummary
from pipeline.record import group_minima
from tests.helpers import assert_one_line_error, run_stage, scipy_minima

WELSCH = Cost("welsch", 75_000.0)
#: The frame of the default config's model.init.box, with the landscape's margin.
FRAME = ((-650_000.0, 650_000.0), (-90.0, 690.0))
STARTS = [(t0, t1) for t0 in np.linspace(-5e5, 5e5, 5) for t1 in np.linspace(0, 600, 5)]


@pytest.fixture(scope="module")
def house_split(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """The default pipeline's King County training split: sqft_living and price."""
    from tests.helpers import prepare_data

    folder = prepare_data(tmp_path_factory.mktemp("houses"))
    table = pd.read_parquet(folder / "data" / "split" / "train.parquet")
    return table["sqft_living"].to_numpy(np.float64), table["price"].to_numpy(np.float64)


@pytest.fixture(scope="module")
def reference_minima(house_split: tuple[np.ndarray, np.ndarray]) -> list[np.ndarray]:
    return scipy_minima(*house_split, WELSCH, STARTS)


def test_scipy_sees_two_minima_of_the_welsch_cost_on_the_houses(reference_minima: list[np.ndarray]) -> None:
    # The premise of the story: more than one valley (scipy alone, no pipeline code).
    assert len(reference_minima) == 2


@pytest.mark.parametrize("cost", [WELSCH, Cost("cauchy", 75_000.0)], ids=["welsch", "cauchy"])
def test_the_certified_global_minimum_is_no_worse_than_scipy_from_many_starts(
    cost: Cost, house_split: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = house_split
    certificate = certify_global_minimum(x, y, cost, FRAME)
    assert certificate.certified
    assert certificate.cost - certificate.lower_bound <= CERTIFICATE_EPSILON
    best = scipy_minima(x, y, cost, STARTS)[0]
    # No start of scipy's goes lower than the certificate's bound, and the point found is scipy's best.
    assert certificate.lower_bound <= best[2] + 1e-12
    assert certificate.cost == pytest.approx(best[2], abs=1e-9)
    np.testing.assert_allclose(certificate.theta, best[:2], rtol=1e-4)


def test_the_certificate_finds_the_lower_of_two_valleys_placed_apart() -> None:
    # Two thirds of the rows on one line, a third on another far away (every residual from
    # the other line beyond 40 c, so it costs exactly 1): a valley for each line, and the
    # deeper one, exactly on its line, is the line with more rows.
    x = np.tile(np.linspace(0.0, 10.0, 50), 3)
    y = np.concatenate([1.0 + 2.0 * x[:100], 100.0 - 3.0 * x[100:]])
    certificate = certify_global_minimum(x, y, Cost("welsch", 1.0), ((-50.0, 150.0), (-8.0, 8.0)))
    assert certificate.certified
    np.testing.assert_allclose(certificate.theta, [1.0, 2.0], atol=1e-6)
    assert certificate.cost == pytest.approx(1 / 3, abs=1e-12)  # the far third of the rows, 1 each


def summary(key: str, end: str, theta: list[float], cost: float) -> RunSummary:
    return RunSummary(
        job_key=key,
        overrides=[],
        run_name=key,
        status="converged",
        message="",
        end_point=end,  # type: ignore[arg-type]
        theta=theta,
        theta_unit=[1000.0, 1.0],
        train_cost=cost,
        loss="welsch",
    )


def test_runs_are_grouped_by_the_minimum_they_reached() -> None:
    runs = [
        summary("a", "local minimum", [12_661.8, 221.457], 0.716473),
        summary("b", "global minimum", [106_357.0, 130.626], 0.713494),
        summary("c", "local minimum", [12_661.9, 221.457], 0.716473),
        summary("d", "plateau", [-5e5, 0.0], 1.0),
    ]
    minima = group_minima(runs)
    assert [(m.kind, m.runs, m.job_keys) for m in minima] == [
        ("global minimum", 1, ["b"]),
        ("local minimum", 2, ["a", "c"]),
    ]


def test_end_points_follow_the_curvature_and_the_global_cost() -> None:
    positive, flat = np.array([0.01, 0.1]), np.array([-1e-7, 2e-6])
    assert end_point("converged", positive, 0.716473, 0.713494, convex=False) == "local minimum"
    assert end_point("converged", positive, 0.713494, 0.713494, convex=False) == "global minimum"
    assert end_point("converged", flat, 1.0, 0.713494, convex=False) == "plateau"
    assert end_point("max_iter", flat, 1.0, 0.713494, convex=False) == "plateau"
    assert end_point("max_iter", positive, 0.72, 0.713494, convex=False) == "none"
    assert end_point("diverged", positive, 0.72, 0.713494, convex=False) == "none"
    assert end_point("converged", np.array([0.5, 2.0]), 7e10, 7e10, convex=True) == "global minimum"
    assert end_point("converged", positive, 0.713494, None, convex=False) == "local minimum"  # uncertified


@pytest.mark.e2e
def test_a_welsch_sweep_finds_both_minima_and_the_plateau(
    prepared: Path, house_split: tuple[np.ndarray, np.ndarray], reference_minima: list[np.ndarray]
) -> None:
    # Four starts of conf/experiment/robust.yaml's grid: one on the plateau, the rest downhill.
    result = run_stage(
        "train",
        prepared,
        "+experiment=robust",
        "model.init.theta0=-500000,0",
        "model.init.theta1=0,300",
        multirun=True,
    )
    assert result.returncode == 0, result.stderr
    assert "Terminating: fork()" not in result.stderr  # the page is not drawn in a forked copy here
    record = json.loads((prepared / "reports" / "sweep.json").read_text())
    minima = record["minima"]
    assert [minimum["kind"] for minimum in minima] == ["global minimum", "local minimum"]
    for found, reference in zip(minima, reference_minima, strict=True):
        np.testing.assert_allclose(found["theta"], reference[:2], rtol=1e-3)
        assert found["cost"] == pytest.approx(reference[2], rel=1e-6)
    ends = {run["job_key"]: run["end_point"] for run in record["runs"]}
    assert "plateau" in ends.values()
    for minimum in minima:
        assert all(ends[key] == minimum["kind"] for key in minimum["job_keys"])
    assert all(run["loss"] == "welsch" and run["loss_scale"] == 75_000.0 for run in record["runs"])
    assert "2 minima — global J=" in result.stdout and "on the plateau" in result.stdout

    # MLflow: each run's cost curve and end point, and the parent's count of minima.
    client = MlflowClient(tracking_uri=f"sqlite:///{prepared / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("downhill")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], "tags.`downhill.role` = 'train'")
    assert sorted(run.data.tags["end_point"] for run in runs) == sorted(ends.values())
    for run in runs:
        curve = client.get_metric_history(run.info.run_id, "train_welsch")
        assert curve and max(point.value for point in curve) <= 1.0
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.data.metrics["minima_found"] == 2
    assert (prepared / "reports" / "landscape.png").stat().st_size > 0
    # The experiment draws its animation for slides, and the parent run keeps it.
    with Image.open(prepared / "reports" / "descent.gif") as animation:
        assert animation.format == "GIF" and len(list(ImageSequence.Iterator(animation))) > 30
    assert (prepared / "reports" / "descent.gif").stat().st_size <= 5e6
    assert "descent.gif" in {item.path for item in client.list_artifacts(parent.info.run_id)}


@pytest.mark.e2e
def test_one_sweep_minimizes_one_cost(prepared: Path) -> None:
    result = run_stage("train", prepared, "model.loss=mse,welsch", multirun=True)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "model.loss", "one sweep minimizes one cost")


@pytest.mark.e2e
def test_the_race_sends_four_methods_from_one_start_to_different_ends(prepared: Path) -> None:
    """``+experiment=race``: one start, one step size, four methods, three different ends."""
    result = run_stage("train", prepared, "+experiment=race", multirun=True)
    assert result.returncode == 0, result.stderr
    runs = json.loads((prepared / "reports" / "sweep.json").read_text())["runs"]
    assert {run["method"]: (run["status"], run["end_point"]) for run in runs} == {
        "gd": ("max_iter", "none"),  # still on its way
        "momentum": ("converged", "local minimum"),
        "nesterov": ("converged", "local minimum"),
        "adam": ("converged", "global minimum"),
    }
    iterations = {run["method"]: run["n_iter"] for run in runs}
    assert iterations["adam"] < iterations["momentum"] < iterations["gd"] == 3000
    assert all(run["theta_init"] == [-250_000.0, 600.0] and run["lr"] == 0.1 for run in runs)
