"""The house: dvc.yaml lists exactly the code each stage runs, and no stage imports another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "pipeline"
#: The package's layers, top down: a module imports from its own layer or those below,
#: never above (imports inside functions and under TYPE_CHECKING included).
LAYERS = (
    (
        "ingest",
        "split",
        "store",
        "train",
        "evaluate",
        "predict",
        "compare",
        "prune",
        "server",
        "generate",
        "phase",
    ),  # entry points
    ("sweep", "fused"),  # the sweep's driver, the fused launcher's workers
    (
        "runlog",
        "pictures",
        "landscape_page",
        "live",
        "landscape",
        "animation",
        "phases",
        "progress",
    ),  # recording and drawing a run, a sweep
    (
        "optimize",
        "methods",
        "objective",
        "minima",
        "summary",
    ),  # the optimizer, its methods, objectives; minima
    (
        "record",
        "columns",
        "ray_rows",
        "tracking",
        "keys",
        "compose",
        "launchers",
        "team",
    ),  # the sweep record, the store, job keys, configs
    (
        "costs",
        "kernels",
        "passes",
        "model",
        "outcome",
        "settings",
        "tables",
        "files",
        "rules",
        "errors",
    ),  # foundations
    ("pyfunc_model",),  # apart: MLflow copies it into each model, it imports nothing of ours
)
STAGES = ("ingest", "split", "store", "train", "evaluate")
ENTRY_POINTS = (*STAGES, "predict", "compare", "server", "prune", "generate", "phase")
#: Code a stage runs without importing it: MLflow copies the model file and runs it;
#: the sweep driver and the fused launcher's workers are run by the project's Hydra
#: plugins (``hydra_plugins/``).
RUN_BY_PATH = {"train": {"pyfunc_model", "sweep", "fused"}}


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
    runs = set().union(*(transitive_imports(name) for name in {stage} | RUN_BY_PATH.get(stage, set())))
    assert code == runs | RUN_BY_PATH.get(stage, set())


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_no_entry_point_imports_another(entry_point: str) -> None:
    assert not transitive_imports(entry_point) & (set(ENTRY_POINTS) - {entry_point})


#: The most ``pipeline`` modules each entry point may load (``sys.modules`` after importing
#: it in a fresh interpreter): a stage that reads a sweep record loads no picture code.
MODULE_BUDGET = {"evaluate": 13, "store": 8, "prune": 8}
PICTURE_CODE = {"pictures", "landscape", "landscape_page"}


@pytest.mark.parametrize(("entry_point", "budget"), MODULE_BUDGET.items())
def test_stages_that_read_a_sweep_record_load_little(entry_point: str, budget: int) -> None:
    import subprocess
    import sys

    probe = f"import sys, pipeline.{entry_point}; print(*(m for m in sys.modules if m[:9] == 'pipeline.'))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    modules = {name.removeprefix("pipeline.") for name in loaded.stdout.split()}
    assert len(modules) <= budget, sorted(modules)
    assert not modules & PICTURE_CODE
    assert not transitive_imports(entry_point) & PICTURE_CODE  # nor inside a function


def import_graph() -> dict[str, set[str]]:
    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    return {module: pipeline_imports(module) & modules - {module} for module in modules}


def test_every_module_has_a_layer() -> None:
    placed = [module for layer in LAYERS for module in layer]
    assert sorted(placed) == sorted(import_graph()) and len(placed) == len(set(placed))


def test_no_import_runs_up_the_layers_and_there_is_no_circle() -> None:
    layer_of = {module: depth for depth, layer in enumerate(LAYERS) for module in layer}
    graph = import_graph()
    upward = [(a, b) for a, imported in graph.items() for b in imported if layer_of[b] < layer_of[a]]
    assert upward == []
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"a circle: {' -> '.join((*path, module))}"
        if module not in done:
            for imported in sorted(graph[module]):
                visit(imported, (*path, module))
            done.add(module)

    for module in sorted(graph):
        visit(module, ())


@pytest.mark.parametrize("stage", STAGES)
def test_a_config_group_a_stage_reads_is_in_its_params_whole(stage: str) -> None:
    """Adding ``conf/data/new.yaml`` (or an optimizer) must rerun the stages that read
    its group: every file of a group is in the params of each stage listing one."""
    params = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"][stage].get("params", [])
    listed = {next(iter(entry)) if isinstance(entry, dict) else entry for entry in params}
    groups = {Path(name).parent.name for name in listed if Path(name).parent.name != "conf"}
    for group in groups:
        files = {f"conf/{group}/{path.name}" for path in (REPO_ROOT / "conf" / group).glob("*.yaml")}
        assert files <= listed, sorted(files - listed)
