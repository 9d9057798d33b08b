"""Shared test fixtures: the real Hydra config, with every output under tmp_path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import pipeline  # noqa: F401  (sets the defaults of offline.env for every test and its subprocesses)

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CONF_DIR = REPO_ROOT / "conf"
RAW_DIR = REPO_ROOT / "data" / "raw"
BAD_DIR = Path(__file__).resolve().parent / "data"

os.environ.pop("MLFLOW_TRACKING_URI", None)

ComposeFn = Callable[..., DictConfig]


@pytest.fixture(autouse=True)
def no_inherited_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without MLFLOW_TRACKING_URI: ``mlflow.set_tracking_uri`` in an
    earlier in-process test sets it, and it would win over the test's own store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def user_env() -> dict[str, str]:
    """The environment of a user in the activated .venv, with the default MLflow store:
    `python`, `dvc`, `mlflow` and `uvicorn` are ours, MLFLOW_TRACKING_URI is unset."""
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def isolating_overrides(tmp_path: Path) -> list[str]:
    """Point every output (data, reports, MLflow store, Hydra logs) into tmp_path."""
    return [
        f"paths.root={tmp_path}",
        f"paths.raw_dir={RAW_DIR}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]


@pytest.fixture
def compose_cfg(tmp_path: Path) -> ComposeFn:
    """Compose the real config (``config`` or ``train``) with outputs under tmp_path."""

    def _compose(*overrides: str, config_name: str = "config") -> DictConfig:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            return compose(config_name=config_name, overrides=[*isolating_overrides(tmp_path), *overrides])

    return _compose


def prepare_data(folder: Path, *overrides: str) -> Path:
    """``folder`` with the King County data (or as overridden) ingested and split, ready to train."""
    from pipeline import ingest, split

    folder.mkdir(parents=True, exist_ok=True)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="config", overrides=[*isolating_overrides(folder), *overrides])
    ingest.run(cfg)
    split.run(cfg)
    return folder


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    """tmp_path with the King County data ingested and split, ready to train."""
    return prepare_data(tmp_path)


def copy_project(into: Path) -> Path:
    """A fresh clone-like copy: the files git knows (committed or not) in a new repository."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO_ROOT / name).is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, into / name)
    for command in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=copy", "-c", "user.email=copy@example.com", "commit", "-qm", "copy"],
    ):
        subprocess.run(command, cwd=into, check=True, capture_output=True)
    return into


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    """stderr is exactly one line, ``error: ...``, with each fragment and no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def run_stage(
    module: str, tmp_path: Path, *overrides: str, multirun: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pipeline.<module>`` as a user would, outputs under tmp_path."""
    hydra_dirs = [
        f"hydra.run.dir={tmp_path / 'logs' / 'run'}",
        f"hydra.sweep.dir={tmp_path / 'logs' / 'sweep'}",
    ]
    command = [sys.executable, "-m", f"pipeline.{module}", *(["--multirun"] if multirun else [])]
    return subprocess.run(
        [*command, *isolating_overrides(tmp_path), *hydra_dirs, *overrides],
        cwd=REPO_ROOT,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
