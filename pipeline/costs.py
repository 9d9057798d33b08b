"""What a cost function is: how a residual costs, in the target's units and in the optimizer's.

Plain numpy, no I/O. ``model.loss`` names one of :data:`LOSSES`; ``model.loss_scale``
is its scale ``c`` in the target's units (dollars), or ``auto``:

* ``mse``: ``ρ(r) = r²``, the design notes' mean squared error (no scale);
* ``huber``: ``r²`` within ``c``, ``2c|r| − c²`` beyond: convex, linear in the outliers;
* ``cauchy``: ``log(1 + (r/c)²)``: redescending slowly, more than one valley possible;
* ``welsch``: ``1 − exp(−(r/c)²)``: a residual far beyond ``c`` costs 1 whatever its
  size, so mansions are ignored, and the landscape has several valleys and a plateau.

The cost of θ is ``J(θ) = mean(ρ(y − prediction))``: dollars² for mse and huber, a
number between 0 and 1 (welsch) or above 0 (cauchy) for the others.

The optimizer walks in standardized units (residuals divided by the target's scale
``σ``). There each cost is written so that it bends like the MSE near zero,
``ρ_s(u) ≈ u²``: ``ρ_s = (c/σ)² ρ`` for cauchy and welsch, ``ρ_s = ρ/σ²`` for mse and
huber. Their second derivatives are then at most 2, so a learning rate means the same
as for the MSE (below 1 is stable for one standardized feature) and ``lr=auto`` holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipeline.passes import Stream, median
from pipeline.rules import LOSS_SCALE

FloatArray = NDArray[np.float64]

LOSSES = ("mse", "huber", "cauchy", "welsch")
#: ``auto`` scale: these multiples of the residuals' robust standard deviation
#: (1.4826 × their median absolute deviation) give 95 % efficiency on normal errors,
#: the usual tuning constants of robust regression.
AUTO_TUNING = {"huber": 1.345, "cauchy": 2.3849, "welsch": 2.9846}
#: How far the standardized second derivative falls below zero at worst, ``max(−ρ_s'')``:
#: the cost's non-convexity, used by the global-minimum certificate.
#: welsch: ρ_s'' = 2(1 − 2u²)exp(−u²), least −4e^{−3/2} at u² = 3/2 (u in units of c);
#: cauchy: ρ_s'' = 2(1 − u²)/(1 + u²)², least −1/4 at u² = 3.
NEGATIVE_CURVATURE = {"mse": 0.0, "huber": 0.0, "cauchy": 0.25, "welsch": 4.0 * math.exp(-1.5)}
#: ``sup |ρ_s''|`` of every cost: each bends like ``u²`` at zero and never more sharply.
CURVATURE_BOUND = 2.0
#: ``c · sup |d³ρ_s/dr³|``: how fast the curvature can change, per residual of size c.
#: welsch: d³ρ_s/dr³ = e^{−u²}(8u³ − 12u)/c, largest at u² = (3 − √6)/2; cauchy:
#: 4u(u² − 3)/((1 + u²)³ c), largest at u = √2 − 1; mse: 0; huber: None (its curvature jumps).
_WELSCH_PEAK = (3.0 - math.sqrt(6.0)) / 2.0
_CAUCHY_PEAK = math.sqrt(2.0) - 1.0
CURVATURE_CHANGE: dict[str, float | None] = {
    "mse": 0.0,
    "huber": None,
    "cauchy": 4.0 * _CAUCHY_PEAK * (3.0 - _CAUCHY_PEAK**2) / (1.0 + _CAUCHY_PEAK**2) ** 3,
    "welsch": math.exp(-_WELSCH_PEAK) * math.sqrt(_WELSCH_PEAK) * (12.0 - 8.0 * _WELSCH_PEAK),
}
#: Code of each cost in the compiled kernels (:mod:`pipeline.kernels`).
KERNEL_CODE = {"mse": 0, "huber": 1, "cauchy": 2, "welsch": 3}


@dataclass(frozen=True)
class Cost:
    """A cost function and its scale.

    Attributes
    ----------
    name : str
        One of :data:`LOSSES`.
    scale : float
        ``c`` in the target's units, ``> 0``; ``inf`` for ``mse`` (no scale).
    """

    name: str = "mse"
    scale: float = math.inf

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {self.name!r}")
        if self.name == "mse":
            object.__setattr__(self, "scale", math.inf)
        else:
            LOSS_SCALE.check(f"loss_scale of {self.name}", self.scale)

    @property
    def is_mse(self) -> bool:
        return self.name == "mse"

    @property
    def convex(self) -> bool:
        """True for mse and huber: one valley, every minimum the global one."""
        return NEGATIVE_CURVATURE[self.name] == 0.0

    @property
    def label(self) -> str:
        """What the cost is called on axes and in messages: ``training MSE``, ``training Welsch cost``."""
        if self.is_mse:
            return "training MSE"
        return f"training {self.name.capitalize()} cost (c = {self.scale:,.0f})"

    @property
    def unit(self) -> float:
        """``ρ = unit × ρ̃``: the scaled form ``ρ̃`` bends like ``r²`` at zero (1, or 1/c²)."""
        return 1.0 if self.name in ("mse", "huber") else 1.0 / (self.scale * self.scale)

    def scaled_rho(self, residuals: FloatArray) -> FloatArray:
        """``ρ̃``: ``r²``, Huber's, ``c²·log(1 + (r/c)²)`` or ``c²·(1 − exp(−(r/c)²))``."""
        r = np.asarray(residuals, dtype=np.float64)
        if self.name == "mse":
            return r * r
        c = self.scale
        if self.name == "huber":
            size = np.abs(r)
            return np.where(size <= c, r * r, 2.0 * c * size - c * c)
        u2 = (r / c) ** 2
        if self.name == "cauchy":
            return c * c * np.log1p(u2)
        return -c * c * np.expm1(-u2)

    def scaled_psi(self, residuals: FloatArray) -> FloatArray:
        """``dρ̃/dr`` at each residual."""
        r = np.asarray(residuals, dtype=np.float64)
        if self.name == "mse":
            return 2.0 * r
        c = self.scale
        if self.name == "huber":
            return 2.0 * np.clip(r, -c, c)
        u2 = (r / c) ** 2
        if self.name == "cauchy":
            return 2.0 * r / (1.0 + u2)
        return 2.0 * r * np.exp(-u2)

    def scaled_curvature(self, residuals: FloatArray) -> FloatArray:
        """``d²ρ̃/dr²`` at each residual: at most 2, at least ``−NEGATIVE_CURVATURE``."""
        r = np.asarray(residuals, dtype=np.float64)
        if self.name == "mse":
            return np.full_like(r, 2.0)
        c = self.scale
        if self.name == "huber":
            return np.where(np.abs(r) <= c, 2.0, 0.0)
        u2 = (r / c) ** 2
        if self.name == "cauchy":
            return 2.0 * (1.0 - u2) / (1.0 + u2) ** 2
        return 2.0 * (1.0 - 2.0 * u2) * np.exp(-u2)

    def rho(self, residuals: FloatArray) -> FloatArray:
        """The cost of each residual, in the target's units (see the module docstring)."""
        return self.unit * self.scaled_rho(residuals)

    def psi(self, residuals: FloatArray) -> FloatArray:
        """``dρ/dr`` at each residual."""
        return self.unit * self.scaled_psi(residuals)

    def curvature(self, residuals: FloatArray) -> FloatArray:
        """``d²ρ/dr²`` at each residual."""
        return self.unit * self.scaled_curvature(residuals)

    def value(self, residuals: FloatArray) -> float:
        """``J``: the mean cost of the residuals, shape (n,)."""
        return float(np.mean(self.rho(residuals)))

    def standardized(self, y_scale: float) -> Cost:
        """The same cost on residuals divided by ``y_scale``: its scale is ``c/σ``."""
        return self if self.is_mse else Cost(self.name, self.scale / y_scale)

    def standard_factor(self, y_scale: float) -> float:
        """``J = factor × mean(ρ̃_s)``: from the optimizer's standardized cost to the target's units."""
        return y_scale**2 * self.unit


def auto_scale(name: str, residuals: FloatArray | Stream, count: int | None = None) -> float:
    """``loss_scale=auto``: :data:`AUTO_TUNING` × 1.4826 × median absolute deviation.

    ``residuals`` are those of the least-squares fit, in the target's units: an array
    (n,), or a stream of ``count`` of them block by block (:mod:`pipeline.passes`), whose
    medians are then found exactly by passes, in bounded memory.
    """
    if callable(residuals):
        stream, n = residuals, int(count or 0)
    else:
        array = np.asarray(residuals, dtype=np.float64)
        stream, n = (lambda: [array]), array.size
    center = median(stream, n)

    def deviations() -> Iterator[FloatArray]:
        return (np.abs(r - center) for r in stream())

    spread = 1.4826 * median(deviations, n)
    if not spread > 0:
        # An exact fit for most rows: fall back to the mean absolute residual.
        spread = math.fsum(float(np.abs(r).sum()) for r in stream()) / n
    if not spread > 0:
        raise ValueError(
            "loss_scale=auto: the least-squares residuals are all zero; give loss_scale a number"
        )
    return AUTO_TUNING[name] * spread
