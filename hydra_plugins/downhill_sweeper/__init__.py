"""The project's Hydra sweeper: Hydra's basic grid, recorded and resumed in MLflow.

Hydra finds sweepers only in the ``hydra_plugins`` namespace package, so the class
lives here; what it does is in :func:`pipeline.sweep.run_sweep`. The fused launcher
(``hydra/launcher=fused``) lives here for the same reason. ``conf/train.yaml``
selects it with ``hydra.sweeper._target_``. The grid syntax, the launchers and every
command-line form are Hydra's own. The launcher it sets up composes each job's config
with :class:`pipeline.compose.QuickComposer`: the configs Hydra composes, in a fraction
of the time.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from omegaconf import DictConfig

if TYPE_CHECKING:
    from pipeline.fused import WorkAhead


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

    def outcomes_ahead(
        self, tasks: list[DictConfig], keys: list[str], fitted: dict[str, Any]
    ) -> list[Any] | None:
        """In the sweep's forked copy: the outcome each job will record, where that is
        quick to know (:func:`pipeline.train.expected_outcomes`), for the pictures to be
        drawn while the runs are recorded."""
        from pipeline.train import expected_outcomes

        return expected_outcomes(tasks, keys, fitted)


class FusedLauncher(BasicLauncher):
    """Hydra's basic launcher whose jobs are fitted ahead, together, in groups that share
    the rows and the cost (:func:`pipeline.train.prefit`): one pass over the rows per
    round serves every run of a group. Then each job records its own MLflow run, in
    ``n_jobs`` forked copies of this process (:mod:`pipeline.fused`; -1: one per core),
    or here where a fork is unsafe. Chosen with ``hydra/launcher=fused``."""

    def __init__(self, n_jobs: int = -1) -> None:
        super().__init__()
        self.n_jobs = n_jobs
        self.ahead: WorkAhead | None = None  # the sweep's work ahead, whose later pieces are fits
        self.fitted_ahead: dict[str, Any] = {}  # those taken, by job key: each batch takes its own

    def fits_ahead(self, tasks: list[DictConfig], keys: list[str]) -> Iterator[dict[str, Any]]:
        """In the sweep's forked copy that works while it opens its store (MLflow's
        import, some 2 s on one core, :class:`pipeline.fused.WorkAhead`): the fits of the
        jobs that iterate on the rows' statistics (``tasks``: each job's task config;
        ``keys``: their keys), a few jobs at a time (:func:`pipeline.train.fits_ahead`)."""
        from pipeline.train import fits_ahead

        return fits_ahead(tasks, keys)

    def fits_from(self, ahead: WorkAhead) -> None:
        """Take the fits :meth:`fits_ahead` made in ``ahead`` at the launch; what was not
        finished by then is fitted as before, by the processes that record the jobs."""
        self.ahead, self.fitted_ahead = ahead, {}

    def workers(self, jobs: int) -> int:
        """How many processes record ``jobs`` jobs (1: this one)."""
        from pipeline.launchers import worker_count
        from pipeline.passes import fork_is_safe

        return worker_count(self.n_jobs, jobs) if fork_is_safe() else 1

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.utils import configure_log, setup_globals

        from pipeline.compose import task_config
        from pipeline.fused import record_jobs
        from pipeline.train import prefit, unclaimed_prefits

        assert self.hydra_context is not None and self.config is not None  # set up by Hydra
        assert self.task_function is not None
        setup_globals()
        loader, master = self.hydra_context.config_loader, self.config
        # The fits need the task's part of each job's config alone (a third of the time to
        # compose); the whole of it is composed by the process that records the job.
        tasks = [task_config(loader, master, list(overrides)) for overrides in job_overrides]
        workers = self.workers(len(tasks))
        drawing_ahead = False
        if self.ahead is not None:  # the first batch: the fits made ahead by now, all taken
            # The copy goes on where it draws the sweep's pictures (pipeline.sweep.draw_sweep_ahead).
            for piece in self.ahead.take(stop=False):
                if isinstance(piece, dict):
                    self.fitted_ahead.update(piece)
            drawing_ahead, self.ahead = self.ahead.pid is not None, None
        left = prefit(tasks, workers, self.fitted_ahead)

        def fit_share(indices: Container[int] | None) -> None:  # in the process that records those jobs
            for group in left:
                group.fit(indices)

        def compose(index: int) -> DictConfig:  # in the process that records job ``index``
            return loader.load_sweep_config(master, list(job_overrides[index]))

        logging.getLogger("pipeline.sweep").info(
            "fused: recording %d runs in %d process%s", len(tasks), workers, "es" if workers > 1 else ""
        )
        try:
            statuses = record_jobs(
                self.task_function,
                compose,
                len(tasks),
                initial_job_idx,
                workers,
                self.hydra_context.callbacks,
                fit_share,
                draws_after=not drawing_ahead,
            )
        finally:
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            unclaimed = unclaimed_prefits()  # the workers took their copies of the fits
        if unclaimed and not statuses:  # a job key computed here differs from the job's own: a bug
            logging.getLogger("pipeline.train").warning(
                "fused: %d fits made ahead were not taken by their jobs, which fitted alone", unclaimed
            )
        broken = [status for status in statuses if status != 0]
        if broken:
            logging.getLogger("pipeline.sweep").warning(
                "fused: %d of %d workers ended with status %s; their unfinished jobs are reported failed",
                *(len(broken), len(statuses), broken),
            )
        # The sweep reads every outcome back from MLflow, not from here.
        return [JobReturn(overrides=list(overrides)) for overrides in job_overrides]


# A plain node, not a dataclass: Hydra's plugin scan runs this module before it is in
# sys.modules, where a dataclass cannot resolve its annotations.
ConfigStore.instance().store(
    group="hydra/launcher",
    name="fused",
    node={"_target_": "hydra_plugins.downhill_sweeper.FusedLauncher", "n_jobs": -1},
    provider="downhill",
)
