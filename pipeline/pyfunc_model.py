"""The MLflow model of a fitted line, logged as code ("models from code"), not a pickle.

MLflow copies this file into each logged model and runs it when the model is loaded, so
whoever loads a model runs this code: trust the store as you would a pickle. θ, the
feature names and the data's declared domain travel as the model's ``model_config``
(JSON). Keep this file minimal and self-contained: it must not import ``pipeline``
(``tests/test_model.py`` checks that it predicts exactly what ``pipeline.model`` does).
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc.model import PythonModel


def refuse(message: str) -> MlflowException:
    """A bad input: the scoring server answers 400 with the message, not 500."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class LinearPriceModel(PythonModel):
    """Predicts ``θ0 + Σ θj · x_j`` (or ``θ0 + Σ θj · x^j`` for a polynomial) from a DataFrame."""

    def load_context(self, context: Any) -> None:
        config = context.model_config
        self.features = [str(name) for name in config["features"]]
        self.theta = np.asarray(config["theta"], dtype=np.float64)
        self.degree = int(config.get("degree", 1))
        self.positive = [str(name) for name in config.get("positive", [])]
        self.target_positive = bool(config.get("target_positive", False))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        missing = [name for name in self.features if name not in model_input.columns]
        if missing:
            raise refuse(f"input lacks feature column(s) {missing}; expected {self.features}")
        for name in self.features:  # True would pass for 1 and False for 0
            column = model_input[name]
            flags = column.map(lambda cell: isinstance(cell, bool | np.bool_)).to_numpy(dtype=bool)
            if flags.any():
                row = int(np.flatnonzero(flags)[0])
                raise refuse(f"input row {row}, column {name!r}: {column.iloc[row]!r} is not a number")
        try:
            X = model_input[self.features].to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as error:
            raise refuse(f"input features {self.features} must be numbers ({error})") from None
        for j, name in enumerate(self.features):
            bad = np.flatnonzero(~np.isfinite(X[:, j]) | ((X[:, j] <= 0) if name in self.positive else False))
            if bad.size:
                wanted = "a finite number > 0" if name in self.positive else "a finite number"
                raise refuse(f"input row {bad[0]}, column {name!r}: {float(X[bad[0], j])!r} is not {wanted}")
        if self.degree > 1:  # x, x², …: as pipeline.model.polynomial_columns builds them
            X = X[:, :1] ** np.arange(1, self.degree + 1)
        with np.errstate(over="ignore", invalid="ignore"):
            predictions = np.asarray(self.theta[0] + X @ self.theta[1:], dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(predictions))
        if bad.size:
            columns = ", ".join(repr(name) for name in self.features)
            raise refuse(
                f"input row {bad[0]}, column {columns}: out of range, the prediction overflows float64"
            )
        if self.target_positive and (predictions <= 0).any():
            row = int(np.flatnonzero(predictions <= 0)[0])
            raise refuse(
                f"input row {row}: the prediction {float(predictions[row]):,.6g} is not > 0, as the target "
                "must be (data.positive): the fitted line does not hold for such inputs"
            )
        return predictions


mlflow.models.set_model(LinearPriceModel())
