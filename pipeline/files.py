"""Small file helpers shared by the stages: paths, atomic writes, content hashes."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from pipeline.errors import PipelineError


def resolve(cfg: DictConfig, path: str) -> Path:
    """A configured path, relative paths taken against ``paths.root``.

    A relative root is the folder the command was started in, also when Hydra changed
    into its run folder (``hydra.job.chdir=true``).
    """
    from hydra.core.hydra_config import HydraConfig

    located = Path(cfg.paths.root) / path
    if not located.is_absolute() and HydraConfig.initialized():
        started_in = Path(HydraConfig.get().runtime.cwd)
        if started_in != Path.cwd():
            return started_in / located
    return located


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it into place on success.

    A crash or an error while writing leaves the old file (or none) and no partial one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are ordinary files
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def output_file(path: Path, option: str, project: Path) -> Path:
    """Check a file a command is asked to write (``--out``) before any work is done.

    Inside the project, missing folders are made when it is written; elsewhere its
    folder must exist already: a typo must not make folders across the filesystem.
    """
    if path.is_dir():
        raise PipelineError(f"{option}: {path} is a folder; name a file to write")
    absolute = path.resolve()
    if not absolute.is_relative_to(project.resolve()) and not absolute.parent.is_dir():
        raise PipelineError(
            f"{option}: the folder {absolute.parent} does not exist; make it first (only folders inside "
            "the project are made for you)"
        )
    return path


def write_atomic(target: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)`` and move the result to ``target`` only if it succeeds.

    A folder that cannot be written, a full disk or a folder in the way ends in a
    :class:`~pipeline.errors.PipelineError` naming the file.
    """
    try:
        with atomic_path(target) as tmp:
            write(tmp)
    except OSError as error:
        raise PipelineError(f"{target}: cannot write it ({error.strerror or error})") from None


def write_json(target: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    write_atomic(target, lambda tmp: tmp.write_text(json.dumps(payload, indent=2) + "\n"))


def write_parquet(target: Path, table: pd.DataFrame) -> None:
    """Write ``table`` as Parquet without its index, atomically."""
    write_atomic(target, lambda tmp: table.to_parquet(tmp, index=False))


def parquet_batches(path: Path) -> Any:
    """``path`` opened as a ``pyarrow.parquet.ParquetFile`` to read in batches, in memory
    that does not grow with the file: without ``pre_buffer=False``, pyarrow keeps every
    row group it has read until the file is closed (2 GB after 10⁸ rows; apache/arrow#39808)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path, pre_buffer=False)


def file_md5(path: Path) -> str:
    """MD5 of a file's bytes (the hash DVC uses, so the two can be compared).

    Remembered in the process for a file whose inode, size and modification time are
    unchanged (as DVC's own state does): a sweep's jobs in one process read a split of
    gigabytes once, not once per job.
    """
    stat = path.stat()
    stamp = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if stamp not in _md5_cache:
        digest = hashlib.md5()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _md5_cache[stamp] = digest.hexdigest()
    return _md5_cache[stamp]


_md5_cache: dict[tuple[str, int, int, int], str] = {}
