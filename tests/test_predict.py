"""predict: the champion from the command line and from CSV files, and what it refuses."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline import predict
from tests.helpers import BAD_DIR, REPO_ROOT, run_command, trained

#: Each predicts from a project trained into a real MLflow store (test-fast leaves them out).
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[float]]:
    """A store with a King County champion: its URI and θ."""
    folder = trained(tmp_path_factory.mktemp("champion"))
    theta = json.loads((folder / "reports" / "best_run.json").read_text())["theta"]
    return f"sqlite:///{folder / 'mlflow.db'}", theta


def run_predict(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    return run_command(predict.main, capsys, *argv)


def test_values_are_predicted_and_extrapolation_is_warned(
    champion: tuple[str, list[float]], capsys: pytest.CaptureFixture[str]
) -> None:
    uri, theta = champion
    status, out, err = run_predict(capsys, "1,500", "100000", "--tracking-uri", uri)
    assert status == 0, err
    assert out.splitlines()[0] == f"sqft_living = 1,500: predicted price {theta[0] + 1500 * theta[1]:,.2f}"
    sizes = pd.read_parquet(Path(uri.removeprefix("sqlite:///")).parent / "data" / "split" / "train.parquet")
    low, high = sizes["sqft_living"].min(), sizes["sqft_living"].max()  # the training split's range
    assert f"1 value(s) of 'sqft_living' outside the training range {low:,.0f} to {high:,.0f}" in err


@pytest.mark.parametrize("word", ["0", "-5"])
def test_values_outside_the_declared_domain_are_refused(
    champion: tuple[str, list[float]], capsys: pytest.CaptureFixture[str], word: str
) -> None:
    status, out, err = run_predict(capsys, "--tracking-uri", champion[0], "--", word)
    assert status == 2 and out == ""
    assert err.strip() == f"error: argument {word!r}: sqft_living must be > 0 (data.positive)"


def test_a_negative_price_is_refused_in_one_line(
    champion: tuple[str, list[float]], capsys: pytest.CaptureFixture[str]
) -> None:
    uri, theta = champion
    assert theta[0] + 10 * theta[1] < 0  # the line crosses zero at some 150 square feet
    status, out, err = run_predict(capsys, "--tracking-uri", uri, "10")
    assert status == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # no warning about extrapolation before the error
    assert lines[0].startswith("error: house-price version 1: input row 0: the prediction")
    assert "is not > 0, as the target must be (data.positive)" in lines[0]


def test_a_csv_from_standard_input_keeps_its_columns(
    champion: tuple[str, list[float]], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, theta = champion
    houses = (REPO_ROOT / "data" / "houses.csv").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(houses)))
    status, out, err = run_predict(capsys, "--csv", "-", "--tracking-uri", uri)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "house,sqft_living,predicted_price"
    assert lines[2].startswith('family home,"1,500",')  # the cells as the user wrote them
    assert float(lines[2].rsplit(",", 1)[1]) == pytest.approx(theta[0] + 1500 * theta[1], rel=1e-12)
    assert "3 predictions by model house-price" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--csv", "missing.csv"], "error: --csv: no such file: missing.csv"),
        (["--csv", str(BAD_DIR / "extra_unnamed_column.csv")], "line 2: 3 fields where the header has 2"),
        (["--csv", str(BAD_DIR / "blank_lines.csv")], "column 'sqft_living' not found"),
        (["--csv", "data/houses.csv", "--out", "."], "error: --out: . is a folder; name a file to write"),
    ],
)
def test_csv_mistakes_are_one_line(
    champion: tuple[str, list[float]], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, out, err = run_predict(capsys, *argv, "--tracking-uri", champion[0])
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_a_file_outside_the_project_needs_its_folder(
    champion: tuple[str, list[float]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "nonexistent" / "x.csv"  # `--out /nonexistent/x.csv` made /nonexistent
    status, _, err = run_predict(
        capsys, "--csv", "data/houses.csv", "--out", str(out), "--tracking-uri", champion[0]
    )
    assert status == 2
    assert err.strip() == (
        f"error: --out: the folder {out.parent} does not exist; make it first "
        "(only folders inside the project are made for you)"
    )
    assert not out.parent.exists()


def test_a_missing_store_is_named_and_not_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = tmp_path / "nowhere" / "x.db"
    status, _, err = run_predict(capsys, "1500", "--tracking-uri", f"sqlite:///{database}")
    assert (
        status == 2
        and err.strip() == f"error: no MLflow store at {database}; run `dvc repro` to train a model"
    )
    assert not database.parent.exists()


def test_an_unknown_store_scheme_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run_predict(capsys, "1500", "--tracking-uri", "garbage://x")
    assert status == 2 and len(err.strip().splitlines()) == 1 and "garbage://x" in err
