"""How fast the landscape page's live runs are (pipeline/live.js), under Node's V8, Chromium's engine.

Run with ``.venv/bin/python bench/live_speed.py`` (needs ``node``). On King County's
sales (the split's share of rows, 80 %), each figure is the median of 7 runs of
``downhill.run`` in one Node process, timed inside it, beside the same run by Python's
``pipeline.optimize.fit`` measured here, in the same run:

* the MSE (the page's quadratic): plain gd at lr 0.01 from (-250,000, 450) for 20,000
  iterations (``tol=0``; goal ≤ 16 ms, so that a click draws at once);
* the Welsch cost (c = $75,000, the robust experiment's), gd at lr 0.5, summed over 17,290 rows an
  iteration: iterations per second (goal ≥ 2,000, so that a Web Worker keeps up), and
  the first 200 iterations, which the page draws before handing the rest to the Worker
  (goal ≤ 100 ms);
* where Debian's Chromium is installed (``make browser``) and ``reports/landscape.html``
  has live runs: five clicks on its map in headless Chromium, from the click to the path
  drawn (goal ≤ 100 ms) and to the run's last iterate.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.costs import Cost
from pipeline.live import LIVE_METHODS, live_payload
from pipeline.methods import gd
from pipeline.optimize import fit
from pipeline.settings import optimizer_file
from tools.browser import CHROMIUM, Browser

REPO = Path(__file__).resolve().parents[1]
#: The page whose map is clicked, where Chromium is installed: the last sweep's.
PAGE = REPO / "reports" / "landscape.html"
REPEATS = 7


def node_timings(data: dict[str, object], options: dict[str, object]) -> list[float]:
    """Milliseconds of ``REPEATS`` runs of ``downhill.run(options)`` under Node (after one warm-up)."""
    program = f"""
const live = require({json.dumps(str(REPO / "pipeline" / "live.js"))});
const given = JSON.parse(require('fs').readFileSync(0, 'utf8'));
live.run(given.data, given.options);
const times = [];
for (let i = 0; i < {REPEATS}; i++) {{
  const start = process.hrtime.bigint();
  live.run(given.data, given.options);
  times.push(Number(process.hrtime.bigint() - start) / 1e6);
}}
console.log(JSON.stringify(times));
"""
    done = subprocess.run(
        ["node", "-e", program],
        input=json.dumps({"data": data, "options": options}),
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(done.stdout))


def python_ms(x: np.ndarray, y: np.ndarray, cost: Cost, iterations: int, lr: float) -> float:
    """Median milliseconds of fit's same run (its set-up included, as a click includes the page's)."""
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit(x, y, theta_init=[-250_000, 450], method=gd(lr), max_iter=iterations, tol=0.0, cost=cost)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    table = pd.read_csv(REPO / "data" / "raw" / "kc_house_data.csv", usecols=["sqft_living", "price"])
    rows = np.random.default_rng(42).permutation(len(table))[: int(0.8 * len(table))]
    x, y = table["sqft_living"].to_numpy(float)[rows], table["price"].to_numpy(float)[rows]
    defaults = {name: optimizer_file(name) for name in LIVE_METHODS}
    print(f"King County, {x.size:,} training rows; medians of {REPEATS}\n")
    mse = live_payload(x, y, Cost(), defaults, defaults["gd"], (0.0, 600.0))
    # lr 0.01: 0.5 lands on the MSE's minimum in one step (one standardized feature).
    options = {"theta0": -250_000, "theta1": 450, "method": "gd", "lr": 0.01, "max_iter": 20_000, "tol": 0}
    page = statistics.median(node_timings(mse, options))
    here = python_ms(x, y, Cost(), 20_000, 0.01)
    print(f"MSE, 20,000 iterations:    page {page:8.2f} ms (goal <= 16)   ", end="")
    print(f"fit {here:8.1f} ms   page/fit {page / here:.2f}")
    welsch = Cost("welsch", 75_000.0)
    robust = live_payload(x, y, welsch, defaults, defaults["gd"], (0.0, 600.0))
    for iterations in (200, 2_000):
        page = statistics.median(node_timings(robust, options | {"max_iter": iterations, "lr": 0.5}))
        here = python_ms(x, y, welsch, iterations, 0.5)
        rate = iterations / page * 1000
        goal = "(goal <= 100 ms)" if iterations == 200 else "(goal >= 2,000 it/s)"
        print(
            f"Welsch, {iterations:5,} iterations:  page {page:8.1f} ms = {rate:7,.0f} it/s {goal}   "
            f"fit {here:8.1f} ms   page/fit {page / here:.2f}"
        )
    if CHROMIUM.is_file() and PAGE.is_file() and "downhill-live-data" in PAGE.read_text():
        clicks_in_chromium(PAGE)
    else:
        print(f"\n(no clicks timed: needs {CHROMIUM} (make browser) and a page with live runs at {PAGE})")


def clicks_in_chromium(page: Path) -> None:
    """Click the map of ``page`` in headless Chromium at five points; from each click to
    the path drawn (goal ≤ 100 ms) and to the run's end (a robust cost's Worker)."""
    with tempfile.TemporaryDirectory() as profile, Browser(Path(profile)) as browser:
        browser.open(page.as_uri())
        browser.wait_for("window.downhill && window.downhill.ready")
        print(f"\nclicks on {page.relative_to(REPO)} in headless Chromium (software WebGL):")
        for share0, share1 in [(0.5, 0.5), (0.3, 0.7), (0.7, 0.3), (0.2, 0.2), (0.8, 0.8)]:
            where = browser.evaluate(f"window.downhill.screenPoint({share0}, {share1})")
            browser.evaluate("window.downhill.timing = null")
            browser.click(*where)
            timing = browser.wait_for(
                "window.downhill.timing && window.downhill.timing.finished && window.downhill.timing", 300
            )
            status = browser.evaluate("document.getElementById('live-status').textContent")
            drawn, finished = timing["drawn"] - timing["clicked"], timing["finished"] - timing["clicked"]
            print(f"  drawn {drawn:6.0f} ms (goal <= 100), ended {finished:7.0f} ms: {status}")


if __name__ == "__main__":
    main()
