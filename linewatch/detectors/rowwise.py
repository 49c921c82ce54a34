"""Matrix products whose every row is the same whatever else is in the batch.

A worker scores whatever batch Kafka hands it, and a replay (or a redelivery after a crash)
batches the same events differently. BLAS picks its kernel by the matrix shape (a single row
goes through a matrix-vector kernel, an odd row count through a remainder path), so ``X @ W``
gives a row a last-bit different result depending on how many rows came with it, and a score
that is "the same" in live and in replay is not bit-identical. Computing every product in blocks
of exactly :data:`ROW_BLOCK` rows (the last block zero-padded) gives each row one kernel path,
so its result depends on its own values only. Rows never mix in a product, so the padding rows
change nothing but the shape.

The cost is small where linewatch uses it: scoring matrices are thin (a few to a few hundred
columns), and a block of 64 rows is already past the size where BLAS runs at full speed.
"""

from __future__ import annotations

import numpy as np

#: Rows per BLAS call. Every product of rows is computed in calls of exactly this many rows.
ROW_BLOCK = 64


def rowwise_matmul(a: np.ndarray, b: np.ndarray, *, block: int = ROW_BLOCK) -> np.ndarray:
    """``a @ b`` for ``a`` of shape ``(..., k)`` and ``b`` of shape ``(k,)`` or ``(k, m)``, row-batch invariant.

    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(101, 7)), rng.normal(size=(7, 3))
    >>> bool((rowwise_matmul(a, b)[5:8] == rowwise_matmul(a[5:8], b)).all())
    True
    >>> rowwise_matmul(a, b[:, 0]).shape, rowwise_matmul(a.reshape(101, 1, 7), b).shape
    ((101,), (101, 1, 3))
    """
    a, b = np.asarray(a), np.asarray(b)
    vector = b.ndim == 1
    b2 = b[:, None] if vector else b
    lead = a.shape[:-1]
    rows = a.reshape(-1, a.shape[-1])
    n, dtype = rows.shape[0], np.result_type(rows, b2)
    out = np.empty((n, b2.shape[1]), dtype=dtype)
    full = n - n % block
    for lo in range(0, full, block):
        np.matmul(rows[lo:lo + block], b2, out=out[lo:lo + block])
    if full < n:
        pad = np.zeros((block, rows.shape[1]), dtype=rows.dtype)
        pad[: n - full] = rows[full:]
        out[full:] = (pad @ b2)[: n - full]
    return out.reshape(*lead) if vector else out.reshape(*lead, b2.shape[1])
