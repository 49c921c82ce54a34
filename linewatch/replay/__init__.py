"""Replay: the live pipeline run on history, with the metrics and the report that decide thresholds."""
