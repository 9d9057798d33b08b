"""MLflow bookkeeping: where runs are stored, the experiment, and a sweep's parent run.

The default store is a SQLite file at the repository root (``mlflow.db``) with the
artifacts beside it (``mlartifacts/``); ``mlflow.tracking_uri`` in the config, or the
``MLFLOW_TRACKING_URI`` environment variable (which wins), points elsewhere.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import gc
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pipeline.errors import PipelineError, fail, first_line
from pipeline.outcome import RunSummary

if TYPE_CHECKING:
    from mlflow.entities import DatasetInput, Run, RunInfo
    from mlflow.store.artifact.artifact_repo import ArtifactRepository
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)


#: The config key through which the sweeper tells each job its parent run.
PARENT_KEY = "mlflow.parent_run_id"
#: The training split's MD5 as the sweep planned it: a job elsewhere must read the same.
SPLIT_KEY = "mlflow.train_md5"
#: Where the sweeper gives each job the commit the sweep runs (its run's ``git_commit`` tag).
COMMIT_KEY = "mlflow.git_commit"
#: Where the sweeper gives each job its key, as the sweep worked it out on the split of
#: ``SPLIT_KEY`` (:func:`pipeline.keys.job_key`: the resolved settings hashed, 2–6 ms a job).
PLANNED_KEY = "mlflow.job_key"
#: MLflow's tag for a run's parent: the UI nests a sweep's runs under it.
PARENT_RUN_TAG = "mlflow.parentRunId"
#: For the progress line of jobs started by the sweeper on this machine: how many jobs,
#: and the best training MSE so far (cosmetic: jobs elsewhere simply do not show them).
SWEEP_SIZE_ENV = "DOWNHILL_SWEEP_SIZE"
BEST_MSE_ENV = "DOWNHILL_BEST_TRAIN_MSE"
#: The process that started the sweep: jobs in other processes draw no progress line.
LAUNCHER_PID_ENV = "DOWNHILL_LAUNCHER_PID"
#: Tags that tie MLflow runs to the sweep record: a run's role (sweep or train), its
#: job key and overrides, a sweep's key; and each run's outcome artifact.
ROLE_TAG = "downhill.role"
JOB_KEY_TAG = "downhill.job_key"
JOB_OVERRIDES_TAG = "downhill.job_overrides"
SWEEP_KEY_TAG = "downhill.sweep_key"
#: Inside ``dvc exp run``, DVC names the experiment in this variable; runs carry it as this tag.
DVC_EXPERIMENT_ENV = "DVC_EXP_NAME"
DVC_EXPERIMENT_TAG = "dvc.experiment"
#: A run's artifacts: its outcome record, read back by the sweep; its whole cost curve
#: (MLflow's charts hold a few hundred points of it).
OUTCOME = "outcome.json"
CURVE = "loss_curve.csv"
SQLITE_PREFIX = "sqlite:///"
#: The registry alias that names the model to use (moved by ``evaluate``).
CHAMPION = "champion"


def repository_root() -> Path:
    """The project folder, also when DVC runs an experiment in a temporary copy.

    ``dvc exp run --temp`` and ``dvc queue`` work in ``<repo>/.dvc/tmp/exps/<name>``;
    their runs belong in the repository's own store, not in the throw-away copy.
    """
    here = Path(__file__).resolve().parents[1]
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return here


#: The user's MLFLOW_TRACKING_URI, read once at start-up: MLflow's ``set_tracking_uri``
#: writes the variable too, and a store this process chose must not pass for the user's.
USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def tracking_uri(configured: str | None, given: str | None = None) -> str:
    """The store to use: ``given`` (a command's ``--tracking-uri``), else
    ``MLFLOW_TRACKING_URI`` as the user set it, else the configured URI, else SQLite at
    the root. A URI with a password in it is refused: it would be written into Hydra's
    logs, the runs' records and the console (MLflow prints it with every run's link)."""
    uri = given or USER_TRACKING_URI or configured or SQLITE_PREFIX + str(repository_root() / "mlflow.db")
    if PASSWORD_IN_URI.search(uri):
        where = "mlflow.tracking_uri"
        if given or USER_TRACKING_URI:
            where = "--tracking-uri" if given else "MLFLOW_TRACKING_URI"
        raise PipelineError(
            f"{where}: {redact(uri)} holds a password, which would be written to logs and records; "
            "give the URI without it and set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    return uri


#: ``scheme://user:password@host``: a URI with a login in it (the user name as group 1).
PASSWORD_IN_URI = re.compile(r"(//[^/:@]+):[^/@]*@")


def redact(uri: str) -> str:
    """The URI without a password (``http://user:secret@host`` → ``http://user:***@host``)."""
    return PASSWORD_IN_URI.sub(r"\1:***@", uri)


#: Where ``make ui`` serves a store on this machine (SQLite).
LOCAL_UI = "http://127.0.0.1:5000"
_LOGIN = re.compile(r"//[^/@]+@")


def ui_link(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's page of a run, or of an experiment's runs, on the store's own
    address (a team server's; for SQLite, where ``make ui`` serves it), in the
    machine-learning view (MLflow 3 otherwise picks the GenAI one for a new browser)."""
    base = _LOGIN.sub("//", uri).rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI
    page = f"#/experiments/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")
    return f"{base}/{page}?workflowType=machine_learning"


#: Experiment tags holding a shared view of the runs table; MLflow's UI opens one from
#: a link with ``viewStateShareKey=<key>`` (its "Share" button makes them the same way).
SHARED_VIEW_TAG = "mlflow.sharedViewState."
#: The columns a sweep's view shows: the numbers that compare its runs.
SWEEP_COLUMNS = (
    "tags.`status`",
    "metrics.`train_mse`",
    "metrics.`log10_optimality_gap`",
    "metrics.`optimality_gap`",
    "metrics.`n_iter`",
    "params.`optimizer.lr`",
    "params.`model.init.theta0`",
    "params.`model.init.theta1`",
)


def sweep_link(uri: str, client: MlflowClient, experiment_id: str, parent_id: str) -> str:
    """A link to the MLflow UI that opens the sweep ``parent_id``'s runs, best first, with
    :data:`SWEEP_COLUMNS`: a shared view stored as an experiment tag (no set-up)."""
    state = {
        "searchFilter": f"tags.mlflow.parentRunId = '{parent_id}'",
        "orderByKey": "metrics.`train_mse`",
        "orderByAsc": True,
        "selectedColumns": list(SWEEP_COLUMNS),
    }
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + parent_id, json.dumps(state))
    return ui_link(uri, experiment_id) + f"&viewStateShareKey={parent_id}"


def ui_links(uri: str, experiment: str) -> list[str]:
    """What ``make ui`` prints: the experiment's runs, and the newest sweep's view."""
    store = open_store(uri, experiment)
    lines = [f"the runs: {ui_link(uri, store.experiment)}"]
    newest = store.client.search_runs(
        [store.experiment],
        filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if newest:
        link = sweep_link(uri, store.client, store.experiment, newest[0].info.run_id)
        lines.append(f"the newest sweep ({newest[0].info.run_name}): {link}")
    return lines


class StoreCheck(Callback):
    """Checks the tracking URI before Hydra writes anything (its ``.hydra/`` copy of the
    command line, its log): a refused URI ends in one line and exit 2 with nothing written.
    ``conf/hydra_output.yaml`` installs it for every entry point."""

    def _check(self, config: DictConfig) -> None:
        try:
            tracking_uri(OmegaConf.select(config, "mlflow.tracking_uri", default=None))
        except PipelineError as error:
            fail(str(error))

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)


def store_exists(uri: str) -> bool:
    """False only for a SQLite store whose file is not there (a server is asked when used)."""
    database = sqlite_file(uri)
    return database is None or database.is_file()


def require_store(uri: str) -> None:
    """For commands that only read: refuse, rather than create, a store that is not there."""
    if not store_exists(uri):
        raise PipelineError(f"no MLflow store at {sqlite_file(uri)}; run `dvc repro` to train a model")


def sqlite_file(uri: str) -> Path | None:
    return Path(uri[len(SQLITE_PREFIX) :]) if uri.startswith(SQLITE_PREFIX) else None


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialize store creation and sweep claims on a SQLite store (a no-op for a server)."""
    database = sqlite_file(uri)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def client_for(uri: str) -> MlflowClient:
    """An MLflow client for the store at ``uri`` (imports MLflow, about a second).

    The first call in a process also freezes what is alive then out of the garbage
    collector's scans (``gc.freeze``): MLflow's, SQLAlchemy's and pandas' modules are
    some 300,000 objects that live as long as the process, and a sweep scanned them
    again and again, about 3 s of a 100-run sweep, and once more at exit. For the same
    reason the collector is off while they are imported (1.8 → 1.45 s).
    """
    first = not _frozen
    collecting = first and gc.isenabled()
    if collecting:
        gc.disable()
    try:
        from mlflow.tracking import MlflowClient

        _quiet_store_logs()
        if first:  # before any store's engine connects
            _sync_write_ahead_logs_less()
        client = MlflowClient(tracking_uri=uri)  # imports the store's modules
        if first:
            _frozen.append(True)
            gc.freeze()
            atexit.register(close_stores)
    finally:
        if collecting:
            gc.enable()
    return client


def store_engines() -> list[Any]:
    """The SQLAlchemy engines of the SQL stores (tracking and registry) MLflow opened in
    this process: MLflow keeps one per store for as long as the process lives."""
    engines = []
    for module in ("mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store"):
        store_class = getattr(sys.modules.get(module), "SqlAlchemyStore", None)
        engines += list(getattr(store_class, "_engine_map", {}).values())
    return engines


def close_stores() -> None:
    """Close this process's connections to MLflow's SQL stores, and put each SQLite
    store it switched to write-ahead logging back at rest (run at exit, from
    :func:`client_for`).

    MLflow never closes them, and the objects frozen by ``gc.freeze`` are not freed at
    exit: the write-ahead log (:func:`write_ahead`) then stayed beside the store after
    every stage, holding its latest runs, and a store in that mode cannot be opened
    at all on a read-only disk once its log is gone. The last process to close a store
    folds the log back into the file and returns it to SQLite's rollback journal, so
    that a store at rest is one ordinary file: whole when copied alone, readable
    anywhere. Where another process still has it open, that one does it.
    """
    for engine in store_engines():
        with contextlib.suppress(Exception):  # at exit: a store that failed says so elsewhere
            engine.dispose()
    while _logging_ahead:
        _set_journal_mode(_logging_ahead.pop(), "DELETE")


#: The SQLite stores this process put in write-ahead-log mode (:func:`close_stores`).
_logging_ahead: set[Path] = set()


def _quiet_store_logs() -> None:
    """MLflow announces store creation and its input-example check at INFO on every run:
    noise in a sweep and between a mistake and its one-line message. Its SQL store also
    logs every database error with its traceback (some 40 lines) before raising it: the
    project says each in one line where it is caught."""
    for name in ("mlflow.pyfunc", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


#: Whether this process froze its imports (see :func:`client_for`).
_frozen: list[bool] = []


def _sync_write_ahead_logs_less() -> None:
    """Have this process's SQLite connections to a store in write-ahead-log mode sync
    at checkpoints, not at every commit (``PRAGMA synchronous=NORMAL``, SQLite's advice
    for that mode).

    A run is some 17 transactions; at every commit SQLite's default waits for the
    disk, some 2.7 ms a commit on the development machine, while the
    transaction holds the store's lock: much of a run's MLflow time, and the other
    worker of a sweep waits as well. A process killed (``kill -9``) loses nothing
    committed this way; a power cut or a crash of the machine may undo the last
    commits, never damage the file (a resumed sweep runs those jobs again). A
    connection to a store in rollback-journal mode (at rest, or held open by another
    process when a stage began) keeps syncing every commit: there, fewer syncs could
    damage the file on a power cut.
    """
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    def fewer_syncs(connection: Any, _: Any) -> None:
        is_sqlite = isinstance(connection, sqlite3.Connection)
        if is_sqlite and connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            connection.execute("PRAGMA synchronous=NORMAL")

    event.listen(Pool, "connect", fewer_syncs)


def context_tags() -> dict[str, str]:
    """The tags MLflow's context gives a run or a model of this process (user, source,
    git commit), worked out once: ``mlflow.start_run`` works them out at every call."""
    if not _context:
        from mlflow.tracking.context import registry

        _context.update(registry.resolve_tags(None))
    return dict(_context)


_context: dict[str, str] = {}


@dataclass(frozen=True)
class OpenStore:
    """A store opened by :func:`open_store`: its URI, a client, and the experiment's id
    (None where a command that only reads found no such experiment)."""

    uri: str
    client: MlflowClient
    experiment_name: str | None
    experiment_id: str | None

    @property
    def experiment(self) -> str:
        """The experiment's id; a command that only reads is refused where it is missing."""
        if self.experiment_id is None:
            where = redact(self.uri)
            raise PipelineError(f"no experiment {self.experiment_name!r} in {where}; run `dvc repro`")
        return self.experiment_id


def open_store(
    uri: str, experiment: str | None = None, *, create: bool = True, check: bool = False
) -> OpenStore:
    """Open the store at ``uri`` for an entry point of the project: every one opens it here.

    ``create``: make the store and the experiment where they are missing (the stages
    that write); without it (commands that only read) a SQLite store that is not there
    is refused, and nothing is written unless the store must be relocated.
    ``check``: first run SQLite's ``PRAGMA quick_check``, so that a store corrupt in the
    middle of its file is found before anything writes into it.

    A SQLite store records the folder it was made in. Opened in another folder (the
    project was moved or copied), every path that MLflow stores under the old folder
    is pointed under the new one first (:func:`relocate_store`), so that a copy never
    reads nor writes the original's files and a moved project finds its models. A
    server's store is never relocated. Any failure is one line (:class:`PipelineError`).
    """
    if experiment is not None and (not isinstance(experiment, str) or not experiment.strip()):
        raise PipelineError(f"mlflow.experiment: expected a non-empty name, got {experiment!r}")
    database = sqlite_file(uri)
    if not create:
        require_store(uri)
    try:
        with store_lock(uri) if create else contextlib.nullcontext():
            return _open_store(uri, database, experiment, create, check)
    except PipelineError:
        raise
    except Exception as error:  # a corrupt, read-only, locked or outdated store; a bad URI
        raise PipelineError(store_problem(uri, error)) from None


def _open_store(
    uri: str, database: Path | None, experiment: str | None, create: bool, check: bool
) -> OpenStore:
    """:func:`open_store`, under the store lock where ``create``."""
    if database is not None and create and not database.exists():
        new_sqlite_store(database)
    if database is not None and database.is_file():
        if check:
            quick_check(database)
        if create:
            write_ahead(database)
            _logging_ahead.add(database)
        old = moved_from(database)
        if old is not None:
            try:
                with contextlib.nullcontext() if create else store_lock(uri):
                    relocate_store(database)
            except OSError as error:  # a read-only project: the lock file cannot be made
                raise PipelineError(relocation_refused(database, old, error)) from None
    client = client_for(uri)
    experiment_id = None
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = str(found.experiment_id)
        elif create:
            location = artifact_root(database) if database else None
            experiment_id = str(client.create_experiment(experiment, artifact_location=location))
    if database is not None and create:
        record_folder(database)
    return OpenStore(uri, client, experiment, experiment_id)


def new_sqlite_store(database: Path) -> None:
    """Make a new, empty SQLite store at ``database``, put in place whole.

    MLflow makes a store by running its schema migrations, some fifty of them, about
    2.5 s of Python (loading each migration, reflecting tables), a sweep's longest
    serial step on a new project. So they are run once for each set of the versions that
    shape the schema (MLflow, alembic, SQLAlchemy, SQLite), into a template in
    :func:`cache_folder`, and a new store is a copy of it (milliseconds); MLflow
    then adds its ``Default`` experiment as it does to a store it made itself. A test
    compares such a store with one MLflow makes from nothing. Where the templates'
    folder cannot be written, the migrations run for this store.

    The store is built in a scratch file beside it, synced to disk, then linked into
    place (never over a store another process made meanwhile): a process that dies
    midway leaves no half-made store. Called under :func:`store_lock`, so any scratch
    file already beside ``database`` is a dead process's, and is removed; so is a
    deleted store's log, journal or shared-memory index (left where the store was deleted
    while a process, the MLflow UI say, held it open, or by a process killed mid-write):
    SQLite would read a stale log into the new file and find it malformed.
    """
    for left in database.parent.glob(f"{database.name}.new-*"):
        left.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm", "-journal"):
        database.with_name(database.name + suffix).unlink(missing_ok=True)
    template = _store_template()
    if template is not None:
        made_whole(database, lambda scratch: shutil.copyfile(template, scratch))
    else:
        made_whole(database, _migrated)


#: Where what is made once per machine is kept, if not in :func:`cache_folder`'s default.
CACHE_ENV = "DOWNHILL_CACHE_DIR"


def cache_folder() -> Path:
    """The folder of what is made once per machine and versions (the empty store, the
    models' templates): ``$DOWNHILL_CACHE_DIR``, else ``downhill/`` in the user's cache
    folder (``$XDG_CACHE_HOME``, else ``~/.cache``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "downhill"


def _store_template() -> Path | None:
    """The empty store of this process's MLflow, alembic, SQLAlchemy and SQLite (made on
    first use); None where it cannot be kept."""
    import sqlite3
    from importlib.metadata import PackageNotFoundError, version

    try:  # the installed distributions' versions (importing alembic for its own: 0.3 s)
        versions = "-".join(f"{name}{version(name)}" for name in ("mlflow", "alembic", "sqlalchemy"))
    except PackageNotFoundError:  # installed otherwise (mlflow-skinny): no template to trust
        return None
    template = cache_folder() / f"empty-store-{versions}-sqlite{sqlite3.sqlite_version}.db"
    if template.is_file():
        return template
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        made_whole(template, _migrated)
    except OSError:  # a read-only or full cache folder: each new store is migrated
        return None
    return template


def _migrated(database: Path) -> None:
    """Run MLflow's schema migrations on a new file, unsynced (it is a scratch file)."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(f"{SQLITE_PREFIX}{database}", poolclass=NullPool)

    def unsynced(connection: Any, _: Any) -> None:
        connection.execute("PRAGMA synchronous=OFF")

    sqlalchemy.event.listen(engine, "connect", unsynced)
    _quiet_store_logs()
    try:
        _initialize_tables(engine)  # type: ignore[no-untyped-call]
    finally:
        engine.dispose()


def made_whole(target: Path, build: Callable[[Path], object]) -> None:
    """Make ``target`` (a file or a folder) by ``build`` on a scratch path beside it (this
    process's), then :func:`_publish` it; the scratch is gone afterwards, whatever happened."""
    scratch = target.with_name(f"{target.name}.new-{os.getpid()}")
    try:
        _remove(scratch)  # left by a process with this PID that died
        build(scratch)
        _publish(scratch, target)
    finally:
        with contextlib.suppress(OSError):  # its folder may be what failed
            _remove(scratch)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _publish(scratch: Path, target: Path) -> None:
    """Sync ``scratch`` and put it in place as ``target``, unless one is there already: a
    file is linked, a folder (its files synced) renamed."""
    folder = scratch.is_dir()
    for path in [*sorted(scratch.rglob("*")), scratch] if folder else [scratch]:
        _sync(path)
    try:
        if folder:
            scratch.rename(target)
        else:
            os.link(scratch, target)
    except FileExistsError:  # made meanwhile by another process
        pass
    except OSError:  # a folder made meanwhile (not empty), or a file system without hard links
        if not target.exists():
            os.replace(scratch, target)
    _sync(target.parent)


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_ahead(database: Path) -> None:
    """Put a SQLite store in write-ahead-log mode (a mark in its file) for the stages
    that write into it, unless another process holds it open in the rollback-journal
    mode (then it is left as it is); :func:`close_stores` puts it back at rest.

    In that mode a commit appends to ``mlflow.db-wal`` beside the file, readers (the
    MLflow UI, a sweep reading its runs back) never wait for a writer, and commits
    need not each wait for the disk (:func:`_sync_write_ahead_logs_less`): a run's
    MLflow calls took 67–70 ms instead of 87–95, a 1,000-run sweep 0.83 × its time
    (``docs/speed.md``). The store's folder must be on a local disk (SQLite's
    write-ahead log needs memory shared between the processes): a store shared between
    machines belongs on a team server.
    """
    _set_journal_mode(database, "WAL")


def _set_journal_mode(database: Path, mode: str) -> None:
    """Switch a SQLite store's journal mode without waiting; where another process holds
    it open, or it is read-only or damaged, it is left as it is (its own errors say so
    when it is used)."""
    import sqlite3

    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(database, timeout=0)) as connection,
    ):
        connection.execute(f"PRAGMA journal_mode={mode}")


def quick_check(database: Path) -> None:
    """Refuse a SQLite file that ``PRAGMA quick_check`` finds damaged (a read of every page)."""
    import sqlite3

    try:
        with _read_only(database) as connection:
            verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as error:  # so damaged that the check cannot even start
        verdict = first_line(error)
    if verdict != "ok":
        raise PipelineError(
            f"mlflow.tracking_uri: the store {database} is damaged ({verdict}); restore it from a copy, "
            "or move it away and run `dvc repro` to train again"
        )


def store_problem(uri: str, error: BaseException) -> str:
    """One line on why the store at ``uri`` cannot be used, with what to do where it is known."""
    text = first_line(error)
    advice = ""
    if "mlflow db upgrade" in str(error) or "out-of-date database schema" in str(error):
        advice = f"; upgrade it with `mlflow db upgrade {redact(uri)}`"
    elif "readonly" in text or "read-only" in text or "disk I/O error" in text:
        advice = "; make the file (and its folder) writable, and check that the disk has room"
    elif "locked" in text:
        advice = "; another process holds a write lock on it: try again when it is done"
    elif "file is not a database" in str(error):
        advice = "; it is not an SQLite database: move it away, or point mlflow.tracking_uri elsewhere"
    elif "malformed" in str(error):
        advice = "; the file is damaged: restore it from a copy, or move it away and run `dvc repro`"
    return f"mlflow.tracking_uri: cannot use the store {redact(uri)}: {text}{advice}"


#: The artifact folder beside a SQLite store.
ARTIFACTS = "mlartifacts"
#: The table in which a SQLite store records the folder it was made in (beside MLflow's own).
FOLDER_TABLE = "downhill_store"
#: Columns of MLflow's SQLite schema that hold an absolute path (a location, or the
#: script a run was started from), with the rows that hold one.
PATH_COLUMNS = (
    ("experiments", "artifact_location", "1"),
    ("runs", "artifact_uri", "1"),
    ("logged_models", "artifact_location", "1"),
    ("model_versions", "storage_location", "1"),
    ("model_versions", "source", "1"),
    ("tags", "value", "key = 'mlflow.source.name'"),
)


def artifact_root(database: Path) -> str:
    """Where a SQLite store's artifacts belong: ``mlartifacts/`` beside the database file."""
    return database.resolve().parent.joinpath(ARTIFACTS).as_uri()


def _read(database: Path, query: str) -> list[tuple[Any, ...]]:
    """Rows of a read-only query (a store on a read-only disk can still be read)."""
    with _read_only(database) as connection:
        return list(connection.execute(query).fetchall())


@contextlib.contextmanager
def _read_only(database: Path) -> Iterator[Any]:
    """A read-only connection to a SQLite store.

    A process killed in the middle of a write (``kill -9``) leaves a hot journal beside
    the file, which only a connection that may write can roll back (read-only, SQLite
    says "attempt to write a readonly database"): where there is one, and the folder
    is writable, it is rolled back first, by opening the file to read and write.
    """
    import sqlite3

    if _journal_size(database) and os.access(database.parent, os.W_OK):
        with contextlib.closing(sqlite3.connect(database, timeout=30)) as writable:
            writable.execute("SELECT count(*) FROM sqlite_master").fetchall()  # rolls the journal back
    with contextlib.closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as connection:
        yield connection


def _journal_size(database: Path) -> int:
    """Bytes in the rollback journal beside ``database``; 0 where there is none, also
    where another process's transaction ends (and deletes it) as it is looked at: a
    1,000-run sweep's jobs opened the store while others wrote, and two failed on it."""
    try:
        return database.with_name(database.name + "-journal").stat().st_size
    except FileNotFoundError:
        return 0


def _tables(database: Path) -> set[str]:
    return {row[0] for row in _read(database, "SELECT name FROM sqlite_master WHERE type = 'table'")}


def recorded_folder(database: Path) -> str | None:
    """The folder the store says it was made in: its record, or for a store from before
    records were kept, the parent of the ``mlartifacts`` location of its experiments."""
    tables = _tables(database)
    if FOLDER_TABLE in tables:
        rows = _read(database, f"SELECT value FROM {FOLDER_TABLE} WHERE key = 'folder'")
        if rows:
            return str(rows[0][0])
    if "experiments" not in tables:
        return None
    for (location,) in _read(database, "SELECT artifact_location FROM experiments ORDER BY experiment_id"):
        path = local_path(str(location))
        if path is not None and path.name == ARTIFACTS:
            return str(path.parent)
    return None


def local_path(location: str) -> Path | None:
    """The local path of a ``file:`` URI or a plain absolute path; None for anything else."""
    from urllib.parse import unquote, urlparse

    if location.startswith("/"):
        return Path(location)
    parsed = urlparse(location)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else None


def moved_from(database: Path) -> str | None:
    """The folder the store was made in, where that is not the folder it is in now."""
    old, new = recorded_folder(database), str(database.resolve().parent)
    return old if old is not None and old != new else None


def relocate_store(database: Path) -> None:
    """Point every path under the folder the store was made in at its folder now, and
    record that folder (one transaction). Called under the store lock.

    MLflow stores absolute paths: a project copied with ``cp -a`` would read and write
    the original's ``mlartifacts/`` (and, for MLflow's ``Default`` experiment, its
    ``mlruns/``), and a moved one could not load its models. Nothing else changes: the
    ``store`` stage's marks stay as they were, so a moved project reruns nothing.
    """
    import sqlite3

    old = moved_from(database)  # again, under the lock: another process may have done it
    if old is None:
        return
    new = str(database.resolve().parent)
    prefixes = {Path(old).as_uri(): Path(new).as_uri(), "file://" + old: "file://" + new, old: new}
    try:
        with contextlib.closing(sqlite3.connect(database)) as connection, connection:
            tables = {
                row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            for table, column, rows in PATH_COLUMNS:
                if table not in tables:
                    continue
                for before, after in prefixes.items():  # the folder itself, or a path under it
                    connection.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                        f"WHERE {rows} AND ({column} = ? OR substr({column}, 1, ?) = ?)",
                        (after, len(before) + 1, before, len(before) + 1, before + "/"),
                    )
            _write_folder(connection, new)
    except sqlite3.OperationalError as error:
        raise PipelineError(relocation_refused(database, old, error)) from None
    log.warning("%s: paths moved from %s to %s (a copied or moved project)", database, old, new)


def relocation_refused(database: Path, old: str, error: BaseException) -> str:
    """One line: a moved project's store could not be updated (read-only, say)."""
    return (
        f"{database}: the project moved from {old} and its store must be updated, which failed "
        f"({first_line(error)}); run `python -m pipeline.store` where the project is writable"
    )


def _write_folder(connection: Any, folder: str) -> None:
    """Record ``folder`` as the store's (inside the caller's transaction)."""
    connection.execute(f"CREATE TABLE IF NOT EXISTS {FOLDER_TABLE} (key TEXT PRIMARY KEY, value TEXT)")
    connection.execute(f"INSERT OR REPLACE INTO {FOLDER_TABLE} VALUES ('folder', ?)", (folder,))


def record_folder(database: Path) -> None:
    """Record the folder of a store that has no record yet (a new store, or one from
    before records were kept), and point MLflow's ``Default`` experiment under it.

    MLflow gives ``Default`` the folder ``mlruns/`` of the process that made the store
    (any working directory); under the project it moves with it. Runs it holds already
    keep their own locations.
    """
    import sqlite3

    if FOLDER_TABLE in _tables(database):
        return
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
            (artifact_root(database),),
        )
        _write_folder(connection, str(database.resolve().parent))


