"""The progress line of a training run on a terminal: run k of N, iteration, loss, best so far."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from pipeline.tracking import BEST_MSE_ENV, LAUNCHER_PID_ENV, SWEEP_SIZE_ENV, each_child

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: How often the launching process reads the store for the progress of a parallel sweep.
WATCH_SECONDS = 2.0

#: How much earlier than the latest end seen a run's end may be written (its process's
#: clock, or a slow write to the store) and still be counted by the next reading.
CLOCK_MARGIN_MS = 60_000


def record_best(train_mse: float) -> None:
    """Remember a usable run's training MSE for the "best so far" of the next runs' lines.

    Only in the process that started the sweep, the one that draws the line.
    """
    if os.environ.get(LAUNCHER_PID_ENV) == str(os.getpid()):
        best = os.environ.get(BEST_MSE_ENV)
        os.environ[BEST_MSE_ENV] = repr(min(float(best), train_mse) if best else train_mse)


class ProgressLine:
    """On a terminal, one self-updating line: run k of N, iteration, loss, best so far.

    Off a terminal (a log file, CI) it prints nothing: each run ends in one log line.
    """

    def __init__(self, max_iter: int, stream: TextIO = sys.stderr, what: str = "train MSE") -> None:
        self.stream, self.max_iter, self.shown, self.what = stream, max_iter, 0.0, what
        # Jobs of a parallel launcher run in other processes that share the terminal:
        # only a job in the process that started the sweep draws the line.
        launcher = os.environ.get(LAUNCHER_PID_ENV)
        self.enabled = stream.isatty() and (launcher is None or launcher == str(os.getpid()))
        in_sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        total = os.environ.get(SWEEP_SIZE_ENV, "?")
        self.prefix = f"run {HydraConfig.get().job.num + 1}/{total}  " if in_sweep else ""
        best = os.environ.get(BEST_MSE_ENV)
        self.suffix = f"  best so far {float(best):.6g}" if best else ""

    def __call__(self, iteration: int, loss: float) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.shown < 0.1:  # ten updates a second at most
            return
        self.shown = now
        self.stream.write(
            f"\r{self.prefix}iteration {iteration}/{self.max_iter}  {self.what} {loss:.6g}{self.suffix}\x1b[K"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class SweepProgress:
    """``k of N done, best so far J``: the parent's finished children read from the store.

    The best is the lowest final training cost (``train_<loss>``) of a finished run that
    did not diverge. Each reading fetches only the runs that ended since the one before
    (a margin of :data:`CLOCK_MARGIN_MS` for runs whose end was written late), so that
    following a sweep of 10,000 runs does not read all of them every two seconds.
    """

    def __init__(self, client: MlflowClient, experiment_id: str, parent_id: str, total: int) -> None:
        self.arguments = (client, experiment_id, parent_id)
        self.total = total
        self.done: set[str] = set()
        self.best = math.inf
        self.since = 0  # ms: the end of the latest run seen

    def __call__(self) -> str:
        where = f"attributes.status = 'FINISHED' and attributes.end_time >= {self.since - CLOCK_MARGIN_MS}"
        for run in each_child(*self.arguments, where=where):
            self.since = max(self.since, run.info.end_time or 0)
            if run.info.run_id in self.done:
                continue
            self.done.add(run.info.run_id)
            if run.data.tags.get("status") in ("converged", "max_iter"):
                value = run.data.metrics.get(f"train_{run.data.params.get('model.loss', 'mse')}")
                if value is not None and math.isfinite(value):
                    self.best = min(self.best, value)
        best = f", best so far {self.best:.6g}" if math.isfinite(self.best) else ""
        return f"{len(self.done)} of {self.total} done{best}"


class SweepWatch:
    """For launchers that run the jobs elsewhere (joblib's workers, a cluster): the
    launching process keeps one line up to date on its terminal, read from the store
    every :data:`WATCH_SECONDS`. Off a terminal it does nothing."""

    def __init__(
        self,
        client: MlflowClient,
        experiment_id: str,
        parent_id: str,
        total: int,
        stream: TextIO = sys.stderr,
    ) -> None:
        self.progress = SweepProgress(client, experiment_id, parent_id, total)
        self.stream = stream
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sweep-progress", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(WATCH_SECONDS):
            try:
                line = self.progress()
            except Exception:  # a store that is busy or gone: the sweep itself will say so
                continue
            self.stream.write(f"\r{line}\x1b[K")
            self.stream.flush()

    def __enter__(self) -> SweepWatch:
        if self.stream.isatty():
            self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.thread.is_alive():
            self.stop.set()
            self.thread.join()
            self.stream.write("\r\x1b[K")
            self.stream.flush()
