"""The store and the workspace agree: a deleted store is noticed, a copied project keeps to itself."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from pipeline import store, train
from pipeline.tracking import CACHE_ENV, FOLDER_TABLE, close_stores, open_store
from tests.helpers import REPO_ROOT, START_ONE_RUN, killed_mid_write, project_cfg, trained

#: Each trains a project into a real MLflow store and reads it back (test-fast leaves them out).
pytestmark = pytest.mark.integration


def store_contents(database: Path) -> dict[str, Any]:
    """What a store holds apart from times: its schema, schema version, experiments (paths
    relative to its folder) and the folder it records."""
    folder = str(database.parent)
    with contextlib.closing(sqlite3.connect(database)) as connection:
        # MLflow's migrations write a table's constraints in no fixed order (two stores it
        # makes from nothing differ so), hence each statement's lines as a set.
        schema = sorted(
            (kind, name, sorted((sql or "").replace(",", "").splitlines()))
            for kind, name, sql in connection.execute("SELECT type, name, sql FROM sqlite_master")
        )
        version = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        experiments = connection.execute(
            "SELECT experiment_id, name, artifact_location, lifecycle_stage FROM experiments"
        ).fetchall()
        recorded = connection.execute(f"SELECT value FROM {FOLDER_TABLE} WHERE key = 'folder'").fetchall()
    places = [(e[0], e[1], e[2].replace(folder, "<folder>"), e[3]) for e in experiments]
    return {"schema": schema, "version": version, "experiments": places, "folder": recorded == [(folder,)]}


def test_a_new_store_is_the_store_mlflow_makes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new store, a copy of the empty-store template (made once, then kept), holds once
    the project opens it what a store MLflow makes from nothing holds; so does one made
    where the template cannot be kept (its folder is a file), and no scratch file is left,
    a dead process's included."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))

    def uri(name: str) -> str:
        (tmp_path / name).mkdir(exist_ok=True)
        return f"sqlite:///{tmp_path / name / 'mlflow.db'}"

    MlflowClient(uri("made")).search_experiments()  # MLflow's own migrations, from nothing
    open_store(uri("made"), "downhill")
    expected = store_contents(tmp_path / "made" / "mlflow.db")
    assert len(expected["experiments"]) == 2 and expected["folder"]
    uri("copied")
    (tmp_path / "copied" / "mlflow.db.new-99999").write_text("a store half made by a process now dead")
    for name in ("copied", "copied_again"):
        open_store(uri(name), "downhill")
        assert store_contents(tmp_path / name / "mlflow.db") == expected
    templates = list((tmp_path / "cache").iterdir())
    assert len(templates) == 1 and templates[0].name.startswith("empty-store-mlflow"), templates
    (tmp_path / "a file").write_text("")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "a file" / "cache"))
    open_store(uri("migrated"), "downhill")
    assert store_contents(tmp_path / "migrated" / "mlflow.db") == expected
    assert not [path for path in tmp_path.rglob("*") if ".new-" in path.name]


def test_a_deleted_store_is_noticed_by_the_store_stage(tmp_path: Path) -> None:
    folder = trained(tmp_path / "project")
    assert store.run(project_cfg(folder)) == ([], [])
    marks = [(folder / "reports" / name).read_bytes() for name in ("store_train.json", "store_evaluate.json")]
    (folder / "mlflow.db").unlink()
    missing_runs, missing_model = store.run(project_cfg(folder))
    assert len(missing_runs) == 1 and missing_model == ["house-price@champion"]
    changed = [
        (folder / "reports" / name).read_bytes() for name in ("store_train.json", "store_evaluate.json")
    ]
    assert changed[0] != marks[0] and changed[1] != marks[1]  # so DVC reruns train and evaluate
    assert not (folder / "mlflow.db").exists()  # the check creates no store


def test_a_copied_project_writes_only_into_its_own_store(tmp_path: Path) -> None:
    original = trained(tmp_path / "original")
    close_stores()  # a project is copied when nothing holds its store open
    before = sorted(str(p.relative_to(original)) for p in original.rglob("*"))
    copy = tmp_path / "copy"
    shutil.copytree(original, copy, symlinks=True)  # as `cp -a` does
    train.run(project_cfg(copy, "train"))
    train.run(project_cfg(copy, "train", "mlflow.experiment=Default"))  # MLflow's own experiment
    after = sorted(str(p.relative_to(original)) for p in original.rglob("*"))
    assert after == before  # the original's files are untouched: neither mlartifacts/ nor mlruns/
    client = MlflowClient(f"sqlite:///{copy}/mlflow.db")
    assert all(str(copy) in run.info.artifact_uri for run in client.search_runs(["0", "1"]))


def predict_1500(capsys: pytest.CaptureFixture[str], folder: Path) -> float:
    """``python -m pipeline.predict 1500`` in the project ``folder``: the price it prints."""
    from pipeline import predict

    try:
        predict.main(["1500", "--tracking-uri", f"sqlite:///{folder}/mlflow.db"])
    except SystemExit as stop:
        pytest.fail(f"predict exited {stop.code}: {capsys.readouterr().err}")
    line = capsys.readouterr().out.splitlines()[0]
    return float(line.rsplit(" ", 1)[1].replace(",", ""))


def test_a_moved_project_predicts_and_reruns_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = trained(tmp_path / "original")
    chosen = json.loads((original / "reports" / "best_run.json").read_text())
    expected = chosen["theta"][0] + 1500 * chosen["theta"][1]
    assert store.run(project_cfg(original)) == ([], [])  # the marks as `dvc repro` left them
    marks = {name: (original / "reports" / name).read_bytes() for name in MARKS}
    moved = tmp_path / "moved"
    shutil.move(original, moved)  # the original folder is gone: nothing can read it
    assert predict_1500(capsys, moved) == pytest.approx(expected, rel=1e-9, abs=0.01)
    assert store.run(project_cfg(moved)) == ([], [])
    assert {name: (moved / "reports" / name).read_bytes() for name in MARKS} == marks  # nothing reruns
    rows = stored_paths(moved / "mlflow.db")
    assert rows and not any(str(original) in value for value in rows), rows
    # The runs name their script as the project's, not by the machine's absolute path.
    runs = MlflowClient(f"sqlite:///{moved}/mlflow.db").search_runs(["1"])
    assert {run.data.tags["mlflow.source.name"] for run in runs} == {"pipeline/train.py"}


def test_a_copy_that_never_trained_reads_its_own_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = trained(tmp_path / "original")
    copy = tmp_path / "copy"
    close_stores()  # a project is copied when nothing holds its store open
    shutil.copytree(original, copy, symlinks=True)
    shutil.rmtree(original)  # the copy must not have been reading the original's model files
    assert predict_1500(capsys, copy) > 0


def test_the_store_stage_finds_missing_files_and_a_damaged_store(tmp_path: Path) -> None:
    from pipeline.errors import PipelineError

    folder = trained(tmp_path / "project")
    shutil.rmtree(folder / "mlartifacts")
    missing_runs, missing_model = store.run(project_cfg(folder))
    assert len(missing_runs) == 1 and missing_model == ["the files of house-price@champion"]
    database = folder / "mlflow.db"
    with sqlite3.connect(database) as connection:  # the page of the runs table, in the middle
        # The store is in write-ahead-log mode and this process's MLflow still holds it
        # open: the log is folded into the file first, as it is once a store is at rest
        # (a damaged page that the log holds a newer copy of is never read).
        assert connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        (size,) = connection.execute("PRAGMA page_size").fetchone()
        (page,) = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()
    with database.open("r+b") as handle:
        handle.seek((page - 1) * size)
        handle.write(b"\xab" * size)
    with pytest.raises(PipelineError) as raised:
        store.run(project_cfg(folder))
    assert "is damaged" in str(raised.value) and "\n" not in str(raised.value)


def stored_paths(database: Path) -> list[str]:
    """Every path the store holds: locations, model versions' sources, source names."""
    import sqlite3

    from pipeline.tracking import PATH_COLUMNS

    with sqlite3.connect(database) as connection:
        return [
            str(value)
            for table, column, rows in PATH_COLUMNS
            for (value,) in connection.execute(f"SELECT {column} FROM {table} WHERE {rows}")
            if value and "/" in str(value)
        ]


