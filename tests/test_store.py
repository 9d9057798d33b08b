"""The store and the workspace agree: a deleted store is noticed, a copied project keeps to itself."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from pipeline import store, train
from tests.helpers import REPO_ROOT, START_ONE_RUN, project_cfg, trained


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


def test_a_copied_project_writes_only_into_its_own_store_and_a_moved_one_still_predicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = trained(tmp_path / "original")
    before = sorted(str(p.relative_to(original)) for p in (original / "mlartifacts").rglob("*"))
    copy = tmp_path / "copy"
    shutil.copytree(original, copy, symlinks=True)  # as `cp -a` does
    train.run(project_cfg(copy, "train"))
    after = sorted(str(p.relative_to(original)) for p in (original / "mlartifacts").rglob("*"))
    assert after == before  # the original's artifacts are untouched
    for path in (copy / "mlartifacts").rglob("MLmodel"):
        assert path.is_file()

    moved = tmp_path / "moved"
    shutil.move(copy, moved)
    uri = f"sqlite:///{moved}/mlflow.db"
    from pipeline.tracking import prepare_experiment

    prepare_experiment(uri, "downhill")  # what every stage does first: relocates
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/house-price@champion")
    chosen = json.loads((moved / "reports" / "best_run.json").read_text())
    expected = chosen["theta"][0] + 1500 * chosen["theta"][1]
    assert model.predict(pd.DataFrame({"sqft_living": [1500.0]}))[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d.joinpath("mlflow.db").write_bytes(bytes(range(256)) * 64), "not an SQLite database"),
        (lambda d: None, "cannot use the store garbage://x"),
    ],
)
def test_a_store_that_cannot_be_used_is_one_line(tmp_path: Path, make: object, message: str) -> None:
    from pipeline.errors import PipelineError
    from pipeline.tracking import prepare_experiment

    make(tmp_path)  # type: ignore[operator]
    uri = "garbage://x" if "garbage" in message else f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(PipelineError) as raised:
        prepare_experiment(uri, "downhill")
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert str(raised.value).startswith("mlflow.tracking_uri: cannot use the store")


def test_an_empty_experiment_name_is_named() -> None:
    from pipeline.errors import PipelineError
    from pipeline.tracking import prepare_experiment

    with pytest.raises(PipelineError, match=r"mlflow\.experiment: expected a non-empty name"):
        prepare_experiment("sqlite:////nonexistent/never/created.db", "")
    assert not Path("/nonexistent").exists()


def test_a_corrupt_store_stops_the_sweep_before_any_job(prepared: Path) -> None:
    from tests.helpers import run_stage

    (prepared / "mlflow.db").write_bytes(b"not a database" * 1000)
    result = run_stage("train", prepared, *START_ONE_RUN, multirun=True)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "cannot use the store" in lines[0] and "not an SQLite database" in lines[0]


def test_a_store_of_an_older_mlflow_names_the_upgrade_command(tmp_path: Path) -> None:
    import sqlite3

    from pipeline.tracking import prepare_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prepare_experiment(uri, "downhill")
    with sqlite3.connect(tmp_path / "mlflow.db") as connection:  # as an older MLflow left it
        connection.execute("UPDATE alembic_version SET version_num = '0584bdc529eb'")
    # A new process, as the next stage is: MLflow checks the schema once per process and store.
    probe = f"from pipeline.tracking import prepare_experiment; prepare_experiment({uri!r}, 'downhill')"
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
    from pipeline.tracking import prepare_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prepare_experiment(uri, "downhill")
    # chmod does not stop root (CI runs as root); the immutable flag does.
    if subprocess.run(["chattr", "+i", str(tmp_path / "mlflow.db")], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable flag")
    try:
        with pytest.raises(PipelineError, match=r"(readonly database|disk I/O error); make the file"):
            prepare_experiment(uri, "another")
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "mlflow.db")], check=True)


def test_a_store_locked_by_another_writer_is_one_line(tmp_path: Path) -> None:
    import sqlite3

    from pipeline.errors import PipelineError
    from pipeline.tracking import prepare_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    prepare_experiment(uri, "downhill")
    other = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process in the middle of a write
    try:
        with pytest.raises(PipelineError, match="database is locked; another process holds a write lock"):
            prepare_experiment(uri, "another")
    finally:
        other.execute("ROLLBACK")
        other.close()
