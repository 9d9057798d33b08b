"""Stage ingest: numbers written for people parse; mistakes end in one named line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import ingest
from pipeline.errors import PipelineError
from tests.conftest import BAD_DIR, ComposeFn, run_stage


def test_seed_example_dollar_amounts_become_float64(compose_cfg: ComposeFn, tmp_path: Path) -> None:
    output = ingest.run(compose_cfg("data=seed_example"))
    table = pd.read_parquet(output)
    assert output == tmp_path / "data" / "ingested.parquet"
    assert list(table.columns) == ["sqft", "price"]
    assert (table.dtypes == np.float64).all()
    np.testing.assert_array_equal(table["price"], [150_000.0, 210_000.0, 290_000.0, 350_000.0])
    np.testing.assert_array_equal(table["sqft"], [1000.0, 1500.0, 2000.0, 2500.0])


def test_king_county_keeps_every_row(compose_cfg: ComposeFn) -> None:
    table = pd.read_parquet(ingest.run(compose_cfg()))
    assert table.shape == (21_613, 2)
    assert list(table.columns) == ["sqft_living", "price"]
    assert table["price"].iloc[0] == 221_900.0 and table["sqft_living"].iloc[0] == 1180.0


def test_byte_order_mark_crlf_quotes_and_separators_parse(compose_cfg: ComposeFn) -> None:
    cfg = compose_cfg(f"data.path={BAD_DIR / 'bom_crlf_quoted.csv'}", "data.features=[sqft]")
    table = pd.read_parquet(ingest.run(cfg))
    np.testing.assert_array_equal(table["sqft"], [1000.0, 1500.0, 2000.0, 2500.0])
    np.testing.assert_array_equal(table["price"], [150_000.0, 210_000.0, 290_000.0, 350_000.0])


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ("no_such_file.csv", "data.path: no such file"),
        ("empty.csv", "empty.csv: the file is empty"),
        ("header_only.csv", "header_only.csv: no data rows below the header"),
        ("blank_cell.csv", "blank_cell.csv, line 3, column 'price': blank cell"),
        ("infinite_value.csv", "line 3, column 'price': value 'inf' is not a finite number"),
        ("latin1.csv", "latin1.csv: not UTF-8 text"),
    ],
)
def test_bad_files_are_named(compose_cfg: ComposeFn, tmp_path: Path, file: str, message: str) -> None:
    cfg = compose_cfg(f"data.path={BAD_DIR / file}", "data.features=[sqft]")
    with pytest.raises(PipelineError, match=message.replace("(", r"\(")):
        ingest.run(cfg)
    assert not (tmp_path / "data").exists()


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_column_exits_with_one_line_naming_it(tmp_path: Path) -> None:
    bad = BAD_DIR / "missing_target_column.csv"
    result = run_stage("ingest", tmp_path, f"data.path={bad}", "data.features=[sqft]", "data.target=price")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, str(bad), "column 'price' not found", "'sqft', 'cost'")
    assert not (tmp_path / "data").exists()


def test_non_numeric_cell_exits_with_one_line_naming_row_and_column(tmp_path: Path) -> None:
    bad = BAD_DIR / "non_numeric_cell.csv"
    result = run_stage("ingest", tmp_path, f"data.path={bad}", "data.features=[sqft]")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "line 4", "column 'price'", "'about 290k'")
    assert not (tmp_path / "data").exists()


def test_a_failed_ingest_keeps_the_previous_output_whole(compose_cfg: ComposeFn, tmp_path: Path) -> None:
    good = ingest.run(compose_cfg("data=seed_example"))
    before = good.read_bytes()
    with pytest.raises(PipelineError):
        ingest.run(compose_cfg(f"data.path={BAD_DIR / 'non_numeric_cell.csv'}", "data.features=[sqft]"))
    assert good.read_bytes() == before
    assert sorted(p.name for p in good.parent.iterdir()) == ["ingested.parquet"]