def git_commit() -> str:
    """The checked-out commit, or ``unknown`` outside git (plus ``-dirty`` if edited)."""
    root = repository_root()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


#: Tags that say which process of which machine runs a run, and when it was last seen alive.
HOST_TAG = "downhill.host"
PID_TAG = "downhill.pid"
MACHINE_TAG = "downhill.machine"
LAST_SEEN_TAG = "downhill.last_seen"
#: A live run refreshes its last-seen time this often (seconds): rarely enough to cost
#: nothing, often enough that another machine soon knows a dead one.
LEASE_SECONDS = 30.0
#: A run of another machine not seen for this long is taken for dead.
LEASE_EXPIRY_SECONDS = 5 * LEASE_SECONDS


def machine_id() -> str:
    """This process's space of process ids: host name, boot and PID namespace.

    Two containers may share a host name (and a kernel's boot id), never a PID
    namespace on one boot: a process id means something only within the same value.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "unknown-boot"
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "unknown-pid-namespace"
    return f"{socket.gethostname()}/{boot}/{namespace}"


def process_tags() -> dict[str, str]:
    """Which process on which machine runs this, so that its runs can be closed if it dies;
    and, inside ``dvc exp run``, the DVC experiment's name (tag ``dvc.experiment``)."""
    tags = {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(os.getpid()),
        MACHINE_TAG: machine_id(),
        LAST_SEEN_TAG: str(int(time.time())),
    }
    if os.environ.get(DVC_EXPERIMENT_ENV):
        tags[DVC_EXPERIMENT_TAG] = os.environ[DVC_EXPERIMENT_ENV]
    return tags


