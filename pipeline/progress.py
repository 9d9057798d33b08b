"""The progress line of a training run on a terminal: run k of N, iteration, loss, best so far."""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from pipeline.tracking import BEST_MSE_ENV, LAUNCHER_PID_ENV, SWEEP_SIZE_ENV


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

    def __init__(self, max_iter: int, stream: TextIO = sys.stderr) -> None:
        self.stream, self.max_iter, self.shown = stream, max_iter, 0.0
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
            f"\r{self.prefix}iteration {iteration}/{self.max_iter}  train MSE {loss:.6g}{self.suffix}\x1b[K"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
