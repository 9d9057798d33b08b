"""The command-line check: keys of the chosen configs pass, typos are named, in-process."""

from __future__ import annotations

import pytest

from pipeline.settings import override_problem
from tests.helpers import ComposeFn


@pytest.mark.parametrize(
    "arguments",
    [
        ["optimizer=sgd", "optimizer.batch_size=256"],
        ["optimizer=momentum", "optimizer.beta=0.5"],
        ["optimizer=adam", "optimizer.b1=0.8"],
        ["--multirun", "optimizer=gd,adam", "optimizer.b1=0.8"],  # the union of a swept group's keys
        ["++optimizer.anything=1"],  # forced: Hydra's to judge
        ["hydra/launcher=basic", "hydra.job.chdir=false"],  # Hydra's own
    ],
)
def test_keys_of_the_chosen_configs_pass(arguments: list[str]) -> None:
    assert override_problem(arguments, "train") is None


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        (["+optimizer.lrr=0.5"], "unknown setting 'optimizer.lrr'; did you mean 'optimizer.lr'?"),
        (["optimizer.batch_size=256"], "unknown setting 'optimizer.batch_size'"),  # gd has no batches
        (["+optimizer=sgdd"], "optimizer=sgdd: no such optimizer config; the choices are: adam, back"),
        (["optimizer=gd,adamw"], "optimizer=adamw: no such optimizer config"),
        (["~model.degre"], "unknown setting 'model.degre'; did you mean 'model.degree'?"),
    ],
)
def test_typos_are_named(arguments: list[str], problem: str) -> None:
    found = override_problem(arguments, "train")
    assert found is not None and found.startswith(problem)


@pytest.mark.parametrize("name", ["a/../b c", "", "has space", "-leading"])
def test_bad_registered_model_names_are_named(compose_cfg: ComposeFn, name: str) -> None:
    from pipeline.errors import PipelineError
    from pipeline.settings import read_model_name

    with pytest.raises(PipelineError, match=r"data\.model_name: expected a model name of letters"):
        read_model_name(compose_cfg(f"data.model_name='{name}'"))
    assert read_model_name(compose_cfg()) == "house-price"
