"""The training split as memory-mapped float64 columns, made once and read by every run.

Parquet is compressed and laid out by row groups: a robust fit passes over the rows
at every iteration, and decoding the file again for each pass of each run would cost
more than the pass. So the first run that needs the split copies the columns it fits
into two plain ``.npy`` files (``X``: rows × features, row-major as the compiled
passes read it; ``y``: the target) under ``paths.columns``, in a folder named by the
split's MD5 and the column names. Every later run, and every worker process of a
sweep, maps the same files: the operating system pages rows in and out, so memory
stays bounded whatever the number of rows. The copy is a cache, not an output: it is
git-ignored, made again when missing, and a new split's copy replaces the old one's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from omegaconf import DictConfig

from pipeline.errors import PipelineError
from pipeline.files import file_md5, parquet_batches, resolve
from pipeline.model import polynomial_columns
from pipeline.passes import BLOCK_ROWS, row_blocks
from pipeline.settings import read_names
from pipeline.tables import require_columns

FloatArray = NDArray[np.float64]

#: Rows decoded from Parquet at a time (making the copy, reading a split): about 2 MB a column.
COPY_BATCH_ROWS = 4 * BLOCK_ROWS


@dataclass(frozen=True)
class Columns:
    """A split's columns, memory-mapped read-only.

    Attributes
    ----------
    X : ndarray, shape (n, d)
        The feature columns, in the order asked for, C-contiguous.
    y : ndarray, shape (n,)
        The target.
    """

    X: FloatArray
    y: FloatArray


@dataclass(frozen=True)
class SplitFile:
    """A split's Parquet file, read a batch of rows at a time (memory bounded whatever its size).

    Attributes
    ----------
    path : Path
    names : list of str
        Its columns.
    n_rows : int
    """

    path: Path
    names: list[str]
    n_rows: int

    @classmethod
    def open(cls, path: Path, required: Sequence[str], source: str) -> SplitFile:
        """The split at ``path``, checked to have the ``required`` columns (``source`` names it in errors)."""
        import pyarrow.parquet as pq

        if not path.is_file():
            raise PipelineError(f"{source}: no such file")
        metadata = pq.ParquetFile(path)
        names = list(metadata.schema_arrow.names)
        require_columns(names, required, source=source)
        return cls(path, names, metadata.metadata.num_rows)

    def blocks(self, names: Sequence[str]) -> Iterator[FloatArray]:
        """The ``names`` columns as float64 blocks of shape (rows, len(names)), in row order."""

        for batch in parquet_batches(self.path).iter_batches(batch_size=COPY_BATCH_ROWS, columns=list(names)):
            yield np.column_stack(
                [batch.column(name).to_numpy(zero_copy_only=False) for name in names]
            ).astype(np.float64, copy=False)


@dataclass(frozen=True)
class TrainingSplit:
    """The training split a run reads: its columns (memory-mapped) and where they come from."""

    features: list[str]  # data.features
    target: str  # data.target
    path: Path  # paths.train, resolved
    md5: str
    copy: Path  # the column copy's folder
    columns: Columns


def training_split(cfg: DictConfig) -> TrainingSplit:
    """``paths.train``'s columns for ``data.features`` and ``data.target``, mapped from
    their copy (made first if missing)."""
    features, target = read_names(cfg, "data.features"), read_names(cfg, "data.target")[0]
    path = resolve(cfg, cfg.paths.train)
    if not path.is_file():
        raise PipelineError(f"{path}: no training split; run `dvc repro split` first")
    md5, folder = file_md5(path), resolve(cfg, cfg.paths.columns)
    columns = open_columns(path, md5, features, target, folder)
    return TrainingSplit(
        features, target, path, md5, copy_folder(folder, path, md5, features, target), columns
    )


def copy_folder(folder: Path, split: Path, md5: str, features: Sequence[str], target: str) -> Path:
    """Where the copy of ``split``'s columns lives: ``folder/<split name>/<md5>-<names hash>``."""
    names = hashlib.md5("\0".join([*features, "", target]).encode()).hexdigest()[:12]
    return folder / split.stem / f"{md5}-{names}"


