"""Guards every strategy shares: no two picks on identical embeddings, and how much of a batch to
spend on looking for unseen classes.

Identical rows (the same embedding under different items: duplicate images, or data with a few
integer features where many rows coincide) have identical scores, so a top-b strategy puts all
copies of an uncertain row into one batch, and labeling the second copy teaches the head
nothing.  :func:`distinct_rows` finds, in O((n + m) d) plus a sort, the pool rows that are not a
copy of a labeled row nor of an earlier pool row; the strategy then runs on those only.

Unseen classes: the Good–Turing estimate of the missing probability mass (Good 1953) from the
label counts is M0 = f1 / N, where f1 is the number of classes seen exactly once and N the
number of labels: the chance that the next uniformly drawn item belongs to a class not seen
yet.  :func:`unseen_share` spends that share of the batch (at most ``cap``) on exploration,
and nothing once every declared class has a label.  It shrinks by itself as classes collect
labels (f1 falls), so a declared class with no items at all does not cost every later batch
a fixed share.  Actively chosen labels are not a uniform sample, so M0 is a heuristic here.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import get_array_module, to_numpy


def _fingerprint(X: Any, r: Any) -> np.ndarray:
    xp = get_array_module(X)
    step = 1 << 15  # float64 copies of row chunks only (a 1M x 768 float32 pool stays as it is)
    return np.concatenate([to_numpy(xp.asarray(X[s:s + step], dtype=xp.float64) @ r)
                           for s in range(0, X.shape[0], step)]) if X.shape[0] else np.empty(0)


def distinct_rows(X_pool: Any, X_labeled: Any = None) -> np.ndarray | None:
    """Pool rows to keep: (k,) int64 sorted, or None when every row is distinct already.

    A row is dropped when it is byte-for-byte equal to a labeled row or to a pool row with a
    lower index.  Equal rows have equal random projections (up to rounding), so only rows whose
    projections agree to 1e-9 relative are compared exactly.
    """
    xp = get_array_module(X_pool)
    n, d = X_pool.shape
    m = 0 if X_labeled is None else X_labeled.shape[0]
    r = xp.asarray(np.random.default_rng(12345).normal(size=d))
    f = np.concatenate([_fingerprint(X_labeled, r) if m else np.empty(0), _fingerprint(X_pool, r)])
    order = np.lexsort((np.arange(m + n), f))  # by projection; ties: labeled first, then lower index
    fs = f[order]
    close = np.flatnonzero(np.abs(np.diff(fs)) <= 1e-9 * (np.abs(fs[1:]) + 1.0))
    if len(close) == 0:
        return None
    a, b = order[close], order[close + 1]

    def rows(ix):
        ix = np.asarray(ix)
        out = np.empty((len(ix), d), dtype=np.float64)
        lab = ix < m
        if lab.any():
            out[lab] = to_numpy(X_labeled[xp.asarray(ix[lab])])
        if (~lab).any():
            out[~lab] = to_numpy(X_pool[xp.asarray(ix[~lab] - m)])
        return out

    same = (rows(a) == rows(b)).all(axis=1)
    dup = b[same]
    dup = dup[dup >= m] - m  # a labeled row is never "dropped"; its pool copies are
    if len(dup) == 0:
        return None
    keep = np.ones(n, dtype=bool)
    keep[dup] = False
    return np.flatnonzero(keep)


def good_turing_missing_mass(y_labeled: Any) -> float:
    """Good–Turing estimate f1 / N of the probability mass of classes not seen in ``y_labeled`` (N,)."""
    y = np.asarray(to_numpy(y_labeled)).ravel()
    if len(y) == 0:
        return 1.0
    counts = np.unique(y, return_counts=True)[1]
    return float((counts == 1).sum()) / len(y)


def unseen_share(rule: str, cap: float, y_labeled: Any, n_classes: int) -> float:
    """Share of the batch to spend on unseen classes: ``cap`` ("fixed") or min(cap, M0) ("good_turing"),
    zero when all ``n_classes`` have a label."""
    y = np.asarray(to_numpy(y_labeled)).ravel() if y_labeled is not None else np.empty(0)
    if len(np.unique(y)) >= n_classes or cap <= 0:
        return 0.0
    if rule == "fixed":
        return float(cap)
    if rule == "good_turing":
        return float(min(cap, good_turing_missing_mass(y)))
    raise ValueError(f"unseen_rule={rule!r} is not one of ['good_turing', 'fixed']")


def distinct_batch(X_pool: Any, idx: np.ndarray) -> bool:
    """Whether the chosen rows ``X_pool[idx]`` are pairwise different (exact)."""
    rows = np.asarray(to_numpy(X_pool[get_array_module(X_pool).asarray(idx)]))
    return len(np.unique(rows, axis=0)) == len(idx)
