"""Signal (time-series) path, pure parts: features, slot framing, data-quality gate and drift.

Nothing here touches Kafka or a database: the signals agent decodes a window, hands numpy
arrays to these functions and to the detectors in :mod:`linewatch.detectors`, and emits what
comes back. Replay, backtests and benchmarks call the very same code.

- :mod:`.features` turns a batch of windows into a fixed, documented feature vector per window;
- :mod:`.windows` is one sensor's window as recorders and simulators hand it out;
- :mod:`.framing` featurises windows and aligns them into per-asset multi-sensor rows (the live path);
- :mod:`.quality` says which sensor is flat-lined, stuck, saturated, missing or implausible;
- :mod:`.drift` watches each feature's distribution against the training reference.
"""