MARKS = ("store_train.json", "store_evaluate.json")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d.joinpath("mlflow.db").write_bytes(bytes(range(256)) * 64), "not an SQLite database"),
        (lambda d: None, "cannot use the store garbage://x"),
    ],
)
def test_a_store_that_cannot_be_used_is_one_line(tmp_path: Path, make: object, message: str) -> None:
    from pipeline.errors import PipelineError
    from pipeline.tracking import open_store

    make(tmp_path)  # type: ignore[operator]
    uri = "garbage://x" if "garbage" in message else f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(PipelineError) as raised:
        open_store(uri, "downhill")
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert str(raised.value).startswith("mlflow.tracking_uri: cannot use the store")


def test_an_empty_experiment_name_is_named(tmp_path: Path) -> None:
    from pipeline.errors import PipelineError
    from pipeline.tracking import open_store

    with pytest.raises(PipelineError, match=r"mlflow\.experiment: expected a non-empty name"):
        open_store(f"sqlite:///{tmp_path}/never/created.db", "")
    assert not (tmp_path / "never").exists()


@pytest.mark.e2e
def test_a_corrupt_store_stops_the_sweep_before_any_job(prepared: Path) -> None:
    from tests.helpers import run_stage

    (prepared / "mlflow.db").write_bytes(b"not a database" * 1000)
    result = run_stage("train", prepared, *START_ONE_RUN, multirun=True)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "cannot use the store" in lines[0] and "not an SQLite database" in lines[0]


