"""Stage ``store``: does the MLflow store still hold what the workspace's outputs refer to?

DVC tracks files, not the MLflow store: after ``rm mlflow.db``, in a copy of the project
or against another server, every file is as DVC left it and ``dvc repro`` would do
nothing, leaving a sweep record whose runs and a champion that no longer exist. This
stage runs on every ``dvc repro`` (``always_changed``) and writes two small marks:

* ``paths.store_train``: whether the store holds a finished run for every job of
  ``paths.sweep`` (``train`` depends on it);
* ``paths.store_evaluate``: whether the registered model ``data.model_name`` has a
  version from the sweep's best run and an alias ``champion`` (``evaluate`` depends on it).

When everything is there, the marks are the same as ``train`` and ``evaluate`` leave
them, so nothing else reruns; when something is missing, the mark changes and DVC
reruns just the stage that makes it again. Run it as ``python -m pipeline.store``.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from pipeline.errors import PipelineError, exit_on_error, first_line
from pipeline.files import resolve
from pipeline.outcome import best_run
from pipeline.record import read_sweep_record
from pipeline.settings import check_overrides, read_model_name
from pipeline.tracking import (
    CHAMPION,
    JOB_KEY_TAG,
    finished_run,
    local_path,
    open_store,
    redact,
    store_exists,
    tracking_uri,
    write_store_mark,
)

log = logging.getLogger("pipeline.store")


def missing_from_store(cfg: DictConfig) -> tuple[list[str], list[str]]:
    """What the store lacks: job keys of the sweep record, and the registered model's parts."""
    uri = tracking_uri(cfg.mlflow.tracking_uri)
    # Relocates a moved or copied project's store, and finds a damaged file before train
    # writes into it; the check creates no store.
    store = (
        open_store(uri, str(cfg.mlflow.experiment), create=False, check=True) if store_exists(uri) else None
    )
    sweep_path = resolve(cfg, cfg.paths.sweep)
    if not sweep_path.is_file():
        return [], []  # nothing refers to the store yet: train runs anyway, its output is missing
    _, runs = read_sweep_record(sweep_path)
    wanted = [run.job_key for run in runs if run.status != "failed"]
    best = best_run(runs)
    name = read_model_name(cfg)
    if store is None:
        return wanted, [f"{name}@{CHAMPION}"] if best else []
    from mlflow.exceptions import MlflowException

    client = store.client
    try:
        if store.experiment_id is None:
            return wanted, [f"{name}@{CHAMPION}"] if best else []
        found = {key: finished_run(client, store.experiment_id, key) for key in wanted}
        # A run whose files are gone (``rm -rf mlartifacts``) is missing too.
        missing_runs = [
            key for key, run in found.items() if run is None or not files_there(run.info.artifact_uri)
        ]
        if best is None:
            return missing_runs, []
        versions = client.search_model_versions(f"name = '{name}'")
        run_keys = set()
        for version in versions:
            if version.run_id:
                run_keys.add(client.get_run(version.run_id).data.tags.get(JOB_KEY_TAG))
        missing_model = [] if best.job_key in run_keys else [f"{name} version of job {best.job_key}"]
        try:
            champion = client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            missing_model.append(f"{name}@{CHAMPION}")
        else:
            if not files_there(client.get_model_version_download_uri(name, champion.version)):
                missing_model.append(f"the files of {name}@{CHAMPION}")
        return missing_runs, missing_model
    except MlflowException as error:
        raise PipelineError(f"MLflow store {redact(uri)}: {first_line(error)}") from None


def files_there(location: str | None) -> bool:
    """Whether a local artifact location (a folder) holds files; a server's is trusted."""
    path = local_path(location or "")
    return path is None or (path.is_dir() and any(path.iterdir()))


def run(cfg: DictConfig) -> tuple[list[str], list[str]]:
    """Write both marks; return what is missing (job keys, model parts)."""
    missing_runs, missing_model = missing_from_store(cfg)
    write_store_mark(resolve(cfg, cfg.paths.store_train), missing_runs)
    write_store_mark(resolve(cfg, cfg.paths.store_evaluate), missing_model)
    if missing_runs:
        log.warning("the store lacks %d runs of the sweep record: train will run again", len(missing_runs))
    if missing_model:
        log.warning("the store lacks %s: evaluate will run again", ", ".join(missing_model))
    return missing_runs, missing_model


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@exit_on_error
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    check_overrides("config")
    main()
