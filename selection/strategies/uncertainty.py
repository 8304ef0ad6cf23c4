"""Uncertainty sampling: the b pool items with the highest least-confidence / margin / entropy score.

Scores are the pure functions of :mod:`selection.scores` (larger = more informative); the
returned ``scores`` are those of the chosen items, largest first.
"""
from __future__ import annotations

from ..scores import entropy_scores, least_confidence_scores, margin_scores, top_b
from .base import Selection, Strategy, register


class _TopScore(Strategy):
    params = ()
    score_fn = staticmethod(margin_scores)

    def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
        s = type(self).score_fn(probs_pool)
        idx = top_b(s, batch_size)
        return Selection(idx, s[idx], {})


@register
class LeastConfidence(_TopScore):
    name = "least_confidence"
    description = "Top-b by 1 - max class probability."
    score_fn = staticmethod(least_confidence_scores)


@register
class Margin(_TopScore):
    name = "margin"
    description = "Top-b by smallest gap between the two most probable classes (score 1 - gap)."
    score_fn = staticmethod(margin_scores)


@register
class Entropy(_TopScore):
    name = "entropy"
    description = "Top-b by predictive entropy (nats)."
    score_fn = staticmethod(entropy_scores)
