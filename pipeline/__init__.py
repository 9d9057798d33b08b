"""downhill: an experiment-tracked pipeline that fits models by gradient descent.

One module per DVC stage (``ingest``, ``split``, ``train``, ``evaluate``), each a thin
entry point around a pure function; ``optimize`` is the numpy optimizer they share.
Importing the package imports nothing heavy: MLflow is imported only where it is used.
"""
