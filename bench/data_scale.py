"""How every stage grows with the rows: 10⁶ and 10⁷ generated rows (10⁸ with --huge).

Run with ``make bench`` (or ``.venv/bin/python bench/data_scale.py [--huge]``). Each
figure is a command run as a user runs it, in a process of its own, timed from outside
(wall seconds) with the peak memory of its process tree, sampled every 50 ms and
counted proportionally (PSS: a page a forked child shares counts once): resident
memory, and anonymous memory (``Pss_Anon`` + ``Pss_Shmem``), the figure the goal
(≤ 1 GB) holds to, since the memory-mapped split counts as resident pages the kernel
can drop at any time. Beside each, the baseline measured in the same run on the same file:

* generate: ``python -m pipeline.generate`` (the made-up King County file);
* ingest: ``python -m pipeline.ingest data=generated`` (CSV → checked float64 Parquet),
  against pyarrow's streaming CSV reader writing the same two columns as Parquet row
  groups (no checks, no rules), the fastest plain way;
* rows per second of each, the ratio ingest / baseline (goal ≥ 0.8), and memory at
  10× the rows against memory at 1× (bounded: about 1);
* split, then the default sweep (``python -m pipeline.train --multirun data=generated``,
  16 runs, every run in MLflow, the pictures) and ``evaluate``;
* one sgd run of one epoch (``optimizer=sgd optimizer.max_iter=1``), and one run of a
  degree-3 polynomial (``model.degree=3``, its powers written to disk once): their memory;
* the passes inside train, timed in one process on the memory-mapped copy: making
  the copy; the MSE statistics (one pass) against a pyarrow scan of the two columns
  with a dot product (goal ≤ 1.5×); a Huber pass for 1 run and 16 runs fused, in
  row·runs per second (goal ≥ 10⁹ with 16), against ``np.dot`` over the same columns;
* above 10⁶ rows, the robust experiment's 25 runs cut to 10 iterations each: what is
  left is its certificate and pictures, from a summary of the rows (goal ≤ 1 minute,
  timed alone as well: the certificate, then the pictures, page and animation);
  then cut to 40: the time between the two, per row·run·iteration made in between,
  against one fused Welsch pass of the 25 runs (goal ≤ 1.2 ×).

Python's start and imports are in every figure (about 1.5 s): the rows/s at 10⁶ rows
understate the rate; compare the rows at 10⁷, and the rate at which rows added from
the smallest size are ingested (printed for ingest and its baseline).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from tools.measure import measured  # noqa: E402

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


PASSES = """
import json, sys, time
from pathlib import Path
import numpy as np, pyarrow.parquet as pq
from pipeline import kernels
from pipeline.columns import open_columns
from pipeline.costs import KERNEL_CODE
from pipeline.files import file_md5
from pipeline.objective import standardize

split, folder = Path(sys.argv[1]), Path(sys.argv[2])
figures = {}
start = time.perf_counter()
columns = open_columns(split, file_md5(split), ["sqft_living"], "price", folder)
figures["copy"] = time.perf_counter() - start
start = time.perf_counter()
table = pq.read_table(split, columns=["sqft_living", "price"])
x, y = (table.column(name).to_numpy() for name in ("sqft_living", "price"))
float(np.dot(x, y)), float(np.dot(x, x)), float(np.dot(y, y))
figures["scan"] = time.perf_counter() - start
del table, x, y
start = time.perf_counter()
standardize(columns.X, columns.y)
figures["statistics"] = time.perf_counter() - start
start = time.perf_counter()
float(np.dot(columns.X[:, 0], columns.y))
figures["dot"] = time.perf_counter() - start
for name, runs in (("huber", 1), ("huber", 16), ("welsch", 25)):
    kind = KERNEL_CODE[name]
    slopes, constants = np.linspace(0.5, 1.5, runs)[:, None] * 1e-3, np.zeros(runs)
    # compiled and warm first
    kernels.cost_sums(columns.X, columns.y, 1e-5, slopes, constants, 1.0, kind, kernels.CHUNKS)
    times = []
    for _ in range(5):  # the median of five: this machine's speed drifts
        start = time.perf_counter()
        kernels.cost_sums(columns.X, columns.y, 1e-5, slopes, constants, 1.0, kind, kernels.CHUNKS)
        times.append(time.perf_counter() - start)
    figures[f"{name}{runs}"] = sorted(times)[2]
