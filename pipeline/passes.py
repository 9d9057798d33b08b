"""Passes over rows that need not fit in memory: blocks, and exact medians by passes.

Plain numpy, no I/O. A stage hands these functions a way to produce its values (the
residuals of a memory-mapped split, say) block by block, as often as asked; they hold
one block at a time, so memory stays bounded whatever the number of rows.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController

FloatArray = NDArray[np.float64]

#: Rows per block: a few MB, cache-friendly, and the unit every pass reads.
BLOCK_ROWS = 1 << 16
#: Values an order statistic gathers into memory at most: below this the search stops
#: narrowing and sorts what is left (8 MB of float64).
GATHER_LIMIT = 1 << 20
#: Bins a narrowing pass splits the current interval into.
BINS = 1 << 16

#: Something that yields a stream's values again at every call, block by block.
Stream = Callable[[], Iterable[FloatArray]]


def row_blocks(n_rows: int, block_rows: int = BLOCK_ROWS) -> Iterator[slice]:
    """Consecutive slices of ``block_rows`` rows covering ``range(n_rows)``."""
    for start in range(0, n_rows, block_rows):
        yield slice(start, min(start + block_rows, n_rows))


def order_statistic(stream: Stream, k: int) -> float:
    """The ``k``-th smallest value (0-based) of ``stream``, exactly, in bounded memory.

    Each pass counts how many values fall below an interval and in each of
    :data:`BINS` bins inside it, then keeps the bin that holds the ``k``-th value; once
    the interval holds at most :data:`GATHER_LIMIT` values they are gathered and the
    answer picked with ``numpy.partition``. A stream that fits in that limit takes one
    pass; float64 values need at most five narrowing passes. The values must be finite.
    """
    low, high = -math.inf, math.inf
    below = 0
    while True:
        inside, values, smallest, largest = _count_inside(stream, low, high)
        if not 0 <= k - below < inside:
            raise ValueError(f"order statistic {k} of a stream of {below + inside} values or more")
        if values is not None:
            return float(np.partition(values, k - below)[k - below])
        if smallest == largest:
            return smallest
        edges = np.linspace(smallest, largest, BINS + 1)
        edges[-1] = np.nextafter(largest, math.inf)  # bins are half-open: [edge, next edge)
        counts = np.zeros(BINS, dtype=np.int64)
        for block in stream():
            chosen = block[(block >= smallest) & (block <= largest)]
            counts += np.bincount(_bin_of(chosen, edges), minlength=BINS)[:BINS]
        # No value lies between ``low`` and ``smallest``: ``below`` still counts those
        # under the interval. Then the bins in order, until the k-th is passed.
        cumulative = below + np.cumsum(counts)
        chosen_bin = int(np.searchsorted(cumulative, k, side="right"))
        below = int(cumulative[chosen_bin - 1]) if chosen_bin else below
        low, high = float(edges[chosen_bin]), float(edges[chosen_bin + 1])


def median(stream: Stream, count: int) -> float:
    """The median of ``count`` values (the mean of the middle two for an even count), as
    ``numpy.median`` gives it, by :func:`order_statistic`."""
    if count < 1:
        raise ValueError("the median of no values")
    upper = order_statistic(stream, count // 2)
    if count % 2:
        return upper
    return float(np.mean([order_statistic(stream, count // 2 - 1), upper]))


def _count_inside(stream: Stream, low: float, high: float) -> tuple[int, FloatArray | None, float, float]:
    """How many values lie in ``[low, high)``, their least and greatest, and the values
    themselves if there are at most :data:`GATHER_LIMIT` of them."""
    inside, smallest, largest = 0, math.inf, -math.inf
    kept: list[FloatArray] | None = []
    for block in stream():
        chosen = block[(block >= low) & (block < high)] if math.isfinite(low) else np.asarray(block)
        if not chosen.size:
            continue
        inside += chosen.size
        smallest, largest = min(smallest, float(chosen.min())), max(largest, float(chosen.max()))
        if kept is not None and inside <= GATHER_LIMIT:
            kept.append(chosen.copy())
        else:
            kept = None
    values = np.concatenate(kept) if kept else (np.zeros(0) if kept is not None else None)
    return inside, values, smallest, largest


def _bin_of(values: FloatArray, edges: FloatArray) -> NDArray[np.intp]:
    """The half-open bin ``[edges[i], edges[i + 1])`` of each value: estimated by
    arithmetic, then moved by one where rounding put it beside the right bin."""
    bins = edges.size - 1
    span = float(edges[-1] - edges[0])
    guess = np.clip(((values - edges[0]) * (bins / span)).astype(np.intp), 0, bins - 1)
    guess -= values < edges[guess]
    guess += values >= edges[guess + 1]
    return np.asarray(np.clip(guess, 0, bins - 1), dtype=np.intp)


def one_blas_thread() -> Any:
    """BLAS on one thread: a multi-threaded BLAS adds partial sums in an order that depends
    on its thread count (joblib's workers get one thread, the main process all cores), and
    θ must not depend on the launcher. The matrices here are narrow: one thread is as fast.

    The libraries are looked up once per process (a lookup costs about a millisecond).
    """
    global _blas_controller
    if _blas_controller is None:
        _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")


_blas_controller: ThreadpoolController | None = None


def fork_is_safe() -> bool:
    """Whether a copy of this process made by ``fork`` can go on working.

    Only on Linux (macOS's system libraries do not survive a fork); not under Ray,
    whose driver holds threads of its own that a fork would copy mid-flight; nor once
    numba's passes ran on GNU OpenMP's threads (a robust cost's runs), which abort a
    forked copy ("Terminating: fork() called from a process already using GNU OpenMP").
    """
    if sys.platform != "linux" or "ray" in sys.modules:
        return False
    numba = sys.modules.get("numba")
    if numba is None:
        return True
    try:
        return bool(numba.threading_layer() != "omp")
    except ValueError:  # no parallel pass has run: no threading layer was chosen yet
        return True


#: ``prctl`` option: the signal this process gets when its parent dies (Linux).
PR_SET_PDEATHSIG = 1


def end_with_parent() -> None:
    """Have this process (a forked copy) killed when the process that forked it dies,
    ``kill -9`` included (Linux; elsewhere nothing forks)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