@contextmanager
def lease(client: MlflowClient, run_id: str, every: float = LEASE_SECONDS) -> Iterator[None]:
    """While the block runs, refresh the run's last-seen time every ``every`` seconds
    (from a thread), so that other machines can tell it from a dead run."""
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(every):
            with contextlib.suppress(Exception):  # a store that hiccups must not end the run
                client.set_tag(run_id, LAST_SEEN_TAG, str(int(time.time())))

    thread = threading.Thread(target=refresh, name=f"lease {run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def dataset_input(
    columns: dict[str, Any], n_rows: int, source: str, name: str, target: str, digest: str, context: str
) -> DatasetInput:
    """A split as an MLflow dataset input (the runs table's Dataset column and tab).

    ``columns`` maps each column name to its first values (at least one; memory-mapped
    or not), of ``n_rows`` in all; ``digest`` is the file's md5. The schema comes from
    the first rows and the profile (rows, cells) from ``n_rows``: no column is read whole. Worked out once per
    process and split: every run of a sweep logs the same entity.
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag

    key = (digest, name, tuple(columns))
    if key not in _datasets:
        import numpy as np
        import pandas as pd
        from mlflow.data.pandas_dataset import from_pandas

        head = pd.DataFrame({column: np.asarray(values[:SCHEMA_ROWS]) for column, values in columns.items()})
        with warnings.catch_warnings():  # "the source can be interpreted in multiple ways"
            warnings.simplefilter("ignore", UserWarning)
            entity = from_pandas(
                head, source=source, targets=target, name=name, digest=digest
            )._to_mlflow_entity()
        profile = json.dumps({"num_rows": n_rows, "num_elements": n_rows * len(columns)})
        _datasets[key] = Dataset(
            entity.name, entity.digest, entity.source_type, entity.source, entity.schema, profile
        )
    return DatasetInput(_datasets[key], tags=[InputTag("mlflow.data.context", context)])


#: Rows a dataset's schema is read from.
SCHEMA_ROWS = 100


_datasets: dict[tuple[str, str, tuple[str, ...]], Any] = {}


#: How often a store call that lost a race is tried in all (see :func:`log_dataset_input`).
RACE_ATTEMPTS = 5


def lost_a_race(error: BaseException) -> bool:
    """Whether a store call failed only because another process wrote at the same moment:
    a row it inserted first (SQLite's ``UNIQUE constraint failed``, PostgreSQL's
    ``duplicate key``) or a write lock SQLite would not wait for (``database is locked``)."""
    text = str(error)
    return any(sign in text for sign in ("UNIQUE constraint failed", "duplicate key", "database is locked"))


def log_dataset_input(client: MlflowClient, run_id: str, dataset: DatasetInput) -> None:
    """Log ``dataset`` as an input of the run ``run_id``, also when other runs log it at once.

    MLflow looks a dataset up in the experiment and inserts it if it is not there: two
    processes logging the same split for the first time (two sweeps on a new store) both
    insert it, and the second fails on the table's unique key. Tried again, it finds the
    row the first one wrote. Each attempt is one transaction: a failed one left nothing.
    """
    for attempt in range(RACE_ATTEMPTS):
        try:
            client.log_inputs(run_id, datasets=[dataset])
            return
        except Exception as error:
            if attempt == RACE_ATTEMPTS - 1 or not lost_a_race(error):
                raise
            time.sleep(0.05 * 2**attempt)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_orphaned_runs(client: MlflowClient, experiment_id: str, now: float | None = None) -> int:
    """Mark KILLED the runs left RUNNING by a process that is gone.

    A ``kill -9`` (or a power cut) leaves its run RUNNING forever; the next sweep tidies
    up after it. A run of this machine (same host, boot and PID namespace) is dead when
    its process is; a run of another machine when it has not been seen for
    :data:`LEASE_EXPIRY_SECONDS`. Runs from before last-seen times were kept are judged
    by their process only, on the machine with their host name.
    """
    here, host = machine_id(), socket.gethostname()
    now = time.time() if now is None else now
    closed = 0
    running = client.search_runs(
        [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    for run in running:
        tags = run.data.tags
        pid = tags.get(PID_TAG, "")
        machine, seen = tags.get(MACHINE_TAG), tags.get(LAST_SEEN_TAG, "")
        if machine == here or (machine is None and tags.get(HOST_TAG) == host):
            dead = pid.isdigit() and not process_alive(int(pid))
        else:
            dead = seen.isdigit() and now - int(seen) > LEASE_EXPIRY_SECONDS
        if dead:
            client.set_terminated(run.info.run_id, status="KILLED")
            closed += 1
    return closed


def logged_model_id(run: Run) -> str | None:
    """The id of the model ``run`` logged (its ``models:/<id>``), as MLflow links them
    (the run's outputs: its Models column), or None where it logged none (a diverged run)."""
    outputs = run.outputs.model_outputs if run.outputs else []
    return outputs[0].model_id if outputs else None


def sweep_parents(client: MlflowClient, experiment_id: str, key: str) -> list[Run]:
    """The parent runs of sweeps with this sweep key, newest first."""
    return list(
        client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = 'sweep' and tags.`{SWEEP_KEY_TAG}` = '{key}'",
            order_by=["attributes.start_time DESC"],
            max_results=1000,
        )
    )


