"""What θ means (pipeline.model), and the logged model file that must predict the same."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from pipeline.model import ModelSpec
from pipeline.pyfunc_model import LinearPriceModel
from pipeline.runlog import PYFUNC_MODEL_CODE, log_model
from pipeline.tracking import CACHE_ENV
from tests.helpers import seed_store


def logged_model(spec: ModelSpec, theta: np.ndarray) -> LinearPriceModel:
    """The model file as MLflow runs it, given the config train logs."""
    model = LinearPriceModel()
    config = {
        "features": list(spec.features),
        "theta": theta.tolist(),
        "degree": spec.degree,
        "positive": list(spec.positive),
        "target_positive": spec.target_positive,
    }
    model.load_context(SimpleNamespace(model_config=config))
    return model


@pytest.mark.parametrize(
    ("features", "degree", "fit_intercept"),
    [(("x",), 1, True), (("x",), 1, False), (("x",), 3, True), (("x",), 5, False), (("a", "b"), 1, True)],
)
def test_the_model_file_predicts_exactly_what_the_model_does(
    features: tuple[str, ...], degree: int, fit_intercept: bool
) -> None:
    spec = ModelSpec(features, degree, fit_intercept)
    rng = np.random.default_rng(degree)
    theta = rng.normal(size=spec.n_params) * [1.0 if fit_intercept else 0.0, *[1.0] * (spec.n_params - 1)]
    inputs = rng.uniform(0.5, 3.0, size=(7, len(features)))
    expected = spec.predict(theta, inputs)
    got = logged_model(spec, theta).predict(None, pd.DataFrame(inputs, columns=list(features)))
    np.testing.assert_array_equal(got, expected)
    # And the model's columns are what an independent construction gives.
    reference = np.column_stack([inputs[:, 0] ** k for k in range(1, degree + 1)]) if degree > 1 else inputs
    np.testing.assert_allclose(expected, theta[0] + reference @ theta[1:], rtol=1e-13)


def test_model_rules() -> None:
    assert ModelSpec(("sqft",), 3).columns == ["sqft", "sqft^2", "sqft^3"]
    for bad in (
        lambda: ModelSpec(()),
        lambda: ModelSpec(("a", "a")),
        lambda: ModelSpec(("a",), 11),
        lambda: ModelSpec(("a", "b"), 2),
        lambda: ModelSpec(("a",), positive=("price",)),
    ):
        with pytest.raises(ValueError):
            bad()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "input row 0, column 'sqft': nan is not a finite number > 0"),
        (float("inf"), "is not a finite number > 0"),
        (-5.0, "input row 0, column 'sqft': -5.0 is not a finite number > 0"),
        (1e308, "input row 0, column 'sqft': out of range, the prediction overflows float64"),
    ],
)
def test_the_model_file_refuses_inputs_outside_the_domain(value: float | None, message: str) -> None:
    model = logged_model(ModelSpec(("sqft",), positive=("sqft",)), np.array([12_000.0, 136.0]))
    with pytest.raises(MlflowException, match=message.replace("(", r"\(")) as refused:
        model.predict(None, pd.DataFrame({"sqft": [value]}))
    assert refused.value.get_http_status_code() == 400  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("flag", [True, False, np.True_])
def test_the_model_file_refuses_booleans(flag: object) -> None:
    """JSON's true was read as 1 square foot, and a price was served for it."""
    model = logged_model(ModelSpec(("sqft",)), np.array([12_000.0, 136.0]))
    with pytest.raises(MlflowException, match=r"input row 1, column 'sqft': .* is not a number") as refused:
        model.predict(None, pd.DataFrame({"sqft": [1500.0, flag]}, dtype=object))
    assert refused.value.get_http_status_code() == 400  # type: ignore[no-untyped-call]


