"""The sweep record beyond 1,000 runs: thinned paths, a run a line, the same outcomes read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import record
from pipeline.outcome import RunSummary
from pipeline.record import read_sweep_record, write_sweep_record


def a_run(index: int, points: int) -> RunSummary:
    """A finished run whose path has ``points`` iterates (θ and cost made up, distinct)."""
    return RunSummary(
        job_key=f"job{index:04d}",
        overrides=[f"model.init.theta0={index}"],
        run_name=f"converged · gd lr=0.1 θ0={index}",
        status="converged",
        message="converged",
        method="gd",
        lr=0.1,
        theta_init=[float(index), 0.0],
        theta=[-52381.31245793 + index, 285.629068981],
        n_iter=points - 1,
        path_steps=list(range(points)),
        path_theta=[[index + step / 3.0, 100.0 + step / 7.0] for step in range(points)],
        path_loss=[1e10 / (step + 1.0) for step in range(points)],
    )


def test_up_to_the_limit_the_record_is_indented_with_every_point(tmp_path: Path) -> None:
    runs = [a_run(index, 40) for index in range(3)]
    write_sweep_record(tmp_path / "sweep.json", "key", runs)
    text = (tmp_path / "sweep.json").read_text()
    assert json.loads(text)["runs"][0]["path_steps"] == list(range(40)) and "fields" not in json.loads(text)
    assert read_sweep_record(tmp_path / "sweep.json") == ("key", runs)


def test_beyond_the_limit_each_run_is_one_line_with_a_thinned_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(record, "FULL_RECORD_RUNS", 4)
    runs = [a_run(index, 40 + index) for index in range(6)] + [a_run(6, 3)]
    write_sweep_record(tmp_path / "sweep.json", "key", runs)
    text = (tmp_path / "sweep.json").read_text()
    payload = json.loads(text)
    assert "thinned to 5 points a run" in payload["paths"] and "artifact sweep.json" in payload["paths"]
    run_lines = [line for line in text.splitlines() if line.startswith('    ["job')]
    assert len(run_lines) == len(runs)
    key, back = read_sweep_record(tmp_path / "sweep.json")
    assert key == "key" and len(back) == len(runs)
    for original, thinned in zip(runs, back, strict=True):
        paths = ("path_steps", "path_theta", "path_loss")
        assert {**original.to_json(), **dict.fromkeys(paths)} == {**thinned.to_json(), **dict.fromkeys(paths)}
        count = min(5, len(original.path_steps))
        assert len(thinned.path_steps) == count
        assert thinned.path_steps[0] == 0 and thinned.path_steps[-1] == original.path_steps[-1]
        for step, theta, loss in zip(thinned.path_steps, thinned.path_theta, thinned.path_loss, strict=True):
            assert theta == pytest.approx(original.path_theta[step], rel=1e-6)
            assert loss == pytest.approx(original.path_loss[step], rel=1e-6)
