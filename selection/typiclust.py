"""TypiClust (Hacohen, Dekel & Weinshall, "Active Learning on a Budget: Opposite Strategies Suit
High and Low Budgets", ICML 2022, Sec. 4 and Algorithm 1): pick typical points of uncovered clusters.

1. Cluster labeled + pool embeddings with k-means into K = |L| + b clusters (at most
   ``max_clusters``; the paper's code caps K at 500 and uses mini-batch k-means on large sets).
2. For each of the b picks: among clusters with at least ``min_cluster_size`` points (the
   paper's 5) choose the one with the fewest labeled-or-chosen points, the largest first
   ("the largest uncovered cluster"), and take its most typical unlabeled point,

       Typicality(x) = ( (1/k) * sum_{x_i in kNN(x)} ||x - x_i|| )^-1      (paper Eq. 4, k = 20)

   with the neighbours taken within the cluster (the paper's code does the same).

Clusters larger than ``max_ref`` points estimate typicality on a uniform subsample of
``max_ref`` of their points (candidates and neighbours alike), so memory stays O(max_ref^2).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .backend import to_numpy

MAX_CLUSTERS = 500
MIN_CLUSTER_SIZE = 5
KNN = 20
MAX_REF = 2000


def kmeans_labels(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means cluster ids (n,) of ``X`` (scikit-learn; mini-batch above 50k rows, as the paper's code)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans  # noqa: PLC0415
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    seed = int(rng.integers(2**31 - 1))
    if k <= 1:
        return np.zeros(X.shape[0], dtype=np.int64)
    with threadpool_limits(limits=1):  # small dense problems: threads cost more than they save here
        if X.shape[0] > 50_000:
            km = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=4096, n_init=1, max_iter=50)
        else:
            km = KMeans(n_clusters=k, random_state=seed, n_init=1, max_iter=100)
        return km.fit_predict(X).astype(np.int64)


def typicality(X: np.ndarray, knn: int = KNN) -> np.ndarray:
    """Paper Eq. 4 within one set of points ``X`` (m, d): 1 / mean distance to the ``knn`` nearest others; (m,)."""
    m = X.shape[0]
    if m == 1:
        return np.ones(1)
    k = min(knn, m - 1)
    Xd = X.astype(np.float64)
    sq = (Xd * Xd).sum(axis=1)
    D = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (Xd @ Xd.T), 0.0)
    np.fill_diagonal(D, np.inf)
    near = np.sqrt(np.partition(D, k - 1, axis=1)[:, :k])
    return 1.0 / (near.mean(axis=1) + 1e-12)


def typiclust_select(X_pool: Any, k: int, X_labeled: Any = None, rng: Any = None, *,
                     max_clusters: int = MAX_CLUSTERS, min_cluster_size: int = MIN_CLUSTER_SIZE,
                     knn: int = KNN, max_ref: int = MAX_REF) -> tuple[np.ndarray, np.ndarray]:
    """Choose ``k`` rows of ``X_pool`` (n, d) by TypiClust (module docstring).

    Returns ((k,) int64 unique pool indices in pick order, (k,) float64 typicality of each).
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    Xp = np.asarray(to_numpy(X_pool), dtype=np.float32)
    n = Xp.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in [1, {n}] (the pool size)")
    XL = None if X_labeled is None or len(X_labeled) == 0 else np.asarray(to_numpy(X_labeled), dtype=np.float32)
    m = 0 if XL is None else XL.shape[0]
    X = Xp if XL is None else np.concatenate([XL, Xp])
    K = int(min(m + k, max_clusters, X.shape[0]))
    lab = kmeans_labels(X, K, rng)
    K = int(lab.max()) + 1
    size = np.bincount(lab, minlength=K)
    covered = np.bincount(lab[:m], minlength=K).astype(np.int64)
    plab = lab[m:]
    order = np.argsort(plab, kind="stable")
    bounds = np.searchsorted(plab[order], np.arange(K + 1))
    free = np.diff(bounds).astype(np.int64)  # unlabeled, unchosen points per cluster
    tie = rng.random(K)  # equal (coverage, size): random order, redrawn per call
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    taken = np.zeros(n, dtype=bool)
    chosen = np.empty(k, dtype=np.int64)
    typ = np.empty(k)
    for t in range(k):
        ok = free > 0
        big = ok & (size >= min_cluster_size)
        if big.any():
            ok = big
        cand = np.flatnonzero(ok)
        c = int(cand[np.lexsort((tie[cand], -size[cand], covered[cand]))[0]])
        if c not in cache:
            members = np.flatnonzero(lab == c)  # rows of X (labeled first)
            if len(members) > max_ref:
                members = np.sort(rng.choice(members, size=max_ref, replace=False))
                if not (members >= m).any():
                    members[-1] = m + order[bounds[c]]
            tv = typicality(X[members], knn)
            is_pool = members >= m
            cache[c] = (members[is_pool] - m, tv[is_pool])
        rows, tv = cache[c]
        avail = ~taken[rows]
        if not avail.any():  # the subsample's pool points are all taken: any free one of the cluster
            rest = order[bounds[c]:bounds[c + 1]]
            rest = rest[~taken[rest]]
            j, v = int(rest[0]), float("nan")
        else:
            i = int(np.flatnonzero(avail)[tv[avail].argmax()])
            j, v = int(rows[i]), float(tv[i])
        chosen[t], typ[t] = j, v
        taken[j] = True
        covered[c] += 1
        free[c] -= 1
    return chosen, typ
