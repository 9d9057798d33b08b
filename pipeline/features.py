"""The model's columns, built from the data's: features as they are, or powers of one."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

#: Highest polynomial degree: beyond it float64 cannot certify the fit (see optimize).
MAX_DEGREE = 10


def polynomial_columns(X: NDArray[np.float64], degree: int) -> NDArray[np.float64]:
    """The columns the model fits.

    Parameters
    ----------
    X : ndarray, shape (n, d)
        Feature columns, in config order.
    degree : int
        1 keeps ``X`` as it is; 2 to :data:`MAX_DEGREE` needs one feature ``x`` and
        returns ``x, x², …, x^degree``.

    Returns
    -------
    ndarray, shape (n, d) or (n, degree)
    """
    if degree == 1:
        return X
    if X.shape[1] != 1:
        raise ValueError(f"a polynomial of degree {degree} is built from one feature; got {X.shape[1]}")
    return np.asarray(X[:, :1] ** np.arange(1, degree + 1), dtype=np.float64)


def column_names(features: list[str], degree: int) -> list[str]:
    """Names of the model's columns: the features, or ``x``, ``x^2``, … for a polynomial."""
    if degree == 1:
        return list(features)
    return [features[0]] + [f"{features[0]}^{power}" for power in range(2, degree + 1)]
