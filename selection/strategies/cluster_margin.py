"""Cluster-Margin (Citovsky, DeSalvo, Gentile, Karydas, Rajagopalan, Rostamizadeh & Kumar,
"Batch Active Learning at Scale", NeurIPS 2021, Algorithm 1).

Once per embedding version: average-linkage HAC (Euclidean) over the embeddings, cut at
distance eps (:mod:`selection.clustering`; exact below ``exact_max_n`` points, a k-means
coarsening with the same meaning of eps above).  Each round:

1. take the k_m = ``km_ratio`` * b unlabeled points with the smallest margin p_(1) - p_(2);
2. keep only their clusters, each restricted to these candidates, and sort the groups by
   their number of candidates, smallest first;
3. round-robin: one uniformly random candidate from each group per pass, smallest group
   first, until b are chosen.

Step 3 without a Python loop: shuffle the candidates, rank each within its group (0 for the
first one drawn, 1 for the second ...), and sort by (rank, group size, group key); the first
b are the round-robin picks.  Groups of equal size have no order in the paper; a random key
per group (redrawn each round) breaks those ties, so low cluster ids are not favoured.

Parameters: eps (a distance) or, easier to set, ``target_cluster_size`` (the tree is cut
into round(N / size) clusters; used when eps is empty); k_m / b as ``km_ratio`` (public
sources use 1.25 and 10).  Both default to values derived from the pool and the batch (the
paper's regime is a pool far larger than the batch; with k_m = 10 b on a pool of a few
thousand the candidates are most of the pool and the round-robin favours outliers):
k_m = n_pool / 100 within [1.25 b, 10 b], clusters of about N / (10 b) points.  Measured
(docs/strategies.md): on pendigits (7.7k pool, b = 50) k_m = 10 b lost 5.6 points of mean
accuracy to random, k_m = 1.25 b and 2 b gained 2.  The clustering covers ``context.X_all``
when given (the whole
data set, so it does not change as the pool shrinks) and is cached in memory and, with
``context.cache_dir`` and ``context.embedding_version``, on disk; without ``X_all`` the pool
itself is clustered (and memoised on a fingerprint of its rows).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from ..backend import to_numpy
from ..clustering import average_linkage_clusters
from ..params import Param
from ..scores import margin_scores, top_b
from .base import Selection, Strategy, register

_MEMO: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_MEMO_MAX = 4


def round_robin_order(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cluster-Margin's round-robin visiting order over candidates labelled by ``groups`` (m,).

    Returns a permutation of ``range(m)``: pass r lists the r-th (random) member of every group
    with more than r members, groups by ascending size, equal sizes in random order.
    """
    m = groups.shape[0]
    _, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    perm = rng.permutation(m)
    g = inv[perm]
    by_group = np.argsort(g, kind="stable")  # within a group: shuffled order
    gs = g[by_group]
    first = np.searchsorted(gs, gs, side="left")
    rank = np.empty(m, dtype=np.int64)
    rank[perm[by_group]] = np.arange(m) - first
    key = rng.permutation(len(counts))[inv]
    return np.lexsort((key, counts[inv], rank))


def candidate_count(km_ratio: float | None, n: int, b: int) -> int:
    """k_m: ``km_ratio * b``, or (empty) n / 100 within [1.25 b, 10 b]; never more than the pool, never below b."""
    k = km_ratio * b if km_ratio is not None else min(10 * b, max(1.25 * b, n / 100))
    return int(min(n, max(b, math.ceil(k - 1e-9))))


def cluster_size(target: float | None, N: int, b: int) -> float:
    """Mean cluster size: ``target``, or (empty) N / (10 b) rounded to a power of two within [2, 32].

    Rounding keeps the cut (and so the cached clustering) the same when b changes a little
    between rounds (the audit share is drawn per round).
    """
    if target is not None:
        return float(target)
    return float(2.0 ** min(5, max(1, round(math.log2(max(N / (10 * b), 1.0))))))


def _fingerprint(X: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((X.shape, X.dtype.str)).encode())
    rows = np.linspace(0, X.shape[0] - 1, num=min(X.shape[0], 4096)).astype(np.int64)
    h.update(np.ascontiguousarray(X[rows]).tobytes())
    return h.hexdigest()


