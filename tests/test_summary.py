"""A robust cost over a summary of the rows: its bins checked against a plain groupby, its
stated error bounds against the cost over the rows (numpy, not the kernels), and the
certificate it gives against the certificate over the rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.costs import CURVATURE_CHANGE, Cost
from pipeline.generate import sales_block
from pipeline.minima import CERTIFICATE_EPSILON, certify_global_minimum, line_cost
from pipeline.model import ModelSpec
from pipeline.runlog import global_reference
from pipeline.summary import RowSummary, bin_cost, bin_rows

ROBUST = [Cost("huber", 60_000.0), Cost("cauchy", 50_000.0), Cost("welsch", 75_000.0)]
FRAME = ((-650_000.0, 650_000.0), (-90.0, 690.0))
THETAS = [(0.0, 0.0), (104_000.0, 131.7), (16_000.0, 222.0), (-52_000.0, 285.6), (500_000.0, 600.0)]


def made_up_sales(rows: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``sqft_living`` and ``price`` of the generator's sales: two markets and outliers."""
    block = sales_block(np.random.default_rng(seed), rows)
    return block["sqft_living"].astype(np.float64), block["price"].astype(np.float64)


def rows_cost(x: np.ndarray, y: np.ndarray, cost: Cost, theta: tuple[float, float]) -> float:
    """``J`` over the rows, in plain numpy: the reference."""
    return cost.value(y - theta[0] - theta[1] * x)


@pytest.mark.parametrize("bins_per_scale", [4, 40])
def test_the_bins_hold_the_rows_counts_centroids_and_moments_of_a_plain_groupby(bins_per_scale: int) -> None:
    x, y = made_up_sales(30_000)
    summary = bin_rows(x, y, ROBUST[2], bins_per_scale)
    width_x, width_y = summary.widths
    table = pd.DataFrame({"x": x, "y": y, "bx": np.floor(x / width_x), "by": np.floor(y / width_y)})
    groups = table.groupby(["bx", "by"])
    means = groups[["x", "y"]].transform("mean")
    dx, dy = x - means["x"].to_numpy(), y - means["y"].to_numpy()
    assert summary.bins == groups.ngroups
    assert summary.weight.sum() == x.size
    ours = np.column_stack([summary.x, summary.y, summary.weight])
    theirs = np.column_stack([groups["x"].mean(), groups["y"].mean(), groups.size()])
    ours, theirs = (table[np.lexsort((table[:, 1], table[:, 0]))] for table in (ours, theirs))
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    within_xx, within_xy, within_yy = summary.moments
    assert within_xx == pytest.approx(dx @ dx, rel=1e-9)
    assert within_xy == pytest.approx(dx @ dy, rel=1e-9, abs=1e-6 * math.sqrt((dx @ dx) * (dy @ dy)))
    assert within_yy == pytest.approx(dy @ dy, rel=1e-9)


@pytest.mark.parametrize("cost", ROBUST, ids=lambda cost: cost.name)
@pytest.mark.parametrize("bins_per_scale", [2, 8, 40])
def test_the_cost_over_the_bins_is_within_its_stated_bounds_of_the_cost_over_the_rows(
    cost: Cost, bins_per_scale: int
) -> None:
    x, y = made_up_sales(40_000)
    summary = bin_rows(x, y, cost, bins_per_scale)
    for theta in THETAS:
        exact = rows_cost(x, y, cost, theta)
        binned = float(line_cost(summary.x, summary.y, cost, np.array(theta), summary.weight)[0][0])
        slopes = (theta[1], theta[1])
        assert abs(exact - binned) <= summary.error(cost, slopes) * (1 + 1e-9) + 1e-15
        assert exact >= binned - summary.shortfall(cost, slopes) * (1 + 1e-9) - 1e-15
    if cost.convex:  # a convex cost over a bin's rows is never below its cost at their centroid
        assert summary.shortfall(cost, FRAME[1]) == 0.0


def test_finer_bins_hide_less() -> None:
    x, y = made_up_sales(40_000)
    coarse, fine = (bin_rows(x, y, ROBUST[2], bins) for bins in (4, 40))
    assert fine.bins > coarse.bins
    assert fine.error(ROBUST[2], FRAME[1]) < coarse.error(ROBUST[2], FRAME[1]) / 10


