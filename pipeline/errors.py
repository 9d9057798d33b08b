"""Expected mistakes end in one line that names what is wrong, never a traceback."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

#: Set to 1 to see the full traceback of an expected error (for debugging).
DEBUG_ENV = "DOWNHILL_DEBUG"
#: Exit status of a run stopped by an expected mistake.
EXIT_USAGE = 2

P = ParamSpec("P")
R = TypeVar("R")


class PipelineError(Exception):
    """A mistake in the input or the configuration that the user can fix."""


def fail(message: str) -> None:
    """Print ``error: <message>`` on stderr and exit with :data:`EXIT_USAGE`."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def exit_on_error(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate an entry point: a :class:`PipelineError` becomes one line and exit 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except PipelineError as error:
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            fail(str(error))
            raise AssertionError("unreachable") from None

    return wrapper
