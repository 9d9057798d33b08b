"""Stage ``ingest``: read the configured CSV, parse and validate it, write a typed table.

Reads ``data.path``, keeps the ``data.features`` and ``data.target`` columns, parses
numbers written for people ("$150,000", " 1,180 ") into float64, and writes them to
``paths.ingested`` (Parquet). Run it as ``python -m pipeline.ingest [overrides]``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from pipeline.errors import PipelineError, exit_on_error
from pipeline.files import resolve, write_parquet

log = logging.getLogger("pipeline.ingest")  # not __main__ under `python -m`

# Characters people put around numbers that carry no value: currency signs,
# thousands separators, spaces (also the narrow and non-breaking ones).
_DECORATION = re.compile(r"[$€£¥,\s\u00a0\u202f_]")
HEADER_LINES = 1


def parse_number_column(values: pd.Series, *, column: str, source: str) -> np.ndarray:
    """Parse one column of text cells into finite float64 numbers.

    Parameters
    ----------
    values : pandas.Series of str, shape (n,)
        The raw cells, in file order.
    column : str
        Column name, for messages.
    source : str
        File name, for messages.

    Returns
    -------
    ndarray, shape (n,)

    Raises
    ------
    PipelineError
        At the first blank, non-numeric or non-finite cell, naming its line in the file.
    """
    text = values.astype(str)
    cleaned = text.str.replace(_DECORATION, "", regex=True)
    numbers = pd.to_numeric(cleaned, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(numbers))
    if bad.size:
        row = int(bad[0])
        raw = text.iloc[row]
        line = row + HEADER_LINES + 1
        if not raw.strip():
            problem = "blank cell"
        elif cleaned.iloc[row].lower().lstrip("+-") in {"inf", "infinity", "nan"}:
            problem = f"value {raw!r} is not a finite number"
        else:
            problem = f"cannot read {raw!r} as a number"
        more = f" ({bad.size - 1} more bad cells in this column)" if bad.size > 1 else ""
        raise PipelineError(f"{source}, line {line}, column {column!r}: {problem}{more}")
    return np.asarray(numbers, dtype=np.float64)


def parse_table(raw: pd.DataFrame, *, features: list[str], target: str, source: str) -> pd.DataFrame:
    """Select and parse the model's columns from a table of text cells.

    Parameters
    ----------
    raw : pandas.DataFrame, shape (n, any)
        The CSV as read, every cell a string.
    features : list of str
        Feature column names, in model order.
    target : str
        Target column name.
    source : str
        File name, for messages.

    Returns
    -------
    pandas.DataFrame, shape (n, len(features) + 1)
        ``features`` then ``target``, all float64.
    """
    wanted = [*features, target]
    if not features:
        raise PipelineError("data.features: list at least one feature column")
    if target in features:
        raise PipelineError(f"data.target: {target!r} is also listed in data.features")
    missing = [name for name in wanted if name not in raw.columns]
    if missing:
        names = ", ".join(repr(name) for name in missing)
        available = ", ".join(repr(str(name)) for name in raw.columns)
        raise PipelineError(f"{source}: column {names} not found; the columns are: {available}")
    if raw.empty:
        raise PipelineError(f"{source}: no data rows below the header")
    return pd.DataFrame({name: parse_number_column(raw[name], column=name, source=source) for name in wanted})


def read_text_table(path: Path) -> pd.DataFrame:
    """Read a CSV with every cell as text; a byte-order mark and CRLF are accepted."""
    if not path.is_file():
        raise PipelineError(f"data.path: no such file: {path}")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise PipelineError(f"{path}: the file is empty") from None
    except UnicodeDecodeError as error:
        raise PipelineError(f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8 CSV") from None
    except pd.errors.ParserError as error:
        raise PipelineError(f"{path}: not a readable CSV table ({error})") from None


def run(cfg: DictConfig) -> Path:
    """Ingest ``cfg.data.path`` into ``cfg.paths.ingested``; return the output path."""
    source = resolve(cfg, cfg.data.path)
    table = parse_table(
        read_text_table(source),
        features=list(cfg.data.features),
        target=str(cfg.data.target),
        source=str(cfg.data.path),
    )
    output = resolve(cfg, cfg.paths.ingested)
    write_parquet(output, table)
    log.info("ingested %d rows x %d columns from %s into %s", *table.shape, source, output)
    return output


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@exit_on_error
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
