"""Core-Set (Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set
Approach", ICLR 2018): the k-center greedy approximation (their Algorithm 1) over the pool
embeddings, with the labeled set counting as centres already.

``scores`` are the squared distances of each chosen item to its nearest centre at the time it
was chosen (the covering radius it closes), largest first by construction.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..seeding import _sq_dist_fn, d2_seeding, min_sq_dist_to_set
from .base import Selection, Strategy, register


@register
class CoreSet(Strategy):
    name = "coreset"
    description = "k-center greedy over embeddings from the labeled set (Sener & Savarese 2018)."
    params = ()
    needs_probs = False

    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        xp = get_array_module(X_pool)
        X = X_pool if X_pool.dtype.kind == "f" else X_pool.astype(xp.float64)
        init = None
        if X_labeled is not None and len(X_labeled) > 0:
            init = min_sq_dist_to_set(X, xp.asarray(X_labeled, dtype=X.dtype))
        picked_d: list[float] = []
        idx = d2_seeding(X.shape[0], batch_size, _sq_dist_fn(xp, X), rng, xp=xp, greedy=True,
                         init_min=init, picked_dist=picked_d)
        return Selection(idx, np.asarray(picked_d) if init is not None else None, {})
