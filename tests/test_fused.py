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

import pytest

from pipeline import launchers
from pipeline.errors import PipelineError
from pipeline.launchers import worker_count
from tests.helpers import REPO_ROOT, user_env


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
