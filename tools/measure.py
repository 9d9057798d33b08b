"""Wall time and peak memory of a command run as a user runs it, for the benchmarks.

Memory is sampled every 50 ms over the command's whole process tree and counted
proportionally (PSS: a page a forked child or another process shares counts once in
all): resident, and anonymous (``Pss_Anon`` + ``Pss_Shmem``), which leaves out mapped
files the kernel can drop at any time. The command's own process is also counted alone.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tools.workspace import REPO_ROOT, user_env


@dataclass(frozen=True)
class Measured:
    """What :func:`measured_run` saw: seconds, peak MB (tree resident, tree anonymous,
    the command's own process anonymous) and its standard output."""

    seconds: float
    resident: float
    anonymous: float
    own_anonymous: float
    output: str


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):  # the process or one of its tasks ended meanwhile
            for task in Path(f"/proc/{current}/task").glob("*"):
                with contextlib.suppress(OSError):
                    todo.extend(int(child) for child in (task / "children").read_text().split())
    return found


def memory_of(pids: list[int]) -> tuple[float, float]:
    """Resident and anonymous MB of ``pids``, summed proportionally (PSS: a page shared
    with a forked child or another process counts once in all); anonymous is
    ``Pss_Anon`` + ``Pss_Shmem``: not the mapped files the kernel can drop."""
    resident = anonymous = 0.0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        fields = {line.split(":")[0]: float(line.split()[1]) for line in rollup.splitlines()[1:]}
        resident += fields.get("Pss", 0.0)
        anonymous += fields.get("Pss_Anon", 0.0) + fields.get("Pss_Shmem", 0.0)
    return resident / 1024, anonymous / 1024


def measured_run(command: list[str]) -> Measured:
    """Run ``command`` as a user runs it (from the project, in the user's environment)
    and measure it; a failing command ends the bench with its error."""
    # The output goes to files, not pipes: nothing reads a pipe while the loop samples,
    # and a command that writes more than a pipe holds (64 kB: a 1,000-run sweep's log
    # lines) would block on its next write and never finish.
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        start = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=user_env(), stdout=out_file, stderr=err_file, text=True
        )
        peak_resident = peak_anonymous = peak_own = 0.0
        while process.poll() is None:
            resident, anonymous = memory_of(tree(process.pid))
            own = memory_of([process.pid])[1]
            peak_resident, peak_anonymous = max(peak_resident, resident), max(peak_anonymous, anonymous)
            peak_own = max(peak_own, own)
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    if process.returncode != 0:
        sys.exit(f"bench: {' '.join(command)} failed:\n{err[-2000:]}")
    return Measured(seconds, peak_resident, peak_anonymous, peak_own, out)


def measured(command: list[str]) -> tuple[float, float, float, str]:
    """:func:`measured_run` as a tuple: seconds, tree resident MB, tree anonymous MB, output."""
    run = measured_run(command)
    return run.seconds, run.resident, run.anonymous, run.output
