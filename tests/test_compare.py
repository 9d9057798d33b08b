"""Compare runs: only what differs, the provenance, metric deltas, and a picture."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest

from pipeline import compare
from tests.helpers import run_command, run_stage


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a three-run sweep: converged, stopped at the budget, diverged."""
    from tests.helpers import prepare_data

    folder = prepare_data(tmp_path_factory.mktemp("compare"))
    grid = ["model.init.theta0=0", "model.init.theta1=100", "optimizer.lr=0.1,0.001,1.05"]
    result = run_stage("train", folder, *grid, "optimizer.max_iter=300", multirun=True)
    assert result.returncode == 0, result.stderr
    return folder


def run_compare(capsys: pytest.CaptureFixture[str], folder: Path, *argv: str) -> tuple[int, str, str]:
    return run_command(compare.main, capsys, *argv, "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}")


@pytest.mark.e2e
def test_two_runs_show_only_what_differs(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    picture = sweep / "two.png"
    names = ["gd lr=0.1 θ0=0 θ1=100", "gd lr=0.001 θ0=0 θ1=100"]
    status, out, err = run_compare(capsys, sweep, *names, "--out", str(picture))
    assert status == 0, err
    lines = out.splitlines()
    heading = next(i for i, line in enumerate(lines) if line.startswith("settings that differ (1 of "))
    changed = lines[heading + 1 : lines.index("data and code:")]
    assert changed == ["  optimizer.lr: 0.1 → 0.001"]  # nothing that is the same
    assert any(line.startswith("  train_md5: ") and line.endswith("(same)") for line in lines)
    assert any(line.startswith("  downhill.job_key: ") and "→" in line for line in lines)
    n_iter = next(line for line in lines if line.startswith("  n_iter: "))
    first, second, delta = (float(value) for value in n_iter.removeprefix("  n_iter: ").split(", "))
    assert second == 300 and delta == second - first
    assert matplotlib.image.imread(picture).shape[0] > 400


@pytest.mark.e2e
def test_a_sweep_is_grouped_by_outcome(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{sweep / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("downhill")
    assert experiment is not None
    (parent,) = client.search_runs([experiment.experiment_id], filter_string="tags.`downhill.role` = 'sweep'")
    status, out, err = run_compare(
        capsys, sweep, "--sweep", parent.info.run_id, "--out", str(sweep / "s.png")
    )
    assert status == 0, err
    assert "settings that vary: optimizer.lr" in out
    for group in ("converged (1):", "diverged (1):", "max_iter (1):"):
        assert group in out


@pytest.mark.e2e
def test_an_unknown_run_is_one_line(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_compare(capsys, sweep, "no such run", "gd lr=0.1 θ0=0 θ1=100")
    assert status == 2 and out == ""
    assert err.strip() == "error: no run with id or name 'no such run' in this experiment"


@pytest.mark.e2e
def test_a_name_that_several_runs_share_says_how_many_and_which(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from mlflow.tracking import MlflowClient

    project = tmp_path / "project"
    shutil.copytree(sweep, project)  # the module's store stays as it is
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("downhill")
    assert experiment is not None
    name = "gd lr=0.1 θ0=0 θ1=100"
    (older,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"attributes.run_name = 'converged · {name}'"
    )
    newer = client.create_run(
        experiment.experiment_id, run_name=f"converged · {name}"
    )  # the same settings again
    status, _, err = run_compare(
        capsys, project, name, "gd lr=0.001 θ0=0 θ1=100", "--out", str(tmp_path / "c.png")
    )
    assert status == 0, err
    assert err.strip() == (
        f"note: 2 runs are named {name!r}; comparing the newest, {newer.info.run_id} (converged · {name}); "
        f"give a run id for another: {older.info.run_id}"
    )


@pytest.mark.e2e
def test_a_picture_outside_the_project_needs_its_folder(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "missing" / "c.png"
    status, _, err = run_compare(
        capsys, sweep, "gd lr=0.1 θ0=0 θ1=100", "gd lr=0.001 θ0=0 θ1=100", "--out", str(out)
    )
    assert status == 2
    assert err.strip() == (
        f"error: --out: the folder {out.parent} does not exist; make it first "
        "(only folders inside the project are made for you)"
    )
    assert not out.parent.exists()


@pytest.mark.e2e
def test_a_sweep_is_named_by_what_it_is_and_its_link_opens_its_runs(sweep: Path) -> None:
    import json

    from mlflow.tracking import MlflowClient

    from pipeline.tracking import SHARED_VIEW_TAG, ui_links

    uri = f"sqlite:///{sweep / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("downhill")
    assert experiment is not None
    (parent,) = client.search_runs([experiment.experiment_id], filter_string="tags.`downhill.role` = 'sweep'")
    assert parent.info.run_name.startswith("mse sweep · 3 runs · kc_house_data.csv · ")
    runs, newest = ui_links(uri, "downhill")
    assert runs.endswith(f"/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning")
    assert newest.endswith(f"&viewStateShareKey={parent.info.run_id}") and parent.info.run_name in newest
    view = json.loads(
        client.get_experiment(experiment.experiment_id).tags[SHARED_VIEW_TAG + parent.info.run_id]
    )
    assert view["searchFilter"] == f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    assert "metrics.`train_mse`" in view["selectedColumns"]
    assert newest.rsplit(": ", 1)[1] in parent.data.tags["mlflow.note.content"]  # its description links it


def test_the_gap_pictures_legend_stands_beside_the_curves() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from pipeline.compare import gap_figure

    curves = [("gd lr=0.1", [(0, 1.0), (10, 1e-6), (100, 1e-12)], "#1f77b4")]
    curves.append(("gd lr=0.01", [(0, 1.0), (10, 1e-2), (100, 1e-5)], "#ff7f0e"))
    figure = gap_figure(curves, "two runs")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()  # type: ignore[no-untyped-call]
    renderer = canvas.get_renderer()  # type: ignore[no-untyped-call]
    axes = figure.axes[0]
    legend = axes.get_legend()
    assert legend is not None
    assert legend.get_window_extent(renderer).x0 >= axes.get_window_extent(renderer).x1
