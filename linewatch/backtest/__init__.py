"""Backtests: fit on known-good history, replay a labelled test set, report the shared metrics.

``metrics`` defines precision, recall, f1, far, mar and auroc once for every modality;
``tabular`` runs a CSV backtest; ``cli`` exposes ``linewatch backtest csv``. The signal and
image backtests live beside them and report through the same metrics.
"""
