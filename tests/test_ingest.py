"""Stage ingest: numbers written for people parse; every mistake ends in one named line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline import ingest
from pipeline.errors import PipelineError
from tests.helpers import BAD_DIR, REPO_ROOT, ComposeFn, assert_one_line_error, run_stage

SEED_PRICES = [150_000.0, 210_000.0, 290_000.0, 350_000.0]


def seed_like(file: str, *overrides: str) -> list[str]:
    """Overrides that read ``tests/data/<file>`` with the seed example's columns (sqft, price)."""
    return ["data=seed_example", f"data.path={BAD_DIR / file}", *overrides]


def test_seed_example_dollar_amounts_become_float64(compose_cfg: ComposeFn, tmp_path: Path) -> None:
    output = ingest.run(compose_cfg("data=seed_example"))
    table = pd.read_parquet(output)
    assert output == tmp_path / "data" / "ingested.parquet"
    assert list(table.columns) == ["sqft", "price"]
    assert (table.dtypes == np.float64).all()
    np.testing.assert_array_equal(table["price"], SEED_PRICES)
    np.testing.assert_array_equal(table["sqft"], [1000.0, 1500.0, 2000.0, 2500.0])
    report = json.loads((tmp_path / "reports" / "ingest.json").read_text())
    assert (report["rows_read"], report["rows_dropped"], report["rows"]) == (4, 0, 4)


def test_king_county_keeps_every_row(compose_cfg: ComposeFn) -> None:
    table = pd.read_parquet(ingest.run(compose_cfg()))
    assert table.shape == (21_613, 2)
    assert list(table.columns) == ["sqft_living", "price"]
    assert table["price"].iloc[0] == 221_900.0 and table["sqft_living"].iloc[0] == 1180.0


@pytest.mark.parametrize(
    ("file", "overrides"),
    [
        ("bom_crlf_quoted.csv", []),
        ("semicolon.csv", []),  # detected from the header line
        ("semicolon.csv", ["data.delimiter=';'"]),
    ],
)
def test_awkward_but_valid_files_parse(compose_cfg: ComposeFn, file: str, overrides: list[str]) -> None:
    table = pd.read_parquet(ingest.run(compose_cfg(*seed_like(file, *overrides))))
    np.testing.assert_array_equal(table["sqft"], [1000.0, 1500.0, 2000.0, 2500.0])
    np.testing.assert_array_equal(table["price"], SEED_PRICES)


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ("no_such_file.csv", "data.path: no such file"),
        ("empty.csv", "empty.csv: the file is empty"),
        ("header_only.csv", "header_only.csv: no data rows below the header"),
        ("duplicate_columns.csv", "duplicate column name(s) 'price' in the header"),
        ("missing_target_column.csv", "column 'price' not found; the columns are: 'sqft', 'cost'"),
        ("non_numeric_cell.csv", "line 4, column 'price': cannot read 'about 290k' as a number"),
        ("decimal_comma.csv", "line 2, column 'price': cannot read '150,5' as a number"),
        ("blank_cell.csv", "line 3, column 'price': missing value (1 rows have one); set data.missing=drop"),
        ("nan_cell.csv", "line 3, column 'price': missing value"),
        ("infinite_value.csv", "line 3, column 'price': value 'inf' is not a finite number"),
        (
            "huge_value.csv",
            "line 3, column 'price': value '1e200' is too large: its square overflows float64",
        ),
        ("negative_price.csv", "line 3, column 'price': -5 is not > 0 (data.positive"),
        ("zero_sqft.csv", "line 3, column 'sqft': 0 is not > 0"),
        ("constant_feature.csv", "column 'sqft' is constant (1500 in every row)"),
        ("latin1.csv", "latin1.csv, line 2: not UTF-8 text (byte 0xe9)"),
        ("binary.csv", "binary.csv: a binary file, not CSV text"),
    ],
)
def test_bad_files_are_named(compose_cfg: ComposeFn, tmp_path: Path, file: str, message: str) -> None:
    with pytest.raises(PipelineError) as raised:
        ingest.run(compose_cfg(*seed_like(file)))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.missing=skip"], "data.missing: expected one of fail, drop; got 'skip'"),
        (["data.features=[]"], "data.features: expected a list of column names"),
        (["data.target=sqft"], "data.target: 'sqft' is also listed in data.features"),
        (["data.positive=[rooms]"], "data.positive: 'rooms' is not one of the columns read"),
        (["data.delimiter=';;'"], "data.delimiter: expected one character or null"),
    ],
)
def test_bad_data_settings_are_named(compose_cfg: ComposeFn, overrides: list[str], message: str) -> None:
    with pytest.raises(PipelineError, match=message.replace("(", r"\(").replace("[", r"\[")):
        ingest.run(compose_cfg("data=seed_example", *overrides))


@pytest.mark.parametrize("file", ["blank_cell.csv", "nan_cell.csv"])
def test_missing_cells_can_be_dropped_and_are_counted(
    compose_cfg: ComposeFn, tmp_path: Path, file: str
) -> None:
    table = pd.read_parquet(ingest.run(compose_cfg(*seed_like(file, "data.missing=drop"))))
    assert 1500.0 not in table["sqft"].to_list() and not table.isna().any().any()
    report = json.loads((tmp_path / "reports" / "ingest.json").read_text())
    assert (report["rows_read"], report["rows_dropped"], report["rows"]) == (len(table) + 1, 1, len(table))


