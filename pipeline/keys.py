"""Job and sweep keys: what identifies a training result, independent of where and when it ran.

A job's key hashes everything that determines its result: the resolved settings less
those that only say where things go (``paths``, ``mlflow``, ``hydra``, the data file's
path and the registry) or what is drawn (``pictures``), the training split's content,
and the content of the code the ``train`` stage runs (its ``pipeline/`` deps in
``dvc.yaml``; not the git commit, so a README-only commit keeps every key and an
uncommitted edit of ``optimize.py`` changes them). A sweep's key hashes its sorted job keys.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.files import file_md5

CODE_ROOT = Path(__file__).resolve().parents[1]
#: Settings that say where things go or run, or what is drawn, not what is computed.
NOT_IN_KEY = ("paths", "mlflow", "hydra", "registry", "rows", "pictures")
NOT_IN_KEY_DATA = ("path",)


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def result_settings(cfg: DictConfig) -> dict[str, Any]:
    """The resolved settings that shape a training result."""
    settings = {}
    for key in cfg:
        if key not in NOT_IN_KEY:
            value = cfg[key]
            settings[str(key)] = (
                OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            )
    data = settings.get("data")
    if isinstance(data, dict):
        settings["data"] = {key: value for key, value in data.items() if key not in NOT_IN_KEY_DATA}
    return settings


@functools.cache
def code_digest(stage: str = "train") -> str:
    """Hash of the content of the ``pipeline/`` files ``dvc.yaml`` lists as the stage's deps."""
    import yaml

    stages = yaml.safe_load((CODE_ROOT / "dvc.yaml").read_text())["stages"]
    files = sorted(dep for dep in stages[stage]["deps"] if str(dep).startswith("pipeline/"))
    return _digest({name: file_md5(CODE_ROOT / name) for name in files})


def job_key(cfg: DictConfig, train_md5: str) -> str:
    """The key of the job configured by ``cfg`` on the training split whose MD5 is ``train_md5``."""
    return _digest({"settings": result_settings(cfg), "train": train_md5, "code": code_digest()})


def sweep_key(job_keys: list[str]) -> str:
    """The key of a sweep: its sorted job keys."""
    return _digest(sorted(job_keys))


def in_result(override: str) -> bool:
    """Whether a command-line override can change a result (``paths.root=…`` cannot)."""
    key = override.lstrip("+~").split("=", 1)[0]
    top = key.split(".", 1)[0].split("/", 1)[0]
    return top not in NOT_IN_KEY and key not in {f"data.{name}" for name in NOT_IN_KEY_DATA}
