"""Diversity seeding over embeddings: k-means++ (D^2 sampling) and k-center greedy.

Both keep one (n,) array of each point's squared distance to its nearest chosen centre and
update it with one centre at a time, so memory is O(n) beyond the data and each step is one
matrix-vector product (O(nd)).  Distances to a labeled set are computed in row chunks.

- k-means++: Arthur & Vassilvitskii (2007), "k-means++: the advantages of careful seeding":
  the next centre is drawn with probability proportional to D(x)^2.
- k-center greedy: Sener & Savarese (2018), "Active learning for convolutional neural networks:
  a core-set approach", Algorithm 1: the next centre is the point farthest from all centres
  (and from the labeled set, which counts as centres already).

The generic driver :func:`d2_seeding` takes a function "squared distances of every point to
point j", which BADGE uses to seed over Kronecker gradient embeddings without forming them.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable

import numpy as np

from .backend import get_array_module, to_numpy

_CHUNK_ELEMS = 1 << 24  # ~16M entries (64 MiB in float32) per distance block


def _rng(rng: Any) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check(X: Any, k: int):
    xp = get_array_module(X)
    X = xp.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n, d); got shape {tuple(X.shape)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r} must be an int >= 1")
    if k > X.shape[0]:
        raise ValueError(f"k={k} is larger than the number of points ({X.shape[0]})")
    if X.dtype.kind != "f":
        X = X.astype(xp.float64)
    return xp, X


def _sq_dist_fn(xp, X) -> Callable[[int], Any]:
    """Squared Euclidean distances of all rows of ``X`` to row j, via |x|^2 + |y|^2 - 2 x.y."""
    sq = (X * X).sum(axis=1)

    def dist(j: int):
        d = sq + sq[j] - 2 * (X @ X[j])
        return xp.maximum(d, 0)

    return dist


def min_sq_dist_to_set(X: Any, Y: Any) -> Any:
    """(n,) squared Euclidean distance from each row of ``X`` to its nearest row of ``Y``, in row chunks."""
    xp = get_array_module(X)
    n, m = X.shape[0], Y.shape[0]
    sx = (X * X).sum(axis=1)
    sy = (Y * Y).sum(axis=1)
    out = xp.full(n, xp.inf, dtype=xp.result_type(X.dtype, Y.dtype))
    rows = max(1, _CHUNK_ELEMS // max(m, 1))
    cols = max(1, _CHUNK_ELEMS // max(rows, 1)) if m > _CHUNK_ELEMS else m
    for s in range(0, n, rows):
        xs = X[s:s + rows]
        best = out[s:s + rows]
        for t in range(0, m, cols):
            d = sx[s:s + rows, None] + sy[None, t:t + cols] - 2 * (xs @ Y[t:t + cols].T)
            best = xp.minimum(best, d.min(axis=1))
        out[s:s + rows] = best
    return xp.maximum(out, 0)


def d2_seeding(
    n: int,
    k: int,
    sq_dist_to: Callable[[int], Any],
    rng: np.random.Generator,
    *,
    xp=np,
    first: int | None = None,
    greedy: bool = False,
    init_min: Any = None,
    picked_dist: list | None = None,
) -> np.ndarray:
    """Pick ``k`` of ``n`` points one at a time from their squared distance to the chosen set.

    ``greedy=False``: D^2 sampling (k-means++); ``greedy=True``: farthest point (k-center).
    ``first``: index of the first centre (default: uniform random, or the farthest from
    ``init_min`` when given).  ``init_min``: (n,) squared distances to points that already
    count as centres (e.g. the labeled set).  ``picked_dist``: if a list, receives each pick's
    squared distance to the centres before it (NaN for a first pick with no reference).
    Returns (k,) int64 host indices, unique.
    """
    with single_threaded_blas(xp):
        return _d2_loop(n, k, sq_dist_to, rng, xp, first, greedy, init_min, picked_dist)


@contextmanager
def single_threaded_blas(xp=np):
    """One BLAS thread for loops of many small BLAS calls (NumPy only).

    Each seeding step is a matrix-vector product, memory-bound, so threads gain little; on a
    busy machine OpenBLAS's spinning threads lose a lot: measured here under load, a 100k x 65
    float32 gemv took 9-13 ms with two threads and 2-4 ms with one (BADGE 100k x 64, b = 1000:
    29 s -> 3.6 s).  Cluster-Margin's coarsening (many 8192-row GEMMs) behaves the same way.
    """
    if xp is not np:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 - scikit-learn's dependency
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _d2_loop(n, k, sq_dist_to, rng, xp, first, greedy, init_min, picked_dist) -> np.ndarray:
    chosen = np.empty(k, dtype=np.int64)
    taken = xp.zeros(n, dtype=bool)
    min_d = None if init_min is None else xp.asarray(init_min, dtype=xp.float64).copy()
    for t in range(k):
        if t == 0 and first is not None:
            j = int(first)
        elif min_d is None:
            j = int(rng.integers(n))
        else:
            md = min_d  # chosen points are held at 0 below, so they are never drawn again
            total = float(md.sum())
            if not np.isfinite(total) or total <= 0:
                # every remaining point coincides with a centre: any untaken one is as good
                free = np.flatnonzero(~to_numpy(taken))
                j = int(free[rng.integers(len(free))])
            elif greedy:
                j = int(md.argmax())
            else:
                # inverse-CDF draw; searchsorted on the cumulative sum is O(n) and exact up to rounding
                cdf = xp.cumsum(md)
                u = rng.random() * float(cdf[-1])
                j = int(xp.searchsorted(cdf, u, side="right"))
                j = min(j, n - 1)
                if bool(taken[j]) or float(md[j]) <= 0:  # only through rounding at a boundary
                    j = int(md.argmax())
        chosen[t] = j
        if picked_dist is not None:
            picked_dist.append(float("nan") if min_d is None else float(min_d[j]))
        taken[j] = True
        if t + 1 < k:
            d = xp.asarray(sq_dist_to(j), dtype=xp.float64)
            if min_d is None:
                min_d = d.copy()
            else:
                xp.minimum(min_d, d, out=min_d)
            min_d[j] = 0.0  # exact zero (rounding could leave a tiny positive); min() keeps earlier zeros
    return chosen


def kmeans_pp(X: Any, k: int, rng: Any = None, *, first: int | None = None) -> np.ndarray:
    """k-means++ seeding (D^2 sampling) of ``k`` rows of ``X`` (n, d); returns (k,) int64 unique indices.

    ``first``: the first centre (default: uniformly random).
    """
    xp, X = _check(X, k)
    return d2_seeding(X.shape[0], k, _sq_dist_fn(xp, X), _rng(rng), xp=xp, first=first)


def kcenter_greedy(X: Any, k: int, X_labeled: Any = None, rng: Any = None) -> np.ndarray:
    """k-center greedy (Sener & Savarese 2018, Alg. 1): ``k`` rows of ``X`` (n, d), each the farthest
    from the labeled set ``X_labeled`` (m, d) and the rows already picked.  Without a labeled set the
    first row is uniformly random.  Returns (k,) int64 unique indices.
    """
    xp, X = _check(X, k)
    init = None
    if X_labeled is not None and len(X_labeled) > 0:
        Y = xp.asarray(X_labeled, dtype=X.dtype)
        if Y.ndim != 2 or Y.shape[1] != X.shape[1]:
            raise ValueError(f"X_labeled must have shape (m, {X.shape[1]}); got {tuple(Y.shape)}")
        init = min_sq_dist_to_set(X, Y)
    return d2_seeding(X.shape[0], k, _sq_dist_fn(xp, X), _rng(rng), xp=xp, greedy=True, init_min=init)