@pytest.mark.e2e
def test_a_store_of_an_older_mlflow_names_the_upgrade_command(tmp_path: Path) -> None:
    import sqlite3

    from pipeline.tracking import open_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    open_store(uri, "downhill")
    with sqlite3.connect(tmp_path / "mlflow.db") as connection:  # as an older MLflow left it
        connection.execute("UPDATE alembic_version SET version_num = '0584bdc529eb'")
    # A new process, as the next stage is: MLflow checks the schema once per process and store.
    probe = f"from pipeline.tracking import open_store; open_store({uri!r}, 'downhill')"
    checked = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True)
    assert checked.returncode != 0
    assert f"upgrade it with `mlflow db upgrade {uri}`" in checked.stderr.strip().splitlines()[-1]


def test_an_output_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    from pipeline import ingest
    from pipeline.errors import PipelineError

    cfg = project_cfg(tmp_path)
    (tmp_path / "data" / "ingested.parquet").mkdir(parents=True)  # a folder where the file goes
    with pytest.raises(PipelineError, match=r"ingested\.parquet: cannot write it \(") as raised:
        ingest.run(cfg)
    assert "\n" not in str(raised.value)


def test_a_read_only_store_is_one_line(tmp_path: Path) -> None:
    from pipeline.errors import PipelineError
    from pipeline.tracking import open_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    open_store(uri, "downhill")
    close_stores()  # the store made read-only, then opened (a new process)
    # chmod does not stop root (CI runs as root); the immutable flag does.
    if subprocess.run(["chattr", "+i", str(tmp_path / "mlflow.db")], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable flag")
    try:
        with pytest.raises(PipelineError, match=r"(readonly database|disk I/O error); make the file"):
            open_store(uri, "another")
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "mlflow.db")], check=True)


