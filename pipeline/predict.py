"""Predict with the champion model: ``python -m pipeline.predict 1500`` or ``--csv houses.csv``.

Loads ``models:/<registry.model_name>@champion`` from the configured MLflow store (the
one ``evaluate`` registered it in) and prints, for each value, the predicted target and
the model version used. ``--csv FILE`` reads the feature columns from a CSV (parsed and
checked like ``ingest`` does) and writes the rows with a ``predicted_<target>`` column
to ``--out`` (default: standard output).
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError, exit_on_error, first_line
from pipeline.files import output_file
from pipeline.settings import CONF_DIR, read_model_name
from pipeline.tables import STDIN, TextTable, parse_numbers, read_csv, read_numeric
from pipeline.tracking import CHAMPION


@dataclass(frozen=True)
class Champion:
    """The model behind the ``champion`` alias and what it expects."""

    name: str
    version: str
    run_id: str
    features: list[str]
    target: str
    positive: list[str]  # features the data declares > 0: other values are refused
    training_range: dict[str, list[float]]  # feature → [min, max] seen in training
    model: Any  # mlflow.pyfunc.PyFuncModel


def parse_values(words: list[str]) -> np.ndarray:
    """Command-line feature values ("1500", "1,500", "$2,000") as float64, shape (n,)."""
    values = []
    for word in words:
        try:
            (value,) = parse_numbers(pd.Series([word], dtype=str), where=lambda _: "argument")
        except PipelineError:
            value = math.nan
        if not math.isfinite(value):
            raise PipelineError(f"argument {word!r}: expected a number such as 1500 or 1,500")
        values.append(value)
    return np.asarray(values, dtype=np.float64)


def load_champion(tracking_uri: str, name: str) -> Champion:
    """Load the model the alias ``champion`` points at in the store at ``tracking_uri``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipeline.tracking import open_store, redact

    client = open_store(tracking_uri, create=False).client
    try:
        mlflow.set_tracking_uri(tracking_uri)
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as error:
        if "RESOURCE_DOES_NOT_EXIST" not in str(error.error_code) and "not found" not in str(error).lower():
            raise PipelineError(f"MLflow store {redact(tracking_uri)}: {first_line(error)}") from None
        where = redact(tracking_uri)
        raise PipelineError(
            f"no model {name!r} with alias {CHAMPION!r} in {where}; run `dvc repro`"
        ) from None
    except Exception as error:  # an unknown scheme, an unreachable server, a corrupt file
        raise PipelineError(f"MLflow store {redact(tracking_uri)}: {first_line(error)}") from None
    # From its files, not ``models:/…``: MLflow writes a note into the model's folder
    # when it loads a registered model, and predict must work in a read-only project.
    model = mlflow.pyfunc.load_model(client.get_model_version_download_uri(name, version.version))
    schema = model.metadata.get_input_schema()
    features = list(schema.input_names()) if schema is not None else []
    run = client.get_run(version.run_id) if version.run_id else None
    target = run.data.params.get("data.target", "prediction") if run else "prediction"
    config = model.model_config or {}
    return Champion(
        name,
        str(version.version),
        str(version.run_id),
        features,
        target,
        positive=list(config.get("positive", [])),
        training_range=dict(config.get("training_range", {})),
        model=model,
    )


def predict_frame(champion: Champion, table: pd.DataFrame) -> np.ndarray:
    """Predictions for a table with the champion's feature columns, shape (n,).

    Warns on stderr when inputs lie outside the training range (extrapolation); what
    the model refuses (a prediction outside the target's domain) is a one-line error.
    """
    from mlflow.exceptions import MlflowException

    try:
        predictions = np.asarray(champion.model.predict(table[champion.features]), dtype=np.float64)
    except MlflowException as error:  # what the model refuses, as the server says it
        raise PipelineError(f"{champion.name} version {champion.version}: {first_line(error)}") from None
    for name in champion.features:
        low, high = champion.training_range.get(name, (-math.inf, math.inf))
        outside = int(((table[name] < low) | (table[name] > high)).sum())
        if outside:
            print(
                f"warning: {outside} value(s) of {name!r} outside the training range "
                f"{low:,.6g} to {high:,.6g}: the prediction extrapolates",
                file=sys.stderr,
            )
    return predictions


def read_feature_csv(path: Path, features: list[str], positive: list[str]) -> tuple[TextTable, pd.DataFrame]:
    """A CSV as read (every column, as text) and its feature columns parsed as ingest does."""
    raw = read_csv(path, setting="--csv")
    numbers, _ = read_numeric(raw, features, positive=positive)
    return raw, numbers


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__.splitlines()[0])
    parser.add_argument("values", nargs="*", help="feature values, e.g. square feet (one-feature models)")
    parser.add_argument(
        "--csv", type=Path, help=f"a CSV file with the feature columns ({STDIN}: standard input)"
    )
    parser.add_argument("--out", type=Path, help="where to write the predictions of --csv (default: stdout)")
    parser.add_argument("--model-name", help="registered model name (default: data.model_name)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: as the pipeline's)")
    options = parser.parse_args(argv)
    if bool(options.values) == bool(options.csv):
        parser.error("give either feature values or --csv FILE")
    if options.out is not None:
        output_file(options.out, "--out", CONF_DIR.parent)
    return options


def configured(options: argparse.Namespace) -> tuple[str, str]:
    """The store and the model name: the options, else the pipeline's own config."""
    from hydra import compose, initialize_config_dir

    from pipeline.tracking import tracking_uri

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="config")
    uri = tracking_uri(cfg.mlflow.tracking_uri, options.tracking_uri)
    return uri, options.model_name or read_model_name(cfg)


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    options = arguments(argv)
    uri, name = configured(options)
    champion = load_champion(uri, name)
    label = f"model {champion.name} version {champion.version} (run {champion.run_id})"
    if options.csv is None:
        if len(champion.features) != 1:
            count = len(champion.features)
            raise PipelineError(f"{label} takes {count} features {champion.features}; use --csv")
        values = parse_values(options.values)
        if champion.features[0] in champion.positive and (values <= 0).any():
            word = options.values[int(np.flatnonzero(values <= 0)[0])]
            raise PipelineError(f"argument {word!r}: {champion.features[0]} must be > 0 (data.positive)")
        predictions = predict_frame(champion, pd.DataFrame({champion.features[0]: values}))
        for value, prediction in zip(values, predictions, strict=True):
            print(f"{champion.features[0]} = {value:,.6g}: predicted {champion.target} {prediction:,.2f}")
        print(label)
        return
    raw, numbers = read_feature_csv(options.csv, champion.features, champion.positive)
    # The rows as the user wrote them, every column kept, with the prediction added.
    table = raw.cells.assign(**{f"predicted_{champion.target}": predict_frame(champion, numbers)})
    text = io.StringIO()
    table.to_csv(text, index=False)
    if options.out is None:
        sys.stdout.write(text.getvalue())
    else:
        from pipeline.files import write_atomic

        write_atomic(options.out, lambda tmp: tmp.write_text(text.getvalue()))
    print(f"{len(table)} predictions by {label}", file=sys.stderr)


if __name__ == "__main__":
    main()
