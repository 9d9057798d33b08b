"""The fused launcher's workers: forked copies of the launching process that record
a batch's jobs (``pipeline/fused.py``). Each runs in a fresh interpreter, where no
numba pass has started GNU OpenMP's threads (after which nothing forks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import launchers
from pipeline.errors import PipelineError
from pipeline.launchers import worker_count
from tests.helpers import REPO_ROOT, ComposeFn, user_env


@pytest.mark.parametrize(
    ("n_jobs", "jobs", "cores", "workers"),
    [(-1, 100, 2, 2), (-1, 1, 2, 1), (4, 3, 2, 3), (-2, 9, 4, 3), (-9, 9, 2, 1)],
)
def test_the_workers_are_the_cores_asked_for_and_no_more_than_the_jobs(
    monkeypatch: pytest.MonkeyPatch, n_jobs: int, jobs: int, cores: int, workers: int
) -> None:
    monkeypatch.setattr(launchers, "machine_cores", lambda: cores)
    assert worker_count(n_jobs, jobs) == workers


@pytest.mark.parametrize("n_jobs", [0, "2", True, 1.5])
def test_a_count_of_workers_that_is_not_one_is_refused_in_one_line(n_jobs: object) -> None:
    with pytest.raises(PipelineError, match=r"^hydra.launcher.n_jobs: expected a whole number of workers"):
        worker_count(n_jobs, 4)


def probe(folder: Path, lrs: list[str], workers: int) -> subprocess.Popen[str]:
    """:func:`tests.helpers.fused_jobs` in a fresh interpreter, in its own process group."""
    code = "from pathlib import Path; from tests.helpers import fused_jobs, write_job_record; "
    code += f"print(fused_jobs(Path({str(folder)!r}), {lrs!r}, {workers}, write_job_record))"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_two_workers_share_the_jobs_each_job_once_with_its_log_and_overrides(tmp_path: Path) -> None:
    lrs = ["0.1", "0.2", "-1", "0.4", "0.5"]  # the third job fails: logged, the others go on
    process = probe(tmp_path, lrs, 2)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert stdout.strip().splitlines()[-1] == "[0, 0]"  # both workers ended well
    assert "job 2 failed" in stdout and "ValueError: a job that fails" in stdout  # Hydra logs to stdout
    records = {n: json.loads((tmp_path / f"job{n}.json").read_text()) for n in (0, 1, 3, 4)}
    assert [records[n]["lr"] for n in (0, 1, 3, 4)] == [0.1, 0.2, 0.4, 0.5]
    assert not any(record["has_hydra"] for record in records.values())  # the task's config, as Hydra's
    assert all(record["struct"] for record in records.values())
    for number, record in records.items():  # Hydra's config of that job, none other's
        assert record["folder"] == str(tmp_path / "logs" / str(number))
        assert record["dirname"].startswith(f"optimizer.lr={lrs[number]},paths.root=")
    workers = {n: records[n]["pid"] for n in records}
    assert workers[0] == workers[4] != workers[1] == workers[3]  # every second job, in two processes
    assert process.pid not in workers.values()
    for number, lr in enumerate(lrs):
        job = tmp_path / "logs" / str(number)
        assert (job / ".hydra" / "overrides.yaml").read_text() == f"- optimizer.lr={lr}\n"
        (log,) = job.glob("*.log")  # named after Hydra's job name, "train" under `pipeline.train`
        assert number not in records or records[number]["log_file"] == str(log)
        assert ("job 2 failed" in log.read_text()) == (number == 2)


def test_one_worker_records_the_jobs_in_the_launching_process(tmp_path: Path) -> None:
    process = probe(tmp_path, ["0.1", "0.2"], 1)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert stdout.strip().splitlines()[-1] == "[]"
    pids = {json.loads((tmp_path / f"job{n}.json").read_text())["pid"] for n in (0, 1)}
    assert pids == {process.pid}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has ended: its parent has not reaped it
        return stat.read().split(") ", 1)[1][0] != "Z"


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_the_workers_end_with_the_launching_process(tmp_path: Path, signum: int) -> None:
    """Killed (kill -9: the kernel ends them) or terminated (it stops them first): no
    worker of a dead sweep goes on recording beside the sweep that resumes it."""
    process = probe(tmp_path, ["7", "7"], 2)  # each job sleeps a minute
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"job{n}.json").is_file() for n in (0, 1)):
            assert time.monotonic() < deadline and process.poll() is None, process.communicate()
            time.sleep(0.1)
        time.sleep(0.2)  # the records are written before the sleep starts
        workers = [json.loads((tmp_path / f"job{n}.json").read_text())["pid"] for n in (0, 1)]
        os.kill(process.pid, signum)
        process.communicate(timeout=30)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in workers)
        assert process.returncode == -signum if signum == signal.SIGKILL else process.returncode != 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def probe_work_ahead(how: str) -> dict[str, object]:
    """:func:`tests.helpers.work_ahead_probe` in a fresh interpreter; nothing on stderr."""
    code = "import json; from tests.helpers import work_ahead_probe; "
    code += f"print(json.dumps(work_ahead_probe({how!r})))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert isinstance(found, dict)
    return found


@pytest.mark.parametrize(
    ("how", "first", "taken"),
    [
        ("slow", "first", [1_000_000]),
        ("fails", "first", [1_000_000]),
        ("dropped", None, None),
        ("hangs", None, []),
    ],
)
def test_work_ahead_gives_what_its_copy_finished_and_the_copy_ends(
    how: str, first: str | None, taken: list[int] | None
) -> None:
    """The first piece, waited for, then the others sent by then, whole (one larger than a
    pipe holds: the copy never waits on the launching process); the piece under way is
    dropped with the copy, which is gone, reaped, when the launching process goes on
    (also when it failed, was let go, or did not send its first piece in time)."""
    found = probe_work_ahead(how)
    assert found["first"] == first and found["taken"] == taken
    assert found.get("reaped", False) == (how == "fails")  # as it ended, not when the sweep goes on
    pid = found["pid"]
    assert isinstance(pid, int) and pid > 0 and not alive(pid)


def test_fits_made_ahead_come_a_few_jobs_at_a_time_each_the_jobs_own_fit(
    prepared: Path, compose_cfg: ComposeFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """:func:`pipeline.train.fits_ahead`: pieces of ``AHEAD_PIECE`` jobs in the sweep's
    order (two here), each fit the one the job makes alone, to the bit; a robust cost's
    job (it passes over the rows) and a job with a wrong setting are not fitted ahead, and
    a piece of neither is not sent. The launch then takes them (:func:`pipeline.train.prefit`):
    no group is left to the workers. (The robust job is not launched here: its pass
    would start OpenMP's threads, after which nothing forks.)"""
    from pipeline import train
    from pipeline.columns import model_columns, training_split
    from pipeline.costs import Cost
    from pipeline.keys import job_key
    from pipeline.train import fit_with_settings, fits_ahead, prefit, read_settings, unclaimed_prefits

    grids: list[tuple[str, ...]] = [("optimizer.lr=0.1", "model.init.theta1=0"), ("optimizer.lr=0.5",)]
    grids += [("optimizer.lr=0.01", "optimizer.max_iter=50"), ("optimizer.lr=1.5",), ("model.loss=huber",)]
    grids += [("optimizer.lr=-1",)]
    configs = [compose_cfg(*grid, config_name="train") for grid in grids]
    split = training_split(configs[0])
    keys = [job_key(cfg, split.md5) for cfg in configs]
    monkeypatch.setattr(train, "AHEAD_PIECE", 2)
    pieces = list(fits_ahead(configs, keys))
    assert [sorted(piece) for piece in pieces] == [sorted(keys[:2]), sorted(keys[2:4])]
    X = model_columns(split.columns.X, 1, split.copy)
    for index in range(4):
        ahead = pieces[index // 2][keys[index]]
        alone = fit_with_settings(X, split.columns.y, read_settings(configs[index]), Cost())
        assert np.array_equal(ahead.theta, alone.theta) and ahead.n_iter == alone.n_iter
        assert np.array_equal(ahead.loss_history, alone.loss_history)
        assert np.array_equal(ahead.theta_history, alone.theta_history) and ahead.message == alone.message
    design = np.column_stack([np.ones(len(X)), X[:, 0]])
    least_squares = np.linalg.lstsq(design, split.columns.y, rcond=None)[0]
    assert pieces[0][keys[0]].converged
    np.testing.assert_allclose(pieces[0][keys[0]].theta, least_squares, rtol=1e-6)
    assert pieces[1][keys[3]].diverged  # lr 1.5 is past the stability limit (1)
    try:
        assert prefit(configs[:4] + configs[5:], 2, pieces[0] | pieces[1]) == []
    finally:
        assert unclaimed_prefits() == 4  # the four fitted ahead, none taken by a job here
