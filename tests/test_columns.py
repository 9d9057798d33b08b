"""The training split as memory-mapped columns: made once, read by every run, replaced
with the split, and a clear error for what is missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.columns import SplitFile, copy_folder, model_columns, open_columns
from pipeline.errors import PipelineError
from pipeline.files import file_md5
from pipeline.model import polynomial_columns


def write_split(path: Path, rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {
            "sqft": rng.integers(400, 9000, rows),
            "price": rng.lognormal(13, 0.5, rows),
            "beds": rng.integers(1, 6, rows),
        }
    )
    table.to_parquet(path, index=False, row_group_size=1000)
    return table


def test_the_copy_holds_the_splits_columns_and_is_made_once(tmp_path: Path) -> None:
    split = tmp_path / "train.parquet"
    table = write_split(split, 2_500, 1)
    md5 = file_md5(split)
    columns = open_columns(split, md5, ["sqft", "beds"], "price", tmp_path / "columns")
    np.testing.assert_array_equal(columns.X, table[["sqft", "beds"]].to_numpy(np.float64))
    np.testing.assert_array_equal(columns.y, table["price"].to_numpy())
    assert columns.X.flags.c_contiguous and not columns.X.flags.writeable
    made = copy_folder(tmp_path / "columns", split, md5, ["sqft", "beds"], "price") / "X.npy"
    stamp = made.stat().st_mtime_ns
    again = open_columns(split, md5, ["sqft", "beds"], "price", tmp_path / "columns")
    assert made.stat().st_mtime_ns == stamp and np.array_equal(again.X, columns.X)


def test_a_new_split_replaces_the_old_copy(tmp_path: Path) -> None:
    split, folder = tmp_path / "train.parquet", tmp_path / "columns"
    write_split(split, 100, 1)
    old = copy_folder(folder, split, file_md5(split), ["sqft"], "price")
    open_columns(split, file_md5(split), ["sqft"], "price", folder)
    table = write_split(split, 120, 2)
    columns = open_columns(split, file_md5(split), ["sqft"], "price", folder)
    assert len(columns.y) == 120 and np.array_equal(columns.y, table["price"].to_numpy())
    assert not old.exists()
    assert [path.name for path in (folder / "train").iterdir()] == [
        copy_folder(folder, split, file_md5(split), ["sqft"], "price").name
    ]


def test_a_missing_column_or_split_is_named(tmp_path: Path) -> None:
    split = tmp_path / "train.parquet"
    write_split(split, 10, 1)
    with pytest.raises(
        PipelineError, match=r"train.parquet .*column 'bathrooms' not found; the columns are: 'sqft'"
    ):
        open_columns(split, file_md5(split), ["bathrooms"], "price", tmp_path / "columns")
    assert not any((tmp_path / "columns").rglob("*.npy"))  # nothing half-made
    with pytest.raises(PipelineError, match=r"missing.parquet: no training split; run `dvc repro split`"):
        open_columns(tmp_path / "missing.parquet", "0" * 32, ["sqft"], "price", tmp_path / "columns")


def test_a_split_file_is_read_in_batches_of_its_columns(tmp_path: Path) -> None:
    split = tmp_path / "test.parquet"
    table = write_split(split, 2_345, 3)
    opened = SplitFile.open(split, ["sqft", "price"], source="test split")
    assert opened.n_rows == 2_345 and opened.names == ["sqft", "price", "beds"]
    stacked = np.concatenate(list(opened.blocks(["price", "sqft"])))
    np.testing.assert_array_equal(stacked, table[["price", "sqft"]].to_numpy(np.float64))
    with pytest.raises(PipelineError, match="test split: column 'area' not found"):
        SplitFile.open(split, ["area"], source="test split")


def test_a_polynomials_columns_are_written_once_beside_the_copy_and_mapped(tmp_path: Path) -> None:
    """x, x², x³ made 1,000 rows at a time on disk: the bits polynomial_columns makes in
    memory; made once; degree 1 is the features themselves; two features are refused."""
    split = tmp_path / "train.parquet"
    rng = np.random.default_rng(3)
    x = rng.uniform(300, 9000, 2_500)
    pd.DataFrame({"sqft": x, "price": 200 * x}).to_parquet(split)
    columns = open_columns(split, file_md5(split), ["sqft"], "price", tmp_path / "columns")
    home = copy_folder(tmp_path / "columns", split, file_md5(split), ["sqft"], "price")
    assert model_columns(columns.X, 1, home) is columns.X
    powers = model_columns(columns.X, 3, home, block_rows=1_000)
    assert isinstance(powers, np.memmap) and powers.shape == (2_500, 3)
    np.testing.assert_array_equal(powers, polynomial_columns(np.asarray(columns.X), 3))
    made = (home / "powers-3.npy").stat().st_mtime_ns
    model_columns(columns.X, 3, home)
    assert (home / "powers-3.npy").stat().st_mtime_ns == made
    assert sorted(path.name for path in home.iterdir()) == [
        "X.npy",
        "powers-3.npy",
        "y.npy",
    ]  # no staging left
    with pytest.raises(ValueError, match="one feature"):
        model_columns(np.ones((4, 2)), 2, home)
