"""Stage ``split``: a seeded shuffle split of the ingested table into train and test.

Reads ``paths.ingested``; writes ``paths.train`` and ``paths.test``. The same
``split.seed`` and ``split.test_fraction`` give the identical split, row for row.
Run it as ``python -m pipeline.split [overrides]``.
"""

from __future__ import annotations

import logging

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from pipeline.errors import PipelineError, exit_on_error
from pipeline.files import resolve, write_parquet
from pipeline.rules import TEST_FRACTION
from pipeline.settings import check_overrides, read_number

log = logging.getLogger("pipeline.split")  # not __main__ under `python -m`

MIN_TRAIN_ROWS = 2
MIN_TEST_ROWS = 1


def split_indices(n_rows: int, *, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle ``range(n_rows)`` with ``seed`` and cut off a test share.

    Parameters
    ----------
    n_rows : int
        Number of rows in the table.
    test_fraction : float
        Share of rows for testing, in (0, 1); rounded to the nearest whole row.
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    train, test : ndarray of int, shapes (n_train,) and (n_test,)
        Row positions, each sorted ascending so the files keep the source order.
    """
    TEST_FRACTION.check("test_fraction", test_fraction)
    n_test = round(n_rows * test_fraction)
    n_train = n_rows - n_test
    if n_test < MIN_TEST_ROWS or n_train < MIN_TRAIN_ROWS:
        raise ValueError(
            f"{n_rows} rows with split.test_fraction={test_fraction} give {n_train} "
            f"training and {n_test} test rows; need at least {MIN_TRAIN_ROWS} and {MIN_TEST_ROWS}"
        )
    order = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def run(cfg: DictConfig) -> None:
    """Split ``cfg.paths.ingested`` into ``cfg.paths.train`` and ``cfg.paths.test``."""
    table = pd.read_parquet(resolve(cfg, cfg.paths.ingested))
    test_fraction = read_number(cfg, "split.test_fraction", TEST_FRACTION)
    seed = int(read_number(cfg, "split.seed", at_least=0, integer=True))
    try:
        train_rows, test_rows = split_indices(len(table), test_fraction=test_fraction, seed=seed)
    except ValueError as error:
        raise PipelineError(f"split: {error}") from None
    for rows, key in ((train_rows, "train"), (test_rows, "test")):
        write_parquet(resolve(cfg, cfg.paths[key]), table.iloc[rows].reset_index(drop=True))
    log.info(
        "split %d rows into %d train and %d test (seed %s)",
        len(table),
        len(train_rows),
        len(test_rows),
        cfg.split.seed,
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@exit_on_error
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    check_overrides("config")
    main()
