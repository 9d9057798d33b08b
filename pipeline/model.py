"""What θ means: the model's columns, built from the data's, and how θ predicts.

``θ0 + Σ θj · x_j`` for the feature columns as they are, or ``θ0 + Σ θj · x^j`` for a
polynomial of one feature; θ0 = 0 when no intercept is fitted. θ is always intercept
first, then one coefficient per model column. Plain numpy, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

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


def linear_prediction(theta: ArrayLike, X: ArrayLike) -> NDArray[np.float64]:
    """``θ0 + X @ θ[1:]`` for model columns ``X`` of shape (n, p) and θ of shape (p + 1,); shape (n,)."""
    coefficients = np.asarray(theta, dtype=np.float64)
    return np.asarray(coefficients[0] + np.asarray(X, dtype=np.float64) @ coefficients[1:], dtype=np.float64)


@dataclass(frozen=True)
class ModelSpec:
    """What a θ means: the feature columns it takes, the degree, whether θ0 is fitted.

    ``positive`` names the features whose values must be > 0 (the data's declared
    domain, ``data.positive``): the logged model refuses other inputs; with
    ``target_positive`` (the target is in ``data.positive`` too) it also refuses to
    answer where the line predicts a target ≤ 0, outside what it was fitted for. Raises
    ``ValueError`` for a combination that does not make a model (no or repeated
    features, a degree out of 1 to :data:`MAX_DEGREE`, a polynomial of several features).
    """

    features: tuple[str, ...]
    degree: int = 1
    fit_intercept: bool = True
    positive: tuple[str, ...] = ()
    target_positive: bool = False

    def __post_init__(self) -> None:
        if not self.features or len(set(self.features)) != len(self.features):
            raise ValueError(f"expected distinct feature names, got {list(self.features)}")
        if not 1 <= self.degree <= MAX_DEGREE:
            raise ValueError(f"expected a whole number from 1 to {MAX_DEGREE}, got {self.degree}")
        if self.degree > 1 and len(self.features) != 1:
            raise ValueError(f"a polynomial is built from one feature; there are {len(self.features)}")
        if not set(self.positive) <= set(self.features):
            raise ValueError(f"positive columns {list(self.positive)} must be features {list(self.features)}")

    @property
    def columns(self) -> list[str]:
        """Names of the model's columns: the features, or ``x``, ``x^2``, … for a polynomial."""
        if self.degree == 1:
            return list(self.features)
        x = self.features[0]
        return [x] + [f"{x}^{power}" for power in range(2, self.degree + 1)]

    @property
    def n_params(self) -> int:
        """Length of θ: the intercept and one coefficient per model column."""
        return len(self.columns) + 1

    def design(self, inputs: NDArray[np.float64]) -> NDArray[np.float64]:
        """Model columns, shape (n, len(columns)), from feature inputs of shape (n, len(features))."""
        return polynomial_columns(inputs, self.degree)

    def predict(self, theta: ArrayLike, inputs: NDArray[np.float64]) -> NDArray[np.float64]:
        """Predictions, shape (n,), from feature inputs of shape (n, len(features))."""
        return linear_prediction(theta, self.design(inputs))
