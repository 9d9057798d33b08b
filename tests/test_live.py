"""The landscape page's live runs (pipeline/live.js) walk where pipeline.optimize.fit walks.

The page's script runs under Node here (its numerical part has no DOM): the same
numbers the page carries (:func:`pipeline.live.live_payload`), random starts, methods,
coordinates, rates and budgets, compared with :func:`fit` iterate by iterate. Without
Node the comparison is skipped, with the reason.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.costs import Cost
from pipeline.live import LIVE_METHODS, LIVE_ROWS, live_payload
from pipeline.methods import METHODS
from pipeline.optimize import fit
from pipeline.settings import optimizer_file
from tests.helpers import RAW_DIR, node_runs, node_step_parts

needs_node = pytest.mark.skipif(
    shutil.which("node") is None, reason="Node.js is not installed (apt-get install nodejs)"
)
#: Every iterate within this, relative to max(|θ|, the θ unit of RunSummary), per component.
AGREEMENT = 1e-9
#: How far a start is moved, in θ units, to see whether a walk amplifies rounding differences.
NUDGE = 1e-13
#: A standardized gradient component this small is rounding: its sign is noise.
ROUNDING_GRADIENT = 1e-12
#: Robust costs in the cases, with King County's scale in dollars.
COSTS = [Cost(), Cost("welsch", 75_000.0), Cost("huber", 150_000.0), Cost("cauchy", 100_000.0)]


@pytest.fixture(scope="module")
def houses() -> tuple[np.ndarray, np.ndarray]:
    table = pd.read_csv(RAW_DIR / "kc_house_data.csv", usecols=["sqft_living", "price"])
    return table["sqft_living"].to_numpy(float), table["price"].to_numpy(float)


def payload(x: np.ndarray, y: np.ndarray, cost: Cost, chosen: dict[str, Any] | None = None) -> dict[str, Any]:
    defaults = {name: optimizer_file(name) for name in LIVE_METHODS}
    return live_payload(x, y, cost, defaults, chosen or defaults["gd"], (0.0, 600.0))


def random_case(rng: np.random.Generator, auto: dict[str, Any]) -> dict[str, Any]:
    """A start in the frame, a method, coordinates, a rate around its auto value, a budget."""
    method = str(rng.choice(LIVE_METHODS))
    coordinates = str(rng.choice(["standardized", "original"]))
    case: dict[str, Any] = {
        "theta0": float(np.round(rng.uniform(-500_000, 500_000), 1)),
        "theta1": float(np.round(rng.uniform(0, 600), 3)),
        "method": method,
        "coordinates": coordinates,
        "max_iter": int(rng.integers(20, 400)),
        "tol": float(rng.choice([1e-9, 1e-6])),
        "divergence_ratio": 1e6,
    }
    if rng.random() < 0.25:
        case["lr"] = "auto"
    else:  # from well below the stable step to past it: every status
        case["lr"] = float(auto[coordinates][method]["lr"] * 10 ** rng.uniform(-2.5, 0.6))
    if method in ("momentum", "nesterov"):
        case["beta"] = None if rng.random() < 0.3 else float(rng.uniform(0, 0.95))
    if method == "adam":
        case["b1"], case["b2"] = 0.9, 0.999
    return case


def fit_case(x: np.ndarray, y: np.ndarray, cost: Cost, case: dict[str, Any]) -> Any:
    settings = {"lr": case["lr"], "coordinates": case["coordinates"]}
    if case["method"] in ("momentum", "nesterov"):
        settings["beta"] = case.get("beta")
    if case["method"] == "adam":
        settings |= {"b1": case["b1"], "b2": case["b2"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit(
            x,
            y,
            theta_init=[case["theta0"], case["theta1"]],
            method=METHODS[case["method"]](**settings),
            max_iter=case["max_iter"],
            tol=case["tol"],
            divergence_ratio=case["divergence_ratio"],
            cost=cost,
        )


def disagreement(theta: np.ndarray, other: np.ndarray, unit: np.ndarray) -> float:
    """The largest difference of two paths, per component, relative to max(|θ|, unit)."""
    if theta.shape != other.shape:
        return math.inf
    return float(np.max(np.abs(theta - other) / np.maximum(np.abs(other), unit)))


#: Runs cases on a page's numbers: ``(data, cases) → results``, as ``downhill.run`` returns them.
PageRunner = Callable[[dict[str, Any], list[dict[str, Any]]], list[dict[str, Any]]]


def compare(
    x: np.ndarray,
    y: np.ndarray,
    cost: Cost,
    cases: list[dict[str, Any]],
    run_page: PageRunner = node_runs,
    data: dict[str, Any] | None = None,
) -> tuple[list[str], list[str]]:
    """Each case run by the page and by fit: what disagrees, and what is only reported
    (runs no other arithmetic could follow to 1e-9: see :func:`why_apart`)."""
    data = data or payload(x, y, cost)
    unit = np.array([data["scaler"]["y_scale"], data["scaler"]["y_scale"] / data["scaler"]["x_scale"]])
    problems, reported = [], []
    for case, page in zip(cases, run_page(data, cases), strict=True):
        result = fit_case(x, y, cost, case)
        where = f"{cost.name} {case}"
        path = np.array(page["path"]).reshape(-1, 2)
        same = page["status"] == result.status and page["n_iter"] == result.n_iter
        worst = disagreement(path, result.theta_history, unit)
        if same and worst <= AGREEMENT:
            finite = np.isfinite(result.loss_history)
            assert np.allclose(np.array(page["loss"])[finite], result.loss_history[finite], rtol=1e-9, atol=0)
            continue
        found = (
            f"{where}: page {page['status']} at {page['n_iter']}, "
            f"fit {result.status} at {result.n_iter}, iterates {worst:.1e} apart"
        )
        why = why_apart(x, y, cost, case, result, path, unit)
        if why:
            reported.append(f"{found} ({why})")
        else:
            problems.append(found)
    return problems, reported


def why_apart(
    x: np.ndarray,
    y: np.ndarray,
    cost: Cost,
    case: dict[str, Any],
    result: Any,
    path: np.ndarray,
    unit: np.ndarray,
) -> str | None:
    """Why no arithmetic but fit's own could follow this run to 1e-9, or None.

    Either the step before the paths part was decided by a gradient component at
    rounding level (adam's first steps go by its sign; a Huber cost with every residual
    clipped has a slope gradient of exactly 0 plus rounding), or fit's own path moves
    past 1e-9 from a start moved by :data:`NUDGE` (it multiplies rounding differences
    by 10⁴ and more: a chaotic walk).
    """
    from pipeline.objective import RowCost, standardize

    scaler, quadratic = standardize(x[:, np.newaxis], y)
    objective = quadratic if cost.is_mse else RowCost(x[:, np.newaxis], y, scaler, cost)
    length = min(len(path), len(result.theta_history))
    ours = result.theta_history[:length]
    apart = np.max(np.abs(path[:length] - ours) / np.maximum(np.abs(ours), unit), axis=1) > AGREEMENT
    parted = int(np.argmax(apart)) if apart.any() else length
    for step in range(max(parted - 1, 0), min(parted + 1, length)):
        gradient = objective.loss_and_gradient(scaler.to_standard(ours[step]))[1]
        if np.min(np.abs(gradient)) <= ROUNDING_GRADIENT:
            return f"iterate {step}'s gradient {gradient.tolist()} has a component at rounding level"
    nudge = {"theta0": case["theta0"] + NUDGE * unit[0], "theta1": case["theta1"] + NUDGE * unit[1]}
    nudged = fit_case(x, y, cost, case | nudge)
    if (
        nudged.status != result.status
        or disagreement(nudged.theta_history, result.theta_history, unit) > AGREEMENT
    ):
        return "fit itself moves past 1e-9 from a start moved by 1e-13"
    return None


@needs_node
@pytest.mark.parametrize("cost", COSTS, ids=[cost.name for cost in COSTS])
def test_live_runs_walk_where_fit_walks(houses: tuple[np.ndarray, np.ndarray], cost: Cost) -> None:
    x, y = houses
    if not cost.is_mse:  # a robust cost passes over the rows each iteration: fewer rows, same lesson
        x, y = x[::8], y[::8]
    rng = np.random.default_rng(len(cost.name))
    auto = payload(x, y, cost)["auto"]
    cases = [random_case(rng, auto) for _ in range(5)]
    problems, reported = compare(x, y, cost, cases)
    assert problems == []
    print(*reported, sep="\n")


@pytest.mark.slow
@needs_node
def test_a_thousand_live_runs_walk_where_fit_walks(houses: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = houses
    rng = np.random.default_rng(1000)
    problems: list[str] = []
    reported: list[str] = []
    for cost in COSTS:
        rows = (x, y) if cost.is_mse else (x[::4], y[::4])
        auto = payload(*rows, cost)["auto"]
        found = compare(*rows, cost, [random_case(rng, auto) for _ in range(250)])
        problems, reported = problems + found[0], reported + found[1]
    assert problems == []
    # Chaotic walks are few: most random runs settle, diverge or stop where fit does.
    print(f"{len(reported)} of 1000 runs reported:", *reported, sep="\n")
    assert len(reported) <= 100


@needs_node
@pytest.mark.parametrize("coordinates", ["standardized", "original"])
def test_step_by_step_arrows_are_the_momentum_and_the_gradient_step(
    houses: tuple[np.ndarray, np.ndarray], coordinates: str
) -> None:
    """At iterate k of a heavy-ball run the page's arrows are β·(θk − θk−1) and −lr·∇J(θk)
    in θ's units (∇J from the quadratic, mapped by the optimizer's own units)."""
    from pipeline.objective import OriginalUnits, standardize

    x, y = houses
    data = payload(x, y, Cost())
    lr = 0.05 if coordinates == "standardized" else 5e-8
    options = {"theta0": -250_000, "theta1": 450, "method": "momentum", "lr": lr, "beta": 0.7}
    options |= {"coordinates": coordinates, "max_iter": 30, "tol": 0}
    steps = [0, 1, 7, 20]
    parts = node_step_parts(data, options, steps)
    scaler, quadratic = standardize(x[:, np.newaxis], y)
    units = OriginalUnits.of(scaler, Cost())
    path = [np.array(part["here"]) for part in parts]
    for k, part, here in zip(steps, parts, path, strict=True):
        gradient = quadratic.gradient(scaler.to_standard(here))  # standardized ∇J at θk
        if coordinates == "standardized":
            expected = units.T @ (-lr * gradient)  # a step in w, seen in θ
        else:
            expected = -lr * units.gradient(gradient)  # the step is taken in θ itself
        scale = np.abs(expected).max()
        assert np.allclose(part["gradient"], expected, rtol=0, atol=1e-6 * scale), (k, part, expected)
        assert (np.array(part["momentum"]) == 0).all() == (k == 0)
    run = node_runs(data, [options])[0]
    for k, part in zip(steps[1:], parts[1:], strict=True):
        carried = 0.7 * (np.array(run["path"][k]) - np.array(run["path"][k - 1]))
        assert np.allclose(part["momentum"], carried, rtol=1e-12, atol=0)


def test_the_page_carries_python_numbers_exactly(houses: tuple[np.ndarray, np.ndarray]) -> None:
    """JSON of the payload reads back to the same floats, bit for bit; auto rates are
    what Method.settled gives; a robust cost carries its rows."""
    x, y = houses
    data = payload(x, y, Cost("welsch", 75_000.0))
    again = json.loads(json.dumps(data, allow_nan=False))
    assert again == data
    assert again["rows"]["x"] == x.tolist() and again["rows"]["weight"] is None
    # One standardized feature: μ = L = 2, so gd's auto rate is 1/2 and heavy ball's is 4/(2√2)² = 1/2.
    assert again["auto"]["standardized"]["gd"]["lr"] == pytest.approx(0.5, rel=1e-12)
    assert again["auto"]["standardized"]["momentum"]["lr"] == pytest.approx(0.5, rel=1e-12)
    # The MSE in dollars bends as Σ(1, x)(1, x)ᵀ/n: L ≈ 2·mean(x²), the step 1/L; the
    # Welsch cost in its own units (ρ/c²) is c² times flatter, its step c² times longer.
    mse = payload(x, y, Cost())
    assert mse["rows"] is None
    original = mse["auto"]["original"]["gd"]["lr"]
    assert original == pytest.approx(1 / (2 * np.mean(x * x) + 2), rel=1e-3)
    assert again["auto"]["original"]["gd"]["lr"] == pytest.approx(original * 75_000.0**2, rel=1e-12)


def test_above_the_row_limit_the_page_carries_the_summary() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(500, 5000, LIVE_ROWS + 1)
    y = 50_000 + 250 * x + rng.normal(0, 100_000, x.size)
    rows = payload(x, y, Cost("welsch", 75_000.0))["rows"]
    assert rows["count"] == x.size and rows["weight"] is not None
    assert sum(rows["weight"]) == x.size and len(rows["x"]) < x.size
    # The stated bound holds: the Welsch cost over the bins against the cost over the rows.
    bins_x, bins_y, weight = (np.array(rows[key]) for key in ("x", "y", "weight"))
    for theta0, theta1 in [(50_000, 250), (-400_000, 20), (300_000, 590), (0, 400)]:
        over_rows = np.mean(-np.expm1(-(((y - theta0 - theta1 * x) / 75_000) ** 2)))
        over_bins = weight @ -np.expm1(-(((bins_y - theta0 - theta1 * bins_x) / 75_000) ** 2)) / x.size
        assert abs(over_rows - over_bins) <= rows["error"], (theta0, theta1)
    assert 0 < rows["error"] < 0.05


@pytest.mark.integration
@needs_node
def test_the_command_a_live_run_shows_records_the_same_theta(tmp_path: Any) -> None:
    """The page's command for a live run, run as train runs it, gives the page's θ."""
    from pipeline import train
    from pipeline.columns import training_split
    from tests.helpers import node_command, prepare_data, project_cfg

    folder = prepare_data(tmp_path / "project")
    config = project_cfg(folder, "train")
    split = training_split(config)
    x, y = split.columns.X[:, 0], split.columns.y
    data = payload(x, y, Cost())
    options = {
        "theta0": -250000,
        "theta1": 450,
        "method": "momentum",
        "lr": 0.2,
        "beta": 0.5,
        "max_iter": 300,
    }
    command, page = node_command(data, options)
    assert command.startswith("python -m pipeline.train ")
    overrides = shlex.split(command)[3:]
    assert "optimizer=momentum" in overrides and "optimizer.beta=0.5" in overrides
    summary = train.run(project_cfg(folder, "train", *overrides))
    assert summary.status == page["status"] and summary.n_iter == page["n_iter"]
    assert summary.theta is not None
    assert np.allclose(summary.theta, page["path"][-1], rtol=1e-9, atol=0)


def test_live_settings_name_their_defaults() -> None:
    """Each method's conf/optimizer file, its defaults chain merged (the command names what differs)."""
    assert optimizer_file("momentum")["lr"] == "auto" and optimizer_file("momentum")["max_iter"] == 2000
    assert optimizer_file("adam")["max_iter"] == 20000 and math.isclose(optimizer_file("adam")["b2"], 0.999)


