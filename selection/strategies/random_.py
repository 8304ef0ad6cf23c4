"""Uniform random sampling: the baseline every learning curve is compared with."""
from __future__ import annotations

from .base import Selection, Strategy, register


@register
class RandomStrategy(Strategy):
    name = "random"
    description = "Uniformly random batch from the unlabeled pool (the baseline)."
    params = ()
    needs_probs = False
    uses_cold_start = False  # random needs no model: cold start is the strategy itself
    distinct = False  # the textbook baseline: uniform over items, copies included

    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        idx = rng.choice(X_pool.shape[0], size=batch_size, replace=False)
        return Selection(idx, None, {})
