"""The project's Hydra sweeper: Hydra's basic grid, recorded and resumed in MLflow.

Hydra finds sweepers only in the ``hydra_plugins`` namespace package, so the class
lives here; what it does is in :func:`pipeline.sweep.run_sweep`. ``conf/train.yaml``
selects it with ``hydra.sweeper._target_``. The grid syntax, the launchers and every
command-line form are Hydra's own. The launcher it sets up composes each job's config
with :class:`pipeline.compose.QuickComposer`: the configs Hydra composes, in a fraction
of the time.
"""

from __future__ import annotations

from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class DownhillSweeper(BasicSweeper):
    """Hydra's basic sweeper whose sweep is recorded in MLflow (see :mod:`pipeline.sweep`)."""

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        from hydra.types import HydraContext

        from pipeline.compose import QuickComposer

        quick = HydraContext(
            config_loader=QuickComposer(hydra_context.config_loader), callbacks=hydra_context.callbacks
        )
        super().setup(hydra_context=quick, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        from pipeline.sweep import run_sweep

        return run_sweep(self, arguments)