@pytest.mark.slow
def test_a_thousand_live_runs_in_chromium_walk_where_fit_walks(prepared: Any) -> None:
    """Two sweeps' pages (the MSE, the Welsch cost) in headless Chromium: 500 random live
    runs on each by the page's own ``window.downhill.run``, against fit on the split; a
    click on the map draws a path and the command, and a robust run ends in the Worker."""
    from pipeline.columns import training_split
    from tests.helpers import project_cfg, run_stage
    from tools.browser import CHROMIUM, Browser

    assert CHROMIUM.is_file(), "no /usr/bin/chromium: `make browser` installs Debian's package"
    split = training_split(project_cfg(prepared, "train"))
    x, y = split.columns.X[:, 0], split.columns.y
    rng = np.random.default_rng(2026)
    problems: list[str] = []
    reported: list[str] = []
    for cost in (Cost(), Cost("welsch", 75_000.0)):
        robust = [] if cost.is_mse else ["model.loss=welsch", "model.loss_scale=75000", "optimizer.lr=0.5"]
        done = run_stage(
            "train", prepared, "model.init.theta0=0", "model.init.theta1=0,600", *robust, multirun=True
        )
        assert done.returncode == 0, done.stderr
        page = prepared / "reports" / "landscape.html"
        with Browser(prepared / f"chromium-{cost.name}") as browser:
            browser.open(page.as_uri())
            browser.wait_for("window.downhill && window.downhill.ready")
            data = browser.evaluate("window.downhill.data")
            if not cost.is_mse:  # the page carries the training rows, every bit
                assert data["rows"]["x"] == x.tolist() and data["rows"]["y"] == y.tolist()

            def in_chromium(_: dict[str, Any], cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
                runs = f"JSON.stringify({json.dumps(cases)}.map((c) => window.downhill.run(c)))"
                return list(json.loads(browser.evaluate(runs, timeout=600)))

            cases = [random_case(rng, data["auto"]) for _ in range(500)]
            found = compare(x, y, cost, cases, in_chromium, data)
            problems, reported = problems + found[0], reported + found[1]
            # A click in the map's middle: a path over the map, the command, and the run's end.
            browser.click(*browser.evaluate("window.downhill.screenPoint(0.5, 0.5)"))
            browser.wait_for("window.downhill.timing && window.downhill.timing.finished", 300)
            assert browser.evaluate(
                "document.querySelector('#downhill-live-map path').getAttribute('d')"
            ).startswith("M")
            command = browser.evaluate("document.getElementById('live-command').textContent")
            assert command.startswith("python -m pipeline.train model.init.theta0=")
            status = browser.evaluate("document.getElementById('live-status').textContent")
            assert not status.startswith("error"), status
            for _ in range(3):  # step by step: iterate 2, its arrows over the map
                browser.evaluate("document.getElementById('live-forward').click()")
            step = browser.evaluate("document.getElementById('live-step').textContent")
            assert step.startswith("iteration 2 of "), step
            arrows = "[...document.querySelectorAll('#downhill-live-map line')]"
            assert browser.evaluate(arrows + ".filter((a) => a.style.display !== 'none').length") >= 1
    print(f"{len(reported)} of 1000 runs reported:", *reported, sep="\n")
    assert problems == []
    assert len(reported) <= 100