@register
class ClusterMargin(Strategy):
    name = "cluster_margin"
    description = ("Lowest-margin candidates spread round-robin over average-linkage HAC clusters "
                   "(Citovsky et al. 2021).")
    params = (
        Param("eps", "float", None, "Cut the average-linkage tree at this Euclidean distance (the paper's "
              "epsilon). Leave empty to cut by target_cluster_size instead.", min=1e-12, nullable=True),
        Param("target_cluster_size", "float", None, "Mean cluster size wanted: the tree is cut into "
              "round(N / size) clusters (used when eps is empty). Empty = from the data set and the batch: "
              "N / (10 b) rounded to a power of two, within [2, 32] (about 10 b clusters). Above exact_max_n "
              "points at most n_coarse clusters can be formed, so the mean size is then at least N / n_coarse.",
              min=1.0, max=1e7, nullable=True),
        Param("km_ratio", "float", None, "k_m / b: how many lowest-margin candidates per batch slot "
              "(the paper's k_m; sources use 1.25 and 10). Empty = from the pool: k_m = n_pool / 100 "
              "within [1.25 b, 10 b], so the candidates stay a small part of the pool.",
              min=1.0, max=1000.0, nullable=True),
        Param("exact_max_n", "int", 10_000, "Largest set clustered with exact HAC (needs ~8 n^2 bytes); "
              "above it a k-means coarsening is clustered instead (40k needs ~13 GB).", min=2, max=40_000),
        Param("n_coarse", "int", 4096, "Number of k-means cells on the scalable path (K^2 * 8 bytes of "
              "memory); clusters smaller than N / n_coarse points cannot be resolved.", min=16, max=10_000),
        Param("cluster_seed", "int", 0, "Seed of the coarsening (fixed so the cached clustering is stable).",
              min=0, max=2**31 - 1),
    )

    # ----------------------------------------------------------------- clustering (cached)
    def _cut(self, N: int, b: int = 1) -> dict[str, Any]:
        p = self.params_
        if p["eps"] is not None:
            return {"eps": float(p["eps"])}
        return {"n_clusters": int(min(N, max(1, round(N / cluster_size(p["target_cluster_size"], N, b)))))}

    def cluster_labels(self, X: np.ndarray, *, version: str | None, cache_dir: str | None, progress=None,
                       batch_size: int = 1):
        """Cluster labels (N,) of ``X`` and how they were obtained ("memory", "disk" or "computed")."""
        p = self.params_
        cut = self._cut(X.shape[0], batch_size)
        conf = {**cut, "exact_max_n": p["exact_max_n"], "n_coarse": p["n_coarse"], "seed": p["cluster_seed"],
                "N": X.shape[0], "d": X.shape[1], "v": 1}
        conf_key = hashlib.blake2b(json.dumps(conf, sort_keys=True).encode(), digest_size=8).hexdigest()
        ident = version if version is not None else "fp-" + _fingerprint(X)
        key = (ident, conf_key)
        if key in _MEMO:
            _MEMO.move_to_end(key)
            return _MEMO[key], {"source": "memory"}
        path = None
        if cache_dir and version is not None:
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", version)[:80]
            path = os.path.join(cache_dir, f"cluster_margin-{safe}-{conf_key}.npy")
            if os.path.exists(path):
                lab = np.load(path)
                if lab.shape == (X.shape[0],):
                    self._remember(key, lab)
                    return lab, {"source": "disk", "path": path}
        lab, info = average_linkage_clusters(
            X, **cut, exact_max_n=p["exact_max_n"], n_coarse=p["n_coarse"],
            random_state=p["cluster_seed"], progress=progress,
        )
        lab = lab.astype(np.int32 if lab.max() < 2**31 else np.int64)
        if path is not None and cache_dir:
            os.makedirs(cache_dir, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp.npy"
            np.save(tmp, lab)
            os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
        self._remember(key, lab)
        return lab, {"source": "computed", **info}

    @staticmethod
    def _remember(key, lab) -> None:
        _MEMO[key] = lab
        _MEMO.move_to_end(key)
        while len(_MEMO) > _MEMO_MAX:
            _MEMO.popitem(last=False)

    # ----------------------------------------------------------------- per round
    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        t0 = time.perf_counter()
        if context.X_all is not None:
            X_all = np.asarray(to_numpy(context.X_all))
            if context.pool_index is None:
                if X_all.shape[0] != X_pool.shape[0]:
                    raise ValueError(f"context.X_all has {X_all.shape[0]} rows but the pool {X_pool.shape[0]}; "
                                     "pass context.pool_index (the X_all row of each pool row)")
                pool_rows = np.arange(X_pool.shape[0])
            else:
                pool_rows = np.asarray(to_numpy(context.pool_index), dtype=np.int64)
                if pool_rows.shape != (X_pool.shape[0],):
                    raise ValueError(f"context.pool_index must have shape ({X_pool.shape[0]},); "
                                     f"got {pool_rows.shape}")
                if len(pool_rows) and (pool_rows.min() < 0 or pool_rows.max() >= X_all.shape[0]):
                    raise ValueError(f"context.pool_index has rows outside X_all [0, {X_all.shape[0]})")
        else:
            X_all = np.asarray(to_numpy(X_pool))
            pool_rows = np.arange(X_pool.shape[0])
        labels, cinfo = self.cluster_labels(X_all, version=context.embedding_version,
                                            cache_dir=context.cache_dir, progress=context.progress,
                                            batch_size=batch_size)
        t1 = time.perf_counter()

        s = np.asarray(to_numpy(margin_scores(probs_pool)))  # 1 - margin: largest = smallest margin
        n = s.shape[0]
        k_m = candidate_count(self.params_["km_ratio"], n, batch_size)
        cand = top_b(s, k_m)
        groups = labels[pool_rows[cand]]
        order = round_robin_order(groups, rng)
        chosen = cand[order[:batch_size]]
        info = {
            "k_m": k_m,
            "candidate_clusters": int(len(np.unique(groups))),
            "clustering": {k: v for k, v in cinfo.items() if k != "path"},
            "cluster_seconds": round(t1 - t0, 4),
            "round_seconds": round(time.perf_counter() - t1, 4),
        }
        return Selection(chosen, s[chosen], info)
