"""How the data stages grow with the rows: generate and ingest at 10⁶ and 10⁷ rows (10⁸ with --huge).

Run with ``make bench`` (or ``.venv/bin/python bench/data_scale.py [--huge]``). Each
figure is a command run as a user runs it, in a process of its own, timed from outside
(wall seconds) with its peak resident memory (``/usr/bin/time``'s maximum RSS), beside
the baseline measured in the same run on the same file:

* generate: ``python -m pipeline.generate`` (the made-up King County file);
* ingest: ``python -m pipeline.ingest data=generated`` (CSV → checked float64 Parquet),
  against pyarrow's streaming CSV reader writing the same two columns as Parquet row
  groups (no checks, no rules), the fastest plain way;
* rows per second of each, the ratio ingest / baseline (goal ≥ 0.8), and memory at
  10× the rows against memory at 1× (bounded: about 1).

Python's start and imports are in every figure (about 1.5 s): the rows/s at 10⁶ rows
understate the rate; compare the rows at 10⁷.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from tools.workspace import user_env  # noqa: E402

BASELINE = """
import sys
import pyarrow as pa, pyarrow.csv as pacsv, pyarrow.parquet as pq
reader = pacsv.open_csv(sys.argv[1], convert_options=pacsv.ConvertOptions(
    include_columns=["sqft_living", "price"],
    column_types={"sqft_living": pa.float64(), "price": pa.float64()}))
writer = None
for batch in reader:
    table = pa.Table.from_batches([batch])
    writer = writer or pq.ParquetWriter(sys.argv[2], table.schema)
    writer.write_table(table)
writer.close()
"""


def measured(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MB of ``command``, run as a user runs it."""
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%e %M", *command],
        cwd=REPO_ROOT,
        env=user_env(),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"bench: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    seconds, kilobytes = done.stderr.strip().splitlines()[-1].split()
    return float(seconds), float(kilobytes) / 1024


def row(label: str, seconds: float, megabytes: float, rows: int, note: str = "") -> None:
    print(
        f"{label:<44}{seconds:9.2f} s {megabytes:8.0f} MB {rows / seconds:12,.0f} rows/s  {note}", flush=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--huge", action="store_true", help="also 10^8 rows (about 8 GB of CSV on disk)")
    sizes = [10**6, 10**7] + ([10**8] if parser.parse_args().huge else [])
    python = sys.executable
    print(f"{'measure':<44}{'wall':>11} {'peak RSS':>11} {'rate':>19}")
    memory: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        raw = root / "raw"
        raw.mkdir()
        csv = raw / "generated.csv"
        for rows in sizes:
            seconds, peak = measured(
                [python, "-m", "pipeline.generate", "--rows", str(rows), "--out", str(csv)]
            )
            row(f"generate {rows:,} rows", seconds, peak, rows, f"{csv.stat().st_size / 1e9:.2f} GB of CSV")
            base_seconds, base_peak = measured(
                [python, "-c", BASELINE, str(csv), str(root / "baseline.parquet")]
            )
            row("  baseline: pyarrow streaming read + Parquet", base_seconds, base_peak, rows)
            overrides = [f"paths.root={root}", f"paths.raw_dir={raw}", f"hydra.run.dir={root / 'logs'}"]
            seconds, peak = measured([python, "-m", "pipeline.ingest", "data=generated", *overrides])
            note = f"{base_seconds / seconds:.2f} of the baseline's rows/s (goal >= 0.8)"
            if "ingest" in memory:
                note += f"; memory {peak / memory['ingest']:.2f} x that at {sizes[0]:,} rows"
            memory.setdefault("ingest", peak)
            row("  ingest (every rule checked)", seconds, peak, rows, note)


if __name__ == "__main__":
    main()
