"""The training rows spread over a Ray cluster: each pass of a fit computed where its rows are.

One machine's pass (:mod:`pipeline.kernels`) cuts the rows into ``CHUNKS`` chunks and
adds the chunks' sums in order. Here each Ray actor holds whole chunks of that same
cut, read once from the split's column copy (:mod:`pipeline.columns`) on the
filesystem every node shares at the project's path, and returns one partial sum per
chunk; the driver stacks them in chunk order and adds them as one machine does. So a
fit's θ is, to the bit, the one-machine θ, and memory per node is its share of the
rows. Ray is imported only here (it is in ``.venv-cluster``: ``make cluster``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline import kernels
from pipeline.errors import PipelineError

FloatArray = NDArray[np.float64]
#: What a machine without Ray is told.
NO_RAY = "rows.ray_address: Ray is not installed here; run `make cluster` and use .venv-cluster/bin/python"


def shares(n_rows: int, actors: int) -> list[tuple[int, int, list[int]]]:
    """How ``actors`` holders share the chunks of ``n_rows`` rows: for each, its first and
    past-last row and where its chunks start and end within its rows (whole chunks of the
    one-machine cut, consecutive, in order)."""
    bounds = kernels.chunk_bounds(n_rows)
    found = []
    for share in np.array_split(np.arange(kernels.CHUNKS), actors):
        low, high = int(bounds[share[0]]), int(bounds[share[-1] + 1])
        found.append((low, high, (bounds[share[0] : share[-1] + 2] - low).tolist()))
    return found


#: Seconds to wait for one free CPU on as many nodes as there are actors.
PLACEMENT_WAIT = 60


def _placements(actors: int) -> tuple[list[Any], Any]:
    """Where each actor goes: one per node (a ``STRICT_SPREAD`` placement group) when the
    cluster has that many nodes with a CPU free; else as spread as Ray can (``SPREAD``).
    Returns each actor's strategy and the placement group (None without one)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    alive = sum(1 for node in ray.nodes() if node.get("Alive"))
    if actors <= alive:
        group = placement_group([{"CPU": 1}] * actors, strategy="STRICT_SPREAD")
        if group.wait(timeout_seconds=PLACEMENT_WAIT):
            bundles = [
                PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i) for i in range(actors)
            ]
            return bundles, group
        remove_placement_group(group)
    return ["SPREAD"] * actors, None


class RowHolder:
    """One actor's rows: ``X`` and ``y`` rows ``low:high`` of the copy in ``folder``, and
    where its chunks start and end within them."""

    def __init__(self, folder: str, low: int, high: int, bounds: list[int]) -> None:
        X = np.load(Path(folder) / "X.npy", mmap_mode="r")
        y = np.load(Path(folder) / "y.npy", mmap_mode="r")
        self.X, self.y = np.array(X[low:high]), np.array(y[low:high])  # in this node's memory
        self.bounds = np.asarray(bounds, dtype=np.int64)

    def partials(
        self, y_inv: float, slopes: FloatArray, constants: FloatArray, c: float, kind: int
    ) -> FloatArray:
        return kernels.chunk_partials(self.X, self.y, y_inv, slopes, constants, c, kind, self.bounds)

    def node(self) -> str:
        """The Ray node this actor runs on."""
        import ray

        return str(ray.get_runtime_context().get_node_id())


class RayRows:
    """The rows of a column copy spread over ``actors`` Ray actors, one share of whole
    chunks each, one actor per node where the cluster has enough. Implements
    :class:`pipeline.objective.RowSource`.

    Parameters
    ----------
    folder : Path
        The column copy (``X.npy``, ``y.npy``), at the same path on every node.
    n_rows : int
        Rows in the copy.
    actors : int
        How many actors share the chunks (at most ``CHUNKS``).
    """

    def __init__(self, folder: Path, n_rows: int, actors: int) -> None:
        try:
            import ray
        except ImportError:
            raise PipelineError(NO_RAY) from None
        if not 1 <= actors <= kernels.CHUNKS:
            raise PipelineError(
                f"rows.actors: expected a whole number from 1 to {kernels.CHUNKS}, got {actors}"
            )
        self.actors: list[Any] = []
        strategies, self.group = _placements(actors)
        for share, strategy in zip(shares(n_rows, actors), strategies, strict=True):
            # One CPU held while the actor lives (an actor holds none by default once placed).
            holder = ray.remote(RowHolder).options(scheduling_strategy=strategy, num_cpus=1)
            self.actors.append(holder.remote(str(folder), *share))

    @classmethod
    def connect(cls, address: str, folder: Path, actors: int) -> RayRows:
        """Join the cluster at ``address`` (unless this process is in one already: a job
        the Ray launcher started) and spread the copy in ``folder`` over it."""
        try:
            import ray
        except ImportError:
            raise PipelineError(NO_RAY) from None
        if not ray.is_initialized():
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise PipelineError(
                    f"rows.ray_address={address}: cannot join the Ray cluster ({error})"
                ) from None
        n_rows = int(np.load(folder / "y.npy", mmap_mode="r").shape[0])
        return cls(folder, n_rows, actors)

    def partials(
        self, y_inv: float, slopes: FloatArray, constants: FloatArray, c: float, kind: int
    ) -> FloatArray:
        """Every chunk's sums, shape (CHUNKS, K, d + 2), in chunk order."""
        import ray

        shares = ray.get([actor.partials.remote(y_inv, slopes, constants, c, kind) for actor in self.actors])
        return np.concatenate(shares, axis=0)

    def close(self) -> None:
        """End the actors, freeing their nodes' memory and CPUs."""
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.group is not None:  # its bundles hold a CPU on each node until removed
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.group)
            self.group = None

    def nodes(self) -> list[str]:
        """The node of each actor, in order."""
        import ray

        return [str(node) for node in ray.get([actor.node.remote() for actor in self.actors])]
