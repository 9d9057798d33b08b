"""Prune old sweeps from the store: their runs, artifacts and model versions.

    python -m pipeline.prune                 # keep the 3 newest sweeps
    python -m pipeline.prune --keep 10       # keep the 10 newest
    python -m pipeline.prune --dry-run       # say what would go, change nothing
    python -m pipeline.prune --versions      # also the model versions nothing refers to

Every sweep adds a model per run and pictures and a page per sweep: stores grow. This
deletes the sweeps (parent runs and their children) older than the ``--keep`` newest,
with their model versions and logged models, and purges them for good with
``mlflow gc`` (which purges every deleted run of the store: also those deleted by hand
in MLflow's UI, and those of an earlier prune that was cut short). It always keeps what
someone relies on: every run a registry alias
points at (the champion) and its sweep, the run ``reports/best_run.json`` names, and the
sweep ``reports/sweep.json`` records. It works on the SQLite store and on a team server
(``python -m pipeline.server``); for another server it deletes through the server and
prints the ``mlflow gc`` command its administrator runs. Extra ``key=value`` arguments
are Hydra overrides of ``conf/config.yaml`` (``mlflow.experiment=...``).

``--versions`` also deletes the versions of the project's registered model
(``data.model_name``) that nothing refers to: no alias, not ``reports/best_run.json``
in the workspace, nor that file as committed on any branch, tag or DVC experiment
(``refs/exps``) of the project's git repository. Their runs stay.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError, exit_on_error
from pipeline.files import resolve
from pipeline.settings import CONF_DIR

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger("pipeline.prune")
KEEP = 3


@dataclass
class Plan:
    """What a prune deletes, and why the rest stays."""

    sweeps: list[str] = field(default_factory=list)  # parent run ids
    runs: list[str] = field(default_factory=list)  # parents and children
    versions: list[tuple[str, str]] = field(default_factory=list)  # (model name, version)
    logged_models: list[str] = field(default_factory=list)
    kept_sweeps: int = 0


def protected_runs(client: MlflowClient, workspace_run: str | None) -> set[str]:
    """Runs someone relies on: those a registry alias points at, and the workspace's best run."""
    runs = {workspace_run} if workspace_run else set()
    for model in client.search_registered_models():
        for number in (model.aliases or {}).values():
            run_id = client.get_model_version(model.name, number).run_id
            if run_id:
                runs.add(run_id)
    return runs


def plan_prune(
    client: MlflowClient,
    experiment_id: str,
    keep: int,
    workspace_sweep: str | None,
    workspace_run: str | None,
) -> Plan:
    """Which sweeps to delete: all but the ``keep`` newest, the workspace's and those with a protected run."""
    from pipeline.tracking import ROLE_TAG, SWEEP_KEY_TAG, children

    parents = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=50000,
    )
    protected = protected_runs(client, workspace_run)
    plan = Plan()
    for rank, parent in enumerate(parents):
        family = children(client, experiment_id, parent.info.run_id)
        members = [parent.info.run_id] + [run.info.run_id for run in family]
        if (
            rank < keep
            or parent.data.tags.get(SWEEP_KEY_TAG) == workspace_sweep
            or protected.intersection(members)
            or parent.info.status == "RUNNING"  # a sweep going on now
        ):
            plan.kept_sweeps += 1
            continue
        plan.sweeps.append(parent.info.run_id)
        plan.runs += members
    doomed = set(plan.runs)
    for model in client.search_registered_models():
        for version in client.search_model_versions(f"name = '{model.name}'"):
            if version.run_id in doomed:
                plan.versions.append((model.name, version.version))
    for run_id in plan.runs:
        found = client.search_logged_models(
            experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'"
        )
        plan.logged_models += [model.model_id for model in found]
    return plan


def referenced_versions(root: Path, best_run: Path) -> set[tuple[str, str]]:
    """(model name, version) that ``best_run.json`` names, in the workspace and as committed
    on every branch, tag and DVC experiment of the git repository at ``root``."""
    texts = [best_run.read_text()] if best_run.is_file() else []
    listed = subprocess.run(
        [
            "git",
            "-C",
            str(root),
            "for-each-ref",
            "--format=%(objectname)",
            "refs/heads",
            "refs/tags",
            "refs/exps",
        ],
        capture_output=True,
        text=True,
    )
    relative = (
        best_run.resolve().relative_to(root.resolve())
        if best_run.resolve().is_relative_to(root.resolve())
        else None
    )
    for commit in listed.stdout.split() if listed.returncode == 0 and relative else []:
        shown = subprocess.run(
            ["git", "-C", str(root), "show", f"{commit}:{relative}"], capture_output=True, text=True
        )
        if shown.returncode == 0:
            texts.append(shown.stdout)
    found = set()
    for text in texts:
        with contextlib.suppress(ValueError, AttributeError, KeyError, TypeError):
            chosen = json.loads(text)
            name = str(chosen["model"]).removeprefix("models:/").split("@")[0]
            found.add((name, str(chosen["model_version"])))
    return found