def test_a_store_locked_by_another_writer_is_one_line(tmp_path: Path) -> None:
    import sqlite3

    from pipeline.errors import PipelineError
    from pipeline.tracking import open_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    open_store(uri, "downhill")
    other = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process in the middle of a write
    try:
        with pytest.raises(PipelineError, match="database is locked; another process holds a write lock"):
            open_store(uri, "another")
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_read_only_project_predicts_and_a_moved_one_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline import predict

    project = trained(tmp_path / "project")
    moved = tmp_path / "moved"
    close_stores()  # a project is copied when nothing holds its store open
    shutil.copytree(project, moved, symlinks=True)
    # chmod does not stop root (CI runs as root); the immutable flag does.
    if subprocess.run(["chattr", "-R", "+i", str(tmp_path)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable flag")
    try:
        assert predict_1500(capsys, project) > 0  # nothing written: the store, the model's folder
        with pytest.raises(SystemExit) as stopped:
            predict.main(["1500", "--tracking-uri", f"sqlite:///{moved}/mlflow.db"])
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"the project moved from {project}" in err
        assert "run `python -m pipeline.store` where the project is writable" in err
    finally:
        subprocess.run(["chattr", "-R", "-i", str(tmp_path)], check=True)


def test_a_store_left_mid_write_by_kill_9_is_read_after_rolling_back(tmp_path: Path) -> None:
    """kill -9 in the middle of a write leaves a hot journal; the store stage's read-only
    check once failed on it ("attempt to write a readonly database")."""

    from pipeline.tracking import quick_check

    database = tmp_path / "mlflow.db"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.execute("CREATE TABLE t (x INTEGER)")
        connection.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(20_000)])
        connection.commit()
    killed_mid_write(HALF_WRITTEN, database)
    journal = database.with_name("mlflow.db-journal")
    assert journal.is_file() and journal.stat().st_size > 0  # a hot journal, as kill -9 leaves it
    quick_check(database)  # no error: rolled back, then checked
    with contextlib.closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as connection:
        assert connection.execute("SELECT count(*) FROM t").fetchone()[0] == 20_000  # the write undone