def open_columns(split: Path, md5: str, features: Sequence[str], target: str, folder: Path) -> Columns:
    """Map the copy of ``split``'s ``features`` and ``target`` (MD5 ``md5``), made first if missing.

    Raises :class:`PipelineError` naming the file when the split is missing, lacks a
    column, or the copy cannot be written (a full disk, say): nothing half-written is
    left, and a copy another process finished first is the one used.
    """
    if not split.is_file():
        raise PipelineError(f"{split}: no training split; run `dvc repro split` first")
    home = copy_folder(folder, split, md5, features, target)
    if not (home / "y.npy").is_file():
        _make_copy(split, features, target, home)
        _mapped.pop(home, None)
    if home not in _mapped:  # a copy's folder is named by what it holds: mapped once a process
        _mapped[home] = Columns(
            np.load(home / "X.npy", mmap_mode="r"), np.load(home / "y.npy", mmap_mode="r")
        )
    return _mapped[home]


#: The column copies mapped in this process, by folder (a sweep's jobs share one).
_mapped: dict[Path, Columns] = {}


def _make_copy(split: Path, features: Sequence[str], target: str, home: Path) -> None:

    source = parquet_batches(split)
    require_columns(
        source.schema_arrow.names, [*features, target], source=f"{split} (made by ingest; run `dvc repro`)"
    )
    n_rows = source.metadata.num_rows
    try:
        home.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{home.name}.", dir=home.parent))
    except OSError as error:
        raise PipelineError(
            f"{home.parent}: cannot write the split's column copy ({error.strerror or error})"
        ) from None
    try:
        X = np.lib.format.open_memmap(
            staging / "X.npy", mode="w+", dtype=np.float64, shape=(n_rows, len(features))
        )
        y = np.lib.format.open_memmap(staging / "y.npy", mode="w+", dtype=np.float64, shape=(n_rows,))
        start = 0
        for batch in source.iter_batches(batch_size=COPY_BATCH_ROWS, columns=[*features, target]):
            stop = start + batch.num_rows
            for j, name in enumerate(features):
                X[start:stop, j] = batch.column(name).to_numpy(zero_copy_only=False)
            y[start:stop] = batch.column(target).to_numpy(zero_copy_only=False)
            start = stop
        X.flush()
        y.flush()
        del X, y
        try:
            os.rename(staging, home)
        except OSError:
            if not (home / "y.npy").is_file():  # not another process's finished copy: a real failure
                raise
        _drop_stale_copies(home)
    except OSError as error:
        raise PipelineError(
            f"{home}: cannot write the split's column copy ({error.strerror or error})"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def model_columns(inputs: FloatArray, degree: int, copy: Path, block_rows: int = BLOCK_ROWS) -> FloatArray:
    """The columns a model of ``degree`` fits, from the split's mapped feature columns.

    Degree 1: the features themselves. Above: ``x, x², …, x^degree``
    (:func:`pipeline.model.polynomial_columns`), written once beside the column copy
    ``copy`` as ``powers-<degree>.npy``, ``block_rows`` rows at a time, and mapped: a
    polynomial of 10⁸ rows takes disk, not memory (2.4 GB at degree 3). The same bits as
    the powers made in memory; nothing half-written is left, and a file another process
    finished first is the one used.
    """
    if degree == 1:
        return inputs
    polynomial_columns(inputs[:1], degree)  # one feature, or the model's own error
    path = copy / f"powers-{degree}.npy"
    if not path.is_file():
        try:
            handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=copy)
            os.close(handle)
            os.chmod(staging, 0o644)  # as the copy's other files (mkstemp makes it private)
            try:
                powers = np.lib.format.open_memmap(
                    staging, mode="w+", dtype=np.float64, shape=(inputs.shape[0], degree)
                )
                for rows in row_blocks(inputs.shape[0], block_rows):
                    powers[rows] = polynomial_columns(np.asarray(inputs[rows]), degree)
                powers.flush()
                del powers
                os.replace(staging, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(staging)
        except OSError as error:
            raise PipelineError(
                f"{path}: cannot write the model's columns ({error.strerror or error})"
            ) from None
    return np.load(path, mmap_mode="r")  # type: ignore[no-any-return]


def _drop_stale_copies(home: Path) -> None:
    """Remove the copies of earlier versions of the same split (another MD5): a run still
    mapping one keeps reading it, since a removed file lives on while it is mapped."""
    md5 = home.name.split("-")[0]
    for other in home.parent.iterdir():
        if other.is_dir() and not other.name.startswith(".") and not other.name.startswith(md5):
            shutil.rmtree(other, ignore_errors=True)
