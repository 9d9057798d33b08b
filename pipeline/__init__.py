"""downhill: an experiment-tracked pipeline that fits models by gradient descent.

One module per DVC stage (``ingest``, ``split``, ``train``, ``evaluate``), each a thin
entry point around a pure function; ``optimize`` is the numpy optimizer they share.
Importing the package imports nothing heavy: MLflow is imported only where it is used.
"""

import os as _os
from pathlib import Path as _Path


def _offline_defaults() -> None:
    """Set the defaults of ``offline.env`` (no telemetry, no update checks) where unset."""
    listed = _Path(__file__).resolve().parents[1] / "offline.env"
    if listed.is_file():
        for line in listed.read_text().splitlines():
            name, _, value = line.partition("=")
            if name and not name.startswith("#") and value:
                _os.environ.setdefault(name.strip(), value.strip())


_offline_defaults()
