"""Stage ``split``: a keyed split of the ingested table into train and test.

Reads ``paths.ingested``; writes ``paths.train`` and ``paths.test``. Exactly
``round(n · split.test_fraction)`` rows are test rows, chosen by a keyed permutation of
the row positions (``split.seed`` the key), one batch of rows at a time: the same
settings give the identical split, row for row, on any machine, whatever the table's
size, without holding it.
Run it as ``python -m pipeline.split [overrides]``.
"""

from __future__ import annotations

import logging

import hydra
import numpy as np
from omegaconf import DictConfig

from pipeline.errors import PipelineError, exit_on_error
from pipeline.files import atomic_path, parquet_batches, resolve
from pipeline.rules import TEST_FRACTION
from pipeline.settings import check_overrides, read_number

log = logging.getLogger("pipeline.split")  # not __main__ under `python -m`

MIN_TRAIN_ROWS = 2
MIN_TEST_ROWS = 1


#: Rounds of the Feistel network: more than enough to mix the row positions.
FEISTEL_ROUNDS = 6
#: Rows read, permuted and written at a time: memory does not grow with the table.
BATCH_ROWS = 1 << 20
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer on uint64s: a fixed integer hash, the same on any machine."""
    with np.errstate(over="ignore"):
        z = values + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def keyed_permutation(positions: np.ndarray, n_rows: int, seed: int) -> np.ndarray:
    """Where each row position goes in a permutation of ``range(n_rows)`` keyed by ``seed``.

    A balanced Feistel network on the smallest even power of two ≥ ``n_rows`` is a
    bijection of that domain; images at or past ``n_rows`` are sent through it again
    (cycle-walking) until they land inside, which keeps it a bijection of
    ``range(n_rows)``. Integer arithmetic only: stateless, computed for any block of
    positions on its own, the same on any machine and library version.

    Parameters
    ----------
    positions : ndarray of int, shape (m,)
        Row positions, each in ``[0, n_rows)``.
    n_rows : int
        The number of rows, ``>= 1``.
    seed : int
        The key, ``>= 0``.

    Returns
    -------
    ndarray of int64, shape (m,)
    """
    half = max(1, (max(n_rows - 1, 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    keys = _mix(np.arange(FEISTEL_ROUNDS, dtype=np.uint64) + np.uint64(seed) * np.uint64(FEISTEL_ROUNDS))

    def network(x: np.ndarray) -> np.ndarray:
        left, right = x >> np.uint64(half), x & mask
        for key in keys:
            left, right = right, left ^ (_mix(right ^ key) & mask)
        return (left << np.uint64(half)) | right

    image = network(np.asarray(positions, dtype=np.uint64))
    outside = np.flatnonzero(image >= np.uint64(n_rows))
    while outside.size:
        image[outside] = network(image[outside])
        outside = outside[image[outside] >= np.uint64(n_rows)]
    return image.astype(np.int64)


def count_test_rows(n_rows: int, test_fraction: float) -> int:
    """Test rows of a table of ``n_rows``: ``round(n_rows · test_fraction)``, checked."""
    TEST_FRACTION.check("test_fraction", test_fraction)
    n_test = round(n_rows * test_fraction)
    n_train = n_rows - n_test
    if n_test < MIN_TEST_ROWS or n_train < MIN_TRAIN_ROWS:
        raise ValueError(
            f"{n_rows} rows with split.test_fraction={test_fraction} give {n_train} "
            f"training and {n_test} test rows; need at least {MIN_TRAIN_ROWS} and {MIN_TEST_ROWS}"
        )
    return n_test


def split_indices(n_rows: int, *, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The train and test row positions: a row is a test row iff its image under
    :func:`keyed_permutation` is below :func:`count_test_rows` (exactly that many).

    Returns
    -------
    train, test : ndarray of int, shapes (n_train,) and (n_test,)
        Row positions, ascending, so the files keep the source order.
    """
    n_test = count_test_rows(n_rows, test_fraction)
    positions = np.arange(n_rows)
    is_test = keyed_permutation(positions, n_rows, seed) < n_test
    return positions[~is_test], positions[is_test]


def run(cfg: DictConfig) -> None:
    """Split ``cfg.paths.ingested`` into ``cfg.paths.train`` and ``cfg.paths.test``, a
    batch of rows at a time (memory bounded whatever the table's size)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    test_fraction = read_number(cfg, "split.test_fraction", TEST_FRACTION)
    seed = int(read_number(cfg, "split.seed", at_least=0, integer=True))
    source = parquet_batches(resolve(cfg, cfg.paths.ingested))
    n_rows = source.metadata.num_rows
    try:
        n_test = count_test_rows(n_rows, test_fraction)
    except ValueError as error:
        raise PipelineError(f"split: {error}") from None
    targets = {key: resolve(cfg, cfg.paths[key]) for key in ("train", "test")}
    try:
        with atomic_path(targets["train"]) as train_file, atomic_path(targets["test"]) as test_file:
            schema = source.schema_arrow
            with pq.ParquetWriter(train_file, schema) as train, pq.ParquetWriter(test_file, schema) as test:
                start = 0
                for batch in source.iter_batches(batch_size=BATCH_ROWS):
                    positions = np.arange(start, start + batch.num_rows)
                    start += batch.num_rows
                    is_test = pa.array(keyed_permutation(positions, n_rows, seed) < n_test)
                    table = pa.Table.from_batches([batch], schema=schema)
                    test.write_table(table.filter(is_test))
                    train.write_table(table.filter(pc.invert(is_test)))
    except OSError as error:
        raise PipelineError(
            f"split: cannot write {targets['train'].parent} ({error.strerror or error})"
        ) from None
    log.info("split %d rows into %d train and %d test (seed %s)", n_rows, n_rows - n_test, n_test, seed)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@exit_on_error
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    check_overrides("config")
    main()
