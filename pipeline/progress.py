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

from pipeline.tracking import BEST_MSE_ENV, LAUNCHER_PID_ENV, SWEEP_SIZE_ENV, children

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: How often the launching process reads the store for the progress of a parallel sweep.
WATCH_SECONDS = 2.0


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


def sweep_progress(client: MlflowClient, experiment_id: str, parent_id: str, total: int) -> str:
    """``k of N done, best so far J``: the parent's finished children read from the store.

    The best is the lowest final training cost (``train_<loss>``) of a finished run that
    did not diverge.
    """
    done = [run for run in children(client, experiment_id, parent_id) if run.info.status == "FINISHED"]
    costs = []
    for run in done:
        if run.data.tags.get("status") in ("converged", "max_iter"):
            value = run.data.metrics.get(f"train_{run.data.params.get('model.loss', 'mse')}")
            if value is not None and math.isfinite(value):
                costs.append(value)
    best = f", best so far {min(costs):.6g}" if costs else ""
    return f"{len(done)} of {total} done{best}"


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
        self.arguments = (client, experiment_id, parent_id, total)
        self.stream = stream
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sweep-progress", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(WATCH_SECONDS):
            try:
                line = sweep_progress(*self.arguments)
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
