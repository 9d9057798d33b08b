"""How long the default pipeline takes, stage by stage, in a fresh copy of the project.

Run with ``make bench`` (or ``.venv/bin/python bench/pipeline_speed.py``). Prints:

* the import cost of each stage module, against ``import mlflow`` measured in the
  same run (ingest and split must not import MLflow at all);
* the wall time of each stage of ``dvc repro`` on the default config and sweep, and
  of the whole, against the one-minute target;
* a second ``dvc repro`` (only the store check runs), against the first.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from tools.workspace import VENV_BIN, copy_project, user_env  # noqa: E402  (the copy the end-to-end test makes)

TARGET_SECONDS = 60.0


def timed(command: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=user_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bench: {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return elapsed, done.stdout


def best_of(runs: int, command: list[str], cwd: Path) -> float:
    return min(timed(command, cwd)[0] for _ in range(runs))


def row(label: str, seconds: float, ratio: str) -> None:
    print(f"{label:<46}{seconds:9.2f}  {ratio}")


def main() -> None:
    python = str(VENV_BIN / "python")
    print(f"{'measure':<46}{'seconds':>9}  ratio")
    baseline = best_of(3, [python, "-c", "import mlflow"], REPO_ROOT)
    row("import mlflow (baseline)", baseline, "1.00")
    for module in ("ingest", "split", "store", "train", "evaluate"):
        probe = f"import sys, pipeline.{module}; sys.exit(2 if 'mlflow' in sys.modules else 0)"
        loads = subprocess.run([python, "-c", probe], cwd=REPO_ROOT, env=user_env()).returncode == 2
        seconds = best_of(3, [python, "-c", f"import pipeline.{module}"], REPO_ROOT)
        label = f"import pipeline.{module} ({'imports mlflow' if loads else 'no mlflow'})"
        row(label, seconds, f"{seconds / baseline:.2f} of import mlflow")

    with tempfile.TemporaryDirectory() as folder:
        project = copy_project(Path(folder))
        dvc = str(VENV_BIN / "dvc")
        total = 0.0
        for stage in ("ingest", "split", "store", "train", "evaluate"):
            seconds, _ = timed([dvc, "repro", "--single-item", stage], project)
            total += seconds
            row(f"dvc repro: stage {stage}", seconds, f"{seconds / TARGET_SECONDS:.2f} of the 60 s target")
        row(
            "dvc repro: all five stages, default sweep",
            total,
            f"{total / TARGET_SECONDS:.2f} of the 60 s target",
        )
        again, output = timed([dvc, "repro"], project)
        assert output.count("Running stage") == 1 and "Running stage 'store'" in output, output
        row("dvc repro again (only the store check runs)", again, f"{again / total:.2f} of the first")


if __name__ == "__main__":
    main()
