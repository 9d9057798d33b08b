"""Accuracy on NIST's Statistical Reference Datasets for linear least squares (StRD).

Source: NIST Information Technology Laboratory, *StRD: Linear Least Squares
Regression* (https://www.itl.nist.gov/div898/strd/lls/lls.shtml). The problems here are
those defined by a formula, built from it: Wampler1 and Wampler2 (Wampler, 1970: a
degree-5 polynomial in x = 0 … 20, "lower" and "average" difficulty on NIST's scale; the
certified coefficients are exactly 1, 1, 1, 1, 1, 1 and 1, 0.1, 0.01, 0.001, 1e-4,
1e-5), NoInt1 and NoInt2 (a line through the origin; certified b = 251/121 and 8/11).
Their certified values are computed here again, independently, by solving the normal
equations in exact rational arithmetic (``tools/exact.py``); they match NIST's.

Accuracy is the log relative error (LRE, correct significant digits, at most 15) of
the worst coefficient. ``RECORDED`` holds the digits that ``least_squares`` and ``fit``
reached when this file was written (December 2026, before "Data beyond memory" changes
how the statistics are gathered): what replaces them must match or beat them. Not yet
here: Norris, Longley and Wampler3–5, whose data are tables, not formulas, and need
NIST's files committed.
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest

from pipeline.methods import nesterov
from pipeline.model import ModelSpec
from pipeline.objective import least_squares
from pipeline.optimize import ConvergenceWarning, fit
from tools.exact import exact_polynomial_fit

X_WAMPLER = [Fraction(x) for x in range(21)]
PROBLEMS = {
    # name: x, exact y, fit_intercept, degree
    "Wampler1": (X_WAMPLER, [sum(x**k for k in range(6)) for x in X_WAMPLER], True, 5),
    "Wampler2": (X_WAMPLER, [sum(x**k / 10**k for k in range(6)) for x in X_WAMPLER], True, 5),
    "NoInt1": ([Fraction(x) for x in range(60, 71)], [Fraction(y) for y in range(130, 141)], False, 1),
    "NoInt2": ([Fraction(4), Fraction(5), Fraction(6)], [Fraction(3), Fraction(4), Fraction(4)], False, 1),
}
#: NIST's certified values, as published, for the problems whose values are not whole.
NIST_CERTIFIED = {
    "Wampler2": [1.0, 0.1, 0.01, 0.001, 0.0001, 0.00001],
    "NoInt1": [2.07438016528926],
    "NoInt2": [0.727272727272727],
}
#: Digits (LRE of the worst coefficient) reached in December 2026: (least_squares, fit).
RECORDED = {
    "Wampler1": (8.9, 10.7),
    "Wampler2": (13.5, 14.2),
    "NoInt1": (15.0, 15.0),
    "NoInt2": (15.0, 15.0),
}
#: Digits that may be lost to another machine's BLAS or rounding order.
MARGIN = 1.0


def certified(name: str) -> list[Fraction]:
    """θ certified for a problem, intercept first (0 without one), in exact arithmetic."""
    x, y, intercept, degree = PROBLEMS[name]
    if intercept:
        return exact_polynomial_fit([int(v) for v in x], y, degree)
    slope = sum((a * b for a, b in zip(x, y, strict=True)), Fraction(0)) / sum(
        (a * a for a in x), Fraction(0)
    )
    return [Fraction(0), slope]  # a line through the origin: Σxy / Σx²


def digits(estimate: np.ndarray, exact: list[Fraction]) -> float:
    """The log relative error of the worst coefficient, at most 15 (absolute where 0)."""
    worst = 15.0
    for value, truth in zip(estimate, exact, strict=True):
        error = abs(Fraction(float(value)) - truth) / (abs(truth) if truth else 1)
        worst = min(worst, 15.0 if error == 0 else -float(np.log10(float(error))))
    return worst


def problem(name: str) -> tuple[np.ndarray, np.ndarray, bool]:
    x, y, intercept, degree = PROBLEMS[name]
    spec = ModelSpec(("x",), degree=degree, fit_intercept=intercept)
    design = spec.design(np.array([[float(v)] for v in x]))
    return design, np.array([float(v) for v in y]), intercept


@pytest.mark.parametrize("name", sorted(NIST_CERTIFIED))
def test_the_exact_solutions_are_nists_certified_values(name: str) -> None:
    theta = certified(name)
    published = NIST_CERTIFIED[name]
    assert [float(value) for value in theta[-len(published) :]] == pytest.approx(published, rel=1e-14)


def test_wampler1_is_certified_as_ones() -> None:
    assert certified("Wampler1") == [1] * 6


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_least_squares_keeps_its_recorded_digits(name: str) -> None:
    design, y, intercept = problem(name)
    assert (
        digits(least_squares(design, y, fit_intercept=intercept), certified(name))
        >= RECORDED[name][0] - MARGIN
    )


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_gradient_descent_keeps_its_recorded_digits(name: str) -> None:
    design, y, intercept = problem(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = fit(
            design,
            y,
            theta_init=np.zeros(design.shape[1] + 1),
            method=nesterov("auto"),
            max_iter=200_000,
            tol=1e-12,
            fit_intercept=intercept,
        )
    assert result.status == "converged", result.message
    assert digits(result.theta, certified(name)) >= RECORDED[name][1] - MARGIN
