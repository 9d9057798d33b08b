"""Stage ``ingest``: read the configured CSV, parse and validate it, write a typed table.

Reads ``data.path``, keeps the ``data.features`` and ``data.target`` columns, parses
numbers written for people ("$150,000", " 1,180 ") into float64, and writes them to
``paths.ingested`` (Parquet), with what it kept and dropped in ``paths.ingest_report``.
Run it as ``python -m pipeline.ingest [overrides]``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from pipeline.errors import PipelineError, exit_on_error
from pipeline.files import resolve, write_json, write_parquet
from pipeline.settings import check_overrides, read_choice, read_names
from pipeline.tables import TextTable, read_csv, read_numeric

log = logging.getLogger("pipeline.ingest")  # not __main__ under `python -m`

MISSING_HINT = "; set data.missing=drop to drop such rows"


@dataclass(frozen=True)
class IngestRules:
    """What the configuration asks of the table (the ``data`` group)."""

    features: list[str]
    target: str
    positive: list[str]
    drop_missing: bool


def parse_table(raw: TextTable, rules: IngestRules) -> tuple[pd.DataFrame, int]:
    """Select, parse and check the model's columns from a table of text cells.

    Parameters
    ----------
    raw : TextTable, n data rows
        The CSV as read, every cell a string.
    rules : IngestRules
        Columns to keep, positive columns, and what to do with missing cells.

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
    for name in rules.positive:
        if name not in wanted:
            raise PipelineError(
                f"data.positive: {name!r} is not one of the columns read ({', '.join(wanted)})"
            )
    table, dropped = read_numeric(
        raw, wanted, positive=rules.positive, drop_missing=rules.drop_missing, missing_hint=MISSING_HINT
    )
    if dropped:
        log.warning("%s: dropped %d rows with missing values (data.missing=drop)", raw.source, dropped)
        if table.empty:
            raise PipelineError(f"{raw.source}: every row has a missing value; nothing is left to train on")
    for name in rules.features:
        if table[name].nunique() == 1:
            raise PipelineError(
                f"{raw.source}: column {name!r} is constant ({table[name].iloc[0]:g} in every row): "
                "its coefficient cannot be fitted"
            )
    return table, dropped


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
    raw = read_csv(source, setting="data.path", delimiter=delimiter)
    table, dropped = parse_table(raw, rules)
    output = resolve(cfg, cfg.paths.ingested)
    write_parquet(output, table)
    # A DVC metric: numbers only (the file read is the data.path param).
    report = {
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
