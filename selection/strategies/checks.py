"""Input and output checks shared by every strategy (``Strategy.select`` runs them): shapes,
finiteness and the batch size going in, unique in-pool indices coming out.  A bad input raises
``ValueError`` naming the parameter, the value and what is allowed.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module, to_numpy


def _finite(xp, a) -> bool:
    # One float64 reduction instead of an elementwise mask: NaN/inf propagate into the sum, and
    # float32 data cannot overflow a float64 sum; a non-finite sum is re-checked exactly.
    if a.size == 0 or bool(xp.isfinite(a.sum(dtype=xp.float64))):
        return True
    return bool(xp.isfinite(a).all())


def check_inputs(X_pool, probs_pool, X_labeled, probs_labeled, y_labeled, batch_size, *, needs_probs=True):
    """Validate shapes, finiteness and the batch size; raise ``ValueError`` naming the problem."""
    xp = get_array_module(X_pool)
    if X_pool is None:
        raise ValueError("X_pool is required: an (n, d) array of pool embeddings")
    X_pool = xp.asarray(X_pool)
    if X_pool.ndim != 2:
        raise ValueError(f"X_pool must be 2-D (n, d); got shape {tuple(X_pool.shape)}")
    n, d = X_pool.shape
    if n == 0:
        raise ValueError("the pool is empty: nothing left to select")
    if not _finite(xp, X_pool):
        raise ValueError("X_pool contains NaN or inf")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError(f"batch_size must be an int; got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the pool ({n} items)")
    if probs_pool is None:
        if needs_probs:
            raise ValueError("probs_pool is required: an (n, c) array of class probabilities")
    else:
        probs_pool = xp.asarray(probs_pool)
        if probs_pool.ndim != 2 or probs_pool.shape[0] != n:
            raise ValueError(f"probs_pool must have shape ({n}, c) to match X_pool; got {tuple(probs_pool.shape)}")
        if probs_pool.shape[1] < 2:
            raise ValueError(f"probs_pool has c={probs_pool.shape[1]} classes; at least 2 are needed")
        _check_probs(xp, probs_pool, "probs_pool")
    c = None if probs_pool is None else probs_pool.shape[1]
    if X_labeled is not None:
        X_labeled = xp.asarray(X_labeled)
        if X_labeled.ndim != 2 or X_labeled.shape[1] != d:
            raise ValueError(f"X_labeled must have shape (m, {d}); got {tuple(X_labeled.shape)}")
        if not _finite(xp, X_labeled):
            raise ValueError("X_labeled contains NaN or inf")
    m = 0 if X_labeled is None else X_labeled.shape[0]
    if y_labeled is not None:
        y_labeled = np.asarray(to_numpy(y_labeled))
        if y_labeled.ndim != 1 or len(y_labeled) != m:
            raise ValueError(f"y_labeled must have shape ({m},) to match X_labeled; got {y_labeled.shape}")
        if m and not np.issubdtype(y_labeled.dtype, np.integer):
            raise ValueError(f"y_labeled must hold integer class indices; got dtype {y_labeled.dtype}")
        if m and c is not None and (y_labeled.min() < 0 or y_labeled.max() >= c):
            raise ValueError(f"y_labeled has class indices outside [0, {c})")
        y_labeled = y_labeled.astype(np.int64)
    if probs_labeled is not None:
        probs_labeled = xp.asarray(probs_labeled)
        if probs_labeled.ndim != 2 or probs_labeled.shape[0] != m or (c is not None and probs_labeled.shape[1] != c):
            raise ValueError(f"probs_labeled must have shape ({m}, {c}); got {tuple(probs_labeled.shape)}")
        _check_probs(xp, probs_labeled, "probs_labeled")
    return X_pool, probs_pool, X_labeled, probs_labeled, y_labeled


def _check_probs(xp, p, name: str) -> None:
    sums = p.sum(axis=1, dtype=xp.float64)  # NaN/inf in a row make its sum non-finite
    if not bool(xp.isfinite(sums).all()) and not bool(xp.isfinite(p).all()):
        raise ValueError(f"{name} contains NaN or inf")
    if bool(p.min() < 0):
        raise ValueError(f"{name} has negative entries")
    if bool((xp.abs(sums - 1) > 1e-3).any()):
        raise ValueError(f"{name} rows must sum to 1 (max deviation {float(xp.abs(sums - 1).max()):.3g})")


def _check_output(idx: np.ndarray, n: int, b: int, name: str) -> None:
    # A strategy bug must never reach the queue as duplicates or out-of-range rows.
    if idx.ndim != 1 or len(idx) != b:
        raise AssertionError(f"strategy {name!r} returned {idx.shape} indices; expected ({b},)")
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        raise AssertionError(f"strategy {name!r} returned indices outside the pool [0, {n})")
    if len(np.unique(idx)) != len(idx):
        raise AssertionError(f"strategy {name!r} returned duplicate indices")
