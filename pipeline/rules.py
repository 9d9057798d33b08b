"""The range rules of numeric settings, stated once for the core and for the config.

The numpy core (``optimize``, ``split_indices``) checks its arguments with these rules
and raises ``ValueError``; the stages read the same settings from the config with
:func:`pipeline.settings.read_number`, which applies the same rule and names the key.
Plain Python, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Bound:
    """A finite number, optionally whole, within the given bounds."""

    above: float | None = None
    at_least: float | None = None
    below: float | None = None
    integer: bool = False

    def problem(self, value: object) -> str | None:
        """What is wrong with ``value`` (``expected a number > 0, got -1``), or None."""
        noun = "whole number" if self.integer else "number"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a {noun}, got {value!r}"
        if not math.isfinite(value) or (self.integer and value != int(value)):
            return f"expected a finite {noun}, got {value!r}"
        rules = []
        if self.above is not None:
            rules.append((value > self.above, f"> {self.above:g}"))
        if self.at_least is not None:
            rules.append((value >= self.at_least, f">= {self.at_least:g}"))
        if self.below is not None:
            rules.append((value < self.below, f"< {self.below:g}"))
        if not all(holds for holds, _ in rules):
            return f"expected a {noun} {' and '.join(text for _, text in rules)}, got {value!r}"
        return None

    def check(self, name: str, value: object) -> None:
        """Raise ``ValueError("<name> must be a number > 0, got -1")`` if ``value`` breaks the rule."""
        problem = self.problem(value)
        if problem:
            raise ValueError(f"{name} must be {problem.removeprefix('expected ')}")


#: The optimizer's own settings (``optimizer.*`` in the config).
LEARNING_RATE = Bound(above=0)
MAX_ITER = Bound(at_least=1, integer=True)
TOLERANCE = Bound(at_least=0)
DIVERGENCE_RATIO = Bound(above=1)
#: The methods' own (``pipeline/methods.py``): momentum's ``beta``, Adam's ``b1`` and ``b2``;
#: mini-batches; backtracking's constants.
DECAY_RATE = Bound(at_least=0, below=1)
BATCH_SIZE = Bound(at_least=1, integer=True)
SEED = Bound(at_least=0, integer=True)
STEP_DECAY = Bound(at_least=0)
SHRINK = Bound(above=0, below=1)
GROW = Bound(at_least=1)
SUFFICIENT_DECREASE = Bound(above=0, below=1)
#: ``model.loss_scale``, c of a robust cost: the costs divide by c², which must be a
#: positive finite float64 (1e-300² is 0, 1e200² is inf).
LOSS_SCALE = Bound(at_least=1e-150, below=1e150)
#: ``model.exact_rows``: up to this many training rows, a robust cost's certificate and
#: pictures sum over every row; above, over a summary of them (:mod:`pipeline.summary`).
EXACT_ROWS = Bound(at_least=0, integer=True)
#: ``hydra.sweeper.max_batch_size``: the jobs of a sweep handed to its launcher at once.
LAUNCH_BATCH = Bound(at_least=1, integer=True)
#: ``split.test_fraction``: a share of the rows, strictly between none and all.
TEST_FRACTION = Bound(above=0, below=1)
