"""Shared fixtures: the real Hydra config, with every output under the test's tmp_path.

Helpers (running a stage, copying the project, checking a one-line error) are in
``tests/helpers.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import pipeline  # noqa: F401  (sets the defaults of offline.env for every test and its subprocesses)
from pipeline.tracking import CACHE_ENV
from tests.helpers import CONF_DIR, STORE_TEMPLATE, ComposeFn, isolating_overrides, prepare_data


@pytest.fixture(autouse=True, scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The project's empty-store template (:func:`pipeline.tracking.new_sqlite_store`) is
    kept under the session's tmp folder, for the tests and their subprocesses, not in the
    user's cache; :func:`tests.helpers.prepare_data` lays a store in each test's folder."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(folder))
        STORE_TEMPLATE[:] = [folder]
        yield


@pytest.fixture(autouse=True)
def no_inherited_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without MLFLOW_TRACKING_URI: ``mlflow.set_tracking_uri`` in an
    earlier in-process test sets it, and it would win over the test's own store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def compose_cfg(tmp_path: Path) -> ComposeFn:
    """Compose the real config (``config`` or ``train``) with outputs under tmp_path."""

    def _compose(*overrides: str, config_name: str = "config") -> DictConfig:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            return compose(config_name=config_name, overrides=[*isolating_overrides(tmp_path), *overrides])

    return _compose


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    """tmp_path with the King County data ingested and split, ready to train."""
    return prepare_data(tmp_path)
