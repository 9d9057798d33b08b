"""Live runs in the landscape page: the numbers its script needs to run gradient descent as ``fit`` does.

Pure: the training columns, the cost and the settings in, a JSON-ready mapping out; no
files. The page's script (``pipeline/live.js``) iterates in standardized coordinates
with these numbers, written so that they round-trip exactly (Python's ``repr`` of a
float, which JSON keeps), with the stopping rules of :mod:`pipeline.optimize`:

* the standardizer's means and scales, the quadratic's ``Q``, ``b`` and ``c`` (the MSE);
* the map to the data's own units (``optimizer.coordinates=original``) and the factor to
  the cost's units;
* the learning rate (and momentum) that ``lr=auto`` gives each method in each coordinate
  system, settled here by :meth:`pipeline.methods.Method.settled`: one rule, not two;
* for a robust cost, the training rows themselves, or above :data:`LIVE_ROWS` the
  summary the pictures use (:mod:`pipeline.summary`), with the bound on its error;
* the settings each method's ``conf/optimizer`` file gives, so that the command shown
  beside a live run names only what differs from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.costs import KERNEL_CODE, Cost
from pipeline.methods import METHODS
from pipeline.objective import OriginalUnits, standardize
from pipeline.summary import PICTURE_BINS_PER_SCALE, RowSummary, bin_rows

FloatArray = NDArray[np.float64]
#: The methods a page runs live. ``sgd`` shuffles its mini-batches with numpy's seeded
#: generator, which the page cannot repeat; ``backtracking``'s line search is left to Python.
LIVE_METHODS = ("gd", "momentum", "nesterov", "adam")
#: Why the others are not offered, as the page says it.
NOT_OFFERED = (
    "sgd and backtracking are not offered here: sgd shuffles its mini-batches with numpy's "
    "seeded generator, which a page cannot repeat, and backtracking's line search is left to Python"
)
#: Above this many training rows a robust cost's live runs sum over the rows' summary
#: (the pictures' bins), labelled approximate, instead of over the rows.
LIVE_ROWS = 100_000
#: The settings of ``conf/optimizer/<name>.yaml`` a live run can change, and the page's name for each.
LIVE_SETTINGS = ("lr", "beta", "b1", "b2", "max_iter", "tol", "divergence_ratio", "coordinates")


def live_payload(
    x: FloatArray,
    y: FloatArray,
    loss: Cost,
    method_defaults: Mapping[str, Mapping[str, Any]],
    chosen: Mapping[str, Any],
    slopes: tuple[float, float],
    summary: RowSummary | None = None,
) -> dict[str, Any]:
    """What the page's live runs need, JSON-ready (floats exact, ``None`` for infinity).

    Parameters
    ----------
    x, y : ndarray, shape (n,)
        The training split's one feature and its target, original units.
    loss : Cost
        The cost minimized.
    method_defaults : mapping of method name to its settings
        Each live method's ``conf/optimizer`` settings (``lr``, ``max_iter``, …).
    chosen : mapping
        The sweep's own optimizer settings (``name`` included): a live run's defaults.
    slopes : (float, float)
        The frame's range of θ1, over which a summary's error bound is stated.
    summary : RowSummary, optional
        The rows' summary the pictures use, if they made one.

    Returns
    -------
    dict
        ``scaler``, ``quadratic``, ``units``, ``cost``, ``auto``, ``rows``, ``defaults``,
        ``methods`` and ``not_offered``, as ``pipeline/live.js`` reads them.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    scaler, quadratic = standardize(x[:, np.newaxis], y, True)
    units = OriginalUnits.of(scaler, loss)
    curvatures = {
        "standardized": quadratic.curvatures(),
        "original": units.curvatures(quadratic),
    }
    auto: dict[str, dict[str, dict[str, float | None]]] = {}
    for coordinates, (mu, L) in curvatures.items():
        auto[coordinates] = {}
        for name in LIVE_METHODS:
            settled = METHODS[name](lr="auto", coordinates=coordinates).settled(mu, L)
            auto[coordinates][name] = {"lr": settled.step, "beta": settled.settings.get("beta")}
    return {
        "scaler": {
            "x_mean": float(scaler.x_mean[0]),
            "x_scale": float(scaler.x_scale[0]),
            "y_mean": float(scaler.y_mean),
            "y_scale": float(scaler.y_scale),
        },
        "quadratic": {"Q": quadratic.Q.tolist(), "b": quadratic.b.tolist(), "c": float(quadratic.c)},
        "units": {
            "T": units.T.tolist(),
            "T_inv": units.T_inv.tolist(),
            "t": units.t.tolist(),
            "factor": float(units.factor),
        },
        "cost": {
            "name": loss.name,
            "kind": KERNEL_CODE[loss.name],
            "scale": None if loss.is_mse else float(loss.scale),
            # The scale the optimizer's standardized residuals see: c/σ_y.
            "standard_scale": None if loss.is_mse else float(loss.standardized(scaler.y_scale).scale),
            "factor": float(loss.standard_factor(scaler.y_scale)),
        },
        "auto": auto,
        "rows": None if loss.is_mse else _rows(x, y, loss, slopes, summary),
        "defaults": _defaults(chosen),
        "methods": {
            name: _defaults(method_defaults[name]) for name in LIVE_METHODS if name in method_defaults
        },
        "not_offered": NOT_OFFERED,
    }


def _rows(
    x: FloatArray, y: FloatArray, loss: Cost, slopes: tuple[float, float], summary: RowSummary | None
) -> dict[str, Any]:
    """The rows a robust cost sums over: all of them, or (above :data:`LIVE_ROWS`) their summary."""
    if x.size <= LIVE_ROWS:
        return {"x": x.tolist(), "y": y.tolist(), "weight": None, "count": int(x.size), "error": None}
    if summary is None:
        summary = bin_rows(x, y, loss, PICTURE_BINS_PER_SCALE)
    return {
        "x": summary.x.tolist(),
        "y": summary.y.tolist(),
        "weight": summary.weight.tolist(),
        "count": int(summary.rows),
        # First order (each bin its count at its centroid): the bound on the cost's error.
        "error": float(summary.error(loss, slopes)),
        "bins": summary.bins,
    }


def _defaults(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The live settings of one optimizer config, JSON-ready (``lr`` a number or ``"auto"``)."""
    values: dict[str, Any] = {"method": str(settings.get("name", "gd"))}
    for key in LIVE_SETTINGS:
        value = settings.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        values[key] = value
    return values