def test_a_journal_that_vanishes_as_it_is_looked_at_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process's transaction ends, deleting its journal, between the look and
    the read: two jobs of a 1,000-run sweep once failed on that ("No such file or
    directory: mlflow.db-journal")."""
    from pipeline.tracking import quick_check

    database = tmp_path / "mlflow.db"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        connection.execute("CREATE TABLE t (x INTEGER)")
        connection.commit()
    journal = database.with_name("mlflow.db-journal")
    stat, looks = Path.stat, []

    def vanishing(path: Path, **kwargs: Any) -> Any:
        """The journal is there at the first look (a live transaction's), gone after."""
        if path != journal:
            return stat(path, **kwargs)
        looks.append(path)
        if len(looks) == 1:
            return stat(database, **kwargs)
        raise FileNotFoundError(2, "No such file or directory", str(journal))

    monkeypatch.setattr(Path, "stat", vanishing)
    quick_check(database)  # no error: whatever the journal was, it is no longer there
    assert looks  # the journal was looked at


#: A process that changes every row of table t, with a tiny page cache (so the file
#: itself is written before the commit), says so and waits to be killed.
HALF_WRITTEN = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA cache_size=1")
connection.execute("BEGIN")
connection.execute("UPDATE t SET x = x + 1")
print("writing", flush=True)
time.sleep(60)
"""


def journal_mode(database: Path) -> str:
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])


def synchronous(client: MlflowClient) -> int:
    """The sync level of the connections MLflow's store opens (1 NORMAL, 2 FULL)."""
    engine = client._tracking_client.store.engine
    with engine.connect() as connection:
        return int(connection.exec_driver_sql("PRAGMA synchronous").scalar())


def test_a_store_logs_ahead_and_syncs_at_checkpoints(tmp_path: Path) -> None:
    """A store opened by a stage that writes is in write-ahead-log mode, and MLflow's
    connections to it sync at checkpoints; a store at rest (rollback journal, as MLflow
    makes it, syncing every commit) is not switched while another process holds it
    open, nor by a command that only reads."""
    from pipeline.tracking import write_ahead

    new = tmp_path / "new" / "mlflow.db"
    made = open_store(f"sqlite:///{new}", "downhill")
    assert journal_mode(new) == "wal" and synchronous(made.client) == 1
    assert not list(new.parent.glob("*.new-*"))  # the scratch file's log went with it
    old = tmp_path / "old" / "mlflow.db"
    before = MlflowClient(f"sqlite:///{old}")
    before.search_experiments()  # a store MLflow made itself, as the project did before
    assert journal_mode(old) == "delete" and synchronous(before) == 2
    open_store(f"sqlite:///{old}", create=False)
    assert journal_mode(old) == "delete"
    close_stores()
    with contextlib.closing(sqlite3.connect(old, isolation_level=None)) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM experiments").fetchall()  # another process reading
        write_ahead(old)  # no wait, no error: left as it is
        assert journal_mode(old) == "delete"
    reopened = open_store(f"sqlite:///{old}", "downhill")
    assert journal_mode(old) == "wal" and synchronous(reopened.client) == 1


def test_a_store_deleted_while_open_is_made_anew(tmp_path: Path) -> None:
    """A store deleted while another process holds it open (its log and index beside
    it) is made anew and whole: the old store's log is not read into the new file."""
    database = tmp_path / "mlflow.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDS_A_STORE, f"sqlite:///{database}", "60"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        assert database.with_name("mlflow.db-wal").stat().st_size > 0  # its commits, in the log
        database.unlink()
        made = open_store(f"sqlite:///{database}", "downhill")
        assert made.client.search_runs([made.experiment]) == []
    finally:
        holder.kill()
        holder.wait()
    with contextlib.closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


#: A process that makes a store, records a run in it and keeps it open for the given
#: seconds (until killed), then ends as a stage ends.
HOLDS_A_STORE = """
import sys, time
from pipeline.tracking import open_store
store = open_store(sys.argv[1], "downhill")
store.client.set_terminated(store.client.create_run(store.experiment).info.run_id)
print("open", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_store_at_rest_is_one_file(tmp_path: Path) -> None:
    """Once the process that recorded into a store has ended, its write-ahead log is
    folded back into the file and gone, and the store is back in the rollback-journal
    mode (readable on a read-only disk): ``mlflow.db`` copied alone holds every run."""
    database = tmp_path / "mlflow.db"
    done = subprocess.run(
        [sys.executable, "-c", HOLDS_A_STORE, f"sqlite:///{database}", "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mlflow.db", "mlflow.db.lock"]
    assert journal_mode(database) == "delete"
    copy = tmp_path / "copy.db"
    shutil.copyfile(database, copy)
    with contextlib.closing(sqlite3.connect(copy)) as connection:
        assert connection.execute("SELECT status FROM runs").fetchall() == [("FINISHED",)]


def test_a_logging_store_killed_mid_write_keeps_every_commit(tmp_path: Path) -> None:
    """kill -9 in the middle of a write to a store in write-ahead-log mode, after commits
    that synced no more than the log's checkpoints do: every commit is read back, the
    unfinished write is not, and the read-only check passes."""

    from pipeline.tracking import quick_check

    database = tmp_path / "mlflow.db"
    killed_mid_write(COMMITTED_THEN_HALF_WRITTEN, database)
    log = database.with_name("mlflow.db-wal")
    assert log.is_file() and log.stat().st_size > 0  # the commits are in the log, not yet in the file
    quick_check(database)
    with contextlib.closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as connection:
        assert connection.execute("SELECT count(*), sum(x) FROM t").fetchone() == (
            20_000,
            20_000 * 19_999 // 2,
        )


#: A process that commits 20,000 rows in 20 transactions to a store in write-ahead-log
#: mode (syncing as the project's connections do), then changes every row without
#: committing, with a tiny page cache (so the change reaches the log), says so and
#: waits to be killed.
COMMITTED_THEN_HALF_WRITTEN = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA journal_mode=WAL")
connection.execute("PRAGMA synchronous=NORMAL")
connection.execute("PRAGMA wal_autocheckpoint=0")
connection.execute("CREATE TABLE t (x INTEGER)")
for start in range(0, 20_000, 1_000):
    connection.execute("BEGIN")
    connection.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(start, start + 1_000)])
    connection.execute("COMMIT")
connection.execute("PRAGMA cache_size=1")
connection.execute("BEGIN")
connection.execute("UPDATE t SET x = x + 1")
print("writing", flush=True)
time.sleep(60)
"""
