"""Nearest-neighbour search over a memory bank, and the greedy coreset that keeps the bank small.

PatchCore's cost is here, not in the network: every patch of a frame is compared with every
bank entry. Both halves are written as BLAS products (one GEMM per query chunk, one GEMV per
coreset step) so numpy does the arithmetic; ``linewatch bench images`` measures the
accuracy/speed trade-off of the bank size. Apart from :mod:`~linewatch.detectors.patchcore`
so that another memory-bank detector (or a benchmark) can reuse the search without the backbone.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from functools import cache

import numpy as np
from threadpoolctl import ThreadpoolController

from linewatch.detectors.rowwise import ROW_BLOCK
from linewatch.errors import ConfigError, DataError

#: (stage, done, total): called during fit ("features", "coreset") and by the backtest ("scoring").
Progress = Callable[[str, int, int], None]
#: Working-set budget for one chunk of the query x bank distance matrix: large enough for BLAS
#: to run at full speed, small enough to stay in cache-friendly territory and bounded memory.
QUERY_CHUNK_BYTES = 16 << 20
#: Query rows per distance product at most (one 128 px frame has 256 patches).
MAX_QUERY_CHUNK = 256
#: Call the progress callback about this many times during coreset selection.
PROGRESS_STEPS = 100


@cache
def _blas_controller() -> ThreadpoolController:
    """One threadpoolctl controller per process (building one scans the loaded libraries, ~0.5 ms)."""
    return ThreadpoolController()


@contextlib.contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Run the enclosed numpy work with ``n`` BLAS threads (``None``: leave BLAS as configured).

    Why: on a 2-core line PC the backbone (onnxruntime) and the patch search (BLAS) alternate
    batch by batch; a multi-threaded BLAS keeps spinning threads after each product that steal
    the core onnxruntime needs next, which measured twice as slow end to end and erratic.
    """
    if n is None:
        yield
        return
    with _blas_controller().limit(limits=n, user_api="blas"):
        yield


def random_projection(n_in: int, n_out: int, seed: int) -> np.ndarray:
    """Seeded Gaussian projection (Johnson-Lindenstrauss): keeps pairwise distances within a few %."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_in, n_out)) / math.sqrt(n_out)).astype(np.float32)


def greedy_coreset(
    features: np.ndarray,
    n_select: int,
    *,
    seed: int = 0,
    selection_dim: int | None = 64,
    progress: Progress | None = None,
) -> np.ndarray:
    """Indices of a greedy k-center coreset of ``features`` (``n_select`` rows).

    Each step adds the point farthest from everything chosen so far, which bounds the distance
    from any training patch to the bank by (at most twice) the optimum. One step is one
    matrix-vector product over all points; a seeded random projection to ``selection_dim``
    dimensions (as PatchCore does) makes that product cheaper while keeping the choice almost
    the same. The first centre is random (seeded).

    >>> pts = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [10.0, 0.0]], dtype=np.float32)
    >>> idx = greedy_coreset(pts, 3, seed=1, selection_dim=None)
    >>> sorted(idx.tolist())[1:], int(idx.min()) in (0, 1)   # both far points, one of the close pair
    ([2, 3], True)
    """
    n, d = features.shape
    if n_select >= n:
        return np.arange(n)
    if n_select < 1:
        raise ConfigError(f"n_select={n_select} must be at least 1")
    rng = np.random.default_rng(seed)
    z = features
    if selection_dim is not None and selection_dim < d:
        z = features @ random_projection(d, selection_dim, int(rng.integers(2**31)))
    z = np.ascontiguousarray(z, dtype=np.float32)
    sq = np.einsum("ij,ij->i", z, z)
    chosen = np.empty(n_select, dtype=np.int64)
    chosen[0] = int(rng.integers(n))
    buf = np.empty(n, dtype=np.float32)
    np.dot(z, z[chosen[0]], out=buf)
    min_d = sq - 2.0 * buf + sq[chosen[0]]
    every = max(1, n_select // PROGRESS_STEPS)
    for k in range(1, n_select):
        i = int(np.argmax(min_d))
        chosen[k] = i
        np.dot(z, z[i], out=buf)
        buf *= -2.0
        buf += sq
        buf += sq[i]
        np.minimum(min_d, buf, out=min_d)
        if progress is not None and (k % every == 0 or k == n_select - 1):
            progress("coreset", k + 1, n_select)
    return chosen


def nearest_sq_distances(
    queries: np.ndarray, bank_t: np.ndarray, *, return_index: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Squared distance from each query row to its nearest bank row (and that row's index).

    ``bank_t`` is the augmented, transposed bank ``[[-2 * bank.T], [|bank|^2]]`` from
    :func:`augment_bank`; with a column of ones appended to the queries one GEMM yields
    ``|b|^2 - 2 q.b`` for every pair, so BLAS does all the arithmetic and only the row minimum
    is left. Adding ``|q|^2`` gives the squared distance. Queries go in chunks so the distance
    block stays within :data:`QUERY_CHUNK_BYTES` however large the batch. ``return_index``
    also returns the nearest row of every query (PatchCore's re-weighting needs it).

    >>> bank = np.array([[0.0, 0.0], [3.0, 4.0]], dtype=np.float32)
    >>> nearest_sq_distances(np.array([[0.0, 1.0], [3.0, 3.0]]), augment_bank(bank)).tolist()
    [1.0, 1.0]
    >>> nearest_sq_distances(np.array([[3.0, 3.0]]), augment_bank(bank), return_index=True)[1].tolist()
    [1]
    """
    d1, m = bank_t.shape
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != d1 - 1:
        raise DataError(f"queries of shape {q.shape} do not match a bank of {d1 - 1}-dimensional features")
    out = np.empty(q.shape[0], dtype=np.float32)
    index = np.empty(q.shape[0], dtype=np.int64) if return_index else None
    # Every product has exactly ``chunk`` rows (the last one padded): a patch's distance must not
    # depend on how many other frames came in its batch (linewatch.detectors.rowwise says why).
    # A chunk's size depends on the bank only, and stays small enough that one frame pads little.
    chunk = min(MAX_QUERY_CHUNK, max(ROW_BLOCK, QUERY_CHUNK_BYTES // (4 * m))) // ROW_BLOCK * ROW_BLOCK
    q_aug = np.ones((chunk, d1), dtype=np.float32)
    for start in range(0, q.shape[0], chunk):
        qc = q[start : start + chunk]
        k = qc.shape[0]
        q_aug[:k, :-1] = qc
        if k < chunk:
            q_aug[k:, :-1] = 0.0
        block = (q_aug @ bank_t)[:k]
        if index is None:
            best = block.min(axis=1)
        else:
            arg = block.argmin(axis=1)
            index[start : start + k] = arg
            best = np.take_along_axis(block, arg[:, None], axis=1)[:, 0]
        out[start : start + k] = best + np.einsum("ij,ij->i", qc, qc)
    np.maximum(out, 0.0, out=out)
    return out if index is None else (out, index)


def augment_bank(bank: np.ndarray) -> np.ndarray:
    """The ``(d + 1, m)`` search form of an ``(m, d)`` bank: ``-2 * bank.T`` over a row of ``|bank|^2``."""
    bank = np.asarray(bank, dtype=np.float32)
    sq = np.einsum("ij,ij->i", bank, bank)
    return np.ascontiguousarray(np.vstack([-2.0 * bank.T, sq[None, :]]))
