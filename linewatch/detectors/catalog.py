"""Import every tabular detector module once so :func:`linewatch.detectors.base.registered` is complete.

The registry is filled by ``@register`` as a side effect of importing a module; the CLI,
the backtest and the conformance test import this module instead of remembering the list.

How to pick one (details in ``docs/detectors-tabular.md``):

- one characteristic, classic SPC: ``shewhart_imr`` (large shifts), ``ewma`` / ``cusum``
  (small sustained shifts);
- several correlated characteristics: ``hotelling`` (exact limits), ``robust_mahalanobis``
  (dirty training data), ``mewma`` (small joint drifts), ``pca_monitor`` (many, collinear features);
- non-normal, skewed or multi-modal data: ``isolation_forest``, ``ecod`` (names its culprit);
- a process that drifts legitimately: ``half_space_trees`` (module ``online_hst``).

>>> from linewatch.detectors import base, catalog
>>> set(catalog.TABULAR_DETECTORS) <= set(base.registered())
True
"""

from __future__ import annotations

# Imported for their @register side effect; __all__ marks them as used. The last three are the
# signal detectors (windowed features), registered in the same table registry.
from linewatch.detectors import (
    autoencoder,
    dynamic_pca,
    ecod,
    hotelling,
    isolation_forest,
    mewma,
    online_hst,
    online_signal,
    pca_monitor,
    robust_mahalanobis,
    spc_charts,
)

#: The names the modules above register, in the order the docs present them.
TABULAR_DETECTORS: tuple[str, ...] = (
    "shewhart_imr",
    "ewma",
    "cusum",
    "hotelling",
    "robust_mahalanobis",
    "mewma",
    "pca_monitor",
    "isolation_forest",
    "ecod",
    "half_space_trees",
)

__all__ = [
    "TABULAR_DETECTORS",
    "autoencoder",
    "dynamic_pca",
    "ecod",
    "hotelling",
    "isolation_forest",
    "mewma",
    "online_hst",
    "online_signal",
    "pca_monitor",
    "robust_mahalanobis",
    "spc_charts",
]