def test_the_model_file_refuses_a_prediction_outside_the_targets_domain() -> None:
    spec = ModelSpec(("sqft",), positive=("sqft",), target_positive=True)
    model = logged_model(spec, np.array([-43_000.0, 280.0]))
    assert model.predict(None, pd.DataFrame({"sqft": [1500.0]}))[0] == -43_000.0 + 280.0 * 1500.0
    with pytest.raises(MlflowException, match=r"^input row 1: the prediction -40,200 is not > 0") as refused:
        model.predict(None, pd.DataFrame({"sqft": [1500.0, 10.0]}))
    assert refused.value.get_http_status_code() == 400  # type: ignore[no-untyped-call]
    unbounded = logged_model(ModelSpec(("sqft",), positive=("sqft",)), np.array([-43_000.0, 280.0]))
    assert unbounded.predict(None, pd.DataFrame({"sqft": [10.0]}))[0] == -40_200.0  # no such rule


def test_a_models_input_example_is_rows_it_answers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """MLflow predicts the input example when it logs a model: a line that predicts a
    price <= 0 there made it print a warning with a 'Got error' for each such run."""
    import mlflow

    from pipeline.runlog import log_model

    spec = ModelSpec(("sqft",), positive=("sqft",), target_positive=True)
    inputs = np.array([[100.0], [120.0], [2000.0], [2500.0], [3000.0], [150.0]])
    mlflow.set_tracking_uri(f"sqlite:///{seed_store(tmp_path)}")  # its models under tmp_path
    examples = {}
    for name, theta in {"partly": [-43_000.0, 280.0], "plateau": [-500_000.0, 0.0]}.items():
        with mlflow.start_run() as run:
            model = mlflow.pyfunc.load_model(log_model(spec, np.array(theta), inputs, place_of(run)))
        examples[name] = model.input_example
    assert "Got error" not in caplog.text
    assert examples["partly"]["sqft"].tolist() == [2000.0, 2500.0, 3000.0]  # the rows it answers
    assert examples["plateau"] is None  # it answers none: a signature, no example


def place_of(run: Any) -> Any:
    """Where an active MLflow run is recorded, for :func:`pipeline.runlog.log_model`."""
    from mlflow.tracking import MlflowClient

    from pipeline.runlog import RunPlace

    return RunPlace(MlflowClient(), run.info.run_id, run.info.experiment_id, run.info.artifact_uri)


#: Fields of MLmodel that differ between any two logged models (ids, time), and the two
#: paths MLflow writes absolute and the stamped model relative.
OWN_FIELDS = {"model_id", "run_id", "artifact_path", "model_uuid", "utc_time_created"}


@pytest.mark.filterwarnings("ignore:.*input example was not provided")  # the reference, on purpose
@pytest.mark.parametrize(
    ("spec", "theta"),
    [
        (ModelSpec(("sqft",), positive=("sqft",), target_positive=True), [12_000.0, 280.0]),
        (ModelSpec(("sqft",), positive=("sqft",), target_positive=True), [-500_000.0, 0.0]),  # no example
        (ModelSpec(("sqft", "grade")), [1.0, 2.0, 3.0]),
        (ModelSpec(("sqft",), degree=2), [1.0, 2.0, 3.0]),
    ],
)
def test_a_stamped_model_is_what_mlflow_logs(tmp_path: Path, spec: ModelSpec, theta: list[float]) -> None:
    """Each run's model is a copy of one saved per kind, stamped with its ids and θ: it
    must be what ``mlflow.pyfunc.log_model`` writes, load, and predict the same."""
    import mlflow

    inputs = np.random.default_rng(7).uniform(500.0, 4000.0, size=(20, len(spec.features)))
    mlflow.set_tracking_uri(f"sqlite:///{seed_store(tmp_path)}")  # its models under tmp_path
    with mlflow.start_run() as run:
        stamped_uri = log_model(spec, np.array(theta), inputs, place_of(run))
    assert_logged_as_mlflow_logs(tmp_path, stamped_uri, spec, np.array(theta), inputs)