def test_the_certificate_from_a_summary_agrees_with_the_certificate_from_the_rows() -> None:
    x, y = made_up_sales(60_000)
    welsch = ROBUST[2]
    summary = bin_rows(x, y, welsch, 40)
    exact = certify_global_minimum(x, y, welsch, FRAME)
    binned = certify_global_minimum(x, y, welsch, FRAME, summary=summary)
    assert exact.certified and binned.certified
    assert binned.summary_shortfall == summary.shortfall(welsch, FRAME[1]) > 0
    # Each proves the other's answer: neither finds a point below the other's bound.
    assert binned.lower_bound <= exact.cost and exact.lower_bound <= binned.cost
    assert binned.cost - binned.lower_bound <= CERTIFICATE_EPSILON
    # Its best point is costed on the rows, not the bins.
    assert binned.cost == pytest.approx(rows_cost(x, y, welsch, tuple(binned.theta)), rel=1e-12)
    assert binned.cost == pytest.approx(exact.cost, abs=CERTIFICATE_EPSILON)


def test_above_model_exact_rows_the_global_reference_comes_from_a_summary() -> None:
    x, y = made_up_sales(20_000)
    X, model, welsch = x[:, np.newaxis], ModelSpec(("sqft_living",)), ROBUST[2]
    exact = global_reference(X, y, model, welsch, "summary-test", lambda _: FRAME, exact_rows=10**9)
    binned = global_reference(X, y, model, welsch, "summary-test", lambda _: FRAME, exact_rows=1_000)
    assert exact.how == binned.how == "branch and bound"
    assert exact.cost is not None and binned.cost is not None
    assert binned.cost == pytest.approx(exact.cost, abs=CERTIFICATE_EPSILON)


def test_a_picture_drawn_from_a_summary_says_so_with_its_bound() -> None:
    from pipeline.landscape import RobustPlane

    x, y = made_up_sales(5_000)
    welsch = ROBUST[2]
    summary = bin_rows(x, y, welsch, 8)
    plane = RobustPlane.from_summary(summary, welsch, FRAME[1])
    bound = summary.curved_error(welsch, FRAME[1])
    assert plane.note == f"from 5,000 rows in {summary.bins:,} bins, within ±{bound:.1e}"
    theta0, theta1 = np.array([[0.0, 104_000.0]]), np.array([[0.0, 131.7]])
    exact = [rows_cost(x, y, welsch, (t0, t1)) for t0, t1 in zip(theta0[0], theta1[0], strict=True)]
    assert plane.cost(theta0, theta1)[0] == pytest.approx(exact, abs=bound)


@pytest.mark.parametrize("cost", ROBUST, ids=lambda cost: cost.name)
@pytest.mark.parametrize("bins_per_scale", [1, 4, 16])
def test_the_second_order_cost_over_the_bins_is_within_its_bound_and_closer(
    cost: Cost, bins_per_scale: int
) -> None:
    x, y = made_up_sales(40_000)
    summary = bin_rows(x, y, cost, bins_per_scale)
    first_errors, second_errors = [], []
    for theta in THETAS:
        exact = rows_cost(x, y, cost, theta)
        second = float(bin_cost(summary, cost, np.array(theta))[0])
        first = float(line_cost(summary.x, summary.y, cost, np.array(theta), summary.weight)[0][0])
        assert abs(exact - second) <= summary.curved_error(cost, (theta[1], theta[1])) * (1 + 1e-9) + 1e-15
        first_errors.append(abs(exact - first))
        second_errors.append(abs(exact - second))
    assert sum(second_errors) < sum(first_errors)
    if cost.name != "huber" and bins_per_scale >= 4:  # third order: below the first-order bound
        assert summary.curved_error(cost, FRAME[1]) < summary.error(cost, FRAME[1])


@pytest.mark.parametrize("name", ["cauchy", "welsch"])
def test_the_curvatures_rate_of_change_is_bounded_by_its_constant(name: str) -> None:
    cost = Cost(name, 1.0)
    r = np.linspace(-30.0, 30.0, 600_001)
    change = np.abs(np.gradient(cost.scaled_curvature(r), r))
    bound = CURVATURE_CHANGE[name]
    assert bound is not None
    assert change.max() <= bound * (1 + 1e-6)
    assert change.max() == pytest.approx(bound, rel=1e-6)


def test_summary_refuses_what_it_cannot_bin() -> None:
    with pytest.raises(ValueError, match="finite scale"):
        bin_rows(np.ones(3), np.ones(3), Cost(), 40)
    with pytest.raises(ValueError, match="too far from 0"):
        bin_rows(np.array([0.0, 1e300]), np.array([0.0, 1.0]), ROBUST[2], 40)
    assert isinstance(bin_rows(np.arange(3.0), np.arange(3.0), ROBUST[2], 40), RowSummary)
