"""Stage ``ingest``: read the configured CSV, parse and validate it, write a typed table.

Reads ``data.path``, keeps the ``data.features`` and ``data.target`` columns, parses
numbers written for people ("$150,000", " 1,180 ") into float64, and writes them to
``paths.ingested`` (Parquet), with what it kept and dropped in ``paths.ingest_report``.
Run it as ``python -m pipeline.ingest [overrides]``.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from pipeline.errors import PipelineError, exit_on_error
from pipeline.files import resolve, write_json, write_parquet
from pipeline.settings import check_overrides, read_choice, read_names

log = logging.getLogger("pipeline.ingest")  # not __main__ under `python -m`

# Characters people put around numbers that carry no value: currency signs and spaces
# (also the narrow and non-breaking ones).
_DECORATION = r"[$€£¥\s\u00a0\u202f]"
# A comma is read as a thousands separator only where it separates groups of three
# digits: "1,5" (a decimal comma?) is refused rather than read as 15.
_GROUPED = r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?"
_MISSING = {"", "nan", "na", "n/a", "null", "none"}
# Larger magnitudes square past float64's range (about 1.8e308) in the MSE.
LARGEST_MAGNITUDE = 1e150
HEADER_LINES = 1
DELIMITERS = ",;\t|"


@dataclass(frozen=True)
class IngestRules:
    """What the configuration asks of the table (the ``data`` group)."""

    features: list[str]
    target: str
    positive: list[str]
    drop_missing: bool


def _line(row: int) -> int:
    """The line in the file of data row ``row`` (0-based), the header being line 1."""
    return row + HEADER_LINES + 1


def parse_number_column(values: pd.Series, *, column: str, source: str) -> np.ndarray:
    """Parse one column of text cells into float64; missing cells become NaN.

    Parameters
    ----------
    values : pandas.Series of str, shape (n,)
        The raw cells, in file order.
    column, source : str
        Column and file name, for messages.

    Returns
    -------
    ndarray, shape (n,)
        NaN where a cell is missing (blank, "NaN", "NA", "null", ...).

    Raises
    ------
    PipelineError
        At the first non-numeric, infinite or overflowing cell, naming its line.
    """
    text = values.astype(str)
    cleaned = text.str.replace(_DECORATION, "", regex=True)
    missing = cleaned.str.lower().isin(_MISSING).to_numpy()
    misgrouped = cleaned.str.contains(",", regex=False) & ~cleaned.str.fullmatch(_GROUPED)
    cleaned = cleaned.str.replace(",", "", regex=False).mask(misgrouped, "not a number")
    numbers = pd.to_numeric(cleaned.mask(missing, "nan"), errors="coerce").to_numpy(
        np.float64, na_value=np.nan
    )
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~missing & ~(np.abs(numbers) < LARGEST_MAGNITUDE))
    if bad.size:
        row = int(bad[0])
        raw, number = text.iloc[row], numbers[row]
        if np.isnan(number):
            problem = f"cannot read {raw!r} as a number"
        elif np.isinf(number):
            problem = f"value {raw!r} is not a finite number"
        else:
            problem = f"value {raw!r} is too large: its square overflows float64"
        more = f" ({bad.size - 1} more such cells in this column)" if bad.size > 1 else ""
        raise PipelineError(f"{source}, line {_line(row)}, column {column!r}: {problem}{more}")
    return np.asarray(numbers, dtype=np.float64)


def require_columns(raw: pd.DataFrame, names: list[str], *, source: str) -> None:
    """Raise naming the missing columns and listing those that exist."""
    missing = [name for name in names if name not in raw.columns]
    if missing:
        absent = ", ".join(repr(name) for name in missing)
        available = ", ".join(repr(str(name)) for name in raw.columns)
        raise PipelineError(f"{source}: column {absent} not found; the columns are: {available}")


def parse_table(raw: pd.DataFrame, rules: IngestRules, *, source: str) -> tuple[pd.DataFrame, int]:
    """Select, parse and check the model's columns from a table of text cells.

    Parameters
    ----------
    raw : pandas.DataFrame, shape (n, any)
        The CSV as read, every cell a string.
    rules : IngestRules
        Columns to keep, positive columns, and what to do with missing cells.
    source : str
        File name, for messages.

    Returns
    -------
    table : pandas.DataFrame, shape (n - dropped, len(features) + 1)
        ``features`` then ``target``, all float64.
    dropped : int
        Rows dropped for missing cells (0 unless ``rules.drop_missing``).
    """
    wanted = [*rules.features, rules.target]
    if rules.target in rules.features:
        raise PipelineError(f"data.target: {rules.target!r} is also listed in data.features")
    require_columns(raw, wanted, source=source)
    if raw.empty:
        raise PipelineError(f"{source}: no data rows below the header")
    table = pd.DataFrame(
        {name: parse_number_column(raw[name], column=name, source=source) for name in wanted}
    )

    for name in rules.positive:
        if name not in table.columns:
            raise PipelineError(
                f"data.positive: {name!r} is not one of the columns read ({', '.join(wanted)})"
            )
        values = table[name].to_numpy()
        not_positive = np.flatnonzero(values <= 0)
        if not_positive.size:
            row = int(not_positive[0])
            raise PipelineError(
                f"{source}, line {_line(row)}, column {name!r}: {values[row]:g} is not > 0 "
                "(data.positive declares the column positive)"
            )

    blank = table.isna().to_numpy()
    dropped = 0
    if blank.any():
        row, col = (int(i) for i in np.argwhere(blank)[0])
        if not rules.drop_missing:
            raise PipelineError(
                f"{source}, line {_line(row)}, column {wanted[col]!r}: missing value "
                f"({int(blank.any(axis=1).sum())} rows have one); set data.missing=drop to drop such rows"
            )
        keep = ~blank.any(axis=1)
        dropped = int((~keep).sum())
        table = table[keep].reset_index(drop=True)
        log.warning("%s: dropped %d rows with missing values (data.missing=drop)", source, dropped)
        if table.empty:
            raise PipelineError(f"{source}: every row has a missing value; nothing is left to train on")

    for name in rules.features:
        if table[name].nunique() == 1:
            raise PipelineError(
                f"{source}: column {name!r} is constant ({table[name].iloc[0]:g} in every row): "
                "its coefficient cannot be fitted"
            )
    return table, dropped


def sniff_delimiter(first_line: str) -> str:
    """The most frequent of , ; tab | in the header line (``,`` when none occurs)."""
    counts = {delimiter: first_line.count(delimiter) for delimiter in DELIMITERS}
    best = max(counts, key=lambda delimiter: counts[delimiter])
    return best if counts[best] > 0 else ","


def read_text_table(path: Path, *, delimiter: str | None) -> pd.DataFrame:
    """Read a CSV with every cell as text.

    A UTF-8 byte-order mark and Windows line endings are accepted; ``delimiter=None``
    detects , ; tab or | from the header line.
    """
    if not path.is_file():
        raise PipelineError(f"data.path: no such file: {path}")
    data = path.read_bytes()
    if b"\0" in data[:65536]:
        raise PipelineError(f"{path}: a binary file, not CSV text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        byte = data[error.start]
        raise PipelineError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{byte:02x}); save it as UTF-8"
        ) from None
    if not text.strip():
        raise PipelineError(f"{path}: the file is empty")
    separator = delimiter or sniff_delimiter(text.splitlines()[0])
    header = next(csv.reader(io.StringIO(text.splitlines()[0]), delimiter=separator))
    repeated = sorted(name for name, count in Counter(header).items() if count > 1)
    if repeated:
        raise PipelineError(
            f"{path}: duplicate column name(s) {', '.join(map(repr, repeated))} in the header"
        )
    try:
        return pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as error:
        raise PipelineError(f"{path}: not a readable CSV table ({error})") from None


def read_rules(cfg: DictConfig) -> IngestRules:
    return IngestRules(
        features=read_names(cfg, "data.features"),
        target=read_names(cfg, "data.target")[0],
        positive=read_names(cfg, "data.positive", allow_empty=True),
        drop_missing=read_choice(cfg, "data.missing", ("fail", "drop")) == "drop",
    )


def run(cfg: DictConfig) -> Path:
    """Ingest ``cfg.data.path`` into ``cfg.paths.ingested``; return the output path."""
    rules = read_rules(cfg)
    source = resolve(cfg, cfg.data.path)
    delimiter = cfg.data.delimiter
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1):
        raise PipelineError(f"data.delimiter: expected one character or null (detect), got {delimiter!r}")
    raw = read_text_table(source, delimiter=delimiter)
    table, dropped = parse_table(raw, rules, source=str(cfg.data.path))
    output = resolve(cfg, cfg.paths.ingested)
    write_parquet(output, table)
    report = {
        "source": str(cfg.data.path),
        "rows_read": len(raw),
        "rows_dropped": dropped,
        "rows": len(table),
    }
    write_json(resolve(cfg, cfg.paths.ingest_report), report)
    log.info("ingested %d rows x %d columns from %s into %s", *table.shape, source, output)
    return output


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@exit_on_error
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    check_overrides("config")
    main()