@pytest.mark.filterwarnings("ignore:.*input example was not provided")  # the reference, on purpose
def test_a_model_template_saved_once_serves_every_later_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model's template is kept in the user's cache: a later process (here a new
    ModelStamps) stamps its models from it without saving one (MLflow's check of the
    requirements, 0.5 s a process), and logs what ``log_model`` writes; a cache that
    cannot be written costs that time, nothing else."""
    import mlflow

    from pipeline.runlog import ModelStamps, RunPlace, model_parts

    spec, theta = ModelSpec(("sqft",), positive=("sqft",), target_positive=True), np.array([12_000.0, 280.0])
    inputs = np.random.default_rng(7).uniform(500.0, 4000.0, size=(20, 1))
    parts = model_parts(spec, theta, inputs)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    made = ModelStamps().template(*parts)
    assert made.parent == tmp_path / "cache" / "models" and (made / "MLmodel").is_file()
    assert [path.name for path in made.parent.iterdir()] == [made.name]  # no scratch folder left
    mlflow.set_tracking_uri(f"sqlite:///{seed_store(tmp_path)}")  # its models under tmp_path
    stamps = ModelStamps()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mlflow.pyfunc, "save_model", pytest.fail)  # saved again: the cache unused
        template = stamps.template(*parts)
    assert template == made
    with mlflow.start_run() as run:
        place = RunPlace(
            mlflow.MlflowClient(), run.info.run_id, run.info.experiment_id, run.info.artifact_uri
        )
        stamped_uri = stamps.log(place, template, parts[0], "pipeline/train.py")
    assert_logged_as_mlflow_logs(tmp_path, stamped_uri, spec, theta, inputs)
    (tmp_path / "a file").touch()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "a file" / "cache"))
    unkept = ModelStamps()
    own = unkept.template(*parts)  # saved into the process's own folder, while it lives
    assert (own / "MLmodel").is_file() and not own.is_relative_to(tmp_path)


def assert_logged_as_mlflow_logs(
    tmp_path: Path, stamped_uri: str, spec: ModelSpec, theta: np.ndarray, inputs: np.ndarray
) -> None:
    """The stamped model at ``stamped_uri`` (logged in the active store) equals what
    ``mlflow.pyfunc.log_model`` logs for the same ``spec``, ``theta`` and ``inputs``: its
    files, every ``MLmodel`` field but the run's own, its loading and answers."""
    import mlflow
    import yaml

    from pipeline.runlog import model_parts, pip_requirements

    run_id = mlflow.MlflowClient().get_logged_model(stamped_uri.removeprefix("models:/")).source_run_id
    assert run_id is not None
    config, example, signature = model_parts(spec, theta, inputs)
    with mlflow.start_run():
        reference_uri = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_MODEL_CODE),
            model_config=config,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
        ).model_uri
    folders = [Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / name)))
               for name, uri in (("stamped", stamped_uri), ("reference", reference_uri))]  # fmt: skip
    files = [sorted(path.name for path in folder.iterdir()) for folder in folders]
    assert files[0] == files[1]
    for name in files[0]:
        if name != "MLmodel":
            assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes(), name
    stamped, reference = (yaml.safe_load((folder / "MLmodel").read_text()) for folder in folders)
    # Hardening: no absolute path of the machine in a logged model (it moves with the project).
    text = (folders[0] / "MLmodel").read_text()
    assert str(tmp_path) not in text and str(PYFUNC_MODEL_CODE.parent) not in text
    assert stamped["flavors"]["python_function"]["model_code_path"] == "pyfunc_model.py"
    assert stamped["artifact_path"] == "model" and stamped["run_id"] == run_id
    assert stamped["model_id"] == stamped["model_uuid"] == stamped_uri.removeprefix("models:/")
    for fields in (stamped, reference):
        fields["flavors"]["python_function"]["model_code_path"] = PYFUNC_MODEL_CODE.name
    assert {k: v for k, v in stamped.items() if k not in OWN_FIELDS} == {
        k: v for k, v in reference.items() if k not in OWN_FIELDS
    }
    rows = pd.DataFrame(inputs[:5], columns=list(spec.features))
    loaded = [mlflow.pyfunc.load_model(uri) for uri in (stamped_uri, reference_uri)]
    answers = []
    for pyfunc in loaded:
        try:
            answers.append(pyfunc.predict(rows).tolist())
        except MlflowException as refused:  # the plateau's line answers no row
            answers.append(str(refused))
    assert answers[0] == answers[1]
    model = mlflow.MlflowClient().get_logged_model(stamped_uri.removeprefix("models:/"))
    assert str(model.status) == "READY" and model.source_run_id == run_id
    assert model.tags["mlflow.source.name"] == "pipeline/train.py"
    assert not mlflow.get_run(run_id).data.params  # θ and its config are not run params
