"""The progress line: on a terminal only, and the sweep's size counted from its grid."""

from __future__ import annotations

import io
import os

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from pipeline.progress import ProgressLine
from pipeline.sweep import sweep_size
from tests.helpers import CONF_DIR


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_drawn_on_a_terminal_and_cleared() -> None:
    screen = Terminal()
    progress = ProgressLine(2000, stream=screen)
    progress(120, 6.96e10)
    progress.close()
    assert screen.getvalue() == "\riteration 120/2000  train MSE 6.96e+10\x1b[K\r\x1b[K"


def test_no_progress_off_a_terminal() -> None:
    log = io.StringIO()
    progress = ProgressLine(2000, stream=log)
    progress(120, 6.96e10)
    progress.close()
    assert log.getvalue() == ""


def test_sweep_size_counts_the_grid_with_command_line_overrides() -> None:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        config = compose("train", return_hydra_config=True)
    assert sweep_size(config) == 2 * 2 * 4
    with open_dict(config):  # as `--multirun optimizer.lr=0.1,1 model.init.theta0=0` sets it
        config.hydra.overrides.task = ["optimizer.lr=0.1,1", "model.init.theta0=0"]
    assert sweep_size(config) == 1 * 2 * 2


def test_a_job_in_another_process_than_the_launcher_draws_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # joblib's workers share the terminal: only the launching process may draw.
    monkeypatch.setenv("DOWNHILL_LAUNCHER_PID", str(os.getpid() + 1))
    screen = Terminal()
    progress = ProgressLine(2000, stream=screen)
    progress(120, 6.96e10)
    progress.close()
    assert screen.getvalue() == ""
    monkeypatch.setenv("DOWNHILL_LAUNCHER_PID", str(os.getpid()))
    assert ProgressLine(2000, stream=Terminal()).enabled
