"""The MLflow model of a fitted line, logged as code ("models from code"), not a pickle.

MLflow copies this file into each logged model and runs it when the model is loaded;
θ and the feature names travel as the model's ``model_config``, so the stored model is
plain text and JSON. Keep this file self-contained: it must not import ``pipeline``.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel


class LinearPriceModel(PythonModel):
    """Predicts ``θ0 + Σ θj · x_j`` (or ``θ0 + Σ θj · x^j`` for a polynomial) from a DataFrame."""

    def load_context(self, context: Any) -> None:
        config = context.model_config
        self.features = [str(name) for name in config["features"]]
        self.theta = np.asarray(config["theta"], dtype=np.float64)
        self.degree = int(config.get("degree", 1))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        missing = [name for name in self.features if name not in model_input.columns]
        if missing:
            raise ValueError(f"input lacks feature column(s) {missing}; expected {self.features}")
        X = model_input[self.features].to_numpy(dtype=np.float64)
        if self.degree > 1:  # x, x², …: as pipeline.features.polynomial_columns builds them
            X = X[:, :1] ** np.arange(1, self.degree + 1)
        return np.asarray(self.theta[0] + X @ self.theta[1:], dtype=np.float64)


mlflow.models.set_model(LinearPriceModel())
