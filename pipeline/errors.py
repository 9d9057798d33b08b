"""How entry points end: one line for an expected mistake, clean stops on signals."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import ParamSpec, TypeVar

#: Set to 1 to see the full traceback of an expected error (for debugging).
DEBUG_ENV = "DOWNHILL_DEBUG"
#: Exit statuses: an expected mistake, Ctrl-C (SIGINT), SIGTERM (as a shell reports them).
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

P = ParamSpec("P")
R = TypeVar("R")

#: Set once a signal stopped this process, so that clean-up can tell KILLED from FAILED.
stopped_by_signal = False


class PipelineError(Exception):
    """A mistake in the input or the configuration that the user can fix."""


class Terminated(BaseException):
    """SIGTERM, raised where the main thread is so that ``finally`` blocks still run."""


#: The signal behind each stop's exception.
STOPS: dict[type[BaseException], signal.Signals] = {
    Terminated: signal.SIGTERM,
    KeyboardInterrupt: signal.SIGINT,
}


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


#: How soon a stop signal lost in a finalizer is sent again.
RESEND_SECONDS = 0.01


def _stops_again(
    hook: Callable[[sys.UnraisableHookArgs], object],
) -> Callable[[sys.UnraisableHookArgs], None]:
    """``sys.unraisablehook`` that sends a stop lost in a finalizer again.

    A signal's exception raised while a finalizer (``__del__``) runs cannot leave it:
    Python printed its traceback and went on, so the process did not stop (a fused
    worker recorded the rest of its jobs after SIGTERM, met in GitPython's ``Repo``).
    The signal sent again is raised at the next line outside, where the stop is clean.
    """

    def again(unraisable: sys.UnraisableHookArgs) -> None:
        stop = STOPS.get(unraisable.exc_type)
        if stop is None:
            hook(unraisable)
            return
        # From a thread, a moment later: sent from here (os.kill, signal.raise_signal) the
        # handler would run at once, still inside this hook, and be lost again.
        threading.Timer(RESEND_SECONDS, os.kill, (os.getpid(), stop)).start()

    again.stops_again = True  # type: ignore[attr-defined]
    return again


def first_line(error: BaseException) -> str:
    """An exception's message, first line only (or its type's name if it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def fail(message: str, status: int = EXIT_USAGE) -> None:
    """Print ``error: <message>`` on stderr and exit with ``status``."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status)


def exit_on_error(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate an entry point.

    A :class:`PipelineError` becomes one line and exit 2; Ctrl-C exits 130 and SIGTERM
    143, after the ``finally`` blocks and context managers on the way have cleaned up
    (temporary files removed, MLflow runs marked KILLED).

    Meanwhile a log handler that cannot write (the log file of a job on a disk that
    filled) drops the line, as the ``logging`` module advises for production, instead
    of printing its traceback over the one-line error that says what happened.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        global stopped_by_signal
        signal.signal(signal.SIGTERM, _raise_terminated)
        if not getattr(sys.unraisablehook, "stops_again", False):
            sys.unraisablehook = _stops_again(sys.unraisablehook)
        raising, logging.raiseExceptions = logging.raiseExceptions, False
        try:
            return func(*args, **kwargs)
        except PipelineError as error:
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            fail(str(error))
        except KeyboardInterrupt:
            stopped_by_signal = True
            fail("interrupted (SIGINT); finished runs are kept", EXIT_INTERRUPTED)
        except Terminated:
            stopped_by_signal = True
            fail("terminated (SIGTERM); finished runs are kept", EXIT_TERMINATED)
        finally:
            logging.raiseExceptions = raising
        raise AssertionError("unreachable")  # fail() always exits

    return wrapper
