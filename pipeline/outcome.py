"""What a training run's outcome is: one typed record, the schema of ``reports/sweep.json``.

Each training run logs its :class:`RunSummary` to MLflow (artifact ``outcome.json``);
the sweep reads them back from there and writes them, in job order, to the sweep
record that ``evaluate`` reads. The record holds keys (job and sweep), never run ids,
times or registry versions, so that the same data, config and code give the same file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

Status = Literal["converged", "max_iter", "oscillating", "diverged", "failed"]
STATUSES: tuple[str, ...] = get_args(Status)
#: Where a run ended: the global minimum, a local minimum, a plateau, or no minimum
#: (stopped early, diverged or failed).
EndPoint = Literal["global minimum", "local minimum", "plateau", "none"]
#: Runs whose final costs agree to this (relative) ended at the same minimum ...
SAME_COST = 1e-7
#: ... and so do those whose θ agree to this, in units of each coefficient's scale.
SAME_THETA = 1e-3


@dataclass(frozen=True)
class Minimum:
    """A minimum of the cost that runs of a sweep reached.

    Attributes
    ----------
    kind : str
        ``global minimum`` or ``local minimum``.
    theta : list of float, shape (p + 1,)
        Where it is (the lowest of its runs' θ), original units, intercept first.
    cost : float
        The training cost there.
    runs : int
        How many runs ended there.
    job_keys : list of str
        Their job keys.
    """

    kind: EndPoint
    theta: list[float]
    cost: float
    runs: int
    job_keys: list[str]


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: such numbers are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_finite_or_none(item) for item in value]
    return value


@dataclass(frozen=True)
class RunSummary:
    """The outcome of one job of a sweep (or of a single training run).

    Attributes
    ----------
    job_key : str
        Hash of everything that determines the result: the settings (less paths,
        MLflow and Hydra's own), the training split's content and the train stage's code.
    overrides : list of str
        The job's command-line overrides (its place in the grid).
    run_name : str
        Method, learning rate and start, as the MLflow run is named.
    status : str
        ``converged``, ``max_iter`` (budget ran out), ``oscillating``, ``diverged`` or
        ``failed`` (the job could not run; ``message`` says why).
    end_point : str
        ``global minimum``, ``local minimum``, ``plateau`` or ``none``.
    loss, loss_scale : str, float
        The cost minimized (``model.loss``) and its scale c (None for the MSE).
    theta, theta_init, optimum_theta : list of float, shape (p + 1,)
        Final, initial and globally optimal θ (of the cost minimized; None where
        unknown), intercept first, original units.
    theta_unit : list of float, shape (p + 1,)
        Each coefficient's natural scale (target and feature spreads): how far apart
        two runs' θ are, for grouping them by the minimum they reached.
    train_mse, optimum_mse : float
        The MSE of θ on the training split, and the least-squares (lowest) MSE.
    train_cost, optimum_cost : float
        The cost minimized at θ, and at the global minimum (None where unknown);
        ``optimality_gap`` is their relative difference. ``optimum_how`` says how the
        global minimum is known: least squares, branch and bound, best found, unknown.
    path_steps, path_theta, path_loss : lists, shapes (m,), (m, p + 1), (m,)
        A few hundred iterates of the path downhill, for pictures.
    """

    job_key: str
    overrides: list[str]
    run_name: str
    status: Status
    message: str
    end_point: EndPoint = "none"
    method: str | None = None
    lr: float | None = None
    loss: str = "mse"
    loss_scale: float | None = None
    features: list[str] = field(default_factory=list)
    target: str | None = None
    columns: list[str] = field(default_factory=list)
    degree: int = 1
    fit_intercept: bool = True
    theta_init: list[float] | None = None
    theta: list[float] | None = None
    theta_unit: list[float] | None = None
    n_iter: int | None = None
    train_mse: float | None = None
    optimum_mse: float | None = None
    train_cost: float | None = None
    optimum_cost: float | None = None
    optimum_how: str | None = None
    optimality_gap: float | None = None
    theta_rel_error: float | None = None
    condition_number: float | None = None
    optimum_theta: list[float] | None = None
    path_steps: list[int] = field(default_factory=list)
    path_theta: list[list[float]] = field(default_factory=list)
    path_loss: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {self.status!r}")

    @property
    def usable(self) -> bool:
        """A model one may use: converged or stopped at the budget, with finite θ and MSE."""
        return (
            self.status in ("converged", "max_iter")
            and self.theta is not None
            and all(value is not None and math.isfinite(value) for value in self.theta)
            and self.train_mse is not None
            and math.isfinite(self.train_mse)
        )

    @property
    def cost(self) -> float:
        """The training cost minimized (the MSE in records that predate robust costs)."""
        value = self.train_cost if self.train_cost is not None else self.train_mse
        return math.nan if value is None else float(value)

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``json.dumps`` (valid JSON: non-finite numbers become null).

        Field by field: every field is a plain value or list, which ``_finite_or_none``
        copies, so ``asdict``'s own deep copy (3 ms a run) would only be done twice."""
        return {item.name: _finite_or_none(getattr(self, item.name)) for item in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSummary:
        """The record of :meth:`to_json`; unknown keys are ignored (a newer writer)."""
        known = {item.name for item in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    @classmethod
    def failed(cls, job_key: str, overrides: list[str], run_name: str, message: str) -> RunSummary:
        """The record of a job that could not run."""
        return cls(job_key=job_key, overrides=overrides, run_name=run_name, status="failed", message=message)


def relative_gap(loss: Any, optimum: float) -> Any:
    """The optimality gap: ``(loss − optimum) / optimum``, or the plain difference when
    the optimum is 0 (an exact fit). ``loss`` a number or an array."""
    return (loss - optimum) / optimum if optimum > 0 else loss - optimum


def best_run(runs: list[RunSummary]) -> RunSummary | None:
    """The usable run with the lowest training cost (the cost minimized); ties go to the earlier job."""
    usable = [run for run in runs if run.usable]
    return min(usable, key=lambda run: float(run.cost)) if usable else None


def status_counts(runs: list[RunSummary]) -> str:
    """``"14 converged, 2 diverged"``: how a sweep's runs ended."""
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    return ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