print(json.dumps(figures))
"""


#: The robust experiment's certificate and pictures, each timed alone in one process on
#: the sweep's split and its ``sweep.json``, as train makes them (goal <= 1 minute).
ROBUST_PARTS = """
import json, sys, time
from hydra import compose, initialize_config_dir
from pipeline.columns import model_columns, training_split
from pipeline.files import resolve
from pipeline.pictures import write_sweep_outputs
from pipeline.record import read_sweep_record
from pipeline.runlog import global_reference
from pipeline.train import certificate_frame, fit_key, read_settings, resolve_cost

with initialize_config_dir(version_base="1.3", config_dir=sys.argv[1]):
    cfg = compose("train", overrides=sys.argv[2:])
settings, split = read_settings(cfg), training_split(cfg)
X = model_columns(split.columns.X, settings.model.degree, split.copy)
key = fit_key(split.md5, settings.model)
cost = resolve_cost(settings, X, split.columns.y, key)
start = time.perf_counter()
frame = lambda least: certificate_frame(cfg, least)
global_reference(X, split.columns.y, settings.model, cost, key, frame, settings.exact_rows)
certificate = time.perf_counter() - start
sweep_key, runs = read_sweep_record(resolve(cfg, cfg.paths.sweep))
start = time.perf_counter()
write_sweep_outputs(cfg, sweep_key, runs)
print(json.dumps({"certificate": certificate, "pictures": time.perf_counter() - start}))
"""


def row(label: str, seconds: float, resident: float, anonymous: float, rows: int, note: str = "") -> None:
    print(
        f"{label:<44}{seconds:9.2f} s {resident:8.0f} MB {anonymous:8.0f} MB "
        f"{rows / seconds:14,.0f} rows/s  {note}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--huge", action="store_true", help="also 10^8 rows (about 8 GB of CSV on disk)")
    parser.add_argument("--rows", type=int, nargs="+", help="these sizes only (e.g. --rows 10000000)")
    arguments = parser.parse_args()
    sizes = arguments.rows or [10**6, 10**7] + ([10**8] if arguments.huge else [])
    python = sys.executable
    print(f"{'measure':<44}{'wall':>11} {'peak PSS':>11} {'anon.':>11} {'rate':>21}")
    memory: dict[str, float] = {}
    ingest_times: list[tuple[int, float, float]] = []  # rows, ingest's and the baseline's seconds
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        raw = root / "raw"
        raw.mkdir()
        csv = raw / "generated.csv"
        for rows in sizes:
            seconds, resident, anonymous, _ = measured(
                [python, "-m", "pipeline.generate", "--rows", str(rows), "--out", str(csv)]
            )
            row(
                f"generate {rows:,} rows",
                seconds,
                resident,
                anonymous,
                rows,
                f"{csv.stat().st_size / 1e9:.2f} GB of CSV",
            )
            base = measured([python, "-c", BASELINE, str(csv), str(root / "baseline.parquet")])
            row("  baseline: pyarrow streaming read + Parquet", base[0], base[1], base[2], rows)
            overrides = [
                f"paths.root={root}",
                f"paths.raw_dir={raw}",
                f"hydra.run.dir={root / 'logs'}",
                f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
                "data=generated",
            ]
            stage = measured([python, "-m", "pipeline.ingest", *overrides])
            note = f"{base[0] / stage[0]:.2f} of the baseline's rows/s (goal >= 0.8)"
            note += "; " + growth(memory, "ingest", stage[2], sizes[0]) if "ingest" in memory else ""
            memory.setdefault("ingest", stage[2])
            row("  ingest (every rule checked)", *stage[:3], rows, note)
            if ingest_times:  # the rate at which each added row is read: the start left out
                smaller, ingest_before, base_before = ingest_times[0]
                added = (rows - smaller) / (stage[0] - ingest_before)
                base_added = (rows - smaller) / (base[0] - base_before)
                print(
                    f"    rows/s added from {smaller:,} rows: ingest {added:,.0f}, "
                    f"baseline {base_added:,.0f}: {added / base_added:.2f} (the start left out)",
                    flush=True,
                )
            ingest_times.append((rows, stage[0], base[0]))
            stage = measured([python, "-m", "pipeline.split", *overrides])
            row(
                "  split (keyed permutation, streamed)",
                *stage[:3],
                rows,
                growth(memory, "split", stage[2], sizes[0]),
            )
            figures = json.loads(
                measured([python, "-c", PASSES, str(root / "data/split/train.parquet"), str(root / "cols")])[
                    3
                ]
            )
            train_rows = round(rows * 0.8)
            print(f"    column copy of the training split {figures['copy']:.2f} s", flush=True)
            print(
                f"    MSE statistics pass {figures['statistics']:.3f} s; baseline pyarrow scan + dot "
                f"{figures['scan']:.3f} s: {figures['statistics'] / figures['scan']:.2f} x (goal <= 1.5)",
                flush=True,
            )
            for runs in (1, 16):
                rate = train_rows * runs / figures[f"huber{runs}"]
                print(
                    f"    Huber pass, {runs:2} run(s): {figures[f'huber{runs}']:.3f} s, "
                    f"{rate / 1e9:.2f}e9 row·runs/s "
                    f"({figures[f'huber{runs}'] / figures['dot']:.1f} x np.dot over the mapped columns)"
                    + (" (goal >= 1e9)" if runs == 16 else ""),
                    flush=True,
                )
            stage = measured([python, "-m", "pipeline.train", "--multirun", *overrides])
            row(
                "  train: the default sweep, 16 runs",
                *stage[:3],
                rows,
                growth(memory, "train", stage[2], sizes[0]),
            )
            # SGD's set-up sums each mini-batch's statistics in the shuffle's order, a block
            # of batches at a time: its memory beyond the map is the order, 4 bytes a row.
            stage = measured(
                [python, "-m", "pipeline.train", "optimizer=sgd", "optimizer.max_iter=1", *overrides]
            )
            row(
                "  train: one sgd run, an epoch of batches of 64",
                *stage[:3],
                rows,
                growth(memory, "sgd", stage[2], sizes[0]),
            )
            # A polynomial's powers x, x², x³ are written once beside the column copy and
            # mapped: its memory beyond the map is a block of rows.
            degree = ["model.degree=3", "optimizer.max_iter=50", "optimizer.lr=auto"]
            stage = measured([python, "-m", "pipeline.train", *degree, *overrides])
            row(
                "  train: one run of degree 3, 50 iterations",
                *stage[:3],
                rows,
                growth(memory, "degree", stage[2], sizes[0]),
            )
            stage = measured([python, "-m", "pipeline.evaluate", *overrides])
            row(
                "  evaluate (test split streamed)",
                *stage[:3],
                rows,
                growth(memory, "evaluate", stage[2], sizes[0]),
            )
            if train_rows > EXACT_ROWS_DEFAULT:  # the summary is for the training rows
                robust_rows(python, overrides, root, train_rows, figures["welsch25"])


#: ``model.exact_rows``'s default: above it, a robust cost's certificate and pictures
#: come from a summary of the rows (below it they sum over every row, minutes at 10⁶).
EXACT_ROWS_DEFAULT = 10**6
#: The robust experiment's 25 starts, each a few iterations: what is left is the
#: certificate, the pictures and the page, which come from the summary.
ROBUST_SHORT = ["+experiment=robust", "hydra/launcher=fused"]
#: Its two budgets: the time between them is the passes' alone.
ROBUST_BUDGETS = (10, 40)


def robust_rows(python: str, overrides: list[str], root: Path, train_rows: int, fused_pass: float) -> None:
    """The robust experiment's sweep with budgets of 10 and 40 iterations a run.

    The first's time is mostly its certificate, pictures and page (goal together <= 1
    minute at 10⁷ rows). The difference between the two, over the iterations the runs
    made in between (read from ``sweep.json``), is the sweep's time per row·run·iteration,
    against one fused Welsch pass of its 25 runs over the same rows (goal <= 1.2 x); the
    same from the fused launcher's own timing of its fit, which leaves out the
    certificate (it starts from the best run's record, so it differs between the two).
    """
    seconds, fitting, iterations = [], [], []
    # Unmeasured: the first robust sweep in a fresh clone compiles the summary's passes.
    warm_up = [python, "-m", "pipeline.train", "--multirun", *ROBUST_SHORT, "optimizer.max_iter=1"]
    measured([*warm_up, *overrides])
    for budget in ROBUST_BUDGETS:
        command = [
            python,
            "-m",
            "pipeline.train",
            "--multirun",
            *ROBUST_SHORT,
            f"optimizer.max_iter={budget}",
        ]
        stage = measured([*command, *overrides])
        runs = json.loads((root / "reports" / "sweep.json").read_text())["runs"]
        seconds.append(stage[0])
        # The fused launcher logs its fit's own time: the certificate (30-40 s, from the
        # best run's record, so not the same in both sweeps) is not in it.
        fitted = re.search(r"fitted together in \d+ group\(s\) in ([0-9.]+) s", stage[3])
        fitting.append(float(fitted.group(1)) if fitted else math.nan)
        iterations.append(sum(run["n_iter"] for run in runs))
        label = f"  train: robust experiment, {len(runs)} runs x {budget} iterations"
        row(label, *stage[:3], train_rows, "(summary above 10⁶ rows)")
    # Hydra's own settings are the command line's, not the composed config's.
    composed = [ROBUST_SHORT[0], *(item for item in overrides if not item.startswith("hydra"))]
    parts = json.loads(measured([python, "-c", ROBUST_PARTS, str(REPO_ROOT / "conf"), *composed])[3])
    print(
        f"    certificate {parts['certificate']:.1f} s, pictures, page and animation "
        f"{parts['pictures']:.1f} s, each timed alone: "
        f"{parts['certificate'] + parts['pictures']:.1f} s (goal <= 60 s)",
        flush=True,
    )
    # The pass again, after the sweeps, and the faster of the two as the baseline: the
    # first is timed just after the column copy is written (its pages still going to
    # disk), and this machine's speed drifts (5.36 ns before, 3.09 after, in one run).
    again = measured([python, "-c", PASSES, str(root / "data/split/train.parquet"), str(root / "cols")])
    after = json.loads(again[3])["welsch25"]
    per_pass = min(fused_pass, after) / (train_rows * 25)
    print(
        f"    one fused Welsch pass of 25 runs: {fused_pass / (train_rows * 25) * 1e9:.3f} ns per "
        f"row·run before the sweeps, {after / (train_rows * 25) * 1e9:.3f} after",
        flush=True,
    )
    more = train_rows * (iterations[1] - iterations[0])
    # The fit's own time is the figure that counts: the sweep's also holds the
    # certificate, which starts from the best run's record and so differs between the two.
    for what, times in (("the sweep's", seconds), ("its fit's", fitting)):
        per_iteration = (times[1] - times[0]) / more
        print(
            f"    {what} time per row·run·iteration {per_iteration * 1e9:.3f} ns "
            f"({iterations[1] - iterations[0]} more iterations in {times[1] - times[0]:.1f} s); "
            f"the faster fused pass {per_pass * 1e9:.3f} ns: "
            f"{per_iteration / per_pass:.2f} x (goal <= 1.2)",
            flush=True,
        )


def growth(memory: dict[str, float], stage: str, anonymous: float, first: int) -> str:
    """Anonymous memory against the same stage's at the first size (bounded: about 1)."""
    note = f"anon. memory {anonymous / memory[stage]:.2f} x that at {first:,} rows" if stage in memory else ""
    memory.setdefault(stage, anonymous)
    return note


if __name__ == "__main__":
    main()
