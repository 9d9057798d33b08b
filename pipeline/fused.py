"""The fused launcher's jobs, recorded in forked copies of the launching process.

Once the fused launcher (``hydra/launcher=fused``, ``hydra_plugins/downhill_sweeper``)
has fitted a batch of jobs together, what is left of each job is its record in MLflow:
some tens of milliseconds of the store's calls, against a few of fitting. The jobs are
then spread over ``hydra.launcher.n_jobs`` copies of the launching process made by
``fork``: each copy starts with everything the launching process holds (the imports,
the fits, the memory-mapped columns, the least-squares reference and the certificate
of the global minimum), so nothing is imported, read or fitted twice. Runs fitted from
the rows' statistics (the MSE) share nothing else, and their rounds are Python's time:
most are fitted before the launch, by a copy made while the sweep opens its store
(:class:`WorkAhead`, on the core MLflow's import leaves idle); each worker fits those of
its jobs that copy had not finished, side by side (``fit_share``). Each copy then runs
every ``n``-th job through the task Hydra gave the launcher, as
Hydra's own ``run_job`` would, less what the record in MLflow makes redundant (the
job's composed ``config.yaml`` and ``hydra.yaml``, which are its run's params, at 30 ms
a job): Hydra's config of the job is set, its folder gets its log and
``.hydra/overrides.yaml``, and the callbacks run.

Where a fork is unsafe (not Linux; Ray's driver threads; numba's passes on GNU
OpenMP's threads, :func:`pipeline.passes.fork_is_safe`), or one worker is asked for,
the jobs are recorded in the launching process, one after another.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Container, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, flag_override, open_dict, read_write

from pipeline.compose import task_view
from pipeline.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated
from pipeline.passes import end_with_parent, fork_is_safe
from pipeline.tracking import store_engines

log = logging.getLogger("pipeline.sweep")

#: Exit status of a worker whose own code failed (a bug, not a job's error).
WORKER_BROKE = 70


def record_jobs(
    task: Callable[[DictConfig], Any],
    compose: Callable[[int], DictConfig],
    count: int,
    first_index: int,
    workers: int,
    callbacks: Any,
    fit_share: Callable[[Container[int] | None], None] = lambda indices: None,
    draws_after: bool = True,
) -> list[int]:
    """Run ``task`` on the composed config of each of ``count`` jobs (job ``first_index + i``
    on ``compose(i)``), in ``workers`` forked processes where that is safe; return the exit
    status of each worker (empty where the jobs ran here). Each process composes its own
    jobs' configs (side by side, and none held longer than its job), and first calls
    ``fit_share`` with the indices of its jobs (None: all of them). ``draws_after``:
    whether this process will draw the sweep's pictures (not where they are drawn
    ahead, :func:`pipeline.sweep.draw_sweep_ahead`)."""
    if workers <= 1 or not fork_is_safe():
        fit_share(None)
        for index in range(count):
            run_job_quickly(task, compose(index), first_index + index, callbacks)
        return []
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pids = []
    for worker in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker: never returns into the sweep's frames
            _work(task, compose, count, first_index, worker, workers, callbacks, parent, fit_share)
        pids.append(pid)
    from pipeline.pictures import load_drawing_modules

    # This process has nothing to do until the workers are done, then the sweep's end
    # draws its pictures: it loads what they are drawn with while it waits.
    return _wait_for(pids, meanwhile=load_drawing_modules if draws_after else lambda: None)


def _work(
    task: Callable[[DictConfig], Any],
    compose: Callable[[int], DictConfig],
    count: int,
    first_index: int,
    worker: int,
    workers: int,
    callbacks: Any,
    parent: int,
    fit_share: Callable[[Container[int] | None], None],
) -> None:
    """In a forked worker: fit, then record jobs ``worker``, ``worker + workers``, … and leave."""
    status = 0
    try:
        _after_fork(parent)
        fit_share(range(worker, count, workers))
        for index in range(worker, count, workers):
            run_job_quickly(task, compose(index), first_index + index, callbacks)
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
    except Terminated:
        status = EXIT_TERMINATED
    except BaseException:  # a bug in this module: said, and the launching process goes on
        log.exception("a fused worker stopped")
        status = WORKER_BROKE
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)  # not the launching process's atexit handlers, nor its frames


def _after_fork(parent: int) -> None:
    """Make a forked worker safe to use the store: its own database connections, and an
    end with the launching process."""
    # The launching process's connection pools (and their locks, which one of its
    # threads may have held at the fork) are not this process's: SQLAlchemy's advice
    # for a fork is a new pool per engine, with the inherited connections left alone.
    for engine in store_engines():
        engine.dispose(close=False)
    # What this process inherited (MLflow, Hydra, the fits, every job's config: some
    # 350,000 objects) lives until it exits: its garbage collections leave it out, each
    # of them 70-80 ms shorter.
    gc.freeze()
    # Killed with the launching process (kill -9 included), as joblib's workers are:
    # a resumed sweep must not meet a worker of the dead one still recording.
    end_with_parent()
    if os.getppid() != parent:  # it died before the line above
        os._exit(EXIT_TERMINATED)


class WorkAhead:
    """Work done by a forked copy of this process while this one goes on: a sweep's job
    keys, and the fused launcher's fits from the rows' statistics, made while the sweep
    opens its store (MLflow's import, some 2 s in which a core is idle).

    ``pieces`` yields what the copy sends back, a piece at a time; a thread of this
    process receives them as they come, so that the copy never waits on this one.
    :meth:`first` waits for the first piece (what this process needs next: it would make
    it itself in the same time). :meth:`take` takes the other pieces it has sent by
    then, and may stop it: what it had not finished is done where it is needed, as if
    nothing had been done ahead, so that work never delays what follows. :meth:`last`
    waits for the copy to end, and gives its last piece. Where a fork is unsafe
    (:func:`pipeline.passes.fork_is_safe`) nothing is done ahead. The copy says nothing
    (this process makes again what the copy could not, and reports what is wrong) and
    dies with this process, ``kill -9`` included. Used as a context manager, the copy is
    stopped at the end of the block.
    """

    def __init__(self, pieces: Callable[[], Iterator[Any]]) -> None:
        self.pid: int | None = None  # the copy's, until it is reaped
        self.forked: int | None = None  # the copy's, for good (what it left behind is named by it)
        self.received: list[bytes] = []
        self.taken = 0  # the pieces handed out already
        self.arrived = threading.Condition()
        self.receiver: threading.Thread | None = None
        if not fork_is_safe():
            return
        reader, writer = multiprocessing.Pipe(duplex=False)
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the copy: never returns into the sweep's frames
            reader.close()
            _send_pieces(pieces, writer, parent)
        writer.close()
        self.pid = self.forked = pid
        self.receiver = threading.Thread(target=self._receive, args=(reader,), name="work-ahead", daemon=True)
        self.receiver.start()

    def __enter__(self) -> WorkAhead:
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()

    def _receive(self, reader: Connection) -> None:
        try:
            with contextlib.closing(reader), contextlib.suppress(EOFError, OSError):  # until the copy ends
                while True:
                    piece = reader.recv_bytes()
                    with self.arrived:
                        self.received.append(piece)
                        self.arrived.notify_all()
        finally:
            with self.arrived:
                self.receiver = None
                pid, self.pid = self.pid, None
                self.arrived.notify_all()
            if pid is not None:  # the copy ended (the pipe did with it): reaped now, not at the sweep's end
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)

    def first(self, timeout: float | None = None) -> Any | None:
        """The first piece, once the copy has sent it; None where it sent none (nothing
        forked, or the copy failed first) or, within ``timeout`` seconds, has not: then
        the copy is stopped (one that hangs, on a lock another thread held at the fork,
        say, costs that long, once)."""
        with self.arrived:
            self.arrived.wait_for(lambda: self.received or self.receiver is None, timeout)
            piece = self.received[0] if self.received and not self.taken else None
            if piece is not None:
                self.taken = 1
        if piece is None:
            self.close()
            return None
        return pickle.loads(piece)

    def take(self, stop: bool = True) -> list[Any]:
        """The pieces the copy sent (less those taken already), in the order it made
        them; the copy is stopped, unless ``stop`` is False."""
        if stop:
            self.close()
        with self.arrived:
            sent = self.received[self.taken :]
            self.taken += len(sent)
        return [pickle.loads(piece) for piece in sent]

    def last(self, timeout: float | None = None) -> Any | None:
        """The last piece the copy sent (taken already or not), once it has ended; None
        where it sent none, or has not ended within ``timeout`` seconds (then it is
        stopped, and what it was making is made where it is needed)."""
        with self.arrived:
            ended = self.arrived.wait_for(lambda: self.receiver is None, timeout)
        self.close()
        if not ended or not self.received:
            return None
        return pickle.loads(self.received[-1])

    def close(self) -> None:
        """Stop the copy, if it still runs, and let it go (again: nothing)."""
        with self.arrived:  # the receiver reaps a copy that ended by itself: never both
            pid, self.pid = self.pid, None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        receiver = self.receiver
        if receiver is not None:  # the pipe's end came with the copy's: a piece cut short is left out
            receiver.join()


def _send_pieces(pieces: Callable[[], Iterator[Any]], writer: Connection, parent: int) -> None:
    """In the copy made by :class:`WorkAhead`: send each piece, then leave."""
    status = 0
    try:
        _after_fork(parent)
        logging.disable(logging.CRITICAL)  # the launching process says what is wrong
        for piece in pieces():
            writer.send(piece)
    except BaseException:  # Ctrl-C, a closed pipe, a bug: the work is done again where it is needed
        status = 1
    finally:
        os._exit(status)  # not the launching process's atexit handlers, nor its frames


def _wait_for(pids: list[int], meanwhile: Callable[[], None]) -> list[int]:
    """Run ``meanwhile`` (its errors ignored), then wait for every worker; on Ctrl-C or
    SIGTERM, stop them all first, then re-raise."""
    statuses: dict[int, int] = {}
    try:
        with contextlib.suppress(Exception):  # a module that fails to load fails where it is used
            meanwhile()
        for pid in pids:  # each its own: another child of this process is not reaped here
            statuses[pid] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    except (KeyboardInterrupt, Terminated):
        for pid in pids:
            if pid not in statuses:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        for pid in pids:
            if pid not in statuses:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
        raise
    return [statuses[pid] for pid in pids]


def run_job_quickly(
    task: Callable[[DictConfig], Any], config: DictConfig, index: int, callbacks: Any
) -> None:
    """Run job number ``index`` of a sweep as Hydra's ``run_job`` does, less the copies
    of its config that MLflow holds: its Hydra config set, its folder with its log and
    ``.hydra/overrides.yaml``, the callbacks, the task. An error in the task is the
    job's: logged, and the next job runs (as under Hydra's launchers)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobReturn, JobStatus, configure_log, env_override

    with open_dict(config):
        config.hydra.job.id = index
        config.hydra.job.num = index
    folder = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / str(
        OmegaConf.select(config, "hydra.sweep.subdir")
    )
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = str(folder.absolute())
    _set_hydra_config(config)
    hydra_config = HydraConfig.get()
    saved = folder / str(hydra_config.output_subdir or "")
    saved.mkdir(parents=True, exist_ok=True)
    if hydra_config.output_subdir is not None:
        (saved / "overrides.yaml").write_text(OmegaConf.to_yaml(hydra_config.overrides.task))
    configure_log(config.hydra.job_logging, config.hydra.verbose)  # the job's log file
    task_config = task_view(config)
    overrides = list(OmegaConf.to_container(hydra_config.overrides.task))  # type: ignore[arg-type]
    job = JobReturn(
        overrides=overrides, cfg=task_config, working_dir=os.getcwd(), task_name=hydra_config.job.name
    )
    with env_override(hydra_config.job.env_set):
        callbacks.on_job_start(config=config, task_function=task)
        try:
            job.return_value = task(task_config)
            job.status = JobStatus.COMPLETED
        except Exception as error:  # the job's own failure: Hydra's launchers log it and go on
            log.exception("job %d failed", index)
            job.return_value, job.status = error, JobStatus.FAILED
        callbacks.on_job_end(config=config, job_return=job)


def _set_hydra_config(config: DictConfig) -> None:
    """What ``HydraConfig.instance().set_config(config)`` does, less its copy of the hydra
    node (7 ms a job, a tenth of a recorded run's time): Hydra's config of the job is the
    job's own ``hydra`` node, made read-only and still a child of ``config``, as Hydra
    makes its copy, so that its interpolations resolve there. Each job's config is
    composed for that job alone and used by nothing else once it has run."""
    from hydra.core.hydra_config import HydraConfig

    OmegaConf.set_readonly(config.hydra, True)
    node = config._get_node("hydra")
    assert isinstance(node, DictConfig)  # composed by Hydra
    shown = OmegaConf.create({})
    with flag_override(shown, "no_deepcopy_set_nodes", True):
        shown.hydra = node
    node._set_parent(config)
    HydraConfig.instance().cfg = shown  # type: ignore[assignment]