def unreferenced_versions(client: MlflowClient, name: str, referenced: set[tuple[str, str]]) -> list[str]:
    """Versions of the registered model ``name`` that no alias and nothing in ``referenced`` names."""
    from mlflow.exceptions import MlflowException

    try:
        aliased = {str(number) for number in (client.get_registered_model(name).aliases or {}).values()}
    except MlflowException:  # no such model yet
        return []
    versions = client.search_model_versions(f"name = '{name}'")
    return sorted(
        (
            str(version.version)
            for version in versions
            if str(version.version) not in aliased and (name, str(version.version)) not in referenced
        ),
        key=int,
    )


def gc_command(uri: str, server_folder: Path) -> tuple[list[str], dict[str, str]] | None:
    """``mlflow gc`` of every deleted run and model in the store, where this machine can run
    it: on a SQLite store, or on the team server started from ``server_folder``."""
    from pipeline.team import load_place
    from pipeline.tracking import sqlite_file

    mlflow = [sys.executable, "-m", "mlflow", "gc", "--tracking-uri", uri]
    if sqlite_file(uri) is not None:
        return [*mlflow, "--backend-store-uri", uri], dict(os.environ)
    place = load_place(server_folder)
    if place is not None and uri.rstrip("/") == place.uri and place.password_file.is_file():
        env = dict(os.environ) | {"PGPASSFILE": str(place.password_file), "MLFLOW_TRACKING_URI": uri}
        return [*mlflow, "--backend-store-uri", place.backend_uri], env
    return None


def prune(
    uri: str,
    experiment: str,
    keep: int,
    sweep_record: Path,
    best_run: Path,
    dry_run: bool,
    server_folder: Path,
    model_name: str | None = None,
    root: Path = Path("."),
) -> Plan:
    """Delete and purge what :func:`plan_prune` chooses; return the plan. With
    ``model_name``, also that model's versions nothing refers to (``--versions``), the
    git repository at ``root`` looked in for committed ``best_run`` files."""
    from pipeline.record import read_sweep_record
    from pipeline.tracking import open_store, sqlite_file, store_lock

    if keep < 1:
        raise PipelineError(f"--keep: expected at least 1 sweep to keep, got {keep}")
    # Also moves a copied or moved project's paths to its own: gc must delete this
    # store's files, never those of the project it was copied from.
    store = open_store(uri, experiment, create=False)
    client, experiment_id = store.client, store.experiment
    workspace_sweep = read_sweep_record(sweep_record)[0] if sweep_record.is_file() else None
    workspace_run = json.loads(best_run.read_text()).get("run_id") if best_run.is_file() else None
    plan = plan_prune(client, experiment_id, keep, workspace_sweep, workspace_run)
    if model_name is not None:
        referenced = referenced_versions(root, best_run)
        doomed = set(plan.versions)
        plan.versions += [
            (model_name, number)
            for number in unreferenced_versions(client, model_name, referenced)
            if (model_name, number) not in doomed
        ]
    if dry_run:
        return plan
    for name, version in plan.versions:
        client.delete_model_version(name, version)
    for model_id in plan.logged_models:
        client.delete_logged_model(model_id)
    for run_id in plan.runs:
        client.delete_run(run_id)
    command = gc_command(uri, server_folder)
    if command is None:
        print(
            "deleted through the server; to free their space, its administrator runs on the server: "
            f"mlflow gc --backend-store-uri <its database> --tracking-uri {uri}"
        )
        return plan
    arguments, env = command
    done = subprocess.run(arguments, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise PipelineError(f"mlflow gc failed: {detail[-1] if detail else done.returncode}")
    database = sqlite_file(uri)
    if database is not None:  # SQLite keeps the freed pages in the file until it is rewritten
        with store_lock(uri), contextlib.closing(sqlite3.connect(database)) as connection:
            connection.execute("VACUUM")
    return plan


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    from hydra import compose, initialize_config_dir

    from pipeline.settings import read_model_name
    from pipeline.team import default_place
    from pipeline.tracking import tracking_uri

    parser = argparse.ArgumentParser(prog="python -m pipeline.prune", description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=int, default=KEEP, help=f"newest sweeps to keep (default {KEEP})")
    parser.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing")
    parser.add_argument("--tracking-uri", help="MLflow store (default: as the pipeline's)")
    parser.add_argument(
        "--server-folder",
        type=Path,
        default=default_place().folder,
        help="the team server's folder, to purge its database (default: .server/)",
    )
    parser.add_argument(
        "--versions",
        action="store_true",
        help="also delete the model's versions that no alias, workspace or committed best_run.json names",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/config.yaml")
    options = parser.parse_args(argv)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(config_name="config", overrides=options.overrides)
    uri = tracking_uri(cfg.mlflow.tracking_uri, options.tracking_uri)
    plan = prune(
        uri,
        cfg.mlflow.experiment,
        options.keep,
        resolve(cfg, cfg.paths.sweep),
        resolve(cfg, cfg.paths.best_run),
        options.dry_run,
        options.server_folder,
        read_model_name(cfg) if options.versions else None,
        resolve(cfg, "."),
    )
    verb = "would delete" if options.dry_run else "deleted"
    print(
        f"{verb} {len(plan.sweeps)} sweeps ({len(plan.runs)} runs, {len(plan.versions)} model versions, "
        f"{len(plan.logged_models)} logged models); kept {plan.kept_sweeps} sweeps"
    )


if __name__ == "__main__":
    main()
