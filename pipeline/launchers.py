"""What the project knows about each Hydra launcher, in one table.

A sweep asks it three things: whether the jobs run in the launching process (then they
draw their own progress line), whether joblib's workers can be started while the sweep
is planned, and whether the jobs run on other machines (which a SQLite file cannot
serve). A launcher not in the table runs jobs in other processes of this machine.
The rule for how many workers ``hydra.launcher.n_jobs`` means lives here too, for the
joblib launcher and the fused one alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf

from pipeline.errors import PipelineError

log = logging.getLogger("pipeline.sweep")

#: Where a Ray launcher finds a cluster of other machines.
RAY_ADDRESS = "hydra.launcher.ray.init.address"


@dataclass(frozen=True)
class Launcher:
    """A launcher's traits, as the sweep needs them."""

    name: str  # how a user chooses it: hydra/launcher=<name>
    in_process: bool = False  # the jobs run in the launching process, one after another
    warm_up: bool = False  # joblib: its workers can be started while the sweep is planned
    elsewhere: Literal["never", "always", "with an address"] = "never"  # jobs on other machines

    def remote(self, config: DictConfig) -> str | None:
        """How the user chose a launcher whose jobs run on other machines, else None."""
        if self.elsewhere == "always":
            return f"hydra/launcher={self.name}"
        if self.elsewhere == "with an address" and OmegaConf.select(config, RAY_ADDRESS):
            return f"hydra/launcher={self.name} with {RAY_ADDRESS}"
        return None


#: Every launcher the project knows, by the class Hydra instantiates (``hydra.launcher._target_``).
LAUNCHERS = {
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher": Launcher("basic", in_process=True),
    "hydra_plugins.downhill_sweeper.FusedLauncher": Launcher("fused", in_process=True),
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher": Launcher("joblib", warm_up=True),
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher": Launcher("submitit_local"),
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher": Launcher(
        "submitit_slurm", elsewhere="always"
    ),
    "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher": Launcher("ray", elsewhere="with an address"),
    "hydra_plugins.hydra_ray_launcher.ray_aws_launcher.RayAWSLauncher": Launcher(
        "ray_aws", elsewhere="always"
    ),
}


def launcher_of(config: DictConfig) -> Launcher:
    """The traits of the launcher ``config`` chooses (``hydra.launcher._target_``)."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
    return LAUNCHERS.get(target, Launcher(target.rsplit(".", 1)[-1] or "unknown"))


def traits(launcher: Any) -> Launcher:
    """The traits of a launcher object, by its class (as Hydra named it in ``_target_``)."""
    kind = type(launcher)
    return LAUNCHERS.get(f"{kind.__module__}.{kind.__qualname__}", Launcher(kind.__qualname__))


def worker_count(n_jobs: Any, jobs: int) -> int:
    """How many worker processes ``hydra.launcher.n_jobs`` means for ``jobs`` jobs on this
    machine, counted as joblib counts them (-1: one per core, -2: all but one, …), never
    more than the jobs nor fewer than one; 0 and non-numbers are refused. The joblib
    launcher's workers and the fused launcher's follow this one rule."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        raise PipelineError(
            f"hydra.launcher.n_jobs: expected a whole number of workers other than 0 "
            f"(-1: one per core), got {n_jobs!r}"
        )
    cores = machine_cores()
    if n_jobs > cores:
        log.warning(
            "hydra.launcher.n_jobs=%d is more than this machine's %d cores: jobs share them", n_jobs, cores
        )
    wanted = n_jobs if n_jobs > 0 else cores + 1 + n_jobs
    return max(min(wanted, jobs), 1)


def machine_cores() -> int:
    """The cores this process may use, as joblib counts them (affinity, container quotas)."""
    from joblib import cpu_count

    return int(cpu_count())
