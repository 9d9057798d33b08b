"""Exact rational least squares: the independent reference for the optimizer's accuracy.

Used by ``tests/`` and ``bench/`` alike; plain Python ``fractions``, no floating point.
"""

from __future__ import annotations

from fractions import Fraction


def exact_polynomial_fit(x: list[int], y: list[Fraction], degree: int) -> list[Fraction]:
    """Least squares by the normal equations in exact rational arithmetic (Gauss-Jordan).

    Parameters
    ----------
    x : list of int, length n
    y : list of Fraction, length n
    degree : int

    Returns
    -------
    list of Fraction, length degree + 1
        The coefficients, constant first.
    """
    size = degree + 1
    A = [[sum((Fraction(v) ** (i + j) for v in x), Fraction(0)) for j in range(size)] for i in range(size)]
    b = [sum((Fraction(v) ** i * t for v, t in zip(x, y, strict=True)), Fraction(0)) for i in range(size)]
    for col in range(size):
        pivot = next(r for r in range(col, size) if A[r][col] != 0)
        A[col], A[pivot], b[col], b[pivot] = A[pivot], A[col], b[pivot], b[col]
        for r in range(size):
            if r != col and A[r][col] != 0:
                factor = A[r][col] / A[col][col]
                A[r] = [a - factor * c for a, c in zip(A[r], A[col], strict=True)]
                b[r] -= factor * b[col]
    return [b[i] / A[i][i] for i in range(size)]