@pytest.mark.e2e
def test_missing_column_exits_with_one_line_naming_it(tmp_path: Path) -> None:
    bad = BAD_DIR / "missing_target_column.csv"
    result = run_stage("ingest", tmp_path, *seed_like("missing_target_column.csv"))
    assert result.returncode == 2
    assert_one_line_error(result.stderr, str(bad), "column 'price' not found", "'sqft', 'cost'")
    assert not (tmp_path / "data").exists()


@pytest.mark.e2e
def test_non_numeric_cell_exits_with_one_line_naming_row_and_column(tmp_path: Path) -> None:
    result = run_stage("ingest", tmp_path, *seed_like("non_numeric_cell.csv"))
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "line 4", "column 'price'", "'about 290k'")
    assert not (tmp_path / "data").exists()


def test_a_failed_ingest_keeps_the_previous_output_whole(compose_cfg: ComposeFn) -> None:
    good = ingest.run(compose_cfg("data=seed_example"))
    before = good.read_bytes()
    with pytest.raises(PipelineError):
        ingest.run(compose_cfg(*seed_like("non_numeric_cell.csv")))
    assert good.read_bytes() == before
    assert sorted(p.name for p in good.parent.iterdir()) == ["ingested.parquet"]


@pytest.mark.e2e
def test_relative_paths_are_taken_where_the_command_started_also_with_chdir(tmp_path: Path) -> None:
    # With hydra.job.chdir=true Hydra works in its run folder; data.path and outputs must not move.
    relative_root = os.path.relpath(tmp_path, REPO_ROOT)
    result = run_stage(
        "ingest", tmp_path, "data=seed_example", "hydra.job.chdir=true", f"paths.root={relative_root}"
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "ingested.parquet").is_file()


BAD_AND_AWKWARD = sorted(path.name for path in BAD_DIR.glob("*.csv"))


@pytest.mark.parametrize("file", BAD_AND_AWKWARD)
def test_read_in_tiny_blocks_every_file_gives_the_same_table_or_message(
    compose_cfg: ComposeFn, file: str
) -> None:
    """Blocks of a few bytes (each row a block of its own, or several blocks a row) must
    change nothing: the same table, or the same one-line message naming the same line."""

    cfg = compose_cfg(*seed_like(file))

    def outcome(block_bytes: int | None) -> tuple[str, object]:
        try:
            path = ingest.run(cfg) if block_bytes is None else ingest.run(cfg, block_bytes=block_bytes)
        except PipelineError as error:
            return "refused", str(error)
        return "read", pd.read_parquet(path).to_dict("list")

    whole = outcome(None)
    for block_bytes in (3, 17, 64):
        assert outcome(block_bytes) == whole, block_bytes


def test_a_bad_row_far_down_a_file_is_named_by_its_line(compose_cfg: ComposeFn, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    sizes, prices = rng.integers(500, 5000, 30_000), rng.integers(1, 9, 30_000) * 100_000
    rows = [f"{size},{price},x" for size, price in zip(sizes, prices, strict=True)]
    rows[1_000] = '1200,"$250,000","a note\nover two lines"'  # one row, two lines
    rows[2_000] = "\n\n" + rows[2_000]  # two blank lines
    rows[25_000] = "1300,about 290k,x"
    text = "\ufeffsqft,price,note\r\n" + "\r\n".join(rows) + "\r\n"
    path = tmp_path / "big.csv"
    path.write_bytes(text.encode())
    physical = text[: text.index("1300,about 290k")].count("\n") + 1  # counted independently
    assert physical == 25_005  # the header, 25,000 rows before it, a line break in a cell, two blank lines
    for block_bytes in (4096, 1 << 20):
        with pytest.raises(PipelineError) as raised:
            ingest.run(compose_cfg("data=seed_example", f"data.path={path}"), block_bytes=block_bytes)
        assert (
            str(raised.value)
            == f"{path}, line {physical}, column 'price': cannot read 'about 290k' as a number"
        )
    assert not (tmp_path / "data").exists()


def test_a_quoted_line_break_across_blocks_is_one_row(compose_cfg: ComposeFn, tmp_path: Path) -> None:
    path = tmp_path / "quoted.csv"
    path.write_text('sqft,price,note\n1000,150000,"a\nlong, note"\n1500,"$210,000",x\n2000,290000,"""q"""\n')
    for block_bytes in (5, 23, 4096):
        table = pd.read_parquet(
            ingest.run(compose_cfg("data=seed_example", f"data.path={path}"), block_bytes=block_bytes)
        )
        assert table["price"].tolist() == [150_000.0, 210_000.0, 290_000.0], block_bytes


def test_plain_numbers_read_the_quick_way_equal_the_rules_way_to_the_bit(
    compose_cfg: ComposeFn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import generate
    from pipeline.tables import RowBlock

    path = tmp_path / "sales.csv"
    generate.generate(path, 30_000, seed=3)
    cfg = compose_cfg("data=generated", f"data.path={path}")
    read_quickly = []  # whether each block went the quick way
    quick_way = RowBlock.plain_numbers

    def counted(block: RowBlock, *arguments: Any) -> pd.DataFrame | None:
        numbers = quick_way(block, *arguments)
        read_quickly.append(numbers is not None)
        return numbers

    monkeypatch.setattr(RowBlock, "plain_numbers", counted)
    quick = pd.read_parquet(ingest.run(cfg, block_bytes=1 << 16))
    assert len(read_quickly) > 10 and all(read_quickly)  # every block but the first (the header's)
    monkeypatch.setattr(RowBlock, "plain_numbers", lambda *_: None)  # every block by the rules
    ruled = pd.read_parquet(ingest.run(cfg, block_bytes=1 << 16))
    assert len(quick) == 30_000
    np.testing.assert_array_equal(quick.to_numpy().view(np.int64), ruled.to_numpy().view(np.int64))
