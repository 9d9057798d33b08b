"""The house: dvc.yaml lists exactly the code each stage runs, and no stage imports another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "pipeline"
STAGES = ("ingest", "split", "store", "train", "evaluate")
ENTRY_POINTS = (*STAGES, "predict", "compare", "server", "prune")
#: Code a stage runs without importing it: MLflow copies the model file and runs it.
RUN_BY_PATH = {"train": {"pyfunc_model"}}


def pipeline_imports(module: str) -> set[str]:
    """The ``pipeline.*`` modules that ``pipeline/<module>.py`` imports (also inside functions)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pipeline":
            parts = node.module.split(".")
            found |= {alias.name for alias in node.names} if len(parts) == 1 else {parts[1]}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("pipeline.")}
    return found


def transitive_imports(module: str) -> set[str]:
    seen, todo = {module}, [module]
    while todo:
        for name in pipeline_imports(todo.pop()) - seen:
            seen.add(name)
            todo.append(name)
    return seen


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_lists_exactly_the_code_each_stage_runs(stage: str) -> None:
    declared = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"][stage]["deps"]
    code = {Path(dep).stem for dep in declared if str(dep).startswith("pipeline/")}
    assert code == transitive_imports(stage) | RUN_BY_PATH.get(stage, set())


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_no_entry_point_imports_another(entry_point: str) -> None:
    assert not transitive_imports(entry_point) & (set(ENTRY_POINTS) - {entry_point})
