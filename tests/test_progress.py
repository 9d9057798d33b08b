"""The progress line: on a terminal only, and the sweep's size counted from its grid."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline.progress import ProgressLine
from pipeline.sweep import plan_jobs
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
    assert len(plan_jobs(config, [])) == 2 * 2 * 4
    # as `--multirun optimizer.lr=0.1,1 model.init.theta0=0` gives it
    assert len(plan_jobs(config, ["optimizer.lr=0.1,1", "model.init.theta0=0"])) == 1 * 2 * 2


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


def test_the_best_so_far_is_kept_in_the_launching_process_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.progress import record_best

    monkeypatch.delenv("DOWNHILL_BEST_TRAIN_MSE", raising=False)
    monkeypatch.setenv("DOWNHILL_LAUNCHER_PID", str(os.getpid()))
    for mse in (7.0e10, 6.96e10, 8.0e10):
        record_best(mse)
    screen = Terminal()
    progress = ProgressLine(2000, stream=screen)
    progress(1, 7.5e10)
    assert screen.getvalue().endswith("train MSE 7.5e+10  best so far 6.96e+10\x1b[K")
    monkeypatch.setenv("DOWNHILL_LAUNCHER_PID", str(os.getpid() + 1))
    record_best(1.0)  # a worker of a parallel launcher: nothing to show, nothing kept
    assert os.environ["DOWNHILL_BEST_TRAIN_MSE"] == repr(6.96e10)


def test_the_line_names_the_cost_minimized(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOWNHILL_BEST_TRAIN_MSE", raising=False)
    screen = Terminal()
    progress = ProgressLine(2000, stream=screen, what="train welsch cost")
    progress(3, 0.7165)
    assert "iteration 3/2000  train welsch cost 0.7165\x1b[K" in screen.getvalue()


def test_quick_composition_gives_the_configs_hydra_composes(tmp_path: Path) -> None:
    import pickle

    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode

    from pipeline.compose import QuickComposer
    from pipeline.keys import job_key
    from pipeline.sweep import job_configs, task_configs

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))
    config = loader.load_configuration(
        "train", overrides=[f"paths.root={tmp_path}", "hydra/launcher=joblib"], run_mode=RunMode.MULTIRUN
    )
    # Values only (set on a copy), a config group and an added key (composed by Hydra),
    # a whole list (composed), and the parent's id as the sweeper adds it. The default
    # sweep's slopes and rates pinned: four jobs, not 32 (Hydra composes each in 0.2 s).
    arguments = [
        "optimizer=gd,momentum",
        "model.init.theta0=0,1e5",
        "model.init.theta1=600",
        "optimizer.lr=0.1",
        "+experiment=robust",
        "data.features=[sqft_living]",
        "mlflow.parent_run_id=abc",
    ]
    jobs = plan_jobs(config, arguments, loader)
    composer = QuickComposer(loader)
    composed = [loader.load_sweep_config(config, job) for job in jobs]
    for quick in (
        list(job_configs(config, jobs, composer)),
        list(job_configs(config, jobs, pickle.loads(pickle.dumps(composer)))),
    ):
        assert [OmegaConf.to_yaml(cfg) for cfg in quick] == [OmegaConf.to_yaml(cfg) for cfg in composed]
        assert all(OmegaConf.is_struct(cfg) and not OmegaConf.is_readonly(cfg.hydra) for cfg in quick)
    assert quick[1].hydra.job.override_dirname == composed[1].hydra.job.override_dirname != ""
    # The task's part, which the jobs' keys are made of: Hydra's config less its hydra node.
    tasks = list(task_configs(config, jobs, composer))
    assert [OmegaConf.to_yaml(cfg) for cfg in tasks] == [
        OmegaConf.to_yaml({key: cfg[key] for key in cfg if key != "hydra"}) for cfg in composed
    ]
    assert all(OmegaConf.is_struct(cfg) and "hydra" not in cfg for cfg in tasks)
    keys = [job_key(cfg, "md5") for cfg in job_configs(config, jobs, loader)]
    assert len(set(keys)) == len(jobs)
    assert [job_key(cfg, "md5") for cfg in task_configs(config, jobs, QuickComposer(loader))] == keys
    # Again four jobs, the default sweep's starts and rates pinned.
    pinned = ["model.init.theta0=0", "optimizer.lr=0.1"]
    values_only = plan_jobs(config, [*pinned, "model.init.theta1=0,600", "optimizer.max_iter=10,20"], loader)
    quick = list(job_configs(config, values_only, loader))
    assert [OmegaConf.to_yaml(cfg) for cfg in quick] == [
        OmegaConf.to_yaml(loader.load_sweep_config(config, job)) for job in values_only
    ]
    # A job that sets a key the config lacks is Hydra's to refuse, as without the quick way.
    with pytest.raises(Exception, match="no_such_key"):
        QuickComposer(loader).load_sweep_config(config, ["optimizer.no_such_key=1"])
