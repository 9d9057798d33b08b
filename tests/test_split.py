"""Stage split: a seeded shuffle split that is the same every time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import ingest, split
from tests.helpers import ComposeFn


def test_same_seed_gives_the_identical_split() -> None:
    first = split.split_indices(1000, test_fraction=0.2, seed=42)
    second = split.split_indices(1000, test_fraction=0.2, seed=42)
    other = split.split_indices(1000, test_fraction=0.2, seed=43)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])


def test_split_is_a_partition_of_the_rows() -> None:
    train, test = split.split_indices(21_613, test_fraction=0.2, seed=0)
    assert len(test) == round(21_613 * 0.2) and len(train) == 21_613 - len(test)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(21_613))


@pytest.mark.parametrize(("rows", "fraction"), [(2, 0.5), (3, 0.1), (10, 0.99)])
def test_too_few_rows_are_refused(rows: int, fraction: float) -> None:
    # The core raises ValueError; the stage names the setting (The house, item 3).
    with pytest.raises(ValueError, match="need at least 2 and 1"):
        split.split_indices(rows, test_fraction=fraction, seed=0)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_fraction_outside_zero_one_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"test_fraction must be a number > 0 and < 1"):
        split.split_indices(100, test_fraction=fraction, seed=0)


def test_stage_writes_train_and_test_files(compose_cfg: ComposeFn, tmp_path: Path) -> None:
    cfg = compose_cfg()
    ingest.run(cfg)
    split.run(cfg)
    train = pd.read_parquet(tmp_path / "data" / "split" / "train.parquet")
    test = pd.read_parquet(tmp_path / "data" / "split" / "test.parquet")
    assert (len(train), len(test)) == (17_290, 4_323)
    whole = pd.read_parquet(tmp_path / "data" / "ingested.parquet")
    together = pd.concat([train, test]).sort_values(["price", "sqft_living"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        together, whole.sort_values(["price", "sqft_living"]).reset_index(drop=True)
    )
