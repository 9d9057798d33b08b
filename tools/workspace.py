"""The project as a user has it, for the tests and the benchmarks alike.

``copy_project`` makes a fresh clone-like copy (the files git knows, committed or
not, in a new repository); ``user_env`` is the environment of a user in the activated
``.venv``. Both ``tests/`` and ``bench/`` use them; neither imports the other.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The folder of the running interpreter: the project's .venv under `make test` and `make bench`.
VENV_BIN = Path(sys.executable).parent


def user_env() -> dict[str, str]:
    """The environment of a user in the activated .venv, with the default MLflow store:
    `python`, `dvc`, `mlflow` and `uvicorn` are ours, MLFLOW_TRACKING_URI is unset."""
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


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
