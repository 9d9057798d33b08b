"""Reading CSV written for people (pipeline.tables), shared by ingest and predict --csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import ingest
from pipeline.errors import PipelineError
from pipeline.tables import MAX_HEADER_BYTES, parse_csv, read_csv, read_numeric, sniff_delimiter
from tests.helpers import BAD_DIR, ComposeFn


def read_error(path: Path) -> str:
    with pytest.raises(PipelineError) as raised:
        table = read_csv(path, setting="data.path")
        read_numeric(table, ["sqft", "price"], positive=["sqft", "price"])
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_a_row_with_more_fields_than_the_header_is_refused_not_shifted() -> None:
    # pandas would take the first column as the index and shift every name right.
    message = read_error(BAD_DIR / "extra_unnamed_column.csv")
    assert "extra_unnamed_column.csv, line 2: 3 fields where the header has 2 ('sqft', 'price')" in message


def test_a_short_row_names_its_line() -> None:
    with pytest.raises(PipelineError, match=r"x\.csv, line 3: 1 fields where the header has 2"):
        parse_csv(b"sqft,price\n1000,150000\n1500\n", source="x.csv")


def test_dot_grouped_thousands_in_a_semicolon_file_are_refused() -> None:
    message = read_error(BAD_DIR / "dot_thousands.csv")
    assert "line 2, column 'sqft': cannot read '1.000' as a number: thousands grouped with dots" in message


def test_decimals_with_three_places_still_parse_in_a_comma_file() -> None:
    table = parse_csv(b"sqft,price\n1.000,150.000\n2.5,3\n", source="x.csv")
    numbers, _ = read_numeric(table, ["sqft", "price"])
    np.testing.assert_array_equal(numbers["price"], [150.0, 3.0])


@pytest.mark.parametrize("cell", ["€150.000", "$1.500.000", "150.000 €"])
def test_an_amount_with_dot_groups_is_refused_in_a_comma_file(cell: str) -> None:
    """Read as a decimal, '€150.000' was 150: 1,000 times too small, and no word said."""
    table = parse_csv(f"sqft,price\n1000,{cell}\n".encode(), source="x.csv")
    with pytest.raises(PipelineError) as raised:
        read_numeric(table, ["sqft", "price"])
    assert str(raised.value).startswith(
        f"x.csv, line 2, column 'price': cannot read {cell!r} as a number: thousands grouped with dots"
    )


def test_line_numbers_count_blank_lines() -> None:
    # 'abc' stands on line 6 of the file, after two blank lines.
    message = read_error(BAD_DIR / "blank_lines.csv")
    assert "blank_lines.csv, line 6, column 'price': cannot read 'abc'" in message


def test_line_numbers_count_quoted_line_breaks() -> None:
    table = parse_csv(b'name,sqft\n"two\nlines",1000\nx,oops\n', source="x.csv")
    assert table.lines.tolist() == [2, 4]
    with pytest.raises(PipelineError, match="line 4, column 'sqft'"):
        read_numeric(table, ["sqft"])


def test_the_delimiter_is_sniffed_outside_quotes() -> None:
    assert sniff_delimiter('"size; in sqft",sqft,price') == ","
    table = read_csv(BAD_DIR / "quoted_semicolon_header.csv", setting="data.path")
    assert list(table.cells.columns) == ["size; in sqft", "sqft", "price"]


def test_missing_columns_name_the_delimiter_used() -> None:
    table = parse_csv(b"sqft|price\n1|2\n", source="x.csv", delimiter=";")
    with pytest.raises(PipelineError, match=r"read with delimiter ';'; set data.delimiter"):
        table.require(["sqft"])


def test_a_huge_header_field_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text("a" * (200 * 1024) + ",price\n1,2\n")
    message = read_error(path)
    assert "wide.csv, line 1: not a readable CSV row (field larger than field limit" in message


def test_a_file_without_a_header_line_is_refused_after_reading_its_start(tmp_path: Path) -> None:
    path = tmp_path / "one_line.csv"
    path.write_bytes(b"1," * (MAX_HEADER_BYTES // 2 + 1))
    assert "one_line.csv, line 1: the header line is longer than 1 MiB" in read_error(path)


def test_a_folder_and_a_missing_file_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="--csv: no such file"):
        read_csv(tmp_path / "missing.csv", setting="--csv")
    with pytest.raises(PipelineError, match=r"--csv: .* is a folder"):
        read_csv(tmp_path, setting="--csv")


def test_ingest_refuses_the_shifted_file(compose_cfg: ComposeFn, tmp_path: Path) -> None:
    cfg = compose_cfg("data=seed_example", f"data.path={BAD_DIR / 'extra_unnamed_column.csv'}")
    with pytest.raises(PipelineError, match="line 2: 3 fields where the header has 2"):
        ingest.run(cfg)
    assert not (tmp_path / "data").exists()


def test_ingest_refuses_duplicate_feature_names(compose_cfg: ComposeFn) -> None:
    cfg = compose_cfg("data.features=[sqft_living,sqft_living]")
    with pytest.raises(PipelineError, match=r"data\.features: 'sqft_living' listed more than once"):
        ingest.run(cfg)


def test_every_cell_keeps_its_text() -> None:
    table = parse_csv(b'id,sqft\r\n007,"1,000"\r\n', source="x.csv")
    pd.testing.assert_frame_equal(table.cells, pd.DataFrame({"id": ["007"], "sqft": ["1,000"]}))
