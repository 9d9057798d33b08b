"""House sales made up in the King County layout, as many as asked, for benches and scale.

``python -m pipeline.generate --rows N [--seed S] [--out PATH]`` writes a CSV with the
19 columns of ``data/raw/kc_house_data.csv``, streamed block by block (memory does not
grow with N), the same bytes for the same rows and seed. ``--out`` defaults to the
path of ``conf/data/generated.yaml``, which switches the pipeline to the file
(``- data: generated`` in ``conf/config.yaml``, then ``dvc repro``).

The rows have the skew of real sales: living areas log-normal (median about 1,900 sq
ft); prices on one of two lines in the area, a cheaper market where a square foot
adds less (45 %) and a dearer one, each with noise that grows with the size
(log-normal factors); and 3 % outliers (prime locations: 2.5 to 4.5 times the price).
The two markets give the robust costs two valleys (Welsch with c = $75,000: near
θ = (133,000, 125) and (−58,000, 310)), as the real file's do; least squares sees one
line through both, about θ = (23,000, 258).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError, exit_on_error
from pipeline.files import output_file, write_atomic

#: Rows made and written at a time: memory is bounded by a block, whatever N.
BLOCK_ROWS = 250_000
#: The columns, in the King County file's order.
COLUMNS = (
    "price", "bedrooms", "bathrooms", "sqft_living", "sqft_lot", "floors", "waterfront", "view", "condition",
    "grade", "sqft_above", "sqft_basement", "yr_built", "yr_renovated", "zipcode", "lat", "long",
    "sqft_living15", "sqft_lot15",
)  # fmt: skip
#: A share of the sales that are outliers: 2.5 to 4.5 times the price of the line.
OUTLIER_SHARE = 0.03


@dataclass(frozen=True)
class SalesModel:
    """How the made-up sales are drawn (the line and the spread of the real file)."""

    cheap_share: float = 0.45  # of the sales, in the cheaper market
    cheap_line: tuple[float, float] = (100_000.0, 135.0)  # dollars, dollars per square foot
    dear_line: tuple[float, float] = (-40_000.0, 320.0)
    log_area_mean: float = float(np.log(1_900.0))
    log_area_sd: float = 0.42
    price_noise_sd: float = 0.15  # of log(price): noise in dollars grows with the size
    outlier_share: float = OUTLIER_SHARE


def sales_block(
    rng: np.random.Generator, rows: int, model: SalesModel = SalesModel()
) -> dict[str, np.ndarray]:
    """``rows`` made-up sales, each column an array of shape (rows,), in :data:`COLUMNS`."""
    area = np.clip(np.exp(rng.normal(model.log_area_mean, model.log_area_sd, rows)), 290.0, 15_000.0).round()
    cheap = rng.random(rows) < model.cheap_share
    (a0, a1), (b0, b1) = model.cheap_line, model.dear_line
    line = np.maximum(np.where(cheap, a0 + a1 * area, b0 + b1 * area), 60_000.0)
    price = line * np.exp(rng.normal(0.0, model.price_noise_sd, rows))
    outlier = rng.random(rows) < model.outlier_share
    price[outlier] *= rng.uniform(2.5, 4.5, int(outlier.sum()))
    basement = np.where(rng.random(rows) < 0.4, (area * rng.uniform(0.2, 0.45, rows)).round(), 0.0)
    lot = np.exp(rng.normal(8.99, 0.9, rows)).round()
    renovated = np.where(rng.random(rows) < 0.04, rng.integers(1950, 2016, rows), 0)
    return {
        "price": (price / 100.0).round() * 100.0,
        "bedrooms": np.clip((area / 650.0 + rng.normal(0.0, 0.8, rows)).round(), 1, 10).astype(np.int64),
        "bathrooms": np.clip((area / 900.0 + rng.normal(0.0, 0.4, rows)) * 4.0, 2, 32).round() / 4.0,
        "sqft_living": area.astype(np.int64),
        "sqft_lot": lot.astype(np.int64),
        "floors": rng.choice(np.array([1.0, 1.5, 2.0, 2.5, 3.0]), rows, p=[0.49, 0.09, 0.38, 0.01, 0.03]),
        "waterfront": (rng.random(rows) < 0.0075).astype(np.int64),
        "view": rng.choice(5, rows, p=[0.9, 0.015, 0.045, 0.025, 0.015]),
        "condition": rng.choice(np.arange(1, 6), rows, p=[0.002, 0.008, 0.649, 0.263, 0.078]),
        "grade": np.clip(
            (7.0 + 2.2 * np.log(area / 1_900.0) + rng.normal(0.0, 0.6, rows)).round(), 3, 13
        ).astype(np.int64),
        "sqft_above": (area - basement).astype(np.int64),
        "sqft_basement": basement.astype(np.int64),
        "yr_built": rng.integers(1900, 2016, rows),
        "yr_renovated": renovated,
        "zipcode": 98001 + rng.integers(0, 199, rows),
        "lat": rng.uniform(47.1559, 47.7776, rows).round(4),
        "long": rng.uniform(-122.519, -121.315, rows).round(3),
        "sqft_living15": (area * np.exp(rng.normal(0.0, 0.25, rows))).round().astype(np.int64),
        "sqft_lot15": (lot * np.exp(rng.normal(0.0, 0.3, rows))).round().astype(np.int64),
    }


def blocks(rows: int, seed: int) -> Iterator[dict[str, np.ndarray]]:
    """The sales of :func:`generate`, :data:`BLOCK_ROWS` at a time (the last block shorter)."""
    rng = np.random.default_rng(seed)
    for start in range(0, rows, BLOCK_ROWS):
        yield sales_block(rng, min(BLOCK_ROWS, rows - start))


def _csv_block(block: dict[str, np.ndarray]) -> bytes:
    """One block as CSV lines (no header): numbers as the King County file writes them."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.table({name: block[name] for name in COLUMNS})
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return bytes(sink.getvalue())


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Write ``rows`` made-up sales to ``path`` (CSV with a header), atomically."""
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
        raise PipelineError(f"--rows: expected a whole number >= 1, got {rows!r}")

    def write_csv(partial: Path) -> None:
        with partial.open("wb") as out:
            out.write((",".join(COLUMNS) + "\n").encode())
            for block in blocks(rows, seed):
                out.write(_csv_block(block))

    write_atomic(path, write_csv)  # a full disk, say: one line, nothing left half-written


def default_path() -> Path:
    """Where ``conf/data/generated.yaml`` reads the file (the one place the path is written)."""
    from hydra import compose, initialize_config_dir

    from pipeline.files import resolve
    from pipeline.settings import CONF_DIR

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="config", overrides=["data=generated"])
    return resolve(cfg, str(cfg.data.path))


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True, help="how many sales to make")
    parser.add_argument("--seed", type=int, default=0, help="the random seed (the same seed, the same bytes)")
    parser.add_argument(
        "--out", type=Path, help="the CSV to write (default: conf/data/generated.yaml's path)"
    )
    return parser.parse_args(argv)


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    from pipeline.settings import CONF_DIR

    options = arguments(argv)
    path = output_file(options.out, "--out", CONF_DIR.parent) if options.out else default_path()
    generate(path, options.rows, options.seed)
    print(f"wrote {options.rows:,} sales to {path} ({path.stat().st_size / 1e6:,.1f} MB)")


if __name__ == "__main__":
    main()