def children(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    """The (not deleted) child runs of a parent run."""
    return list(each_child(client, experiment_id, parent_id))


#: Runs fetched from the store at once when going through a sweep's children.
CHILDREN_PAGE = 1000


def each_child(client: MlflowClient, experiment_id: str, parent_id: str, where: str = "") -> Iterator[Run]:
    """The (not deleted) child runs of a parent run, fetched a page at a time: going
    through 10,000 runs holds 1,000 of them (with their params, metrics and tags) at once.

    ``where`` adds a condition of MLflow's search syntax (``attributes.status = 'FINISHED'``).
    """
    condition = f"tags.mlflow.parentRunId = '{parent_id}'" + (f" and {where}" if where else "")
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=condition, max_results=CHILDREN_PAGE, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return


def finished_run(client: MlflowClient, experiment_id: str, job_key: str) -> Run | None:
    """The newest FINISHED training run with this job key (any of them has the same result)."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{JOB_KEY_TAG}` = '{job_key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return found[0] if found else None


def artifact_store(client: MlflowClient, artifact_uri: str) -> ArtifactRepository:
    """The artifact store at ``artifact_uri``, as the run or logged model record gives it.

    The client's own artifact calls take a run or model id and fetch its whole record
    (a run's every param, tag and latest metric) to find that URI again: about 5 ms a
    call on SQLite, for a URI the caller already holds.
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(artifact_uri, tracking_uri=client.tracking_uri)


def read_outcome(client: MlflowClient, run: RunInfo) -> RunSummary | None:
    """The outcome a training run logged, or None if it logged none (read from the run's
    artifact location as its record gives it: see :func:`artifact_store`)."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            repository = artifact_store(client, run.artifact_uri)
            path = repository.download_artifacts(OUTCOME, folder)  # type: ignore[no-untyped-call]
        except Exception:  # no such artifact: the job died before it could log one
            return None
        return RunSummary.from_json(json.loads(Path(path).read_text()))


def write_store_mark(path: Path, missing: list[str]) -> None:
    """The mark the ``store`` stage, ``train`` and ``evaluate`` write: what the store lacks.

    Deterministic: a store that holds everything gives the same bytes on every machine.
    """
    from pipeline.files import write_json

    write_json(path, {"store_holds_everything": not missing, "missing": sorted(missing)})
